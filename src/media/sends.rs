//! Batched sends through io_uring: the writes of a media thread's visits, one submission.
//!
//! With `[media] io = "io_uring"`, an endpoint on a plain socket does not write in its visit
//! (unless a late visit releases more than its buffer's frame, which it then writes as it fills):
//! what the visit framed stays in the endpoint's buffer, and the thread sends the buffers of every
//! call it visited together, one `send` entry each, in one `io_uring_enter` that also waits for
//! their completions. Each send is non-blocking (`MSG_DONTWAIT`), so it completes in that call:
//! with the bytes the socket took, or `EAGAIN` when its buffer is full, after which the endpoint
//! waits for writability as with epoll. Nothing outlives the call, so no buffer is borrowed past
//! it.
//!
//! Reads stay on the thread's epoll set. The ring is made when the thread starts; a kernel
//! that refuses io_uring (too old, or a seccomp policy) leaves the thread on the epoll path,
//! with a warning.

use std::io;
use std::os::fd::RawFd;

/// Sends one submission carries at most (more go in the next).
pub(crate) const SEND_BATCH: u32 = 256;

/// One send: the socket, the bytes, and a key that comes back with its result.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outgoing {
    pub fd: RawFd,
    /// The address of the first byte (an address, not a pointer: the thread's list of sends
    /// moves with the thread, and an address left in it after a send is never read).
    data: usize,
    len: usize,
    key: u64,
}

impl Outgoing {
    /// `bytes` on `fd`, reported with `key`. See [`Sends::send_all`] for how long `bytes`
    /// must stay.
    pub fn new(fd: RawFd, bytes: &[u8], key: u64) -> Outgoing {
        Outgoing { fd, data: bytes.as_ptr() as usize, len: bytes.len(), key }
    }
}

#[cfg(target_os = "linux")]
mod ring {
    use super::*;
    use io_uring::{IoUring, opcode, types};

    /// A media thread's ring for its sends.
    pub(crate) struct Sends {
        ring: IoUring,
    }

    impl Sends {
        /// A ring for up to [`SEND_BATCH`] sends at once, if the kernel has io_uring and its
        /// send operation (Linux 5.6).
        pub fn new() -> io::Result<Sends> {
            let ring = IoUring::new(SEND_BATCH)?;
            let mut probe = io_uring::Probe::new();
            ring.submitter().register_probe(&mut probe)?;
            if !probe.is_supported(opcode::Send::CODE) {
                return Err(io::Error::new(io::ErrorKind::Unsupported, "this kernel's io_uring cannot send (Linux 5.6 or later)"));
            }
            Ok(Sends { ring })
        }

        /// Sends the batch (at most [`SEND_BATCH`]) and hands each result to `done` with its
        /// key; returns the system calls it took (one, unless interrupted).
        ///
        /// Every send has completed when this returns, an error included: a send with
        /// `MSG_DONTWAIT` is never left to the kernel's workers, so it completes within the
        /// `io_uring_enter` that submits it, and that call fails only when it submitted
        /// nothing. After an error, the sends whose completions were not found were thus never
        /// submitted: they are reported as `WouldBlock` (nothing sent, the bytes still to
        /// send), and the ring, which still holds them, must not be used again.
        ///
        /// # Safety
        ///
        /// Each send's bytes must stay valid and unchanged until this call returns.
        #[allow(unsafe_code)]
        pub unsafe fn send_all(&mut self, batch: &[Outgoing], mut done: impl FnMut(u64, io::Result<usize>)) -> io::Result<usize> {
            assert!(batch.len() <= SEND_BATCH as usize, "a batch is at most the ring's size");
            let flags = libc_flags();
            {
                let mut queue = self.ring.submission();
                for (position, send) in batch.iter().enumerate() {
                    let len = u32::try_from(send.len).unwrap_or(u32::MAX);
                    let entry =
                        opcode::Send::new(types::Fd(send.fd), send.data as *const u8, len).flags(flags).build().user_data(position as u64);
                    // SAFETY: the queue has room for the batch (at most its size, and empty
                    // between calls: every entry is submitted and completed below, or the
                    // ring is given up); the bytes' validity is the caller's promise.
                    unsafe { queue.push(&entry) }.map_err(|_| io::Error::other("io_uring submission queue full"))?;
                }
            }
            let mut completed = [false; SEND_BATCH as usize];
            let mut left = batch.len();
            let mut calls = 0;
            let mut reap = |ring: &mut IoUring, left: &mut usize| {
                for entry in ring.completion() {
                    let position = entry.user_data() as usize;
                    let result = entry.result();
                    let result = if result >= 0 { Ok(result as usize) } else { Err(io::Error::from_raw_os_error(-result)) };
                    if let Some(send) = batch.get(position) {
                        completed[position] = true;
                        *left -= 1;
                        done(send.key, result);
                    }
                }
            };
            while left > 0 {
                calls += 1;
                match self.ring.submit_and_wait(left) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        reap(&mut self.ring, &mut left);
                        for (position, send) in batch.iter().enumerate() {
                            if !completed[position] {
                                done(send.key, Err(io::ErrorKind::WouldBlock.into()));
                            }
                        }
                        return Err(e);
                    }
                }
                reap(&mut self.ring, &mut left);
            }
            Ok(calls)
        }
    }

    /// `MSG_NOSIGNAL | MSG_DONTWAIT`: a reset peer is an error, not a signal, and a full socket
    /// buffer completes at once with `EAGAIN` instead of waiting in the kernel.
    fn libc_flags() -> i32 {
        libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT
    }
}

