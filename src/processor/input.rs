//! The `input` processor: collects the caller's keys like the Voice API's `input` action with
//! `type: ["dtmf"]`, and reports them in one `input` event shaped like the Voice API's input
//! webhook: `{"dtmf": {"digits": "1234", "timed_out": false}}`. The control API's
//! `PUT /calls/{id}/input` runs the same [`Collector`] in the session.
//!
//! # Rules
//!
//! * Keys come from the platform's `websocket:dtmf` reports and from in-band detection
//!   (`dtmf_detect`) alike; a key both reported is counted once.
//! * Collection ends with `timed_out: false` when `max_digits` keys (1 to 20, default 4) have
//!   come, or, with `submit_on_hash`, at `#` (which is not part of the digits; without
//!   `submit_on_hash` `#` is a key like any other). It ends with `timed_out: true` when
//!   `time_out` seconds (0 to 10, default 3, as the Voice API's) pass after the last key, or
//!   after the start when no key comes: the digits so far (perhaps none) are reported. With
//!   `time_out = 0`, only `max_digits` or `#` end it.
//! * Collection starts with the call, or, with `on_event` (e.g. `"talk:done"`, `"stream:done"`)
//!   or `on_digit`, at each such event, so a prompt can ask first; a new trigger while
//!   collecting starts over. A `play` or `talk` with `on_event = "input"` follows the result.
//!
//! # Real time
//!
//! The digits are held in a fixed array ([`Collected`]); the event is a plain value. Nothing is
//! allocated after the processor is built.

use std::time::{Duration, Instant};

use super::trigger::Trigger;
use super::{Context, Event, Processor, ProcessorError};
use crate::call::{Collected, MAX_INPUT_DIGITS};
use crate::protocol::DtmfDigit;

/// The longest `time_out`, in seconds (the Voice API's limit).
pub const MAX_INPUT_TIME_OUT_S: f64 = 10.0;

/// What an `input` collects and when it ends.
#[derive(Debug, Clone, PartialEq)]
pub struct InputConfig {
    /// Keys that end the collection, 1 to 20. Default 4.
    pub max_digits: u32,
    /// Whether `#` ends it (and is left out of the digits). Default false.
    pub submit_on_hash: bool,
    /// Seconds after the last key (or the start) that end it, 0 to 10; 0 for never. Default 3.
    pub time_out: f64,
    /// Start on this event (by name) instead of with the call.
    pub on_event: Option<String>,
    /// Start on this key instead of with the call (the key itself is not collected).
    pub on_digit: Option<DtmfDigit>,
}

impl Default for InputConfig {
    fn default() -> InputConfig {
        InputConfig { max_digits: 4, submit_on_hash: false, time_out: 3.0, on_event: None, on_digit: None }
    }
}

impl InputConfig {
    /// Checks the ranges, with messages that name the parameter.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=MAX_INPUT_DIGITS as u32).contains(&self.max_digits) {
            return Err(format!("max_digits must be between 1 and {MAX_INPUT_DIGITS}, not {}", self.max_digits));
        }
        if !(0.0..=MAX_INPUT_TIME_OUT_S).contains(&self.time_out) {
            return Err(format!("time_out must be between 0 and {MAX_INPUT_TIME_OUT_S} seconds, not {}", self.time_out));
        }
        Trigger::new(self.on_digit, self.on_event.as_deref()).check("talk:done")?;
        Ok(())
    }
}

/// One collection of keys at a time, by the rules in `src/processor/input.rs`.
#[derive(Debug, Clone, PartialEq)]
pub struct Collector {
    max_digits: usize,
    submit_on_hash: bool,
    time_out: Option<Duration>,
    /// The keys so far, while collecting.
    collecting: Option<Collected>,
    /// When the collection times out.
    deadline: Option<Instant>,
}

impl Collector {
    /// A collector for `config` (checked with [`InputConfig::check`]), idle.
    pub fn new(config: &InputConfig) -> Collector {
        Collector {
            max_digits: config.max_digits.clamp(1, MAX_INPUT_DIGITS as u32) as usize,
            submit_on_hash: config.submit_on_hash,
            time_out: (config.time_out > 0.0).then(|| Duration::from_secs_f64(config.time_out.min(MAX_INPUT_TIME_OUT_S))),
            collecting: None,
            deadline: None,
        }
    }

