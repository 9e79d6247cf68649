//! The Python fork target of the docs (`examples/python/fork_bot.py`) against a real
//! `callpipe serve`, driven by `callpipe call`: the caller hears the bot's beeps, and the bot
//! hangs the call up through its `notify` and `hangup` commands.
//!
//! Needs `python3` with the `websockets` package (`pip install websockets`, or Debian's
//! `python3-websockets`); without it the test says so and passes, unless
//! `CALLPIPE_REQUIRE_PYTHON=1` (set by `.ci/run`, which installs the package).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A Python interpreter that has `websockets`.
fn python() -> Option<&'static str> {
    ["python3", "/usr/bin/python3"]
        .into_iter()
        .find(|python| Command::new(python).args(["-c", "import websockets"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success()))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `program args` and waits for a line of its `stream` (stdout or stderr) containing
/// `ready`; returns the child and the reader for the rest.
fn start(mut command: Command, from_stdout: bool, ready: &str) -> (Killed, std::sync::mpsc::Receiver<String>) {
    let mut child = if from_stdout { command.stdout(Stdio::piped()) } else { command.stderr(Stdio::piped()) }.spawn().unwrap();
    let pipe: Box<dyn std::io::Read + Send> =
        if from_stdout { Box::new(child.stdout.take().unwrap()) } else { Box::new(child.stderr.take().unwrap()) };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let child = Killed(child);
    loop {
        match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(line) if line.contains(ready) => return (child, rx),
            Ok(_) => {}
            Err(e) => panic!("{command:?} never said {ready:?}: {e}"),
        }
    }
}

#[test]
fn the_python_fork_bot_beeps_and_hangs_up() {
    let Some(python) = python() else {
        assert!(std::env::var_os("CALLPIPE_REQUIRE_PYTHON").is_none(), "python3 with websockets is required here");
        eprintln!("skipped: no python3 with the websockets package (pip install websockets)");
        return;
    };
    let root = env!("CARGO_MANIFEST_DIR");
    let bot_port = free_port();
    let mut bot = Command::new(python);
    bot.arg(format!("{root}/examples/python/fork_bot.py")).arg(bot_port.to_string());
    let (_bot, _) = start(bot, true, "bot listening");

    let dir = std::env::temp_dir().join(format!("callpipe-python-bot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("callpipe.toml");
    std::fs::write(
        &config,
        format!(
            "[control]\nlisten = \"off\"\n[[route]]\npath = \"/bot\"\nprocessors = [{{ type = \"fork\", url = \"ws://127.0.0.1:{bot_port}/bot\", rate = 16000, reply_rate = 16000, replies = \"commands\" }}]\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_callpipe"));
    serve.args(["serve", "--config", config.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")]).env("RUST_LOG", "info");
    serve.stdout(Stdio::null());
    let (_server, _log) = start(serve, false, "serving");

    let record = dir.join("call.wav");
    let out = Command::new(env!("CARGO_BIN_EXE_callpipe"))
        .args(["call", &format!("ws://127.0.0.1:{port}/bot"), "--tone", "300", "--duration", "10", "--json"])
        .args(["--record", record.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["close_code"], 1000);
    let sent = report["frames_sent"].as_u64().unwrap();
    assert!((150..400).contains(&sent), "the bot hung up after about three seconds, not at the end: {sent} frames sent");
    // The right channel is what the caller heard: three beeps of 200 ms.
    let mut reader = hound::WavReader::open(&record).unwrap();
    let heard: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).skip(1).step_by(2).collect();
    let loud = heard.iter().filter(|s| s.unsigned_abs() > 4000).count();
    let rate = reader.spec().sample_rate as usize;
    assert!(loud > rate / 10, "the caller heard the beeps ({loud} loud samples)");
    let _ = std::fs::remove_dir_all(&dir);
}
