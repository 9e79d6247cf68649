//! The few functions of libespeak-ng's C API that callpipe uses (`speak_lib.h`), and safe
//! wrappers around them. The library keeps one global state per process and is not
//! thread-safe: only the synthesis thread calls these.

use std::ffi::{CStr, CString, c_char, c_int, c_short, c_uint, c_void};
use std::path::PathBuf;

/// `AUDIO_OUTPUT_SYNCHRONOUS`: `espeak_Synth` returns when done, calling the callback with
/// the audio as it goes.
const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
/// `espeakINITIALIZE_DONT_EXIT`: report errors instead of exiting the process.
const INITIALIZE_DONT_EXIT: c_int = 0x8000;
/// `POS_CHARACTER`.
const POS_CHARACTER: c_int = 1;
/// `espeakCHARS_UTF8`.
const CHARS_UTF8: c_uint = 1;
/// `espeakSSML`.
const SSML: c_uint = 0x10;
/// `EE_OK`.
const OK: c_int = 0;

/// `t_espeak_callback`: audio samples (or none, at the end), their number, the events.
pub type Callback = extern "C" fn(*mut c_short, c_int, *mut c_void) -> c_int;

#[link(name = "espeak-ng")]
unsafe extern "C" {
    fn espeak_Initialize(output: c_int, buflength: c_int, path: *const c_char, options: c_int) -> c_int;
    fn espeak_SetSynthCallback(callback: Callback);
    fn espeak_SetVoiceByName(name: *const c_char) -> c_int;
    fn espeak_Info(path_data: *mut *const c_char) -> *const c_char;
    #[allow(clippy::too_many_arguments)]
    fn espeak_Synth(
        text: *const c_void,
        size: usize,
        position: c_uint,
        position_type: c_int,
        end_position: c_uint,
        flags: c_uint,
        unique_identifier: *mut c_uint,
        user_data: *mut c_void,
    ) -> c_int;
}

/// The library, initialized: its output rate and where its data lives.
#[derive(Debug)]
pub struct Espeak {
    /// The rate of the samples the callback gets (22,050 Hz for espeak-ng's voices).
    pub rate_hz: u32,
    /// The `espeak-ng-data` directory.
    pub data: PathBuf,
}

impl Espeak {
    /// Initializes the library for synchronous synthesis into `callback`, with buffers of
    /// `buffer_ms`. Call once per process, on the thread that will synthesize.
    pub fn initialize(buffer_ms: u32, callback: Callback) -> Result<Espeak, String> {
        // SAFETY: a null path selects the installed data; the library copies what it needs.
        let rate = unsafe { espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, buffer_ms as c_int, std::ptr::null(), INITIALIZE_DONT_EXIT) };
        if rate <= 0 {
            return Err("libespeak-ng could not initialize (is espeak-ng-data installed?)".into());
        }
        let mut data: *const c_char = std::ptr::null();
        // SAFETY: espeak_Info writes a pointer to a static string into `data` (or leaves it).
        unsafe {
            espeak_SetSynthCallback(callback);
            espeak_Info(&mut data);
        }
        let data = if data.is_null() {
            PathBuf::from("/usr/lib/x86_64-linux-gnu/espeak-ng-data")
        } else {
            // SAFETY: a NUL-terminated string owned by the library, valid for the process.
            PathBuf::from(unsafe { CStr::from_ptr(data) }.to_string_lossy().into_owned())
        };
        Ok(Espeak { rate_hz: rate as u32, data })
    }

    /// Selects a voice by name (`en-gb`, `de`, `en-gb+f3`); false when it does not exist.
    pub fn set_voice(&self, name: &str) -> bool {
        let Ok(name) = CString::new(name) else { return false };
        // SAFETY: a valid NUL-terminated string.
        unsafe { espeak_SetVoiceByName(name.as_ptr()) == OK }
    }

    /// Synthesizes `text` (SSML when `ssml`), calling the callback with the audio before it
    /// returns. Errors when the library refuses the text.
    pub fn synth(&self, text: &str, ssml: bool) -> Result<(), String> {
        let text = CString::new(text.replace('\0', " ")).map_err(|e| e.to_string())?;
        let flags = CHARS_UTF8 | if ssml { SSML } else { 0 };
        // SAFETY: `text` is NUL-terminated and outlives the synchronous call.
        let status = unsafe {
            espeak_Synth(
                text.as_ptr().cast(),
                text.as_bytes_with_nul().len(),
                0,
                POS_CHARACTER,
                0,
                flags,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if status == OK { Ok(()) } else { Err(format!("libespeak-ng refused the text (error {status})")) }
    }
}
