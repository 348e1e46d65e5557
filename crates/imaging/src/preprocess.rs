//! Resizing to the network's square input and normalisation.
//!
//! Resizing uses a separable triangle (tent) filter whose support widens with the downscale
//! factor, as in Pillow's antialiased `BILINEAR`: every source pixel contributes when shrinking,
//! so thin structures do not alias away; when enlarging it is plain bilinear interpolation. The
//! filter taps are computed once per axis; the vertical pass runs over whole rows (vectorised)
//! and feeds the horizontal pass one output row at a time.

use crate::types::GreyImage;
use serde::{Deserialize, Serialize};

/// How a non-square image becomes square.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// Keep the aspect ratio: scale the long side to the target, pad the rest with black.
    #[default]
    Pad,
    /// Scale both sides to the target, distorting the aspect ratio.
    Stretch,
}

/// Which way the slice is turned before it is resized.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Orientation {
    /// As stored (radiological display: patient's right on the image's left, anterior up).
    #[default]
    Display,
    /// Reflected across the anti-diagonal (`img[::-1, ::-1].T` in NumPy): the RAS voxel order of
    /// volumes that CT encoders such as Merlin were trained on, seen one axial slice at a time.
    /// The reflection is its own inverse.
    Ras,
}

impl std::fmt::Display for Orientation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Orientation::Display => "display",
            Orientation::Ras => "ras",
        })
    }
}

/// Turns `image` to `orientation`.
pub fn orient(image: &GreyImage, orientation: Orientation) -> GreyImage {
    match orientation {
        Orientation::Display => image.clone(),
        Orientation::Ras => {
            let (width, height) = (image.width as usize, image.height as usize);
            if image.pixels.len() != width * height {
                return image.clone();
            }
            // out[r][c] = img[height - 1 - c][width - 1 - r]; out is `height` wide, `width` high.
            let mut pixels = Vec::with_capacity(image.pixels.len());
            for r in 0..width {
                for c in 0..height {
                    pixels.push(image.pixels[(height - 1 - c) * width + (width - 1 - r)]);
                }
            }
            GreyImage {
                width: image.height,
                height: image.width,
                pixels,
            }
        }
    }
}

/// The square network input of `image` before normalisation: turned to the configured
/// orientation, then resized (the one transformation training, evaluation and serving share).
pub fn fit_input(image: &GreyImage, config: &PreprocessConfig) -> GreyImage {
    match config.orientation {
        Orientation::Display => resize_square(image, config.size, config.resize),
        turned => resize_square(&orient(image, turned), config.size, config.resize),
    }
}

/// Preprocessing applied identically in training, evaluation and serving.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PreprocessConfig {
    /// Side of the square network input in pixels.
    pub size: u32,
    /// Pad or stretch.
    pub resize: ResizeMode,
    /// Mean subtracted after scaling intensities to [0, 1].
    pub mean: f32,
    /// Standard deviation divided by after subtracting the mean.
    pub std: f32,
    /// Which way the slice is turned before resizing (older packages: as displayed).
    pub orientation: Orientation,
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        Self {
            size: 224,
            resize: ResizeMode::Pad,
            mean: 0.5,
            std: 0.5,
            orientation: Orientation::Display,
        }
    }
}

/// Resizes to `size`×`size` with the given mode.
///
/// [`ResizeMode::Pad`] scales the long side to `size` (the short side to the rounded
/// proportional length, at least one pixel) and centres the result on black;
/// [`ResizeMode::Stretch`] scales both sides to `size`. An empty or malformed input (pixel
/// buffer not `width * height` long) gives an all-black image; `size == 0` gives an empty one.
pub fn resize_square(image: &GreyImage, size: u32, mode: ResizeMode) -> GreyImage {
    let (width, height) = (image.width, image.height);
    let well_formed = image.pixels.len() as u64 == u64::from(width) * u64::from(height)
        && width > 0
        && height > 0;
    if size == 0 || !well_formed {
        return GreyImage::filled(size, size, 0);
    }
    let (new_width, new_height) = match mode {
        ResizeMode::Stretch => (size, size),
        ResizeMode::Pad => padded_extent(width, height, size),
    };
    let resized = resize_exact(image, new_width, new_height);
    if new_width == size && new_height == size {
        return resized;
    }
    let side = size as usize;
    let (left, top) = (
        (side - new_width as usize) / 2,
        (side - new_height as usize) / 2,
    );
    let mut out = GreyImage::filled(size, size, 0);
    for (row, src) in resized.pixels.chunks_exact(new_width as usize).enumerate() {
        let start = (top + row) * side + left;
        out.pixels[start..start + src.len()].copy_from_slice(src);
    }
    out
}

