//! Stored values → the 8-bit RGB image MedGemma reads, as Google's MedGemma
//! serving code prepares DICOM images for the model:
//!
//! - **CT**: Hounsfield units (`round(stored × RescaleSlope + RescaleIntercept)`,
//!   ties to even) in three windows, one per channel, the encoding MedGemma was
//!   trained on: red −1024..1024 HU (wide), green 135..215 HU, blue 0..80 HU.
//! - **MR**: the stored values scaled over their own range (MR values have no
//!   calibrated meaning).
//! - **Every other monochrome modality** (CR and DX radiographs, mammography,
//!   ultrasound, …): the modality rescale, then the file's first VOI window
//!   (WindowCenter/WindowWidth) when it has one; otherwise 8-bit unsigned values
//!   as stored, and deeper values scaled over their own range.
//! - MONOCHROME1 (white is low) is inverted; colour is kept as RGB.
//!
//! A window `(center, width)` maps `center ± floor(width / 2)` linearly onto
//! 0..255 after clipping, rounding ties to even (Google's `window_accurate`). A
//! width under 2 is a threshold at the center (values at or above it white); a
//! width under 1, which DICOM does not allow, is ignored.

use super::parse::Attributes;
use super::pixels::Samples;
use super::DicomError;
use crate::decode::Rgb8;

/// The three CT windows `(center, width)`: red, green, blue.
const CT_WINDOWS: [(f64, f64); 3] = [(0.0, 2048.0), (175.0, 80.0), (40.0, 80.0)];

/// How a monochrome image reaches 8 bits.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mapping {
    /// Three windows over rounded, rescaled values.
    Ct,
    /// The rescaled values in one window.
    Window { center: f64, width: f64 },
    /// 8-bit unsigned rescaled values, clamped.
    AsStored,
    /// The values over their own minimum..maximum (all white when flat).
    OwnRange,
}

/// The 8-bit RGB image for a frame's samples.
pub(super) fn to_rgb(
    a: &Attributes,
    bits_allocated: usize,
    width: usize,
    height: usize,
    samples: Samples,
) -> Result<Rgb8, DicomError> {
    let data = match samples {
        Samples::Color(rgb) => rgb,
        Samples::Mono(values) => {
            let gray = mono(a, bits_allocated, &values)?;
            if gray.len() == values.len() {
                gray.iter().flat_map(|&g| [g, g, g]).collect()
            } else {
                gray
            }
        }
    };
    Ok(Rgb8 {
        width,
        height,
        data,
    })
}

/// Monochrome values → gray (one byte per pixel) or, for CT, RGB.
fn mono(a: &Attributes, bits_allocated: usize, values: &[i32]) -> Result<Vec<u8>, DicomError> {
    let mapping = mapping(a, bits_allocated)?;
    let slope = a.rescale_slope.unwrap_or(1.0);
    let intercept = a.rescale_intercept.unwrap_or(0.0);
    let rescaled = |v: i32| f64::from(v) * slope + intercept;
    let mut out: Vec<u8> = match mapping {
        Mapping::Ct => {
            let mut rgb = Vec::with_capacity(values.len() * 3);
            for &v in values {
                let hu = rescaled(v).round_ties_even();
                rgb.extend(CT_WINDOWS.map(|(c, w)| window(hu, c, w)));
            }
            return Ok(rgb);
        }
        Mapping::Window { center, width } => values
            .iter()
            .map(|&v| window(rescaled(v), center, width))
            .collect(),
        Mapping::AsStored => values
            .iter()
            .map(|&v| rescaled(v).round_ties_even().clamp(0.0, 255.0) as u8)
            .collect(),
        // MR over its stored values, as Google's code; others over the
        // rescaled ones, so that a negative slope inverts.
        Mapping::OwnRange if a.modality == "MR" => own_range(values.iter().map(|&v| f64::from(v))),
        Mapping::OwnRange => own_range(values.iter().map(|&v| rescaled(v))),
    };
    if a.photometric == "MONOCHROME1" {
        out.iter_mut().for_each(|v| *v = 255 - *v);
    }
    Ok(out)
}