    /// Starts (or starts over) at `now`.
    pub fn start(&mut self, now: Instant) {
        self.collecting = Some(Collected::new());
        self.deadline = self.time_out.map(|t| now + t);
    }

    /// Whether it is collecting.
    pub fn is_collecting(&self) -> bool {
        self.collecting.is_some()
    }

    /// A key at `now`: the result when it ends the collection.
    pub fn key(&mut self, digit: DtmfDigit, now: Instant) -> Option<Collected> {
        let collected = self.collecting.as_mut()?;
        if self.submit_on_hash && digit == DtmfDigit::Pound {
            return self.collecting.take();
        }
        collected.push(digit);
        self.deadline = self.time_out.map(|t| now + t);
        if collected.len() >= self.max_digits { self.collecting.take() } else { None }
    }

    /// The result when the collection has timed out by `now`.
    pub fn tick(&mut self, now: Instant) -> Option<Collected> {
        if self.deadline.is_some_and(|d| now >= d) {
            self.deadline = None;
            let mut collected = self.collecting.take()?;
            collected.timed_out = true;
            return Some(collected);
        }
        None
    }
}

/// Collects the caller's keys; see `src/processor/input.rs`.
#[derive(Debug, Clone)]
pub struct Input {
    config: InputConfig,
    collector: Collector,
    started: bool,
}

impl Input {
    /// An `input` with `config`, checked here.
    pub fn new(config: InputConfig) -> Result<Input, ProcessorError> {
        config.check().map_err(|message| ProcessorError::Config { processor: "input".into(), message })?;
        Ok(Input { collector: Collector::new(&config), config, started: false })
    }

    /// What starts collection when it does not start with the call.
    fn trigger(&self) -> Trigger<'_> {
        Trigger::new(self.config.on_digit, self.config.on_event.as_deref())
    }

    /// Starts collecting at the call's first pass, unless a trigger starts it.
    fn start_with_call(&mut self, now: Instant) {
        if !self.started {
            self.started = true;
            if !self.trigger().waits() {
                self.collector.start(now);
            }
        }
    }

    fn emit(cx: &mut Context<'_>, collected: Option<Collected>) {
        if let Some(collected) = collected {
            cx.emit(Event::Input(collected));
        }
    }
}