/// The size of the scaled image inside a `size`² square when the aspect ratio is kept.
fn padded_extent(width: u32, height: u32, size: u32) -> (u32, u32) {
    let short = |short: u32, long: u32| {
        let scaled = (f64::from(short) * f64::from(size) / f64::from(long)).round();
        (scaled as u32).clamp(1, size)
    };
    if width >= height {
        (size, short(height, width))
    } else {
        (short(width, height), size)
    }
}

/// Normalised triangle-filter weights mapping `src` samples onto `dst` samples, with the same
/// number of taps for every output sample (zero-padded) so the inner loops have a fixed shape.
struct Taps {
    /// First source index of each output sample; `start + len <= src`.
    starts: Vec<usize>,
    /// Taps per output sample.
    len: usize,
    /// `dst * len` weights, output sample after output sample.
    weights: Vec<f32>,
}

impl Taps {
    /// Requires `src >= 1` and `dst >= 1`.
    fn triangle(src: usize, dst: usize) -> Self {
        let scale = src as f64 / dst as f64;
        let filter_scale = scale.max(1.0);
        let support = filter_scale; // the triangle's radius is one source pixel, scaled.
        let ranges: Vec<(usize, usize, f64)> = (0..dst)
            .map(|i| {
                let center = (i as f64 + 0.5) * scale;
                let first = ((center - support).floor().max(0.0) as usize).min(src - 1);
                let last = ((center + support).ceil() as usize).clamp(first + 1, src);
                (first, last, center)
            })
            .collect();
        let len = ranges
            .iter()
            .map(|(first, last, _)| last - first)
            .max()
            .unwrap_or(1);
        let mut starts = Vec::with_capacity(dst);
        let mut weights = vec![0f32; dst * len];
        for ((first, last, center), out) in ranges.into_iter().zip(weights.chunks_exact_mut(len)) {
            let start = first.min(src - len);
            let slots = &mut out[first - start..last - start];
            let mut total = 0.0;
            for (slot, j) in slots.iter_mut().zip(first..last) {
                let w = (1.0 - ((j as f64 + 0.5 - center) / filter_scale).abs()).max(0.0);
                *slot = w as f32;
                total += w;
            }
            if total > 0.0 {
                let inverse = (1.0 / total) as f32;
                slots.iter_mut().for_each(|w| *w *= inverse);
            } else {
                // Unreachable for a triangle centred inside the source; a safe fallback.
                slots[0] = 1.0;
            }
            starts.push(start);
        }
        Self {
            starts,
            len,
            weights,
        }
    }
}

/// Resamples a well-formed, non-empty image to exactly `new_width`×`new_height` (both ≥ 1).
///
/// Vertical pass first (whole source rows at a time, which vectorises), then the horizontal
/// pass straight into the output row, so each output pixel is rounded once.
pub(crate) fn resize_exact(image: &GreyImage, new_width: u32, new_height: u32) -> GreyImage {
    if image.width == new_width && image.height == new_height {
        return image.clone();
    }
    let (src_w, src_h) = (image.width as usize, image.height as usize);
    let (dst_w, dst_h) = (new_width as usize, new_height as usize);
    let vertical = Taps::triangle(src_h, dst_h);
    let horizontal = Taps::triangle(src_w, dst_w);
    let mut pixels = vec![0u8; dst_w * dst_h];
    let mut column_sums = vec![0f32; src_w];
    for (y, out) in pixels.chunks_exact_mut(dst_w).enumerate() {
        column_sums.fill(0.0);
        let start = vertical.starts[y];
        let weights = &vertical.weights[y * vertical.len..(y + 1) * vertical.len];
        let rows = image.pixels[start * src_w..(start + vertical.len) * src_w].chunks_exact(src_w);
        for (row, &w) in rows.zip(weights) {
            if w != 0.0 {
                for (sum, &p) in column_sums.iter_mut().zip(row) {
                    *sum += f32::from(p) * w;
                }
            }
        }
        let weights = horizontal.weights.chunks_exact(horizontal.len);
        for ((o, &start), weights) in out.iter_mut().zip(&horizontal.starts).zip(weights) {
            let source = &column_sums[start..start + horizontal.len];
            let value: f32 = source.iter().zip(weights).map(|(&p, &w)| p * w).sum();
            *o = (value + 0.5).clamp(0.0, 255.0) as u8;
        }
    }
    GreyImage {
        width: new_width,
        height: new_height,
        pixels,
    }
}

