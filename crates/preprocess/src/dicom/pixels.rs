//! A DICOM image's stored pixel values: native (uncompressed) pixel data
//! unpacked, RLE and JPEG fragments decoded.

use super::parse::{Attributes, Codec, PixelData, Syntax};
use super::DicomError;

/// The layout the attributes give the pixel data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Layout {
    pub rows: usize,
    pub columns: usize,
    /// 1 (monochrome) or 3 (colour).
    pub samples: usize,
    pub bits_allocated: usize,
    pub bits_stored: usize,
    pub high_bit: usize,
    pub signed: bool,
    pub planar: bool,
}

/// One frame's stored values.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Samples {
    /// One value per pixel, sign-extended from `bits_stored` bits.
    Mono(Vec<i32>),
    /// Three 8-bit values per pixel, interleaved, in the photometric
    /// interpretation's colour space.
    Color(Vec<u8>),
}

impl Layout {
    pub fn from_attributes(a: &Attributes) -> Result<Self, DicomError> {
        let need = |v: Option<u16>, name| v.map(usize::from).ok_or(DicomError::Missing(name));
        let rows = need(a.rows, "Rows")?;
        let columns = need(a.columns, "Columns")?;
        let samples = need(a.samples_per_pixel, "SamplesPerPixel")?;
        let bits_allocated = need(a.bits_allocated, "BitsAllocated")?;
        let bits_stored = need(a.bits_stored, "BitsStored")?;
        let high_bit = a
            .high_bit
            .map_or(bits_stored.saturating_sub(1), usize::from);
        let layout = Self {
            rows,
            columns,
            samples,
            bits_allocated,
            bits_stored,
            high_bit,
            signed: a.signed,
            planar: a.planar_configuration == 1,
        };
        layout.check()?;
        Ok(layout)
    }

    fn check(&self) -> Result<(), DicomError> {
        let unsupported = |what: String| Err(DicomError::Unsupported(what));
        if self.samples != 1 && self.samples != 3 {
            return unsupported(format!("{} samples per pixel", self.samples));
        }
        if !matches!(self.bits_allocated, 8 | 16 | 32) {
            return unsupported(format!("{} bits allocated", self.bits_allocated));
        }
        if self.samples == 3 && self.bits_allocated != 8 {
            return unsupported(format!(
                "colour with {} bits per sample",
                self.bits_allocated
            ));
        }
        if self.bits_stored > 31 && self.bits_stored <= self.bits_allocated {
            return unsupported(format!("BitsStored {} (at most 31)", self.bits_stored));
        }
        if self.bits_stored == 0
            || self.bits_stored > self.bits_allocated
            || self.high_bit + 1 < self.bits_stored
            || self.high_bit >= self.bits_allocated
        {
            return Err(DicomError::Corrupt(format!(
                "BitsStored {} and HighBit {} do not fit BitsAllocated {}",
                self.bits_stored, self.high_bit, self.bits_allocated
            )));
        }
        Ok(())
    }

    fn pixels(&self) -> usize {
        self.rows * self.columns
    }

    fn frame_bytes(&self) -> usize {
        self.pixels() * self.samples * self.bits_allocated / 8
    }

    /// A stored value's bits as a number (`raw`: the whole allocated unit).
    fn value(&self, raw: u32) -> i32 {
        let shift = self.high_bit + 1 - self.bits_stored;
        let v = (raw >> shift) & ((1u32 << self.bits_stored) - 1);
        if self.signed && v >> (self.bits_stored - 1) == 1 {
            (v as i64 - (1i64 << self.bits_stored)) as i32
        } else {
            v as i32
        }
    }

    /// Native little-endian pixel data of one frame → samples.
    fn unpack(&self, data: &[u8]) -> Result<Samples, DicomError> {
        let data = data
            .get(..self.frame_bytes())
            .ok_or(DicomError::Truncated)?;
        if self.samples == 3 {
            return Ok(Samples::Color(if self.planar {
                interleave(data, self.pixels())
            } else {
                data.to_vec()
            }));
        }
        let raw: Vec<u32> = match self.bits_allocated {
            8 => data.iter().map(|&b| u32::from(b)).collect(),
            16 => data
                .chunks_exact(2)
                .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            _ => data
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        };
        Ok(Samples::Mono(
            raw.into_iter().map(|r| self.value(r)).collect(),
        ))
    }
}

/// Planar R…G…B… → interleaved RGB.
fn interleave(planes: &[u8], pixels: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(pixels * 3);
    for i in 0..pixels {
        out.extend_from_slice(&[planes[i], planes[pixels + i], planes[2 * pixels + i]]);
    }
    out
}

