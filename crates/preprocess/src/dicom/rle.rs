//! DICOM RLE Lossless (PS3.5 annex G): a header of segment offsets, then one
//! PackBits-coded segment per byte plane, most significant byte first.

use super::pixels::Layout;
use super::DicomError;

/// One RLE frame → native little-endian, interleaved pixel data.
pub(super) fn decode(frame: &[u8], layout: &Layout) -> Result<Vec<u8>, DicomError> {
    let bytes_per_sample = layout.bits_allocated / 8;
    let segments = layout.samples * bytes_per_sample;
    let header = frame.get(..64).ok_or(DicomError::Truncated)?;
    let word = |i: usize| {
        let b = &header[4 * i..4 * i + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
    };
    if word(0) != segments {
        return Err(DicomError::Corrupt(format!(
            "the RLE frame has {} segments, the layout needs {segments}",
            word(0)
        )));
    }
    let pixels = layout.rows * layout.columns;
    let stride = layout.samples * bytes_per_sample;
    let mut out = vec![0u8; pixels * stride];
    for s in 0..segments {
        let start = word(1 + s);
        let end = if s + 1 < segments {
            word(2 + s)
        } else {
            frame.len()
        };
        let coded = frame.get(start..end).ok_or(DicomError::Truncated)?;
        let plane = unpack_bits(coded, pixels)?;
        // Segment s holds byte (bytes_per_sample - 1 - s % bytes) of sample s / bytes.
        let offset = (s / bytes_per_sample) * bytes_per_sample
            + (bytes_per_sample - 1 - s % bytes_per_sample);
        for (i, &b) in plane.iter().enumerate() {
            out[i * stride + offset] = b;
        }
    }
    Ok(out)
}

/// A PackBits segment, decoded to exactly `len` bytes (a trailing pad byte is
/// allowed; fewer bytes is an error).
fn unpack_bits(coded: &[u8], len: usize) -> Result<Vec<u8>, DicomError> {
    let mut out = Vec::with_capacity(len);
    let mut i = 0;
    while i < coded.len() && out.len() < len {
        let n = coded[i] as i8;
        i += 1;
        if n >= 0 {
            let count = n as usize + 1;
            let run = coded.get(i..i + count).ok_or(DicomError::Truncated)?;
            out.extend_from_slice(run);
            i += count;
        } else if n != -128 {
            let b = *coded.get(i).ok_or(DicomError::Truncated)?;
            out.resize(out.len() + (1 - n as isize) as usize, b);
            i += 1;
        }
    }
    if out.len() < len {
        return Err(DicomError::Truncated);
    }
    out.truncate(len);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packbits_literals_runs_and_noops() {
        assert_eq!(
            unpack_bits(&[2, 1, 2, 3, 0xFE, 9, 0x80, 0, 7], 7).unwrap(),
            vec![1, 2, 3, 9, 9, 9, 7]
        );
        assert_eq!(unpack_bits(&[3, 1, 2], 4), Err(DicomError::Truncated));
        assert_eq!(unpack_bits(&[0xFF, 5], 3), Err(DicomError::Truncated));
    }

    #[test]
    fn sixteen_bit_segments_are_high_byte_first() {
        let layout = Layout {
            rows: 1,
            columns: 2,
            samples: 1,
            bits_allocated: 16,
            bits_stored: 16,
            high_bit: 15,
            signed: false,
            planar: false,
        };
        let mut frame = vec![0u8; 64];
        frame[0] = 2;
        frame[4] = 64;
        frame[8] = 67;
        frame.extend_from_slice(&[1, 0x12, 0x34, 1, 0x56, 0x78]);
        assert_eq!(
            decode(&frame, &layout).unwrap(),
            vec![0x56, 0x12, 0x78, 0x34]
        );
    }
}
