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
//! Dependencies point one way, from the wire inwards. Threads, runtimes, sockets and files
//! belong to `services`, `media`, `server`, `events` (and the CLI): a processor only keeps its
//! end of a service's rings (it reads a monotonic clock to time itself for metrics, and the
//! player reads its file when prepared, off the media thread).
//!
//! ```text
//!  protocol   wire format: metadata, text messages, frame sizes,       (no I/O, no clock)
//!             WebSocket framing for both roles
//!  audio      WAV reading and writing, offline resampling, tones,       (files only)
//!             the player that frames decoded audio into a call
//!  resample   real-time 8/16/24/48 kHz conversion, one frame at a time  (no I/O)
//!  auth       JWT (HS256) and static-token checks, webhook signing      (no I/O; time is an argument)
//!  metrics    Prometheus text format: families, samples, histograms    (no I/O)
//!  stats      lock-free counters and latency histograms                 (no I/O)
//!     ▲
//!  call       the call's vocabulary: CallInfo, Event, DtmfSource,       (no I/O)
//!             StreamEnd (below the processors and the session alike)
//!     ▲
//!  services   the I/O processors need, one set per server: the fork     (threads, a runtime,
//!             connections (a runtime, reconnects, counters) and the      sockets, files)
//!             recorder's writer (a thread that owns every file)
//!     ▲
//!  processor  the Processor trait, Pipeline, built-ins (echo, DTMF,     (no thread, socket,
//!             play, record, fork, conference and its mixer): real-time    file or clock of
//!             stages that hold ring ends, prepared with the services      its own)
//!     ▲
//!  session    one call as a state machine: re-framer, jitter policy,    (time is an argument)
//!             pacer, clear/notify bookkeeping
//!     ▲
//!  media      media threads: each owns its calls' sockets (through the  (std threads, a poller)
//!             Endpoint trait), their sessions, a slot wheel, the clock
//!     ▲
//!  server     tokio accept loop, admission (TLS, upgrade, JWT/token,     (tokio, sockets, HTTP)
//!             metadata, routing), the socket endpoint the media threads
//!             drive, each call's task (commands, events, report), drain;
//!             the HTTP control API, /metrics, the call registry; builds
//!             the services once and hands them to every call
//!  config     the TOML configuration, validated once into types
//!  events     call events: JSON-lines log and signed webhooks            (tokio, HTTP client)
//!  cluster    membership and the call registry in Redis: heartbeats,      (tokio, Redis)
//!             calls registered as they start and end
//!
//!  client     the platform's side: `callpipe call` / `callpipe load`       (threads, sockets)
//!             (uses protocol, auth and audio only: it speaks the wire format, not callpipe's internals)
//! ```
//!
//! # Threads and sockets
//!
//! ```text
//!   tokio runtime                                   media thread (one per core)
//!  ┌─────────────────────────────┐  the socket,   ┌──────────────────────────────────────────┐
//!  │ admission: TLS, upgrade,    │  the session   │ poller (edge-triggered) + 1 ms slot wheel │
//!  │ metadata, route, prepare    │ ─────────────► │ readable ─► Endpoint: read, parse ─►      │
//!  └─────────────────────────────┘  (once)        │   Session: passes ─► Endpoint: frame,     │
//!  ┌─────────────────────────────┐  control ring  │   one write                               │
//!  │ call task: control API      │ ─────────────► │ due slot ─► wall ticks, limits, linger    │
//!  │ commands, events, report    │ ◄───────────── │                                           │
//!  └─────────────────────────────┘  events ring,  └──────────────────────────────────────────┘
//!                                   wake on events
//! ```
//!
//! Admission runs on the runtime; the admitted call's socket (plain, or an established rustls
//! session) then moves to a media thread with its session, and only that thread reads and
//! writes it: a frame is read, goes through the pipeline and the echo or reply is written in
//! one visit, with no hop between threads. The call's task on the runtime keeps what is rare:
//! the control API's commands (through a single-producer/single-consumer ring), the processors'
//! events, the call's report. See [`media`].
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
//! * Every caller frame that arrives is processed once, in order, on the thread that read it,
//!   within a slot (1 ms) of its arrival; late is never lost. Pause silence keeps the caller's timeline on call time; the
//!   wall clock ticks once per 20 ms whether or not the caller's frame arrived.
//! * The per-frame path allocates nothing, takes no lock and never blocks (`tests/no_alloc.rs`
//!   counts allocations over 10,000 ticks, and over the socket path of a running server). Full
//!   rings drop and count; they never wait. A session without room leaves bytes in the socket.
//! * Outbound frames are always exactly 20 ms: audio of any length is re-framed, a final partial
//!   frame is padded with silence. The pacer keeps at most `lookahead_frames` frames ahead at the
//!   platform, on absolute deadlines: missed ticks are made up, or dropped on purpose and
//!   counted, never turned into permanent latency.
//! * Bad input is answered with a close code and a log line (see [`session::CloseCode`]); it
//!   never panics and never touches another call.
#![deny(unsafe_code)]

pub mod audio;
pub mod auth;
mod bounded;
pub mod call;
pub mod client;
pub mod cluster;
pub mod config;
pub mod events;
pub mod media;
pub mod metrics;
pub mod processor;
pub mod protocol;
pub mod resample;
pub mod server;
pub mod services;
pub mod session;
pub mod stats;
