//! The Gemma 3 image processor (transformers' PIL backend, `Gemma3ImageProcessorPil`):
//! decode → RGB → optional pan-and-scan → PIL resize (the config's `resample`,
//! bilinear by default) to the checkpoint's size → rescale (`u8 as f64 *
//! rescale_factor`, then f32) → normalize → CHW f32.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use crate::decode::{decode_rgb, ImageError, ImageLimits, Rgb8};
use crate::pan_scan::PanScanConfig;
use crate::resize::{resize, Resample};

/// One image (or crop) ready for the vision tower: `[3, height, width]` channel-major.
#[derive(Debug, Clone, PartialEq)]
pub struct PixelImage {
    pub pixels: Arc<[f32]>,
    pub height: usize,
    pub width: usize,
}

/// preprocessor_config.json as transformers writes it (nulls mean defaults).
#[derive(Debug, Deserialize)]
struct RawConfig {
    size: Option<RawSize>,
    resample: Option<u32>,
    do_resize: Option<bool>,
    do_rescale: Option<bool>,
    rescale_factor: Option<f64>,
    do_normalize: Option<bool>,
    image_mean: Option<Vec<f32>>,
    image_std: Option<Vec<f32>>,
    do_pan_and_scan: Option<bool>,
    pan_and_scan_min_crop_size: Option<usize>,
    pan_and_scan_max_num_crops: Option<usize>,
    pan_and_scan_min_ratio_to_activate: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct RawSize {
    height: usize,
    width: usize,
}

/// The image processor's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessor {
    pub height: usize,
    pub width: usize,
    /// The resampling filter (`resample`; Gemma 3 writes 2, bilinear).
    pub resample: Resample,
    pub do_resize: bool,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    pub pan_and_scan: PanScanConfig,
    pub limits: ImageLimits,
}

fn triple(v: Option<Vec<f32>>, name: &str) -> Result<[f32; 3], ImageError> {
    match v.as_deref() {
        None => Ok([0.5; 3]),
        Some([x]) => Ok([*x; 3]),
        Some([a, b, c]) => Ok([*a, *b, *c]),
        Some(other) => Err(ImageError::Config(format!(
            "{name} has {} values, expected 3",
            other.len()
        ))),
    }
}

impl ImageProcessor {
    /// Reads the image processor's settings from `dir`: `preprocessor_config.json`,
    /// else the `image_processor` entry of `processor_config.json` (where
    /// transformers 5 saves a processor's parts), as transformers looks for them.
    pub fn load(dir: &Path) -> Result<Self, ImageError> {
        let read = |name: &str| -> Result<Option<String>, ImageError> {
            match std::fs::read_to_string(dir.join(name)) {
                Ok(text) => Ok(Some(text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(ImageError::Config(format!("{name}: {e}"))),
            }
        };
        if let Some(text) = read("preprocessor_config.json")? {
            return Self::from_json_str(&text);
        }
        let Some(text) = read("processor_config.json")? else {
            return Err(ImageError::Config(format!(
                "{} has neither preprocessor_config.json nor processor_config.json",
                dir.display()
            )));
        };
        let processor: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ImageError::Config(format!("processor_config.json: {e}")))?;
        let settings = processor.get("image_processor").ok_or_else(|| {
            ImageError::Config("processor_config.json has no image_processor entry".into())
        })?;
        Self::from_raw(RawConfig::deserialize(settings).map_err(|e| {
            ImageError::Config(format!("processor_config.json image_processor: {e}"))
        })?)
    }

    /// The settings of a preprocessor_config.json.
    pub fn from_json_str(text: &str) -> Result<Self, ImageError> {
        let raw: RawConfig = serde_json::from_str(text)
            .map_err(|e| ImageError::Config(format!("preprocessor_config.json: {e}")))?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawConfig) -> Result<Self, ImageError> {
        let size = raw.size.ok_or_else(|| {
            ImageError::Config("the image processor's settings have no size".into())
        })?;
        if size.height == 0 || size.width == 0 {
            return Err(ImageError::Config("size must be positive".into()));
        }
        let resample = match raw.resample {
            None => Resample::Bilinear,
            Some(n) => Resample::from_pil(n).ok_or_else(|| {
                ImageError::Config(format!(
                    "resample {n} is not a PIL filter transformers uses (0-5)"
                ))
            })?,
        };
        let d = PanScanConfig::default();
        Ok(Self {
            height: size.height,
            width: size.width,
            resample,
            do_resize: raw.do_resize.unwrap_or(true),
            do_rescale: raw.do_rescale.unwrap_or(true),
            rescale_factor: raw.rescale_factor.unwrap_or(1.0 / 255.0),
            do_normalize: raw.do_normalize.unwrap_or(true),
            image_mean: triple(raw.image_mean, "image_mean")?,
            image_std: triple(raw.image_std, "image_std")?,
            pan_and_scan: PanScanConfig {
                enabled: raw.do_pan_and_scan.unwrap_or(d.enabled),
                min_crop_size: raw.pan_and_scan_min_crop_size.unwrap_or(d.min_crop_size),
                max_num_crops: raw.pan_and_scan_max_num_crops.unwrap_or(d.max_num_crops),
                min_ratio_to_activate: raw
                    .pan_and_scan_min_ratio_to_activate
                    .unwrap_or(d.min_ratio_to_activate),
            },
            limits: ImageLimits::default(),
        })
    }

    /// Decodes and preprocesses one image: the image itself, then its pan-and-scan
    /// crops when `pan_and_scan` (or, when `None`, the config) enables them.
    pub fn process(
        &self,
        bytes: &[u8],
        pan_and_scan: Option<bool>,
    ) -> Result<Vec<PixelImage>, ImageError> {
        let rgb = decode_rgb(bytes, &self.limits)?;
        self.process_rgb(&rgb, pan_and_scan)
    }

    /// As `process`, from decoded RGB.
    pub fn process_rgb(
        &self,
        rgb: &Rgb8,
        pan_and_scan: Option<bool>,
    ) -> Result<Vec<PixelImage>, ImageError> {
        let mut images = vec![self.to_pixels(rgb)];
        if pan_and_scan.unwrap_or(self.pan_and_scan.enabled) {
            for c in crate::pan_scan::pan_and_scan(rgb, &self.pan_and_scan) {
                images.push(self.to_pixels(&c));
            }
        }
        Ok(images)
    }

    /// Resize, rescale and normalize one RGB image into CHW f32.
    pub fn to_pixels(&self, rgb: &Rgb8) -> PixelImage {
        let img = if self.do_resize {
            std::borrow::Cow::Owned(resize(rgb, self.width, self.height, self.resample))
        } else {
            std::borrow::Cow::Borrowed(rgb)
        };
        let plane = img.width * img.height;
        let mut out = vec![0f32; 3 * plane];
        for (p, px) in img.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * plane + p] = self.value(px[c], c);
            }
        }
        PixelImage {
            pixels: Arc::from(out),
            height: img.height,
            width: img.width,
        }
    }

    fn value(&self, v: u8, c: usize) -> f32 {
        let mut x = if self.do_rescale {
            (f64::from(v) * self.rescale_factor) as f32
        } else {
            f32::from(v)
        };
        if self.do_normalize {
            x = (x - self.image_mean[c]) / self.image_std[c];
        }
        x
    }
}
