//! DICOM images (PS3.10 files) in image parts: the pixels of a single-frame
//! image, decoded and brought to the 8-bit RGB MedGemma reads (see `display`).
//!
//! Transfer syntaxes: implicit and explicit VR little endian, deflated explicit
//! VR little endian, RLE lossless, JPEG baseline and extended (8-bit) and JPEG
//! lossless. Others (JPEG 2000, JPEG-LS, big endian, video) are refused with
//! their UID. Errors never quote a value of the file other than the technical
//! attributes named in them.

mod display;
mod jpeg;
mod parse;
mod pixels;
mod rle;

use thiserror::Error;

use crate::decode::{ImageLimits, Rgb8};
use parse::{data_set, parse, Syntax};
use pixels::Layout;

pub use parse::is_part10;

/// Why a DICOM image was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DicomError {
    #[error("the transfer syntax {0} is not supported (uncompressed, deflated, RLE and JPEG baseline or lossless are; send other images as PNG)")]
    TransferSyntax(String),
    #[error("{0} is not supported")]
    Unsupported(String),
    #[error("the file has no {0}")]
    Missing(&'static str),
    #[error("the file is truncated")]
    Truncated,
    #[error("{0}")]
    Corrupt(String),
    #[error("the image has {0} frames; send one frame per image part")]
    Frames(u32),
}

/// A DICOM file's image as 8-bit RGB. `limits.max_pixels` is checked on Rows ×
/// Columns before any pixel is decoded.
pub fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<Rgb8, crate::ImageError> {
    decode_checked(bytes, limits).map_err(|e| match e {
        Checked::Limit(e) => e,
        Checked::Dicom(e) => crate::ImageError::Dicom(e),
    })
}

enum Checked {
    Limit(crate::ImageError),
    Dicom(DicomError),
}

impl From<DicomError> for Checked {
    fn from(e: DicomError) -> Self {
        Self::Dicom(e)
    }
}

fn decode_checked(bytes: &[u8], limits: &ImageLimits) -> Result<Rgb8, Checked> {
    let (syntax, data) = data_set(bytes, limits.max_bytes.saturating_mul(8))?;
    let parsed = parse(syntax, &data)?;
    let a = &parsed.attributes;
    let layout = Layout::from_attributes(a)?;
    if layout.rows == 0 || layout.columns == 0 {
        return Err(Checked::Limit(crate::ImageError::ZeroSize));
    }
    let pixel_count = (layout.rows * layout.columns) as u64;
    if pixel_count > limits.max_pixels {
        return Err(Checked::Limit(crate::ImageError::TooManyPixels {
            width: layout.columns as u32,
            height: layout.rows as u32,
            limit: limits.max_pixels,
        }));
    }
    check_frames(a.frames.as_deref())?;
    check_photometric(a, &layout, syntax)?;
    let pixels = parsed
        .pixels
        .as_ref()
        .ok_or(DicomError::Missing("PixelData"))?;
    let mut samples = pixels::frame(syntax, &layout, pixels)?;
    // JPEG decoders turn their own YCbCr into RGB.
    if a.photometric == "YBR_FULL" && !jpeg(syntax) {
        samples = pixels::ybr_full_to_rgb(samples);
    }
    Ok(display::to_rgb(
        a,
        layout.bits_allocated,
        layout.columns,
        layout.rows,
        samples,
    )?)
}

fn check_frames(frames: Option<&str>) -> Result<(), DicomError> {
    let Some(frames) = frames.filter(|f| !f.is_empty()) else {
        return Ok(());
    };
    match frames.parse::<u32>() {
        Ok(0) => Err(DicomError::Corrupt("NumberOfFrames is 0".into())),
        Ok(1) => Ok(()),
        Ok(n) => Err(DicomError::Frames(n)),
        Err(_) => Err(DicomError::Corrupt("NumberOfFrames is not a number".into())),
    }
}

/// The photometric interpretations read: MONOCHROME1/2 with one sample; RGB,
/// YBR_FULL and (as JPEG decodes it to RGB) YBR_FULL_422 with three.
fn check_photometric(
    a: &parse::Attributes,
    layout: &Layout,
    syntax: Syntax,
) -> Result<(), DicomError> {
    let ok = match (layout.samples, a.photometric.as_str()) {
        (1, "MONOCHROME1" | "MONOCHROME2") => true,
        (3, "RGB" | "YBR_FULL") => true,
        (3, "YBR_FULL_422") => jpeg(syntax),
        _ => false,
    };
    if ok {
        return Ok(());
    }
    if a.photometric.is_empty() {
        return Err(DicomError::Missing("PhotometricInterpretation"));
    }
    // Only a defined term is quoted: the element could hold anything.
    let name = match DEFINED_PHOTOMETRIC.contains(&a.photometric.as_str()) {
        true => a.photometric.as_str(),
        false => "(not a defined term)",
    };
    Err(DicomError::Unsupported(format!(
        "PhotometricInterpretation {name} with {} samples per pixel",
        layout.samples
    )))
}

/// The photometric interpretations DICOM defines (PS3.3 C.7.6.3.1.2).
const DEFINED_PHOTOMETRIC: &[&str] = &[
    "MONOCHROME1",
    "MONOCHROME2",
    "PALETTE COLOR",
    "RGB",
    "HSV",
    "ARGB",
    "CMYK",
    "YBR_FULL",
    "YBR_FULL_422",
    "YBR_PARTIAL_422",
    "YBR_PARTIAL_420",
    "YBR_ICT",
    "YBR_RCT",
    "XYB",
];

fn jpeg(syntax: Syntax) -> bool {
    matches!(
        syntax,
        Syntax::Encapsulated(parse::Codec::JpegLossy | parse::Codec::JpegLossless)
    )
}
