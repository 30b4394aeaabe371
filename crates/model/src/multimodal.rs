//! Images into the decoder: the vision part of a Gemma3ForConditionalGeneration
//! checkpoint, and the merge of image features into the text embeddings.
//!
//! Merge rule (GEMMA3.md §4): text ids are embedded and scaled by sqrt(hidden)
//! first; each image's features then REPLACE the rows at its soft-token positions,
//! unscaled. One image's soft tokens form one attention group (bidirectional
//! within the image, causal otherwise — see mask.rs).

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use medgemma_core::ImageInput;

use crate::config::MultimodalConfig;
use crate::error::{ModelError, Result};
use crate::model::first_file;
use crate::projector::Projector;
use crate::vision::VisionTower;
use crate::weights::Checkpoint;

/// Vision tower prefixes in the wild (GEMMA3.md §7): published, transformers'
/// module tree, and what transformers 5.2x `save_pretrained` writes.
const VISION_LAYOUTS: &[&str] = &[
    "vision_tower.vision_model",
    "model.vision_tower.vision_model",
    "vision_tower",
    "model.vision_tower",
];
const PROJECTOR_LAYOUTS: &[&str] = &["multi_modal_projector", "model.multi_modal_projector"];

/// SigLIP, the projector, and the token ids and sizes that tie them to the decoder.
#[derive(Debug, Clone)]
pub struct VisionPart {
    pub tower: VisionTower,
    pub projector: Projector,
    pub config: MultimodalConfig,
}

impl VisionPart {
    /// Loads the tower and projector under whichever key layout the checkpoint uses.
    pub fn load(
        mm: &MultimodalConfig,
        text_hidden: usize,
        checkpoint: &Checkpoint,
        vb: &VarBuilder,
    ) -> Result<Self> {
        let tower_prefix = probe(
            checkpoint,
            VISION_LAYOUTS,
            "embeddings.patch_embedding.weight",
        )?;
        let proj_prefix = probe(checkpoint, PROJECTOR_LAYOUTS, "mm_input_projection_weight")?;
        Self::new(mm, text_hidden, vb.pp(tower_prefix), vb.pp(proj_prefix))
    }

    /// Builds the tower from `tower_vb` (pointing at the SigLIP vision model) and the
    /// projector from `projector_vb`, whatever backs them: a checkpoint, or random
    /// weights made in memory (see synthetic.rs).
    pub fn new(
        mm: &MultimodalConfig,
        text_hidden: usize,
        tower_vb: VarBuilder,
        projector_vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            tower: VisionTower::new(&mm.vision, tower_vb)?,
            projector: Projector::new(mm, text_hidden, projector_vb)?,
            config: mm.clone(),
        })
    }

    /// `[images, 3, size, size]` pixels → `[images, mm_tokens_per_image, text_hidden]`.
    pub fn encode(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        self.projector.forward(&self.tower.forward(pixels)?)
    }

    /// Whether one preprocessed image fits the tower's input.
    pub fn check(&self, img: &ImageInput) -> std::result::Result<(), String> {
        let v = &self.config.vision;
        let (c, s) = (v.num_channels, v.image_size);
        if img.channels != c || img.height != s || img.width != s {
            return Err(format!(
                "an image is {}x{}x{}, the vision tower takes {c}x{s}x{s}",
                img.channels, img.height, img.width
            ));
        }
        if img.pixels.len() != c * s * s {
            return Err(format!(
                "an image has {} values for {c}x{s}x{s} pixels",
                img.pixels.len()
            ));
        }
        Ok(())
    }

    /// Stacks preprocessed images into one `[images, channels, size, size]` f32 tensor,
    /// checking each against the tower's input size.
    pub fn pixels(
        &self,
        images: &[&ImageInput],
        device: &Device,
    ) -> std::result::Result<Tensor, String> {
        let v = &self.config.vision;
        let (c, s) = (v.num_channels, v.image_size);
        let mut data = Vec::with_capacity(images.len() * c * s * s);
        for img in images {
            self.check(img)?;
            data.extend_from_slice(&img.pixels);
        }
        Tensor::from_vec(data, (images.len(), c, s, s), device).map_err(|e| e.to_string())
    }
}

fn probe(checkpoint: &Checkpoint, layouts: &[&'static str], leaf: &str) -> Result<&'static str> {
    layouts
        .iter()
        .copied()
        .find(|p| checkpoint.contains(&format!("{p}.{leaf}")))
        .ok_or_else(|| ModelError::Weights {
            file: first_file(checkpoint),
            msg: format!("no {leaf} found under any of {}", layouts.join(", ")),
        })
}

/// Replaces rows of `embeds` `[tokens, hidden]`: image `i`'s features
/// (`features` `[images, per_image, hidden]`) go to rows `starts[i]..starts[i]+per_image`.
pub fn merge_image_features(
    embeds: &Tensor,
    features: &Tensor,
    starts: &[usize],
) -> candle_core::Result<Tensor> {
    let (n, per_image, hidden) = features.dims3()?;
    let tokens = embeds.dim(0)?;
    if n != starts.len() {
        candle_core::bail!("{n} image features for {} placements", starts.len());
    }
    // Gather from [embeds; features]: row t keeps itself unless an image covers it.
    let mut index: Vec<u32> = (0..tokens as u32).collect();
    for (i, &start) in starts.iter().enumerate() {
        if start + per_image > tokens {
            candle_core::bail!("image {i} at {start} runs past {tokens} tokens");
        }
        for j in 0..per_image {
            index[start + j] = (tokens + i * per_image + j) as u32;
        }
    }
    let features = features
        .reshape((n * per_image, hidden))?
        .to_dtype(embeds.dtype())?;
    let all = Tensor::cat(&[embeds, &features], 0)?;
    let index = Tensor::new(index.as_slice(), embeds.device())?;
    all.index_select(&index, 0)
}
