//! The body region of a CT slice, found from the image alone, to check where a saliency map
//! (Grad-CAM) puts its attribution.
//!
//! **Heuristic.** CT slices show a bright body on a dark background. The image is thresholded
//! at Otsu's threshold (the intensity that best separates two classes of the histogram);
//! of the bright pixels, the largest 4-connected component is the body, and the holes in it
//! (the dark lungs and airways, any background enclosed by the body) are filled. Everything
//! else is outside: background, padding, text, and the table when it is not touching the body
//! (a table in contact with the body is counted as body: a known limitation).

use crate::types::GreyImage;

/// A binary mask of the body, pixel for pixel with the image it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyMask {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width × height` flags, row-major: whether each pixel is inside the body.
    pub inside: Vec<bool>,
}

impl BodyMask {
    /// Pixels inside the body.
    pub fn area(&self) -> usize {
        self.inside.iter().filter(|&&b| b).count()
    }

    /// The share of non-negative `weights` on a `grid_width × grid_height` grid laid over the
    /// image (e.g. a Grad-CAM map) that falls inside the body: each cell covers an equal block
    /// of the image and contributes its weight times the fraction of its pixels inside.
    ///
    /// `None` when the grid does not match `weights`, the mask is empty, or there is no
    /// positive weight; negative and non-finite weights count as 0.
    pub fn share_inside(
        &self,
        weights: &[f32],
        grid_width: usize,
        grid_height: usize,
    ) -> Option<f64> {
        let (w, h) = (self.width as usize, self.height as usize);
        if grid_width == 0
            || grid_height == 0
            || weights.len() != grid_width * grid_height
            || self.area() == 0
        {
            return None;
        }
        let (mut total, mut inside) = (0.0, 0.0);
        for gy in 0..grid_height {
            let (y0, y1) = (
                gy * h / grid_height,
                ((gy + 1) * h / grid_height)
                    .max(gy * h / grid_height + 1)
                    .min(h),
            );
            for gx in 0..grid_width {
                let weight = f64::from(weights[gy * grid_width + gx]);
                if !(weight.is_finite() && weight > 0.0) {
                    continue;
                }
                let (x0, x1) = (
                    gx * w / grid_width,
                    ((gx + 1) * w / grid_width)
                        .max(gx * w / grid_width + 1)
                        .min(w),
                );
                let cells = (y1.saturating_sub(y0)) * (x1.saturating_sub(x0));
                if cells == 0 {
                    continue;
                }
                let hits = (y0..y1)
                    .map(|y| {
                        self.inside[y * w + x0..y * w + x1]
                            .iter()
                            .filter(|&&b| b)
                            .count()
                    })
                    .sum::<usize>();
                total += weight;
                inside += weight * hits as f64 / cells as f64;
            }
        }
        (total > 0.0).then(|| (inside / total).clamp(0.0, 1.0))
    }
}

/// Otsu's threshold: the intensity `t` that maximises the between-class variance of the
/// classes `≤ t` and `> t` (the lowest such `t` on ties; 0 for an empty image).
pub fn otsu_threshold(image: &GreyImage) -> u8 {
    let mut histogram = [0u64; 256];
    for &p in &image.pixels {
        histogram[usize::from(p)] += 1;
    }
    let total = image.pixels.len() as f64;
    let sum_all: f64 = histogram
        .iter()
        .enumerate()
        .map(|(v, &c)| v as f64 * c as f64)
        .sum();
    let (mut weight_low, mut sum_low) = (0.0, 0.0);
    let (mut best, mut best_variance) = (0u8, -1.0);
    for (t, &count) in histogram.iter().enumerate() {
        weight_low += count as f64;
        sum_low += t as f64 * count as f64;
        let weight_high = total - weight_low;
        if weight_low == 0.0 || weight_high == 0.0 {
            continue;
        }
        let mean_low = sum_low / weight_low;
        let mean_high = (sum_all - sum_low) / weight_high;
        let variance = weight_low * weight_high * (mean_low - mean_high).powi(2);
        if variance > best_variance {
            best_variance = variance;
            best = t as u8;
        }
    }
    best
}

/// The body mask of a CT slice by the heuristic of the module documentation. A uniform image
/// has no bright class and gives an empty mask.
pub fn body_mask(image: &GreyImage) -> BodyMask {
    let (w, h) = (image.width as usize, image.height as usize);
    let mut inside = vec![false; w * h];
    // A single intensity has no foreground to separate from the background: no body.
    let uniform = image.pixels.windows(2).all(|pair| pair[0] == pair[1]);
    if image.pixels.len() != w * h || w == 0 || h == 0 || uniform {
        return BodyMask {
            width: image.width,
            height: image.height,
            inside,
        };
    }
    let threshold = otsu_threshold(image);
    let bright: Vec<bool> = image.pixels.iter().map(|&p| p > threshold).collect();
    // Label the bright components; keep the largest.
    let mut label = vec![0u32; w * h];
    let mut stack = Vec::new();
    let (mut best_label, mut best_size, mut next) = (0u32, 0usize, 0u32);
    for start in 0..w * h {
        if !bright[start] || label[start] != 0 {
            continue;
        }
        next += 1;
        let size = flood(start, w, h, &mut stack, |i| {
            if bright[i] && label[i] == 0 {
                label[i] = next;
                true
            } else {
                false
            }
        });
        if size > best_size {
            (best_label, best_size) = (next, size);
        }
    }
    if best_size == 0 {
        return BodyMask {
            width: image.width,
            height: image.height,
            inside,
        };
    }
    // Fill holes: whatever the border cannot reach without crossing the body is inside.
    let body: Vec<bool> = label.iter().map(|&l| l == best_label).collect();
    let mut outside = vec![false; w * h];
    let border = (0..w)
        .flat_map(|x| [x, (h - 1) * w + x])
        .chain((0..h).flat_map(|y| [y * w, y * w + w - 1]));
    for start in border {
        if body[start] || outside[start] {
            continue;
        }
        flood(start, w, h, &mut stack, |i| {
            if !body[i] && !outside[i] {
                outside[i] = true;
                true
            } else {
                false
            }
        });
    }
    for (flag, out) in inside.iter_mut().zip(&outside) {
        *flag = !out;
    }
    BodyMask {
        width: image.width,
        height: image.height,
        inside,
    }
}