/// Writes `(p / 255 - mean) / std` for every pixel into `out` (same length as `pixels`).
///
/// Only the common prefix is written when the lengths differ. A zero `std` yields infinities
/// (or NaN for pixels equal to the mean), as the formula says; validate configurations upstream.
pub fn normalize_into(pixels: &[u8], mean: f32, std: f32, out: &mut [f32]) {
    let mut table = [0f32; 256];
    for (value, entry) in table.iter_mut().enumerate() {
        *entry = (value as f32 / 255.0 - mean) / std;
    }
    for (o, &p) in out.iter_mut().zip(pixels) {
        *o = table[usize::from(p)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ras_orientation_reflects_across_the_anti_diagonal_and_is_its_own_inverse() {
        // 3 wide, 2 high: rows [0 1 2], [3 4 5].
        let image = GreyImage::new(3, 2, vec![0, 1, 2, 3, 4, 5]).expect("image");
        let turned = orient(&image, Orientation::Ras);
        // NumPy: img[::-1, ::-1].T = [[5, 2], [4, 1], [3, 0]].
        assert_eq!((turned.width, turned.height), (2, 3));
        assert_eq!(turned.pixels, vec![5, 2, 4, 1, 3, 0]);
        assert_eq!(orient(&turned, Orientation::Ras), image);
        assert_eq!(orient(&image, Orientation::Display), image);
        assert_eq!(Orientation::Ras.to_string(), "ras");
        let config = PreprocessConfig {
            size: 3,
            resize: ResizeMode::Stretch,
            orientation: Orientation::Ras,
            ..PreprocessConfig::default()
        };
        let square = GreyImage::new(3, 3, (0..9).collect()).expect("image");
        assert_eq!(
            fit_input(&square, &config),
            orient(&square, Orientation::Ras)
        );
    }

    fn gradient(width: u32, height: u32) -> GreyImage {
        let pixels = (0..height)
            .flat_map(|y| (0..width).map(move |x| ((x * 255) / width.max(1) + y % 2) as u8))
            .collect();
        GreyImage::new(width, height, pixels).expect("size matches")
    }

    #[test]
    fn output_is_square_of_requested_size() {
        for (w, h) in [
            (200, 100),
            (100, 200),
            (64, 64),
            (3, 500),
            (500, 3),
            (1, 1),
            (17, 31),
        ] {
            for mode in [ResizeMode::Pad, ResizeMode::Stretch] {
                for size in [1, 7, 64, 224] {
                    let out = resize_square(&gradient(w, h), size, mode);
                    assert_eq!(
                        (out.width, out.height),
                        (size, size),
                        "{w}x{h} {mode:?} {size}"
                    );
                    assert_eq!(out.pixels.len(), (size * size) as usize);
                }
            }
        }
    }

    #[test]
    fn pad_centres_landscape_image_on_black() {
        let out = resize_square(&GreyImage::filled(200, 100, 255), 64, ResizeMode::Pad);
        for y in 0..64 {
            let expected = if (16..48).contains(&y) { 255 } else { 0 };
            for x in 0..64 {
                assert_eq!(out.get(x, y), expected, "pixel ({x}, {y})");
            }
        }
    }

    #[test]
    fn pad_centres_portrait_image_on_black() {
        let out = resize_square(&GreyImage::filled(100, 200, 255), 64, ResizeMode::Pad);
        for y in 0..64 {
            for x in 0..64 {
                let expected = if (16..48).contains(&x) { 255 } else { 0 };
                assert_eq!(out.get(x, y), expected, "pixel ({x}, {y})");
            }
        }
    }

    #[test]
    fn stretch_fills_the_square() {
        let out = resize_square(&GreyImage::filled(200, 100, 200), 64, ResizeMode::Stretch);
        assert!(out.pixels.iter().all(|&p| p == 200));
    }

    #[test]
    fn constant_images_stay_constant() {
        for value in [0u8, 1, 77, 128, 254, 255] {
            for (w, h) in [(512, 512), (300, 217), (50, 80), (224, 224), (13, 7)] {
                let out = resize_square(&GreyImage::filled(w, h, value), 224, ResizeMode::Stretch);
                assert!(out.pixels.iter().all(|&p| p == value), "{value} {w}x{h}");
            }
        }
    }

    #[test]
    fn same_size_is_identity() {
        let image = gradient(64, 64);
        assert_eq!(resize_square(&image, 64, ResizeMode::Pad), image);
        assert_eq!(resize_square(&image, 64, ResizeMode::Stretch), image);
    }

    #[test]
    fn downscaling_averages_instead_of_aliasing() {
        // A one-pixel checkerboard must become flat grey, not a moiré of black and white.
        let pixels = (0..256u32)
            .flat_map(|y| (0..256u32).map(move |x| if (x + y) % 2 == 0 { 0 } else { 255 }))
            .collect();
        let checker = GreyImage::new(256, 256, pixels).expect("size");
        let out = resize_square(&checker, 64, ResizeMode::Stretch);
        assert!(
            out.pixels.iter().all(|&p| (120..=135).contains(&p)),
            "{:?}",
            &out.pixels[..8]
        );
    }

    #[test]
    fn downscaling_uses_a_widened_triangle() {
        // Halving: output 0 is centred on source 1.0 with radius 2, i.e. weights 3:3:1 on
        // pixels 0, 1, 2 (and 1:3:3 on 1, 2, 3 for output 1).
        let image = GreyImage::new(4, 1, vec![0, 100, 200, 250]).expect("size");
        let out = resize_exact(&image, 2, 1);
        assert_eq!(out.pixels, [71, 207]);
        // Enlarging is bilinear: midpoints average, edges replicate.
        let image = GreyImage::new(2, 1, vec![0, 200]).expect("size");
        assert_eq!(resize_exact(&image, 4, 1).pixels, [0, 50, 150, 200]);
    }

    #[test]
    fn horizontal_gradient_stays_monotonic() {
        let out = resize_square(&gradient(400, 400), 100, ResizeMode::Stretch);
        for y in 0..100 {
            for x in 1..100 {
                assert!(out.get(x, y) >= out.get(x - 1, y));
            }
        }
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        let empty = GreyImage::filled(0, 10, 0);
        assert_eq!(
            resize_square(&empty, 8, ResizeMode::Pad),
            GreyImage::filled(8, 8, 0)
        );
        let malformed = GreyImage {
            width: 10,
            height: 10,
            pixels: vec![1; 3],
        };
        assert_eq!(
            resize_square(&malformed, 4, ResizeMode::Stretch),
            GreyImage::filled(4, 4, 0)
        );
        let zero = resize_square(&gradient(10, 10), 0, ResizeMode::Pad);
        assert_eq!((zero.width, zero.height, zero.pixels.len()), (0, 0, 0));
    }

    #[test]
    fn normalisation_values() {
        let mut out = [0f32; 4];
        normalize_into(&[0, 255, 51, 128], 0.5, 0.5, &mut out);
        assert_eq!(out[0], -1.0);
        assert_eq!(out[1], 1.0);
        assert!((out[2] - (0.2 - 0.5) / 0.5).abs() < 1e-6);
        assert!((out[3] - (128.0 / 255.0 - 0.5) / 0.5).abs() < 1e-6);

        let mut out = [0f32; 2];
        normalize_into(&[0, 255], 0.0, 1.0, &mut out);
        assert_eq!(out, [0.0, 1.0]);

        // Mismatched lengths write only the common prefix.
        let mut out = [9f32; 3];
        normalize_into(&[255], 0.0, 1.0, &mut out);
        assert_eq!(out, [1.0, 9.0, 9.0]);
    }
}
