//! callpipe: a real-time media engine for telephony WebSocket audio.
//!
//! A voice platform (the Vonage Voice API's `connect` action with a `websocket` endpoint) opens a
//! WebSocket to callpipe, sends one JSON metadata frame, then streams the call's audio as 20 ms
//! frames of 16-bit linear PCM at 8, 16 or 24 kHz, and plays back what callpipe sends. callpipe
//! runs each call's audio through a chain of [`processor::Processor`]s on dedicated media threads
//! and sends audio back on a 20 ms grid.
//!
//! # Layers
//!
//! Dependencies point one way, from the wire inwards; only `server`, `events` (and the CLI) name
//! tokio, sockets or the wall clock (processors read a monotonic clock only to time themselves
//! for metrics, and the recorder and player touch files off the media thread).
//!
//! ```text
//!  protocol   wire format: metadata, text messages, frame sizes        (no I/O, no clock)
//!  audio      WAV reading and writing, offline resampling, tones        (files only)
//!  resample   real-time 8/16/24/48 kHz conversion, one frame at a time  (no I/O)
//!  auth       JWT (HS256) and static-token checks, webhook signing      (no I/O; time is an argument)
//!  metrics    Prometheus text format: families, samples, histograms    (no I/O)
//!     ▲
//!  processor  the Processor trait, Pipeline, built-ins (echo, DTMF,     (no I/O, no clock)
//!             play, record, fork, conference and its mixer)
//!     ▲
//!  session    one call as a state machine: re-framer, jitter policy,    (time is an argument)
//!             pacer, clear/notify bookkeeping
//!     ▲
//!  media      media threads, SPSC rings, absolute-deadline clock        (std threads)
//!     ▲
//!  server     tokio accept loop, routing, admission (JWT/token, TLS),    (tokio, sockets, HTTP)
//!             drain; the HTTP control API, /metrics, the call registry
//!  config     the TOML configuration, validated once into types
//!  events     call events: JSON-lines log and signed webhooks            (tokio, HTTP client)
//!
//!  client     the platform's side: `callpipe call` / `callpipe load`       (threads, sockets)
//!             (uses protocol and auth only: it speaks the wire format, not callpipe's internals)
//! ```
//!
//! # Threads and rings
//!
//! ```text
//!  socket ──► connection task ──audio_in / events_in──► media thread ──► Session (pipeline, pacer)
//!  socket ◄── connection task ◄──items_out / audio_out── media thread ◄──┘
//!                    ▲                                       │
//!                    └──────────── relay task ◄──────────────┘ one wake-up per 1 ms slot
//! ```
//!
//! Each call has fixed-size single-producer/single-consumer rings in both directions. A small
//! pool of media threads (one per core by default) serves every call; each thread wakes every
//! millisecond, sleeping to absolute deadlines, and visits the calls their connections marked
//! ready (a frame arrived) and those whose next deadline has come. See [`media`].
//!
//! # Two clocks
//!
//! ```text
//!  caller's timeline   f1   f2        f3 f4 f5 f6   (a stall: the backlog, all at once)
//!  (what arrives)      │    │         │  │  │  │
//!  passes              C+W  C+W   W   C  C  C+W C+W  C = caller stages, W = wall stages
//!  wall clock          ├────┼────┼────┼────┼────┤    one tick per 20 ms, whatever arrives
//! ```
//!
//! Every frame the platform delivers goes through the caller-timeline stages (recorders,
//! detectors, forks, echo) exactly once, in order, when it arrives; silence goes in only where
//! the platform paused. What callpipe generates (players, tones, the API's streams, the
//! conference mix) runs on the wall clock and is paced on it. A frame that arrives within its
//! tick shares one pass with it. See `docs/media.md` and [`session`].
//!
//! A conference's members all live on one media thread, which also runs the conference's mixer
//! once per cycle, before the members' passes; each member exchanges frames with the mixer
//! through two more SPSC rings (see the `conference` processor).
//!
//! # The real-time contract
//!
//! * Every caller frame that arrives is processed once, in order, within a millisecond of its
//!   arrival; late is never lost. Pause silence keeps the caller's timeline on call time; the
//!   wall clock ticks once per 20 ms whether or not the caller's frame arrived.
//! * The per-frame path allocates nothing, takes no lock and never blocks (`tests/no_alloc.rs`
//!   counts allocations over 10,000 ticks). Full rings drop and count; they never wait.
//! * Outbound frames are always exactly 20 ms: audio of any length is re-framed, a final partial
//!   frame is padded with silence. The pacer keeps at most `lookahead_frames` frames ahead at the
//!   platform, on absolute deadlines: missed ticks are made up, or dropped on purpose and
//!   counted, never turned into permanent latency.
//! * Bad input is answered with a close code and a log line (see [`session::CloseCode`]); it
//!   never panics and never touches another call.
#![deny(unsafe_code)]

pub mod audio;
pub mod auth;
pub mod client;
pub mod config;
pub mod events;
pub mod media;
pub mod metrics;
pub mod processor;
pub mod protocol;
pub mod resample;
pub mod server;
pub mod session;
pub mod stats;
