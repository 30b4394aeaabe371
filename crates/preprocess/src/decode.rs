//! Image bytes → 8-bit RGB, as transformers' Gemma 3 processor sees them.
//!
//! Formats: PNG, JPEG (decoded as PIL decodes it, see `jpeg_decode`), WebP, GIF
//! (first frame), BMP, TIFF, and DICOM files (see `dicom`). Limits are checked on
//! the byte length and then on the header's dimensions before any pixel is
//! decoded. Conversion follows transformers 5.x `convert_to_rgb`: an image with
//! alpha (or a transparency key) is composited onto white with PIL's
//! `alpha_composite` arithmetic, then converted to RGB; grayscale is replicated.
//!
//! An EXIF orientation (JPEG, PNG, WebP, TIFF) is applied, as transformers'
//! `load_image` applies it (`ImageOps.exif_transpose`) to images given as URLs or
//! base64.
//!
//! 16-bit grayscale: PIL would clip every value above 255 to white. We window the
//! image over its own range instead, `v8 = ((v - min) * 255 + (max - min) / 2) / (max - min)`
//! in integers (all 0 when the image is flat); 16-bit colour keeps the high byte as PIL does.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};
use thiserror::Error;

/// Size limits applied before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    pub max_bytes: usize,
    pub max_pixels: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self {
            max_bytes: 20 * 1024 * 1024,
            max_pixels: 50_000_000,
        }
    }
}

/// Why an image was refused. Messages never contain image data.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ImageError {
    #[error("the image is empty (0 bytes)")]
    Empty,
    #[error("the image is {bytes} bytes, more than the limit of {limit}")]
    TooManyBytes { bytes: usize, limit: usize },
    #[error("the image is {width}x{height} pixels, more than the limit of {limit} pixels")]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("unsupported image format (PNG, JPEG, WebP, GIF, BMP, TIFF and DICOM are accepted)")]
    UnsupportedFormat,
    #[error("the image has zero width or height")]
    ZeroSize,
    #[error("the image data is truncated")]
    Truncated,
    #[error("the image data is corrupt: {0}")]
    Corrupt(String),
    #[error("invalid image settings: {0}")]
    Config(String),
    #[error("DICOM: {0}")]
    Dicom(#[from] crate::dicom::DicomError),
}

/// An 8-bit RGB image, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8 {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

const FORMATS: &[ImageFormat] = &[
    ImageFormat::Png,
    ImageFormat::Jpeg,
    ImageFormat::WebP,
    ImageFormat::Gif,
    ImageFormat::Bmp,
    ImageFormat::Tiff,
];

fn reader(bytes: &[u8]) -> Result<ImageReader<Cursor<&[u8]>>, ImageError> {
    let format = image::guess_format(bytes).map_err(|_| ImageError::UnsupportedFormat)?;
    if !FORMATS.contains(&format) {
        return Err(ImageError::UnsupportedFormat);
    }
    let mut r = ImageReader::with_format(Cursor::new(bytes), format);
    r.no_limits();
    Ok(r)
}