#[cfg(target_os = "linux")]
pub(crate) use ring::Sends;

#[cfg(not(target_os = "linux"))]
pub(crate) struct Sends;

#[cfg(not(target_os = "linux"))]
impl Sends {
    pub fn new() -> io::Result<Sends> {
        Err(io::ErrorKind::Unsupported.into())
    }

    #[allow(unsafe_code)]
    pub unsafe fn send_all(&mut self, _: &[Outgoing], _: impl FnMut(u64, io::Result<usize>)) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::poller::tests::pair;
    use std::io::Read;
    use std::os::fd::AsRawFd;

    #[test]
    #[allow(unsafe_code)]
    fn a_batch_reaches_every_socket_and_reports_each_by_its_key() {
        let Ok(mut sends) = Sends::new() else {
            eprintln!("io_uring is not available here: skipped");
            return;
        };
        let pairs: Vec<_> = (0..5).map(|_| pair()).collect();
        let messages: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
        let batch: Vec<Outgoing> = pairs
            .iter()
            .zip(&messages)
            .enumerate()
            .map(|(i, ((_, server), m))| Outgoing::new(server.as_raw_fd(), m, 10 + i as u64))
            .collect();
        let mut results = Vec::new();
        // SAFETY: `messages` outlives the call and is not touched during it.
        unsafe { sends.send_all(&batch, |key, result| results.push((key, result.unwrap()))) }.unwrap();
        results.sort_unstable();
        assert_eq!(results, (0..5).map(|i| (10 + i, 100 + i as usize)).collect::<Vec<_>>());
        for ((client, _), m) in pairs.iter().zip(&messages) {
            let mut got = vec![0; m.len()];
            (&*client).read_exact(&mut got).unwrap();
            assert_eq!(&got, m);
        }
    }

    #[test]
    #[allow(unsafe_code)]
    fn a_full_socket_completes_at_once_with_would_block_and_a_closed_one_with_an_error() {
        let Ok(mut sends) = Sends::new() else {
            eprintln!("io_uring is not available here: skipped");
            return;
        };
        let (_client, server) = pair();
        let chunk = vec![7u8; 1 << 20];
        let mut saw_would_block = false;
        for _ in 0..64 {
            let batch = [Outgoing::new(server.as_raw_fd(), &chunk, 1)];
            let mut outcome = None;
            // SAFETY: `chunk` outlives the call.
            unsafe { sends.send_all(&batch, |_, r| outcome = Some(r)) }.unwrap();
            if let Some(Err(e)) = outcome {
                assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                saw_would_block = true;
                break;
            }
        }
        assert!(saw_would_block, "the peer never reads: the socket's buffer must fill");
        let (client, server) = pair();
        drop(client);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut errors = 0;
        for _ in 0..4 {
            let batch = [Outgoing::new(server.as_raw_fd(), &chunk[..10], 2)];
            // SAFETY: as above.
            unsafe { sends.send_all(&batch, |_, r| errors += usize::from(r.is_err())) }.unwrap();
        }
        assert!(errors > 0, "a send to a closed peer fails (reset or broken pipe), and raises no signal");
    }
}