fn mapping(a: &Attributes, bits_allocated: usize) -> Result<Mapping, DicomError> {
    match a.modality.as_str() {
        "CT" => return Ok(Mapping::Ct),
        "MR" => return Ok(Mapping::OwnRange),
        _ => {}
    }
    if a.modality_lut {
        return Err(DicomError::Unsupported(
            "a Modality LUT Sequence (send the image with RescaleSlope and RescaleIntercept, or as PNG)"
                .into(),
        ));
    }
    Ok(match (a.window_center, a.window_width) {
        (Some(center), Some(width)) if width >= 1.0 => Mapping::Window { center, width },
        _ if bits_allocated == 8 => Mapping::AsStored,
        _ => Mapping::OwnRange,
    })
}

/// `center ± floor(width / 2)` onto 0..255, clipped, ties to even.
fn window(x: f64, center: f64, width: f64) -> u8 {
    let half = (width / 2.0).floor();
    let (lo, hi) = (center - half, center + half);
    if hi <= lo {
        return if x >= center { 255 } else { 0 };
    }
    let x = x.clamp(lo, hi);
    if x == hi {
        return 255;
    }
    let slope = 255.0 / (hi - lo);
    (slope * (x - lo)).round_ties_even() as u8
}

/// `(v - min) / (max - min) × 255`, ties to even; 255 everywhere when flat.
fn own_range(values: impl Iterator<Item = f64> + Clone) -> Vec<u8> {
    let lo = values.clone().fold(f64::INFINITY, f64::min);
    let hi = values.clone().fold(f64::NEG_INFINITY, f64::max);
    let range = hi - lo;
    values
        .map(|v| {
            if range > 0.0 {
                ((v - lo) / range * 255.0).round_ties_even() as u8
            } else {
                255
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_clip_and_round_ties_to_even() {
        // -1024..1024 onto 0..255: 0 HU is 127.5, a tie, so 128 (even).
        assert_eq!(window(0.0, 0.0, 2048.0), 128);
        assert_eq!(window(-2000.0, 0.0, 2048.0), 0);
        assert_eq!(window(1024.0, 0.0, 2048.0), 255);
        assert_eq!(window(3000.0, 0.0, 2048.0), 255);
        // 135..215: 175 is 127.5 → 128; 136 is 3.1875 → 3.
        assert_eq!(window(175.0, 175.0, 80.0), 128);
        assert_eq!(window(136.0, 175.0, 80.0), 3);
        // An odd width: floor(81 / 2) = 40 each side.
        assert_eq!(window(215.0, 175.0, 81.0), 255);
    }

    #[test]
    fn ct_is_three_windows_and_mono1_is_inverted() {
        let ct = Attributes {
            modality: "CT".into(),
            rescale_slope: Some(1.0),
            rescale_intercept: Some(-1024.0),
            ..Attributes::default()
        };
        // Stored 1064 → 40 HU: wide 132, soft tissue 0, brain 128.
        assert_eq!(mono(&ct, 16, &[1064]).unwrap(), vec![132, 0, 128]);
        let cr = Attributes {
            modality: "CR".into(),
            photometric: "MONOCHROME1".into(),
            ..Attributes::default()
        };
        assert_eq!(mono(&cr, 16, &[0, 50, 100]).unwrap(), vec![255, 127, 0]);
        assert_eq!(mono(&cr, 8, &[0, 50, 100]).unwrap(), vec![255, 205, 155]);
        let flat = Attributes {
            modality: "MR".into(),
            ..Attributes::default()
        };
        assert_eq!(mono(&flat, 16, &[7, 7]).unwrap(), vec![255, 255]);
        let negative = Attributes {
            modality: "DX".into(),
            rescale_slope: Some(-1.0),
            ..Attributes::default()
        };
        assert_eq!(mono(&negative, 16, &[0, 100]).unwrap(), vec![255, 0]);
    }

    #[test]
    fn a_modality_lut_sequence_is_refused_where_it_would_apply() {
        let a = Attributes {
            modality: "DX".into(),
            modality_lut: true,
            ..Attributes::default()
        };
        assert!(matches!(
            mono(&a, 16, &[1]),
            Err(DicomError::Unsupported(_))
        ));
    }
}
