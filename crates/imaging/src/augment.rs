//! Seeded data augmentation on canonical square images.
//!
//! One call to [`augment`] runs at most four passes over the pixels:
//!
//! 1. random resized crop, horizontal flip and rotation, composed into one inverse-mapped affine
//!    warp with bilinear sampling (black outside the source);
//! 2. brightness and contrast through a 256-entry lookup table;
//! 3. an optional separable Gaussian blur;
//! 4. additive Gaussian noise, drawn from a table of normal quantiles.
//!
//! All randomness comes from the generator passed in; [`sample_rng`] derives one per sample from
//! seed, epoch and sample index, so results never depend on thread scheduling.

use crate::types::GreyImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// Augmentation parameters; each transform is off when its strength is zero.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AugmentConfig {
    /// Random resized crop: range of the crop's area as a share of the image, within
    /// `[0.01, 1]` (off at `(1, 1)`).
    pub crop_scale: (f32, f32),
    /// Random resized crop: range of the crop's aspect ratio (width / height), sampled
    /// log-uniformly.
    pub crop_ratio: (f32, f32),
    /// Probability of a horizontal flip.
    pub hflip_probability: f32,
    /// Largest rotation in degrees (uniform in ±this).
    pub max_rotation_degrees: f32,
    /// Brightness shift as a share of full scale (uniform in ±this).
    pub brightness: f32,
    /// Contrast factor range (uniform in 1±this), around the image's mean intensity.
    pub contrast: f32,
    /// Standard deviation of additive Gaussian noise, in intensity units (0–255).
    pub noise_std: f32,
    /// Probability of a Gaussian blur.
    pub blur_probability: f32,
    /// Largest blur sigma in pixels (the sigma is uniform in `[min(0.1, this), this]`).
    pub max_blur_sigma: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            crop_scale: (0.8, 1.0),
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
            hflip_probability: 0.5,
            max_rotation_degrees: 10.0,
            brightness: 0.1,
            contrast: 0.1,
            noise_std: 3.0,
            blur_probability: 0.2,
            max_blur_sigma: 1.0,
        }
    }
}

impl AugmentConfig {
    /// Every transform off: [`augment`] then returns its input unchanged.
    pub fn none() -> Self {
        Self {
            crop_scale: (1.0, 1.0),
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
            hflip_probability: 0.0,
            max_rotation_degrees: 0.0,
            brightness: 0.0,
            contrast: 0.0,
            noise_std: 0.0,
            blur_probability: 0.0,
            max_blur_sigma: 0.0,
        }
    }
}

