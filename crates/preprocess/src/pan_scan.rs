//! Gemma 3 pan-and-scan (GEMMA3.md §5, transformers' `Gemma3ImageProcessor.pan_and_scan`):
//! an image whose aspect ratio is extreme enough is also cut into 2..=max crops
//! along its long side, taken from the original (before resizing).

use crate::decode::Rgb8;

/// Pan-and-scan settings; transformers' processor defaults when enabled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PanScanConfig {
    /// Off by default, as in the processor.
    pub enabled: bool,
    pub min_crop_size: usize,
    pub max_num_crops: usize,
    pub min_ratio_to_activate: f64,
}

impl Default for PanScanConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            min_crop_size: 256,
            max_num_crops: 4,
            min_ratio_to_activate: 1.2,
        }
    }
}

/// Number of crops along (width, height), or `None` when the image is not cut.
fn grid(w: usize, h: usize, cfg: &PanScanConfig) -> Option<(usize, usize)> {
    let (long, short) = if w >= h { (w, h) } else { (h, w) };
    let ratio = long as f64 / short as f64;
    if ratio < cfg.min_ratio_to_activate {
        return None;
    }
    let n = ((ratio + 0.5).floor() as usize)
        .min(long / cfg.min_crop_size.max(1))
        .max(2)
        .min(cfg.max_num_crops);
    let (nw, nh) = if w >= h { (n, 1) } else { (1, n) };
    let (cw, ch) = (w.div_ceil(nw), h.div_ceil(nh));
    (cw.min(ch) >= cfg.min_crop_size).then_some((nw, nh))
}

fn crop(img: &Rgb8, x0: usize, y0: usize, cw: usize, ch: usize) -> Rgb8 {
    // Like numpy slicing, a crop at the edge is cut short by the image border.
    let (x1, y1) = ((x0 + cw).min(img.width), (y0 + ch).min(img.height));
    let mut data = Vec::with_capacity((x1 - x0) * (y1 - y0) * 3);
    for y in y0..y1 {
        let row = y * img.width * 3;
        data.extend_from_slice(&img.data[row + x0 * 3..row + x1 * 3]);
    }
    Rgb8 {
        width: x1 - x0,
        height: y1 - y0,
        data,
    }
}

/// The crops of `img` in row-major order (empty when pan-and-scan does not apply).
pub fn pan_and_scan(img: &Rgb8, cfg: &PanScanConfig) -> Vec<Rgb8> {
    let Some((nw, nh)) = grid(img.width, img.height, cfg) else {
        return Vec::new();
    };
    let (cw, ch) = (img.width.div_ceil(nw), img.height.div_ceil(nh));
    let mut out = Vec::with_capacity(nw * nh);
    for j in 0..nh {
        for i in 0..nw {
            out.push(crop(img, i * cw, j * ch, cw, ch));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> PanScanConfig {
        PanScanConfig {
            enabled: true,
            ..Default::default()
        }
    }

    #[test]
    fn grids_follow_transformers() {
        assert_eq!(grid(768, 256, &on()), Some((3, 1)));
        assert_eq!(grid(256, 768, &on()), Some((1, 3)));
        assert_eq!(grid(600, 240, &on()), None, "crops under 256 px");
        assert_eq!(grid(300, 290, &on()), None, "ratio under 1.2");
        assert_eq!(grid(4000, 300, &on()), Some((4, 1)), "at most 4 crops");
        assert_eq!(grid(620, 500, &on()), Some((2, 1)), "at least 2 crops");
    }
}
