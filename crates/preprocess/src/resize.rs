//! PIL's `Image.resize(size, resample)` on an RGB image, emulated exactly
//! (Pillow 13, `Resample.c` and `Geometry.c`), for every filter transformers'
//! image processors name (`resample` 0–5).
//!
//! All but NEAREST are a separable convolution whose support is scaled by the
//! downscale factor (antialiasing), with coefficients normalized per output
//! pixel and converted to fixed point (`PRECISION_BITS` = 22); each pass rounds
//! and clips to uint8. The horizontal pass runs first, over only the rows the
//! vertical pass needs, unless the height shrinks by more than twice as many
//! pixels as the width: then the vertical pass runs first, over every column.
//! NEAREST samples `floor((x + 0.5) * in / out)`, the position accumulated in
//! f64 as Pillow does. `image::imageops::resize` is close to these but not equal.

use crate::decode::Rgb8;

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// A convolution kernel: weight by distance in input pixels (after scaling).
type Kernel = fn(f64) -> f64;

/// A PIL resampling filter (`PIL.Image.Resampling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    Nearest,
    Box,
    Bilinear,
    Hamming,
    Bicubic,
    Lanczos,
}

impl Resample {
    /// The filter PIL numbers `n` (the `resample` of a preprocessor config).
    pub fn from_pil(n: u32) -> Option<Self> {
        Some(match n {
            0 => Self::Nearest,
            1 => Self::Lanczos,
            2 => Self::Bilinear,
            3 => Self::Bicubic,
            4 => Self::Box,
            5 => Self::Hamming,
            _ => return None,
        })
    }

    /// The convolution kernel and its support; `None` for NEAREST.
    fn kernel(self) -> Option<(Kernel, f64)> {
        match self {
            Self::Nearest => None,
            Self::Box => Some((box_filter, 0.5)),
            Self::Bilinear => Some((bilinear, 1.0)),
            Self::Hamming => Some((hamming, 1.0)),
            Self::Bicubic => Some((bicubic, 2.0)),
            Self::Lanczos => Some((lanczos, 3.0)),
        }
    }
}

fn box_filter(x: f64) -> f64 {
    if x > -0.5 && x <= 0.5 {
        1.0
    } else {
        0.0
    }
}

fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

fn hamming(x: f64) -> f64 {
    let x = x.abs();
    if x == 0.0 {
        return 1.0;
    }
    if x >= 1.0 {
        return 0.0;
    }
    let x = x * std::f64::consts::PI;
    // Pillow writes the window's constants as C floats.
    x.sin() / x * (f64::from(0.54f32) + f64::from(0.46f32) * x.cos())
}

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let x = x * std::f64::consts::PI;
    x.sin() / x
}

