//! The tag at the start of each frame of a tagged call, which an echo brings back: the frame's
//! sequence number and send time, so that round trips, loss, duplicates and reordering can be
//! measured.

/// Bytes of the tag at the start of each tagged frame: sequence (u32 LE), send time in ns since
/// the run's epoch (u64 LE), and a marker.
pub const TAG_BYTES: usize = 16;
const TAG_MARKER: [u8; 4] = *b"cpl1";

/// Writes the tag of frame `seq`, sent `sent_ns` after the run's epoch, over the start of
/// `frame` (a frame shorter than a tag is left alone).
pub(super) fn write(frame: &mut [u8], seq: u32, sent_ns: u64) {
    if let Some(tag) = frame.get_mut(..TAG_BYTES) {
        tag[..4].copy_from_slice(&seq.to_le_bytes());
        tag[4..12].copy_from_slice(&sent_ns.to_le_bytes());
        tag[12..].copy_from_slice(&TAG_MARKER);
    }
}

/// The (sequence, send time in ns) a frame's tag holds, or `None` for a frame without one.
pub(super) fn read(frame: &[u8]) -> Option<(u32, u64)> {
    let tag = frame.get(..TAG_BYTES)?;
    if tag[12..] != TAG_MARKER {
        return None;
    }
    let seq = u32::from_le_bytes([tag[0], tag[1], tag[2], tag[3]]);
    let mut ns = [0u8; 8];
    ns.copy_from_slice(&tag[4..12]);
    Some((seq, u64::from_le_bytes(ns)))
}