/// One step of the splitmix64 generator: a bijective, well-mixing 64-bit hash.
fn splitmix64(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The random generator for one sample: a pure function of seed, epoch and sample index, so the
/// same seed and epoch give the same batch regardless of thread scheduling.
pub fn sample_rng(seed: u64, epoch: u64, index: u64) -> ChaCha8Rng {
    // Chained bijections: for a fixed prefix, distinct values of the next input give distinct
    // states, and the mixing decorrelates neighbouring seeds, epochs and indices.
    let mut state = splitmix64(splitmix64(splitmix64(seed) ^ epoch) ^ index);
    let mut key = [0u8; 32];
    for chunk in key.chunks_exact_mut(8) {
        state = splitmix64(state);
        chunk.copy_from_slice(&state.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

/// Uniform in `[low, high)` (or `[high, low)`); never panics, unlike `random_range`, on empty,
/// reversed or non-finite bounds (non-finite bounds give `low`, or 0 when `low` is non-finite).
fn uniform(rng: &mut ChaCha8Rng, low: f32, high: f32) -> f32 {
    let t: f32 = rng.random();
    let value = low + (high - low) * t;
    if value.is_finite() {
        value
    } else if low.is_finite() {
        low
    } else {
        0.0
    }
}

/// A probability clamped to `[0, 1]`, NaN counting as 0.
fn probability(p: f32) -> f32 {
    if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) }
}

/// A strength that is usable: finite and positive; anything else means "off".
fn strength(value: f32) -> Option<f32> {
    (value.is_finite() && value > 0.0).then_some(value)
}

/// `true` with probability `p`; draws nothing when `p` is 0.
fn chance(rng: &mut ChaCha8Rng, p: f32) -> bool {
    let p = probability(p);
    p > 0.0 && rng.random::<f32>() < p
}

/// The crop window in source pixel coordinates: centre and size.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Crop {
    pub(crate) center_x: f32,
    pub(crate) center_y: f32,
    pub(crate) width: f32,
    pub(crate) height: f32,
}

/// Samples a random resized crop as torchvision does: ten tries at a random area share and
/// log-uniform aspect ratio that fit inside the image, then a centred crop with the ratio
/// clamped to the allowed range. `None` when cropping is off.
fn sample_crop(
    rng: &mut ChaCha8Rng,
    config: &AugmentConfig,
    width: f32,
    height: f32,
) -> Option<Crop> {
    let (mut scale_low, mut scale_high) = config.crop_scale;
    if !(scale_low.is_finite() && scale_high.is_finite()) {
        return None;
    }
    if scale_low > scale_high {
        std::mem::swap(&mut scale_low, &mut scale_high);
    }
    let (scale_low, scale_high) = (scale_low.clamp(0.01, 1.0), scale_high.clamp(0.01, 1.0));
    if scale_low >= 1.0 {
        return None;
    }
    let (ratio_low, ratio_high) = {
        let (a, b) = config.crop_ratio;
        let valid = |r: f32| r.is_finite() && r > 0.0;
        if valid(a) && valid(b) {
            (a.min(b), a.max(b))
        } else {
            (1.0, 1.0)
        }
    };
    let (log_low, log_high) = (ratio_low.ln(), ratio_high.ln());
    let area = width * height;
    for _ in 0..10 {
        let target = area * uniform(rng, scale_low, scale_high);
        let ratio = uniform(rng, log_low, log_high).exp();
        let (w, h) = ((target * ratio).sqrt(), (target / ratio).sqrt());
        if w > 0.0 && h > 0.0 && w <= width && h <= height {
            let x0 = uniform(rng, 0.0, width - w);
            let y0 = uniform(rng, 0.0, height - h);
            return Some(Crop {
                center_x: x0 + w / 2.0,
                center_y: y0 + h / 2.0,
                width: w,
                height: h,
            });
        }
    }
    let in_ratio = width / height;
    let (w, h) = if in_ratio < ratio_low {
        (width, width / ratio_low)
    } else if in_ratio > ratio_high {
        (height * ratio_high, height)
    } else {
        (width, height)
    };
    Some(Crop {
        center_x: width / 2.0,
        center_y: height / 2.0,
        width: w,
        height: h,
    })
}

/// Applies the configured random transforms to a square image, returning one of the same size.
///
/// Non-square images are handled too (the output keeps the input's width and height). With
/// [`AugmentConfig::none`] the input is returned unchanged. Invalid settings (NaN, negative
/// strengths, reversed ranges) switch the affected transform off or are clamped; they never
/// panic. An image whose pixel buffer does not match its size is returned unchanged.
pub fn augment(image: &GreyImage, config: &AugmentConfig, rng: &mut ChaCha8Rng) -> GreyImage {
    let (width, height) = (image.width as usize, image.height as usize);
    if width == 0 || height == 0 || image.pixels.len() != width * height {
        return image.clone();
    }

    // Draw every random parameter first, in a fixed order.
    let crop = sample_crop(rng, config, width as f32, height as f32);
    let flip = chance(rng, config.hflip_probability);
    let angle = strength(config.max_rotation_degrees)
        .map(|max| uniform(rng, -max.min(180.0), max.min(180.0)).to_radians())
        .unwrap_or(0.0);
    let brightness = strength(config.brightness)
        .map(|b| uniform(rng, -b, b) * 255.0)
        .unwrap_or(0.0);
    let contrast = strength(config.contrast)
        .map(|c| (1.0 + uniform(rng, -c, c)).max(0.0))
        .unwrap_or(1.0);
    let blur_sigma = match strength(config.max_blur_sigma) {
        Some(max) if chance(rng, config.blur_probability) => Some(uniform(rng, max.min(0.1), max)),
        _ => None,
    };
    let noise_std = strength(config.noise_std);

    // 1. Geometry.
    let mut out = if crop.is_none() && angle == 0.0 {
        if flip { mirror(image) } else { image.clone() }
    } else {
        warp(image, crop, flip, angle)
    };

    // 2. Brightness and contrast.
    if brightness != 0.0 || contrast != 1.0 {
        let mean = if contrast != 1.0 {
            mean_intensity(&out.pixels)
        } else {
            0.0
        };
        map_intensities(&mut out.pixels, |v| {
            (v - mean) * contrast + mean + brightness
        });
    }

    // 3. Blur.
    if let Some(sigma) = blur_sigma {
        gaussian_blur(&mut out, sigma);
    }

    // 4. Noise.
    if let Some(std) = noise_std {
        add_gaussian_noise(&mut out.pixels, std, rng.random());
    }
    out
}

/// Mean intensity of a pixel buffer (0 when empty).
pub(crate) fn mean_intensity(pixels: &[u8]) -> f32 {
    if pixels.is_empty() {
        return 0.0;
    }
    pixels.iter().map(|&p| u64::from(p)).sum::<u64>() as f32 / pixels.len() as f32
}

/// Replaces every intensity `v` by `map(v)`, rounded half up and saturated to 0–255, through a
/// 256-entry lookup table (so `map` runs 256 times whatever the image size).
pub(crate) fn map_intensities(pixels: &mut [u8], map: impl Fn(f32) -> f32) {
    let mut table = [0u8; 256];
    for (value, entry) in table.iter_mut().enumerate() {
        *entry = (map(value as f32) + 0.5).clamp(0.0, 255.0) as u8;
    }
    for p in pixels {
        *p = table[usize::from(*p)];
    }
}

/// Bits of randomness per noise sample: the noise is drawn from `2^NOISE_BITS` equiprobable
/// quantiles of the normal distribution (±3.7 sigma), which after rounding to whole intensities
/// is indistinguishable from exact Gaussian noise and about ten times faster to draw.
const NOISE_BITS: u32 = 12;

/// The standard normal quantiles at `(i + 0.5) / 2^NOISE_BITS`.
fn unit_normal_quantiles() -> &'static [f32] {
    static TABLE: OnceLock<Vec<f32>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let n = 1usize << NOISE_BITS;
        (0..n)
            .map(|i| inverse_normal_cdf((i as f64 + 0.5) / n as f64) as f32)
            .collect()
    })
}