impl Processor for Input {
    fn name(&self) -> &'static str {
        "input"
    }

    fn queues_output(&self) -> bool {
        false
    }

    fn timeline(&self) -> super::Timeline {
        // Time-outs follow the wall clock: the caller's silence still counts.
        super::Timeline::Wall
    }

    fn process(&mut self, cx: &mut Context<'_>) {
        self.start_with_call(cx.now());
        let result = self.collector.tick(cx.now());
        Input::emit(cx, result);
    }

    fn handle_event(&mut self, event: &Event, cx: &mut Context<'_>) {
        self.start_with_call(cx.now());
        let key = event.new_key();
        // While collecting, the trigger's key is one of the keys collected.
        if self.trigger().fired_by(event, cx.event_from_upstream()) && !(key.is_some() && self.collector.is_collecting()) {
            self.started = true;
            self.collector.start(cx.now());
            return;
        }
        if let Some(digit) = key {
            let result = self.collector.key(digit, cx.now());
            Input::emit(cx, result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::testkit::Harness;
    use crate::protocol::SampleRate;

    fn collected(h: &Harness<Input>) -> Vec<(u64, String, bool)> {
        h.events
            .iter()
            .filter_map(|(pass, e)| if let Event::Input(c) = e { Some((*pass, c.digits().to_owned(), c.timed_out)) } else { None })
            .collect()
    }

    fn keys(h: &mut Harness<Input>, keys: &str) {
        for c in keys.chars() {
            h.press(DtmfDigit::from_key(&c.to_string()).unwrap());
            h.silence(100);
        }
    }

    #[test]
    fn submit_on_hash_ends_at_hash_without_it() {
        let config = InputConfig { max_digits: 10, submit_on_hash: true, ..InputConfig::default() };
        let mut h = Harness::new(Input::new(config).unwrap(), SampleRate::Hz8000).unwrap();
        keys(&mut h, "1234#5");
        h.silence(5000);
        assert_eq!(collected(&h), [(20, "1234".to_owned(), false)], "5 after the end starts nothing");
    }

    #[test]
    fn max_digits_ends_it_and_hash_is_a_key_without_submit_on_hash() {
        let config = InputConfig { max_digits: 3, ..InputConfig::default() };
        let mut h = Harness::new(Input::new(config).unwrap(), SampleRate::Hz8000).unwrap();
        keys(&mut h, "1#2");
        assert_eq!(collected(&h), [(10, "1#2".to_owned(), false)]);
    }

    #[test]
    fn time_out_counts_from_the_last_key_or_the_start() {
        let config = InputConfig { max_digits: 5, time_out: 1.0, ..InputConfig::default() };
        let mut h = Harness::new(Input::new(config.clone()).unwrap(), SampleRate::Hz8000).unwrap();
        h.silence(500);
        keys(&mut h, "12");
        h.silence(2000);
        // The 2 is seen at pass 30: it times out a second (50 passes) later.
        let got = collected(&h);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!((got[0].1.as_str(), got[0].2), ("12", true));
        assert_eq!(got[0].0, 80);
        // No key at all: the digits are empty, a second after the start.
        let mut h = Harness::new(Input::new(config).unwrap(), SampleRate::Hz8000).unwrap();
        h.silence(3000);
        assert_eq!(collected(&h), [(50, String::new(), true)]);
    }

    #[test]
    fn a_trigger_starts_it_and_keys_before_it_are_ignored() {
        let config = InputConfig { max_digits: 2, on_event: Some("talk:done".into()), ..InputConfig::default() };
        let mut h = Harness::new(Input::new(config).unwrap(), SampleRate::Hz8000).unwrap();
        keys(&mut h, "9");
        h.deliver(Event::custom("talk:done", serde_json::json!({})));
        h.silence(20);
        keys(&mut h, "45");
        assert_eq!(collected(&h).iter().map(|c| c.1.as_str()).collect::<Vec<_>>(), ["45"]);
    }

    #[test]
    fn only_a_trigger_from_upstream_starts_it_so_a_prompt_chain_runs_forward() {
        // A prompt (stage 0), this input (stage 1), a confirmation (stage 2), as in
        // `[prompt talk, input on talk:done, talk on input]`: the confirmation's own
        // `talk:done` must not start the input again.
        use crate::processor::{Pipeline, Requests, echo::Echo};
        let config = InputConfig { max_digits: 1, on_event: Some("talk:done".into()), ..InputConfig::default() };
        let stages: Vec<Box<dyn Processor>> =
            vec![Box::new(Echo::new(0).unwrap()), Box::new(Input::new(config).unwrap()), Box::new(Echo::new(0).unwrap())];
        let mut pipeline = Pipeline::new(stages);
        let rate = SampleRate::Hz8000;
        let (mut input, mut output) = (vec![0i16; 160], vec![0i16; 160]);
        let mut requests = Requests::new(1600);
        let start = Instant::now();
        let mut pass = |position: u64, events: &[(Option<usize>, Event)]| {
            requests.reset(1600);
            let now = start + Duration::from_millis(20 * position);
            let mut cx = Context::new(now, position, rate, &mut input, true, &mut output, &mut requests);
            pipeline.run(events, &mut cx);
            requests.events().iter().filter(|(_, e)| matches!(e, Event::Input(_))).count()
        };
        let done = Event::custom("talk:done", serde_json::json!({}));
        let key = Event::Dtmf { digit: DtmfDigit::Digit(7), start_ms: None, duration_ms: None, source: crate::call::DtmfSource::Platform };
        assert_eq!(pass(0, &[(Some(2), done.clone())]), 0);
        assert_eq!(pass(1, &[(None, key.clone())]), 0, "a talk after it did not start it");
        assert_eq!(pass(2, &[(Some(0), done)]), 0);
        assert_eq!(pass(3, &[(None, key)]), 1, "the prompt before it did");
    }

    #[test]
    fn bad_parameters_are_refused() {
        for (config, message) in [
            (InputConfig { max_digits: 0, ..InputConfig::default() }, "max_digits must be between 1 and 20"),
            (InputConfig { max_digits: 21, ..InputConfig::default() }, "max_digits"),
            (InputConfig { time_out: 11.0, ..InputConfig::default() }, "time_out must be between 0 and 10"),
        ] {
            assert!(Input::new(config).unwrap_err().to_string().contains(message), "{message}");
        }
    }
}
