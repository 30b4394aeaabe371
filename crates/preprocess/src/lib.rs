//! Text and images in, text out: the checkpoint's tokenizer and chat template,
//! image decoding and preprocessing, prompt expansion for images, and
//! incremental detokenization for streaming.

mod bytes;
pub mod call_opening;
pub mod decode;
pub mod detok;
pub mod dicom;
pub mod error;
mod jpeg;
mod jpeg_decode;
mod json_matcher;
pub mod json_mode;
pub mod output_rule;
pub mod pan_scan;
pub mod prompt;
pub mod resize;
pub mod schema;
pub mod template;
pub mod tokenizer;
pub mod vision;

pub use decode::{decode_rgb, ImageError, ImageLimits, Rgb8};
pub use detok::IncrementalDetokenizer;
pub use error::PreprocessError;
pub use output_rule::{OutputRule, RuleError, ToolRule};
pub use pan_scan::PanScanConfig;
pub use prompt::ImageTokens;
pub use template::{ChatTemplate, TemplateMessage};
pub use tokenizer::{SpecialTokens, TextProcessor};
pub use vision::{ImageProcessor, PixelImage};