/// Acklam's rational approximation of the standard normal quantile function (relative error
/// below 1.2e-9 on (0, 1)).
fn inverse_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383_577_518_672_69e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    const LOW: f64 = 0.02425;
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p <= 1.0 - LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    }
}

/// Adds rounded Gaussian noise of standard deviation `std` to every pixel, saturating.
///
/// The per-pixel randomness comes from a wyrand stream seeded by `seed` (drawn from the
/// sample's ChaCha generator), five 12-bit quantile indices per 64-bit output.
pub(crate) fn add_gaussian_noise(pixels: &mut [u8], std: f32, seed: u64) {
    // round(p + n) == p + round(n) for integer p, so the table holds rounded offsets.
    let mut offsets = [0i16; 1 << NOISE_BITS];
    for (offset, &q) in offsets.iter_mut().zip(unit_normal_quantiles()) {
        let scaled = (q * std).clamp(-255.0, 255.0);
        *offset = (scaled + 0.5f32.copysign(scaled)) as i16; // rounds half away from zero
    }
    let mask = (1u64 << NOISE_BITS) - 1;
    let mut state = seed;
    for chunk in pixels.chunks_mut(5) {
        state = state.wrapping_add(0xA076_1D64_78BD_642F);
        let wide = u128::from(state) * u128::from(state ^ 0xE703_7ED1_A0B4_28DB);
        let mut bits = ((wide >> 64) as u64) ^ (wide as u64);
        for p in chunk {
            let offset = offsets[(bits & mask) as usize];
            *p = (i16::from(*p) + offset).clamp(0, 255) as u8;
            bits >>= NOISE_BITS;
        }
    }
}

