//! The emulator's two-track recording of a call, as a 16-bit stereo WAV.
//!
//! [`StereoRecorder`] rewrites the WAV header at least once per second of audio, so a recording
//! cut off by a crash still opens and holds everything up to the last whole second.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use super::AudioError;
use crate::protocol::SampleRate;

/// Bytes per stereo frame in a recording: two 16-bit samples.
const RECORDING_FRAME_BYTES: u64 = 4;

/// The most frames a recording may hold: a WAV data chunk is limited to 4 GiB (minus the header).
const MAX_RECORDING_FRAMES: u64 = (u32::MAX as u64 - 1024) / RECORDING_FRAME_BYTES;

/// Records a call as a 16-bit stereo WAV at the call rate (left and right are the caller's
/// choice, e.g. what the emulator sent and what the bot sent).
///
/// The header is rewritten at least once per second of audio, so a file cut off by a crash is
/// still a valid WAV holding everything up to the last whole second.
pub struct StereoRecorder {
    writer: hound::WavWriter<BufWriter<File>>,
    path: PathBuf,
    frames_written: u64,
    frames_since_flush: u64,
    flush_interval: u64,
}

impl std::fmt::Debug for StereoRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StereoRecorder").field("path", &self.path).field("frames_written", &self.frames_written).finish_non_exhaustive()
    }
}

impl StereoRecorder {
    /// Creates (or truncates) `path` and writes a valid, empty stereo WAV header at `rate`.
    pub fn create(path: &Path, rate: SampleRate) -> Result<StereoRecorder, AudioError> {
        let spec = hound::WavSpec { channels: 2, sample_rate: rate.hz(), bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
        let write_error = |source| AudioError::WavWrite { path: path.to_path_buf(), source };
        let mut writer = hound::WavWriter::create(path, spec).map_err(write_error)?;
        writer.flush().map_err(write_error)?;
        Ok(StereoRecorder {
            writer,
            path: path.to_path_buf(),
            frames_written: 0,
            frames_since_flush: 0,
            flush_interval: u64::from(rate.hz()),
        })
    }

    /// Appends `max(left.len(), right.len())` frames, interleaving the two tracks; the shorter
    /// track is padded with silence. Fails without writing if the WAV size limit would be passed.
    pub fn write(&mut self, left: &[i16], right: &[i16]) -> Result<(), AudioError> {
        let frames = left.len().max(right.len());
        if self.frames_written.saturating_add(frames as u64) > MAX_RECORDING_FRAMES {
            return Err(AudioError::RecordingFull { path: self.path.clone(), max_frames: MAX_RECORDING_FRAMES });
        }
        for i in 0..frames {
            let l = left.get(i).copied().unwrap_or(0);
            let r = right.get(i).copied().unwrap_or(0);
            self.writer.write_sample(l).and_then(|()| self.writer.write_sample(r)).map_err(|e| self.write_error(e))?;
            self.frames_written += 1;
            self.frames_since_flush += 1;
            if self.frames_since_flush >= self.flush_interval {
                self.writer.flush().map_err(|e| self.write_error(e))?;
                self.frames_since_flush = 0;
            }
        }
        Ok(())
    }

    /// Frames (sample pairs) written so far.
    pub fn frames_written(&self) -> u64 {
        self.frames_written
    }

    /// Finalises the header and closes the file; returns the frames (sample pairs) written.
    pub fn finish(self) -> Result<u64, AudioError> {
        let StereoRecorder { writer, path, frames_written, .. } = self;
        writer.finalize().map_err(|source| AudioError::WavWrite { path, source })?;
        Ok(frames_written)
    }

    fn write_error(&self, source: hound::Error) -> AudioError {
        AudioError::WavWrite { path: self.path.clone(), source }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::audio::Tone;
    use crate::audio::testing::temp_wav;

    #[test]
    fn recording_round_trips_and_pads_the_shorter_track() {
        let path = temp_wav("recording");
        let rate = SampleRate::Hz16000;
        let mut recorder = StereoRecorder::create(&path, rate).unwrap();
        let left: Vec<i16> = (0..320).map(|n| n * 3).collect();
        let right: Vec<i16> = (0..200).map(|n| -n).collect();
        recorder.write(&left, &right).unwrap();
        recorder.write(&[i16::MIN], &[i16::MAX, 42]).unwrap();
        assert_eq!(recorder.finish().unwrap(), 322);

        let mut reader = hound::WavReader::open(&path).unwrap();
        let spec = reader.spec();
        let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
        std::fs::remove_file(&path).ok();
        assert_eq!((spec.channels, spec.sample_rate, spec.bits_per_sample), (2, 16_000, 16));
        let mut expected = Vec::new();
        for (i, &l) in left.iter().enumerate() {
            expected.extend([l, right.get(i).copied().unwrap_or(0)]);
        }
        expected.extend([i16::MIN, i16::MAX, 0, 42]);
        assert_eq!(samples, expected);
    }

    #[test]
    fn recording_cut_off_without_finish_is_still_readable() {
        let path = temp_wav("crash");
        let rate = SampleRate::Hz8000;
        let mut recorder = StereoRecorder::create(&path, rate).unwrap();
        let mut tone = Tone::new(440.0, -12.0, rate).unwrap();
        let mut frame = vec![0; rate.frame_samples()];
        for _ in 0..125 {
            tone.fill(&mut frame);
            recorder.write(&frame, &[]).unwrap();
        }
        assert_eq!(recorder.frames_written(), 20_000);
        // A crash: neither finish() nor hound's finalising Drop runs.
        std::mem::forget(recorder);

        let mut reader = hound::WavReader::open(&path).unwrap();
        assert_eq!(reader.spec().channels, 2);
        let frames = reader.duration();
        let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
        std::fs::remove_file(&path).ok();
        assert!(frames >= 2 * rate.hz(), "only {frames} frames readable");
        let mut replay = Tone::new(440.0, -12.0, rate).unwrap();
        let mut expected = vec![0; frames as usize];
        replay.fill(&mut expected);
        let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
        assert_eq!(left, expected);
        assert!(samples.iter().skip(1).step_by(2).all(|&s| s == 0));
    }

    #[test]
    fn recording_into_a_missing_directory_is_an_error() {
        let path = std::env::temp_dir().join("callpipe-audio-no-such-dir").join("x.wav");
        let err = StereoRecorder::create(&path, SampleRate::Hz8000).unwrap_err();
        assert!(matches!(err, AudioError::WavWrite { .. }), "{err}");
    }
}