fn lanczos(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// Fixed-point coefficients of one axis: per output index, the first input index,
/// the number of inputs, and `ksize` weights.
struct Coeffs {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for a box `0..in_size`.
fn coeffs(in_size: usize, out_size: usize, filter: Kernel, support: f64) -> Coeffs {
    let scale = in_size as f32 as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = support * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    let ss = 1.0 / filterscale;
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            *kx = filter((x as f64 + xmin as f64 - center + 0.5) * ss);
            ww += *kx;
        }
        for (x, kx) in k.iter().enumerate().take(n) {
            let w = if ww != 0.0 { kx / ww } else { *kx };
            let fixed = w * f64::from(1u32 << PRECISION_BITS);
            weights[xx * ksize + x] = if w < 0.0 {
                (-0.5 + fixed) as i32
            } else {
                (0.5 + fixed) as i32
            };
        }
        bounds.push((xmin, n));
    }
    Coeffs {
        ksize,
        bounds,
        weights,
    }
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One output sample: `sum(input[start + i*stride] * w[i])`, rounded and clipped.
fn convolve(src: &[u8], start: usize, stride: usize, w: &[i32]) -> u8 {
    let mut acc: i64 = 1 << (PRECISION_BITS - 1);
    for (i, &k) in w.iter().enumerate() {
        acc += i64::from(src[start + i * stride]) * i64::from(k);
    }
    clip8(acc)
}

/// Horizontal pass over rows `row0..row0+rows` of `img`.
fn horizontal(img: &Rgb8, row0: usize, rows: usize, out_w: usize, c: &Coeffs) -> Rgb8 {
    let mut data = vec![0u8; out_w * rows * 3];
    for y in 0..rows {
        let src_row = (row0 + y) * img.width * 3;
        for (xx, &(xmin, n)) in c.bounds.iter().enumerate() {
            let w = &c.weights[xx * c.ksize..xx * c.ksize + n];
            for ch in 0..3 {
                data[(y * out_w + xx) * 3 + ch] =
                    convolve(&img.data, src_row + xmin * 3 + ch, 3, w);
            }
        }
    }
    Rgb8 {
        width: out_w,
        height: rows,
        data,
    }
}

/// Vertical pass; `row0` is subtracted from the coefficients' bounds.
fn vertical(img: &Rgb8, row0: usize, c: &Coeffs) -> Rgb8 {
    let stride = img.width * 3;
    let out_h = c.bounds.len();
    let mut data = vec![0u8; img.width * out_h * 3];
    for (yy, &(ymin, n)) in c.bounds.iter().enumerate() {
        let w = &c.weights[yy * c.ksize..yy * c.ksize + n];
        for x in 0..img.width * 3 {
            data[yy * stride + x] = convolve(&img.data, (ymin - row0) * stride + x, stride, w);
        }
    }
    Rgb8 {
        width: img.width,
        height: out_h,
        data,
    }
}

/// Resizes to `out_w` x `out_h` as PIL's `resize((out_w, out_h), filter)` of an
/// RGB image.
pub fn resize(img: &Rgb8, out_w: usize, out_h: usize, filter: Resample) -> Rgb8 {
    if img.width == out_w && img.height == out_h {
        return img.clone();
    }
    let Some((kernel, support)) = filter.kernel() else {
        return nearest(img, out_w, out_h);
    };
    let (need_h, need_v) = (out_w != img.width, out_h != img.height);
    let cv = coeffs(img.height, out_h, kernel, support);
    let ch = || coeffs(img.width, out_w, kernel, support);
    let shrink_h = img.height as i64 - out_h as i64;
    let shrink_w = img.width as i64 - out_w as i64;
    if shrink_h > 0 && shrink_h > shrink_w * 2 {
        let v = vertical(img, 0, &cv);
        return if need_h {
            horizontal(&v, 0, out_h, out_w, &ch())
        } else {
            v
        };
    }
    if !need_h {
        return vertical(img, 0, &cv);
    }
    let first = cv.bounds.first().map_or(0, |b| b.0);
    let last = cv.bounds.last().map_or(0, |b| b.0 + b.1);
    let h = horizontal(img, first, last - first, out_w, &ch());
    if need_v {
        vertical(&h, first, &cv)
    } else {
        h
    }
}

/// Pillow's NEAREST scaling (`ImagingScaleAffine`): output pixel x reads input
/// `floor(xo)`, with `xo` starting at half a step and advanced by one step in f64;
/// a position that rounding pushes past the edge stays black, as in Pillow.
fn nearest(img: &Rgb8, out_w: usize, out_h: usize) -> Rgb8 {
    let positions = |in_size: usize, out_size: usize| -> Vec<Option<usize>> {
        let step = f64::from(in_size as f32) / out_size as f64;
        let mut at = step * 0.5;
        (0..out_size)
            .map(|_| {
                let i = at as usize;
                at += step;
                (i < in_size).then_some(i)
            })
            .collect()
    };
    let (xs, ys) = (positions(img.width, out_w), positions(img.height, out_h));
    let mut data = vec![0u8; out_w * out_h * 3];
    for (row_out, y) in data.chunks_exact_mut(out_w * 3).zip(&ys) {
        let Some(y) = *y else { continue };
        let row = &img.data[y * img.width * 3..(y + 1) * img.width * 3];
        for (px, x) in row_out.chunks_exact_mut(3).zip(&xs) {
            if let Some(x) = *x {
                px.copy_from_slice(&row[x * 3..x * 3 + 3]);
            }
        }
    }
    Rgb8 {
        width: out_w,
        height: out_h,
        data,
    }
}