/// Exact horizontal mirror.
fn mirror(image: &GreyImage) -> GreyImage {
    let mut out = image.clone();
    for row in out.pixels.chunks_exact_mut(image.width as usize) {
        row.reverse();
    }
    out
}

/// Crop, flip and rotation as one inverse-mapped affine warp with bilinear sampling; points
/// outside the source read as black.
///
/// Forward order: crop and resize to the output size, flip, then rotate about the centre. Each
/// output pixel centre is mapped back through the inverse of that chain.
pub(crate) fn warp(image: &GreyImage, crop: Option<Crop>, flip: bool, angle: f32) -> GreyImage {
    let (width, height) = (image.width as usize, image.height as usize);
    let (w, h) = (width as f64, height as f64);
    let crop = crop.unwrap_or(Crop {
        center_x: w as f32 / 2.0,
        center_y: h as f32 / 2.0,
        width: w as f32,
        height: h as f32,
    });
    let (sin, cos) = f64::from(angle).sin_cos();
    let (scale_x, scale_y) = (f64::from(crop.width) / w, f64::from(crop.height) / h);
    let sign = if flip { -1.0 } else { 1.0 };
    // Source sample coordinate (pixel-index space) of output pixel (u, v):
    //   d = (u + 0.5 - w/2, v + 0.5 - h/2); r = R(-angle) d; r.x *= sign;
    //   x = cx + scale_x * r.x - 0.5;  y = cy + scale_y * r.y - 0.5.
    let (dxdu, dxdv) = (scale_x * sign * cos, scale_x * sign * sin);
    let (dydu, dydv) = (-scale_y * sin, scale_y * cos);
    let (d0x, d0y) = (0.5 - w / 2.0, 0.5 - h / 2.0);
    let x00 = f64::from(crop.center_x) - 0.5 + dxdu * d0x + dxdv * d0y;
    let y00 = f64::from(crop.center_y) - 0.5 + dydu * d0x + dydv * d0y;

    // Fixed point with 16 fractional bits: exact for the identity and the mirror, and fast.
    const ONE: f64 = 65536.0;
    let fixed = |v: f64| (v * ONE).round() as i64;
    let (step_x, step_y) = (fixed(dxdu), fixed(dydu));
    let src = &image.pixels;
    let (w_i, h_i) = (width as i64, height as i64);
    let at = |x: i64, y: i64| -> u32 {
        if x >= 0 && y >= 0 && x < w_i && y < h_i {
            u32::from(src[y as usize * width + x as usize])
        } else {
            0
        }
    };
    let mut pixels = vec![0u8; width * height];
    for (v, row) in pixels.chunks_exact_mut(width).enumerate() {
        let row_x = fixed(x00 + dxdv * v as f64);
        let row_y = fixed(y00 + dydv * v as f64);
        for (u, out) in row.iter_mut().enumerate() {
            let x = row_x + step_x * u as i64;
            let y = row_y + step_y * u as i64;
            let (ix, iy) = (x >> 16, y >> 16); // floor, also for negatives
            let (tx, ty) = (((x >> 8) & 0xFF) as u32, ((y >> 8) & 0xFF) as u32);
            let (p00, p10, p01, p11) =
                if (ix as u64) < (w_i - 1) as u64 && (iy as u64) < (h_i - 1) as u64 {
                    let i = iy as usize * width + ix as usize;
                    (
                        u32::from(src[i]),
                        u32::from(src[i + 1]),
                        u32::from(src[i + width]),
                        u32::from(src[i + width + 1]),
                    )
                } else if ix < -1 || iy < -1 || ix >= w_i || iy >= h_i {
                    continue; // entirely outside: stays black
                } else {
                    (
                        at(ix, iy),
                        at(ix + 1, iy),
                        at(ix, iy + 1),
                        at(ix + 1, iy + 1),
                    )
                };
            let top = p00 * (256 - tx) + p10 * tx;
            let bottom = p01 * (256 - tx) + p11 * tx;
            *out = ((top * (256 - ty) + bottom * ty + (1 << 15)) >> 16) as u8;
        }
    }
    GreyImage {
        width: image.width,
        height: image.height,
        pixels,
    }
}

