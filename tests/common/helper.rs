//! Extra servers a test needs (redis-server, moto_server), started on a free loopback port and
//! stopped when dropped. A missing program skips the test with a message, unless the variable
//! that requires it is set (as `.ci/run` sets it, after installing the program).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A helper server on a loopback port.
pub struct Helper {
    pub port: u16,
    child: Child,
}

impl Helper {
    /// Starts `program` with `args(port)` on a free port, or `None` (saying why) when it cannot
    /// be started and `require` is not set to 1; `hint` says how to install it.
    pub fn start(program: &str, args: impl Fn(u16) -> Vec<String>, require: &str, hint: &str) -> Option<Helper> {
        Helper::start_on(free_port(), program, args, require, hint)
    }

    /// The same on `port`.
    pub fn start_on(port: u16, program: &str, args: impl Fn(u16) -> Vec<String>, require: &str, hint: &str) -> Option<Helper> {
        let child = match Command::new(program).args(args(port)).stdout(Stdio::null()).stderr(Stdio::null()).spawn() {
            Ok(child) => child,
            Err(e) => {
                assert!(std::env::var(require).as_deref() != Ok("1"), "{program} is required ({require}=1) but cannot be started: {e}");
                eprintln!("skipping: {program} cannot be started ({e}); {hint}");
                return None;
            }
        };
        let helper = Helper { port, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "{program} did not listen on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(helper)
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