/// Checks the limits (bytes, then header dimensions) and decodes to RGB.
pub fn decode_rgb(bytes: &[u8], limits: &ImageLimits) -> Result<Rgb8, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(ImageError::TooManyBytes {
            bytes: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    if crate::dicom::is_part10(bytes) {
        return crate::dicom::decode(bytes, limits);
    }
    let (width, height) = reader(bytes)?.into_dimensions().map_err(map_err)?;
    if width == 0 || height == 0 {
        return Err(ImageError::ZeroSize);
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(ImageError::TooManyPixels {
            width,
            height,
            limit: limits.max_pixels,
        });
    }
    let rgb = decode_pixels(bytes, limits, (width, height))?;
    Ok(upright(rgb, orientation(bytes)))
}

/// The pixels of an image whose header passed the limits, as stored.
fn decode_pixels(
    bytes: &[u8],
    limits: &ImageLimits,
    (width, height): (u32, u32),
) -> Result<Rgb8, ImageError> {
    if image::guess_format(bytes).ok() == Some(ImageFormat::Jpeg) {
        // JPEG decoders fill a cut-off file with grey without a word.
        if !crate::jpeg::is_complete(bytes) {
            return Err(ImageError::Truncated);
        }
        if let Some(rgb) = crate::jpeg_decode::decode(bytes)? {
            return Ok(rgb);
        }
    }
    let mut r = reader(bytes)?;
    let mut l = image::Limits::default();
    l.max_image_width = Some(width);
    l.max_image_height = Some(height);
    l.max_alloc = Some(limits.max_pixels.saturating_mul(16).max(1 << 20));
    r.limits(l);
    let img = r.decode().map_err(map_err)?;
    Ok(to_rgb(img))
}

/// The orientation the file's EXIF data gives (none when it has none or it
/// cannot be read).
fn orientation(bytes: &[u8]) -> Orientation {
    reader(bytes)
        .ok()
        .and_then(|r| r.into_decoder().ok())
        .and_then(|mut d| d.orientation().ok())
        .unwrap_or(Orientation::NoTransforms)
}

/// The image turned upright as its EXIF orientation says, as transformers'
/// `load_image` turns it (`PIL.ImageOps.exif_transpose`) before the processor: a
/// phone photo of a film taken in portrait reaches the model the right way up.
fn upright(rgb: Rgb8, orientation: Orientation) -> Rgb8 {
    if orientation == Orientation::NoTransforms || rgb.data.len() != rgb.width * rgb.height * 3 {
        return rgb;
    }
    let (w, h) = (rgb.width as u32, rgb.height as u32);
    let Some(buffer) = image::RgbImage::from_raw(w, h, rgb.data) else {
        return Rgb8 {
            width: 0,
            height: 0,
            data: Vec::new(),
        };
    };
    let mut img = DynamicImage::ImageRgb8(buffer);
    img.apply_orientation(orientation);
    let out = img.into_rgb8();
    Rgb8 {
        width: out.width() as usize,
        height: out.height() as usize,
        data: out.into_raw(),
    }
}

fn map_err(e: image::ImageError) -> ImageError {
    use image::ImageError as E;
    match e {
        E::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => ImageError::Truncated,
        E::IoError(io) => ImageError::Corrupt(io.to_string()),
        E::Unsupported(_) => ImageError::UnsupportedFormat,
        E::Limits(_) => {
            ImageError::Corrupt("the image needs more memory than its size allows".into())
        }
        E::Decoding(d) => {
            let msg = d.to_string();
            let lower = msg.to_lowercase();
            if lower.contains("eof") || lower.contains("end of") || lower.contains("truncat") {
                ImageError::Truncated
            } else {
                ImageError::Corrupt(msg)
            }
        }
        other => ImageError::Corrupt(other.to_string()),
    }
}

/// PIL's `alpha_composite` of one channel over opaque white (checked against
/// Pillow on every (value, alpha) pair).
fn over_white(c: u8, a: u8) -> u8 {
    if a == 0 {
        return 255;
    }
    let (c, a) = (u32::from(c), u32::from(a));
    let tmp = c * a * 128 + 255 * (255 - a) * 128 + (0x80 << 7);
    ((((tmp >> 8) + tmp) >> 8) >> 7) as u8
}

/// 16-bit samples windowed to 8 bits over their min..max (see the module docs).
pub fn window_16_to_8(values: &[u16]) -> Vec<u8> {
    let lo = values.iter().copied().min().unwrap_or(0);
    let hi = values.iter().copied().max().unwrap_or(0);
    let range = u64::from(hi - lo);
    values
        .iter()
        .map(|&v| {
            ((u64::from(v - lo) * 255 + range / 2)
                .checked_div(range)
                .unwrap_or(0)) as u8
        })
        .collect()
}

fn from_gray(width: usize, height: usize, gray: &[u8], alpha: Option<&[u8]>) -> Rgb8 {
    let mut data = Vec::with_capacity(width * height * 3);
    for (i, &g) in gray.iter().enumerate() {
        let v = alpha.map_or(g, |a| over_white(g, a[i]));
        data.extend_from_slice(&[v, v, v]);
    }
    Rgb8 {
        width,
        height,
        data,
    }
}

fn composite_rgba(width: usize, height: usize, rgba: &[u8]) -> Rgb8 {
    let data = rgba
        .chunks_exact(4)
        .flat_map(|p| {
            [
                over_white(p[0], p[3]),
                over_white(p[1], p[3]),
                over_white(p[2], p[3]),
            ]
        })
        .collect();
    Rgb8 {
        width,
        height,
        data,
    }
}

fn to_rgb(img: DynamicImage) -> Rgb8 {
    let (w, h) = (img.width() as usize, img.height() as usize);
    match img {
        DynamicImage::ImageLuma8(g) => from_gray(w, h, g.as_raw(), None),
        DynamicImage::ImageLuma16(g) => from_gray(w, h, &window_16_to_8(g.as_raw()), None),
        DynamicImage::ImageLumaA8(g) => {
            let (l, a): (Vec<u8>, Vec<u8>) =
                g.as_raw().chunks_exact(2).map(|p| (p[0], p[1])).unzip();
            from_gray(w, h, &l, Some(&a))
        }
        DynamicImage::ImageLumaA16(g) => {
            let (l, a): (Vec<u16>, Vec<u8>) = g
                .as_raw()
                .chunks_exact(2)
                .map(|p| (p[0], (p[1] >> 8) as u8))
                .unzip();
            from_gray(w, h, &window_16_to_8(&l), Some(&a))
        }
        DynamicImage::ImageRgb16(rgb) => Rgb8 {
            width: w,
            height: h,
            data: rgb.as_raw().iter().map(|&v| (v >> 8) as u8).collect(),
        },
        DynamicImage::ImageRgba16(rgba) => {
            let high: Vec<u8> = rgba.as_raw().iter().map(|&v| (v >> 8) as u8).collect();
            composite_rgba(w, h, &high)
        }
        DynamicImage::ImageRgb8(rgb) => Rgb8 {
            width: w,
            height: h,
            data: rgb.into_raw(),
        },
        other if other.color().has_alpha() => composite_rgba(w, h, other.into_rgba8().as_raw()),
        // 16-bit colour keeps the high byte, as PIL's 16-bit PNG unpacking does;
        // float colour is scaled to 0..255 by the image crate.
        other => Rgb8 {
            width: w,
            height: h,
            data: other.into_rgb8().into_raw(),
        },
    }
}