/// Separable Gaussian blur with a kernel of radius `ceil(3 sigma)`, edges replicated.
pub(crate) fn gaussian_blur(image: &mut GreyImage, sigma: f32) {
    let (width, height) = (image.width as usize, image.height as usize);
    if !(sigma.is_finite() && sigma > 0.0) {
        return;
    }
    let radius = ((3.0 * sigma).ceil() as usize).clamp(1, 64);
    let mut kernel: Vec<f32> = (0..=2 * radius)
        .map(|i| {
            let d = i as f32 - radius as f32;
            (-d * d / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let total: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= total);

    // Horizontal pass into f32, reading a row padded with replicated edges.
    let mut horizontal = vec![0f32; width * height];
    let mut padded = vec![0f32; width + 2 * radius];
    for (row, out) in image
        .pixels
        .chunks_exact(width)
        .zip(horizontal.chunks_exact_mut(width))
    {
        let (first, last) = (f32::from(row[0]), f32::from(row[width - 1]));
        padded[..radius].fill(first);
        for (p, &s) in padded[radius..radius + width].iter_mut().zip(row) {
            *p = f32::from(s);
        }
        padded[radius + width..].fill(last);
        out.fill(0.0);
        for (k, &weight) in kernel.iter().enumerate() {
            for (o, &p) in out.iter_mut().zip(&padded[k..k + width]) {
                *o += p * weight;
            }
        }
    }

    // Vertical pass: weighted sums of whole rows, clamping the row index at the edges.
    let mut accumulator = vec![0f32; width];
    for (y, out) in image.pixels.chunks_exact_mut(width).enumerate() {
        accumulator.fill(0.0);
        for (k, &weight) in kernel.iter().enumerate() {
            let sy = (y + k).saturating_sub(radius).min(height - 1);
            let row = &horizontal[sy * width..(sy + 1) * width];
            for (a, &p) in accumulator.iter_mut().zip(row) {
                *a += p * weight;
            }
        }
        for (o, &a) in out.iter_mut().zip(&accumulator) {
            *o = (a + 0.5).clamp(0.0, 255.0) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(side: u32) -> GreyImage {
        let pixels = (0..side)
            .flat_map(|y| (0..side).map(move |x| ((x * 7 + y * 13) % 251) as u8))
            .collect();
        GreyImage::new(side, side, pixels).expect("size matches")
    }

    fn mean_and_std(pixels: &[u8]) -> (f64, f64) {
        let n = pixels.len() as f64;
        let mean = pixels.iter().map(|&p| f64::from(p)).sum::<f64>() / n;
        let var = pixels
            .iter()
            .map(|&p| (f64::from(p) - mean).powi(2))
            .sum::<f64>()
            / n;
        (mean, var.sqrt())
    }

    #[test]
    fn sample_rng_is_a_pure_function_of_its_inputs() {
        let draw = |seed, epoch, index| sample_rng(seed, epoch, index).random::<u64>();
        assert_eq!(draw(1, 2, 3), draw(1, 2, 3));
        assert_ne!(draw(1, 2, 3), draw(1, 3, 3));
        assert_ne!(draw(1, 2, 3), draw(1, 2, 4));
        assert_ne!(draw(1, 2, 3), draw(2, 2, 3));
        // Swapping epoch and index must not collide.
        assert_ne!(draw(0, 1, 2), draw(0, 2, 1));
    }

    #[test]
    fn augmentation_is_deterministic() {
        let image = pattern(96);
        let config = AugmentConfig {
            blur_probability: 0.5,
            ..AugmentConfig::default()
        };
        for index in 0..20 {
            let a = augment(&image, &config, &mut sample_rng(7, 3, index));
            let b = augment(&image, &config, &mut sample_rng(7, 3, index));
            assert_eq!(a.pixels, b.pixels);
            let other_epoch = augment(&image, &config, &mut sample_rng(7, 4, index));
            assert_ne!(a.pixels, other_epoch.pixels);
        }
    }

    #[test]
    fn all_off_is_identity() {
        let image = pattern(64);
        for index in 0..10 {
            let out = augment(&image, &AugmentConfig::none(), &mut sample_rng(0, 0, index));
            assert_eq!(out, image);
        }
        // The explicit warp path with an identity transform is exact too.
        assert_eq!(warp(&image, None, false, 0.0), image);
    }

    #[test]
    fn flip_with_probability_one_mirrors_exactly() {
        let image = pattern(50);
        let config = AugmentConfig {
            hflip_probability: 1.0,
            ..AugmentConfig::none()
        };
        let out = augment(&image, &config, &mut sample_rng(1, 1, 1));
        for y in 0..50 {
            for x in 0..50 {
                assert_eq!(out.get(x, y), image.get(49 - x, y));
            }
        }
        // The warp computes the same mirror.
        assert_eq!(warp(&image, None, true, 0.0), out);
    }

    #[test]
    fn output_size_is_constant() {
        let config = AugmentConfig {
            crop_scale: (0.2, 1.0),
            max_rotation_degrees: 45.0,
            blur_probability: 1.0,
            max_blur_sigma: 2.0,
            ..AugmentConfig::default()
        };
        for side in [1, 2, 17, 64, 224] {
            let image = pattern(side);
            for index in 0..5 {
                let out = augment(&image, &config, &mut sample_rng(3, 0, index));
                assert_eq!(
                    (out.width, out.height, out.pixels.len()),
                    (side, side, image.pixels.len())
                );
            }
        }
        let wide = GreyImage::filled(40, 20, 9);
        let out = augment(&wide, &config, &mut sample_rng(0, 0, 0));
        assert_eq!((out.width, out.height), (40, 20));
    }

    #[test]
    fn noise_changes_statistics_as_configured() {
        let image = GreyImage::filled(128, 128, 128);
        for std in [2.0f32, 10.0, 25.0] {
            let config = AugmentConfig {
                noise_std: std,
                ..AugmentConfig::none()
            };
            let out = augment(&image, &config, &mut sample_rng(5, 0, 0));
            let (mean, measured) = mean_and_std(&out.pixels);
            assert!((mean - 128.0).abs() < 0.5, "mean {mean}");
            // Rounding to integers adds ~1/12 variance.
            let expected = (f64::from(std).powi(2) + 1.0 / 12.0).sqrt();
            assert!(
                (measured / expected - 1.0).abs() < 0.05,
                "std {measured} vs {expected}"
            );
        }
    }

    #[test]
    fn noise_is_normally_distributed() {
        assert!(inverse_normal_cdf(0.5).abs() < 1e-12);
        assert!((inverse_normal_cdf(0.975) - 1.959_963_985).abs() < 1e-6);
        assert!((inverse_normal_cdf(0.001) + 3.090_232_306).abs() < 1e-6);
        assert!((inverse_normal_cdf(0.3) + inverse_normal_cdf(0.7)).abs() < 1e-9);
        let mut pixels = vec![128u8; 200_000];
        add_gaussian_noise(&mut pixels, 20.0, 12345);
        let share = |limit: i32| {
            let inside = pixels
                .iter()
                .filter(|&&p| (i32::from(p) - 128).abs() <= limit)
                .count();
            inside as f64 / pixels.len() as f64
        };
        // P(|Z| <= 1) = 0.683, P(|Z| <= 2) = 0.954, with half a grey level of rounding slack.
        assert!((share(20) - 0.683).abs() < 0.02, "{}", share(20));
        assert!((share(40) - 0.954).abs() < 0.01, "{}", share(40));
        // Saturates instead of wrapping.
        let mut extremes = vec![0u8, 255, 0, 255, 1, 254];
        add_gaussian_noise(&mut extremes, 1000.0, 1);
        assert_eq!(extremes.len(), 6);
    }

    #[test]
    fn brightness_and_contrast_stay_within_configured_range() {
        let image = pattern(64);
        let (base_mean, base_std) = mean_and_std(&image.pixels);
        let config = AugmentConfig {
            brightness: 0.1,
            contrast: 0.2,
            ..AugmentConfig::none()
        };
        let mut changed = 0;
        for index in 0..50 {
            let out = augment(&image, &config, &mut sample_rng(9, 0, index));
            let (mean, std) = mean_and_std(&out.pixels);
            // Contrast is around the mean, so the mean moves only by the brightness shift
            // (plus clipping at the ends of the range, small for this pattern).
            assert!((mean - base_mean).abs() <= 0.1 * 255.0 + 6.0, "mean {mean}");
            assert!(
                std <= base_std * 1.2 + 1.0 && std >= base_std * 0.8 - 1.0,
                "std {std}"
            );
            changed += usize::from(out != image);
        }
        assert!(changed >= 45);
    }

    #[test]
    fn blur_keeps_constant_images_and_smooths_edges() {
        let config = AugmentConfig {
            blur_probability: 1.0,
            max_blur_sigma: 2.0,
            ..AugmentConfig::none()
        };
        let flat = GreyImage::filled(32, 32, 90);
        assert_eq!(augment(&flat, &config, &mut sample_rng(0, 0, 0)), flat);
        // A vertical step edge becomes a ramp but stays monotonic and keeps its mean.
        let step = GreyImage::new(
            32,
            32,
            (0..32)
                .flat_map(|_| (0..32).map(|x| if x < 16 { 0 } else { 200 }))
                .collect(),
        )
        .expect("size");
        let out = augment(&step, &config, &mut sample_rng(0, 0, 1));
        assert!(out.get(15, 10) > 0 && out.get(16, 10) < 200);
        for x in 1..32 {
            assert!(out.get(x, 10) >= out.get(x - 1, 10));
        }
        assert!((mean_and_std(&out.pixels).0 - 100.0).abs() < 1.0);
    }

    #[test]
    fn crop_zooms_in_and_rotation_blackens_corners() {
        // A crop never looks outside the image: no black appears in a bright constant image.
        let bright = GreyImage::filled(64, 64, 200);
        let crop_only = AugmentConfig {
            crop_scale: (0.3, 0.9),
            ..AugmentConfig::none()
        };
        for index in 0..20 {
            let out = augment(&bright, &crop_only, &mut sample_rng(2, 0, index));
            assert!(out.pixels.iter().all(|&p| p == 200), "sample {index}");
        }
        // A 45° rotation shows black in the corners, keeps the centre.
        let rotation = AugmentConfig {
            max_rotation_degrees: 45.0,
            ..AugmentConfig::none()
        };
        let out = warp(&bright, None, false, 45f32.to_radians());
        assert_eq!(out.get(0, 0), 0);
        assert_eq!(out.get(63, 63), 0);
        assert_eq!(out.get(32, 32), 200);
        let _ = augment(&bright, &rotation, &mut sample_rng(0, 0, 0));
    }

    #[test]
    fn invalid_settings_do_not_panic() {
        let image = pattern(32);
        let config = AugmentConfig {
            crop_scale: (f32::NAN, 2.0),
            crop_ratio: (-1.0, 0.0),
            hflip_probability: f32::NAN,
            max_rotation_degrees: f32::INFINITY,
            brightness: -3.0,
            contrast: f32::NAN,
            noise_std: -1.0,
            blur_probability: 7.0,
            max_blur_sigma: f32::NAN,
        };
        assert_eq!(augment(&image, &config, &mut sample_rng(0, 0, 0)), image);
        let reversed = AugmentConfig {
            crop_scale: (0.9, 0.5),
            crop_ratio: (2.0, 0.5),
            max_blur_sigma: 1e9,
            blur_probability: 1.0,
            ..AugmentConfig::default()
        };
        let out = augment(&image, &reversed, &mut sample_rng(0, 0, 0));
        assert_eq!(out.pixels.len(), image.pixels.len());
        let malformed = GreyImage {
            width: 4,
            height: 4,
            pixels: vec![0; 3],
        };
        assert_eq!(
            augment(&malformed, &reversed, &mut sample_rng(0, 0, 0)),
            malformed
        );
    }
}
