//! Whether a JPEG file is whole.
//!
//! The JPEG decoder fills whatever a cut-off file lacks with grey and reports
//! nothing, so a half-uploaded X-ray would be read as if it were complete.
//! transformers' processor, through PIL, refuses such a file ("image file is
//! truncated"); so do we: the marker segments are walked from the start of the
//! file, the entropy-coded data of every scan is skipped to the marker that ends
//! it, and the file is whole when this reaches the end-of-image marker. Data after
//! that marker is ignored, as decoders do.

/// Start of image, end of image, start of scan.
const SOI: u8 = 0xd8;
const EOI: u8 = 0xd9;
const SOS: u8 = 0xda;

/// Whether `bytes` (a JPEG file) runs through its end-of-image marker.
pub fn is_complete(bytes: &[u8]) -> bool {
    if bytes.len() < 4 || bytes[0] != 0xff || bytes[1] != SOI {
        return false;
    }
    let mut at = 2;
    loop {
        let Some(marker) = next_marker(bytes, at) else {
            return false;
        };
        let after = marker.at + 2;
        match marker.code {
            EOI => return true,
            // Standalone markers carry no length.
            0x01 | 0xd0..=0xd7 => at = after,
            code => {
                let Some(len) = segment_len(bytes, after) else {
                    return false;
                };
                at = after + len;
                if code == SOS {
                    let Some(end) = scan_end(bytes, at) else {
                        return false;
                    };
                    at = end;
                }
            }
        }
    }
}

struct Marker {
    /// Offset of the marker's 0xff.
    at: usize,
    code: u8,
}

/// The first marker from `at` on: bytes before it that are not a marker (which
/// libjpeg skips with a warning, and PIL accepts) and 0xff fill bytes are passed
/// over; `None` at the end of the data.
fn next_marker(bytes: &[u8], mut at: usize) -> Option<Marker> {
    loop {
        at += bytes.get(at..)?.iter().position(|&b| b == 0xff)?;
        while *bytes.get(at + 1)? == 0xff {
            at += 1;
        }
        let code = bytes[at + 1];
        if code != 0x00 {
            return Some(Marker { at, code });
        }
        at += 2;
    }
}

/// A segment's length field at `at` (it counts itself), if the whole segment is there.
fn segment_len(bytes: &[u8], at: usize) -> Option<usize> {
    let hi = *bytes.get(at)?;
    let lo = *bytes.get(at + 1)?;
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    (len >= 2 && at + len <= bytes.len()).then_some(len)
}

/// The offset of the marker that ends the entropy-coded data starting at `at`:
/// a 0xff followed by neither a stuffed 0x00 nor a restart marker.
fn scan_end(bytes: &[u8], mut at: usize) -> Option<usize> {
    loop {
        at += bytes.get(at..)?.iter().position(|&b| b == 0xff)?;
        match *bytes.get(at + 1)? {
            0x00 | 0xd0..=0xd7 => at += 2,
            0xff => at += 1,
            _ => return Some(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SOI, a comment, a scan whose data holds a stuffed 0xff and a restart, EOI.
    fn tiny() -> Vec<u8> {
        let mut j = vec![0xff, SOI];
        j.extend([0xff, 0xfe, 0x00, 0x05, b'h', b'i', b'!']);
        j.extend([0xff, SOS, 0x00, 0x03, 0x01]);
        j.extend([0x12, 0xff, 0x00, 0x34, 0xff, 0xd3, 0x56]);
        j.extend([0xff, 0xff, EOI]);
        j
    }

    #[test]
    fn whole_files_pass_and_every_cut_fails() {
        let j = tiny();
        assert!(is_complete(&j));
        for cut in 0..j.len() {
            assert!(!is_complete(&j[..cut]), "cut at {cut}");
        }
        let mut trailing = j.clone();
        trailing.extend([0, 0, 0x42]);
        assert!(is_complete(&trailing));
    }

    #[test]
    fn stray_bytes_between_segments_are_passed_over() {
        let mut j = tiny();
        // Garbage before the scan's marker, as some writers leave.
        let sos = j.windows(2).position(|w| w == [0xff, SOS]).unwrap();
        j.splice(sos..sos, [0x00, 0x13, 0x37]);
        assert!(is_complete(&j));
        assert!(!is_complete(&j[..j.len() - 1]));
    }

    #[test]
    fn an_end_marker_inside_a_segment_does_not_count() {
        // An EXIF-style segment holding a whole thumbnail (its own SOI..EOI), then
        // the main image cut inside its scan.
        let mut j = vec![
            0xff, SOI, 0xff, 0xe1, 0x00, 0x08, 0xff, SOI, 0xff, EOI, 0, 0,
        ];
        j.extend([0xff, SOS, 0x00, 0x03, 0x01, 0x12, 0x34]);
        assert!(!is_complete(&j));
    }
}