/// Visits the 4-connected region from `start` through the pixels `claim` accepts (it marks
/// them); returns how many it accepted.
fn flood(
    start: usize,
    w: usize,
    h: usize,
    stack: &mut Vec<usize>,
    mut claim: impl FnMut(usize) -> bool,
) -> usize {
    if !claim(start) {
        return 0;
    }
    stack.clear();
    stack.push(start);
    let mut size = 0;
    while let Some(i) = stack.pop() {
        size += 1;
        let (x, y) = (i % w, i / w);
        let neighbours = [
            (x > 0).then(|| i - 1),
            (x + 1 < w).then(|| i + 1),
            (y > 0).then(|| i - w),
            (y + 1 < h).then(|| i + w),
        ];
        for n in neighbours.into_iter().flatten() {
            if claim(n) {
                stack.push(n);
            }
        }
    }
    size
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64×64 slice: dark background (10), a bright disc (centre 32,28, radius 20) with a dark
    /// "lung" hole, and optionally a bright table bar at the bottom.
    fn slice(table: Option<(usize, usize)>) -> GreyImage {
        let mut pixels = vec![10u8; 64 * 64];
        for y in 0..64 {
            for x in 0..64 {
                let d2 = (x as i32 - 32).pow(2) + (y as i32 - 28).pow(2);
                if d2 <= 400 {
                    pixels[y * 64 + x] = 200;
                }
                if (x as i32 - 26).pow(2) + (y as i32 - 28).pow(2) <= 25 {
                    pixels[y * 64 + x] = 20;
                }
            }
        }
        if let Some((top, bottom)) = table {
            for y in top..bottom {
                for x in 4..60 {
                    pixels[y * 64 + x] = 220;
                }
            }
        }
        GreyImage::new(64, 64, pixels).expect("64×64")
    }

    fn in_disc(x: usize, y: usize) -> bool {
        (x as i32 - 32).pow(2) + (y as i32 - 28).pow(2) <= 400
    }

    #[test]
    fn a_bright_disc_is_the_body_with_its_hole_filled() {
        let mask = body_mask(&slice(None));
        for y in 0..64 {
            for x in 0..64 {
                assert_eq!(mask.inside[y * 64 + x], in_disc(x, y), "pixel {x},{y}");
            }
        }
        // The dark "lung" at (26, 28) is inside.
        assert!(mask.inside[28 * 64 + 26]);
    }

    #[test]
    fn a_separate_table_is_excluded_a_touching_one_is_not() {
        let mask = body_mask(&slice(Some((56, 60))));
        assert!(!mask.inside[58 * 64 + 30], "table counted as body");
        assert!(mask.inside[28 * 64 + 32]);
        assert_eq!(mask.area(), body_mask(&slice(None)).area());
        // A table touching the disc (which reaches row 48) joins the body: documented limit.
        let touching = body_mask(&slice(Some((48, 52))));
        assert!(touching.inside[50 * 64 + 30]);
    }

    #[test]
    fn share_inside_weighs_cells_by_their_body_fraction() {
        let mask = body_mask(&slice(Some((56, 60))));
        // 2×2 grid: all weight on the top-left cell, which is partly body.
        let top_left = mask
            .share_inside(&[1.0, 0.0, 0.0, 0.0], 2, 2)
            .expect("share");
        let expected = (0..32)
            .flat_map(|y| (0..32).map(move |x| (x, y)))
            .filter(|&(x, y)| in_disc(x, y))
            .count() as f64
            / 1024.0;
        assert!(
            (top_left - expected).abs() < 1e-9,
            "{top_left} vs {expected}"
        );
        // A 64×64 grid with weight only on the table: nothing inside.
        let mut weights = vec![0.0f32; 64 * 64];
        weights[58 * 64 + 30] = 1.0;
        assert_eq!(mask.share_inside(&weights, 64, 64), Some(0.0));
        weights[28 * 64 + 32] = 3.0;
        assert_eq!(mask.share_inside(&weights, 64, 64), Some(0.75));
        // Undefined without weight, with a mismatched grid, or without a body.
        assert_eq!(mask.share_inside(&[0.0; 4], 2, 2), None);
        assert_eq!(mask.share_inside(&[1.0; 3], 2, 2), None);
        let empty = body_mask(&GreyImage::filled(8, 8, 90));
        assert_eq!(empty.area(), 0);
        assert_eq!(empty.share_inside(&[1.0], 1, 1), None);
    }

    #[test]
    fn otsu_splits_two_levels_and_a_grid_larger_than_the_image_works() {
        let image = slice(None);
        let t = otsu_threshold(&image);
        assert!((20..200).contains(&t), "{t}");
        let mask = body_mask(&GreyImage::filled(0, 0, 0));
        assert_eq!(mask.area(), 0);
        // A 3×3 map on a 2×2 image: cells clamp to at least one pixel.
        let tiny = BodyMask {
            width: 2,
            height: 2,
            inside: vec![true, false, false, false],
        };
        let share = tiny.share_inside(&[1.0; 9], 3, 3).expect("share");
        assert!((0.0..=1.0).contains(&share));
    }
}
