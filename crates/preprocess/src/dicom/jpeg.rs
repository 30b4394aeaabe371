//! JPEG-compressed DICOM frames. Lossy 8-bit JPEG goes through the libjpeg
//! decoder every other JPEG of ours goes through; lossless JPEG (8 to 16 bits)
//! through `jpeg-decoder`. The frame's own size must match Rows and Columns
//! before anything is decoded.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use jpeg_decoder::PixelFormat;

use super::pixels::{from_decoded, Layout, Samples};
use super::DicomError;
use crate::decode::ImageError;

pub(super) fn decode(data: &[u8], layout: &Layout) -> Result<Samples, DicomError> {
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(data));
    guarded(|| decoder.read_info())?;
    let info = decoder
        .info()
        .ok_or_else(|| DicomError::Corrupt("the JPEG frame has no header".into()))?;
    if (usize::from(info.height), usize::from(info.width)) != (layout.rows, layout.columns) {
        return Err(DicomError::Corrupt(format!(
            "the JPEG frame is {}x{}, the attributes say {}x{}",
            info.width, info.height, layout.columns, layout.rows
        )));
    }
    let lossless = info.coding_process == jpeg_decoder::CodingProcess::Lossless;
    if !lossless {
        return lossy(data, layout);
    }
    let pixels = guarded(|| decoder.decode())?;
    let values: Vec<u32> = match info.pixel_format {
        PixelFormat::L8 => pixels.iter().map(|&b| u32::from(b)).collect(),
        PixelFormat::L16 => pixels
            .chunks_exact(2)
            .map(|c| u32::from(u16::from_ne_bytes([c[0], c[1]])))
            .collect(),
        PixelFormat::RGB24 if layout.samples == 3 => return Ok(Samples::Color(pixels)),
        other => {
            return Err(DicomError::Unsupported(format!(
                "lossless JPEG with pixel format {other:?}"
            )))
        }
    };
    if layout.samples != 1 {
        return Err(DicomError::Corrupt(
            "a one-component JPEG for a colour image".into(),
        ));
    }
    Ok(from_decoded(layout, &values))
}

/// Baseline or extended 8-bit JPEG, decoded as PIL decodes it.
fn lossy(data: &[u8], layout: &Layout) -> Result<Samples, DicomError> {
    if layout.bits_stored > 8 {
        return Err(DicomError::Unsupported(format!(
            "lossy JPEG with {}-bit samples",
            layout.bits_stored
        )));
    }
    if !crate::jpeg::is_complete(data) {
        return Err(DicomError::Truncated);
    }
    let rgb = crate::jpeg_decode::decode(data)
        .map_err(|e| match e {
            ImageError::Corrupt(msg) => DicomError::Corrupt(msg),
            other => DicomError::Corrupt(other.to_string()),
        })?
        .ok_or_else(|| DicomError::Unsupported("CMYK JPEG".into()))?;
    Ok(if layout.samples == 3 {
        Samples::Color(rgb.data)
    } else {
        let first: Vec<u32> = rgb.data.chunks_exact(3).map(|p| u32::from(p[0])).collect();
        from_decoded(layout, &first)
    })
}

/// Runs a `jpeg-decoder` call, turning its errors and panics into ours.
fn guarded<T>(f: impl FnOnce() -> Result<T, jpeg_decoder::Error>) -> Result<T, DicomError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(jpeg_decoder::Error::Unsupported(what))) => {
            Err(DicomError::Unsupported(format!("JPEG with {what:?}")))
        }
        Ok(Err(e)) => Err(DicomError::Corrupt(format!("JPEG: {e}"))),
        Err(_) => Err(DicomError::Corrupt(
            "JPEG: the frame cannot be decoded".into(),
        )),
    }
}
