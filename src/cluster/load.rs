//! The media threads' CPU use, read from the kernel's per-thread accounting
//! (`/proc/self/task/*/stat`) at each heartbeat: nothing is measured on the media threads
//! themselves.

use std::time::Instant;

/// The media threads' names start with this (the kernel keeps 15 bytes of a thread's name).
const MEDIA_THREAD_NAME: &str = "callpipe-media";

/// Clock ticks per second of `/proc`'s times (`USER_HZ`, 100 on every Linux ABI).
const TICKS_PER_SECOND: f64 = 100.0;

/// Media threads' CPU use between samples.
pub(super) struct MediaLoad {
    threads: usize,
    last: Option<(Instant, u64)>,
}

impl MediaLoad {
    pub fn new(threads: usize) -> MediaLoad {
        MediaLoad { threads, last: None }
    }

    /// The media threads' CPU time since the previous sample, as a fraction of their wall time
    /// (0 to 1); 0 at the first sample or where `/proc` is not readable.
    pub fn sample(&mut self, now: Instant) -> f64 {
        let Some(ticks) = media_ticks() else { return 0.0 };
        let load = match self.last {
            Some((then, before)) if self.threads > 0 => {
                let wall = now.duration_since(then).as_secs_f64() * self.threads as f64;
                if wall > 0.0 { (ticks.saturating_sub(before) as f64 / TICKS_PER_SECOND / wall).clamp(0.0, 1.0) } else { 0.0 }
            }
            _ => 0.0,
        };
        self.last = Some((now, ticks));
        (load * 1000.0).round() / 1000.0
    }
}

/// The user and system ticks of this process's media threads.
fn media_ticks() -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        if let Some((name, ticks)) = parse_stat(&stat)
            && name.starts_with(MEDIA_THREAD_NAME)
        {
            total += ticks;
        }
    }
    Some(total)
}

/// A thread's name and its user plus system ticks, from its `stat` line. The name is in
/// parentheses and may itself hold spaces and parentheses: the fields follow the last `)`.
fn parse_stat(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    // After the name: state (field 3), ..., utime (14), stime (15).
    let mut fields = stat.get(close + 1..)?.split_ascii_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((name, utime + stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_the_name_and_cpu_ticks() {
        let line = "4242 (callpipe-media-) S 1 2 3 0 -1 4194368 10 0 0 0 250 31 0 0 20 0 1 0 100 0 0";
        assert_eq!(parse_stat(line), Some(("callpipe-media-", 281)));
        let odd = "7 (a (b) c) R 1 2 3 0 -1 0 0 0 0 0 5 6 0 0";
        assert_eq!(parse_stat(odd), Some(("a (b) c", 11)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_s_threads_are_readable() {
        // Not a media thread: the sum is there (zero), and the first sample is 0.
        assert!(media_ticks().is_some());
        assert_eq!(MediaLoad::new(2).sample(Instant::now()), 0.0);
    }
}