/// The first (only) frame's samples.
pub(super) fn frame(
    syntax: Syntax,
    layout: &Layout,
    pixels: &PixelData<'_>,
) -> Result<Samples, DicomError> {
    match (syntax, pixels) {
        (Syntax::Encapsulated(codec), PixelData::Fragments(fragments)) => {
            let data: Vec<u8> = fragments.concat();
            if data.is_empty() {
                return Err(DicomError::Missing("PixelData"));
            }
            match codec {
                // RLE decodes to interleaved samples whatever the attribute says.
                Codec::Rle => Layout {
                    planar: false,
                    ..*layout
                }
                .unpack(&super::rle::decode(&data, layout)?),
                Codec::JpegLossy | Codec::JpegLossless => super::jpeg::decode(&data, layout),
            }
        }
        (Syntax::Encapsulated(_), PixelData::Native(_)) => Err(DicomError::Corrupt(
            "a compressed transfer syntax with native pixel data".into(),
        )),
        (_, PixelData::Native(data)) => layout.unpack(data),
        (_, PixelData::Fragments(_)) => Err(DicomError::Corrupt(
            "encapsulated pixel data in an uncompressed transfer syntax".into(),
        )),
    }
}

/// YBR_FULL → RGB, as pydicom converts it (float32 matrix, `floor(x + 0.5)`,
/// clipped).
pub(super) fn ybr_full_to_rgb(samples: Samples) -> Samples {
    let Samples::Color(ybr) = samples else {
        return samples;
    };
    let rgb = ybr
        .chunks_exact(3)
        .flat_map(|p| {
            let y = f32::from(p[0]);
            let cb = f32::from(p[1]) - 128.0;
            let cr = f32::from(p[2]) - 128.0;
            let g_cb = -0.114f32 * 1.772 / 0.587;
            let g_cr = -0.299f32 * 1.402 / 0.587;
            [y + 1.402 * cr, y + g_cb * cb + g_cr * cr, y + 1.772 * cb]
                .map(|v| (v + 0.5).floor().clamp(0.0, 255.0) as u8)
        })
        .collect();
    Samples::Color(rgb)
}

/// Decoded values (from a codec, one per sample, as the codec gives them) →
/// samples, with the layout's bit selection and sign.
pub(super) fn from_decoded(layout: &Layout, values: &[u32]) -> Samples {
    Samples::Mono(values.iter().map(|&v| layout.value(v)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(bits_allocated: usize, bits_stored: usize, signed: bool) -> Layout {
        Layout {
            rows: 1,
            columns: 2,
            samples: 1,
            bits_allocated,
            bits_stored,
            high_bit: bits_stored - 1,
            signed,
            planar: false,
        }
    }

    #[test]
    fn values_are_masked_and_sign_extended() {
        let l = layout(16, 12, true);
        assert_eq!(l.value(0x0FFF), -1);
        assert_eq!(l.value(0x07FF), 2047);
        assert_eq!(l.value(0xF800), -2048);
        let u = layout(16, 12, false);
        assert_eq!(u.value(0xFFFF), 4095);
        let s16 = layout(16, 16, true);
        assert_eq!(s16.value(0x8000), -32768);
        let shifted = Layout {
            high_bit: 15,
            ..layout(16, 12, false)
        };
        assert_eq!(shifted.value(0xFFF0), 4095);
    }

    #[test]
    fn native_frames_unpack_and_short_ones_are_refused() {
        let l = layout(16, 16, true);
        assert_eq!(
            l.unpack(&[0x00, 0x80, 0x01, 0x00]).unwrap(),
            Samples::Mono(vec![-32768, 1])
        );
        assert_eq!(l.unpack(&[0, 0, 1]), Err(DicomError::Truncated));
        let planar = Layout {
            samples: 3,
            bits_allocated: 8,
            bits_stored: 8,
            high_bit: 7,
            planar: true,
            ..l
        };
        assert_eq!(
            planar.unpack(&[1, 2, 3, 4, 5, 6]).unwrap(),
            Samples::Color(vec![1, 3, 5, 2, 4, 6])
        );
    }

    #[test]
    fn layouts_out_of_range_are_refused() {
        for (ba, bs, hb) in [
            (12, 12, 11),
            (16, 0, 0),
            (16, 17, 16),
            (8, 8, 8),
            (16, 12, 10),
        ] {
            let l = Layout {
                bits_allocated: ba,
                bits_stored: bs,
                high_bit: hb,
                ..layout(16, 16, false)
            };
            assert!(l.check().is_err(), "{ba} {bs} {hb}");
        }
    }
}
