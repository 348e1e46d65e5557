//! Content hashes, thumbnails and perceptual hashes for duplicate and similarity analysis.

use crate::types::GreyImage;

/// Side of the square thumbnails used for similarity distances and perceptual hashes.
pub const THUMBNAIL_SIDE: u32 = 32;

/// A `THUMBNAIL_SIDE`² grey thumbnail (aspect ratio not preserved).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Thumbnail(pub Vec<u8>);

impl Thumbnail {
    /// Mean absolute pixel difference to another thumbnail, in intensity units (0–255).
    pub fn distance(&self, other: &Thumbnail) -> f32 {
        let total: u32 = self
            .0
            .iter()
            .zip(&other.0)
            .map(|(&a, &b)| u32::from(a.abs_diff(b)))
            .sum();
        total as f32 / self.0.len().max(1) as f32
    }
}

/// A hash of the canonical pixels and size: equal exactly when the decoded images are equal,
/// whatever file format or layout they were stored in.
pub type ContentHash = [u8; 32];

/// Hashes the canonical pixels together with the dimensions.
pub fn content_hash(image: &GreyImage) -> ContentHash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&image.width.to_le_bytes());
    hasher.update(&image.height.to_le_bytes());
    hasher.update(&image.pixels);
    *hasher.finalize().as_bytes()
}

/// Downscales by box averaging to a `THUMBNAIL_SIDE`² thumbnail.
pub fn thumbnail(image: &GreyImage) -> Thumbnail {
    let side = THUMBNAIL_SIDE as usize;
    let (width, height) = (image.width as usize, image.height as usize);
    let mut out = Vec::with_capacity(side * side);
    if width == 0 || height == 0 {
        return Thumbnail(vec![0; side * side]);
    }
    let bounds = |i: usize, extent: usize| {
        let start = i * extent / side;
        let end = ((i + 1) * extent / side).max(start + 1).min(extent);
        (start.min(extent - 1), end)
    };
    for ty in 0..side {
        let (y0, y1) = bounds(ty, height);
        for tx in 0..side {
            let (x0, x1) = bounds(tx, width);
            let mut sum = 0u64;
            for y in y0..y1 {
                let row = &image.pixels[y * width + x0..y * width + x1];
                sum += row.iter().map(|&p| u64::from(p)).sum::<u64>();
            }
            let count = ((y1 - y0) * (x1 - x0)) as u64;
            out.push(((sum + count / 2) / count) as u8);
        }
    }
    Thumbnail(out)
}

/// A 256-bit DCT perceptual hash: bit `i` is set when the `i`-th of the 16×16
/// lowest-frequency DCT coefficients of the thumbnail exceeds their median (DC excluded from the
/// median).
///
/// The common 64-bit pHash (8×8 coefficients) is too coarse for CT slices: on the SARS-CoV-2
/// dataset unrelated slices of different patients collide at distance 0–4, because every axial
/// slice shares the same body outline. 16×16 coefficients keep lung texture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PerceptualHash(pub [u64; 4]);

impl PerceptualHash {
    /// Number of bits in the hash.
    pub const BITS: u32 = 256;

    /// Number of differing bits (0–256).
    pub fn distance(&self, other: &PerceptualHash) -> u32 {
        self.0
            .iter()
            .zip(&other.0)
            .map(|(a, b)| (a ^ b).count_ones())
            .sum()
    }
}

/// Computes the [`PerceptualHash`] of a thumbnail.
pub fn perceptual_hash(thumb: &Thumbnail) -> PerceptualHash {
    let n = THUMBNAIL_SIDE as usize;
    const K: usize = 16;
    // DCT-II basis, rows = frequency, cols = position.
    let basis: Vec<f64> = (0..K)
        .flat_map(|u| {
            (0..n).map(move |x| {
                ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / (2 * n) as f64).cos()
            })
        })
        .collect();
    // Separable transform: first along rows, then along columns.
    let mut rows = vec![0f64; n * K];
    for y in 0..n {
        for u in 0..K {
            rows[y * K + u] = (0..n)
                .map(|x| f64::from(thumb.0[y * n + x]) * basis[u * n + x])
                .sum();
        }
    }
    let mut coefficients = [0f64; K * K];
    for v in 0..K {
        for u in 0..K {
            coefficients[v * K + u] = (0..n).map(|y| rows[y * K + u] * basis[v * n + y]).sum();
        }
    }
    let mut ac: Vec<f64> = coefficients[1..].to_vec();
    ac.sort_by(f64::total_cmp);
    let median = ac[ac.len() / 2];
    let mut bits = [0u64; 4];
    for (i, c) in coefficients.iter().enumerate() {
        if *c > median {
            bits[i / 64] |= 1 << (i % 64);
        }
    }
    PerceptualHash(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(width: u32, height: u32, shift: u8) -> GreyImage {
        let pixels = (0..height)
            .flat_map(|y| (0..width).map(move |x| ((x * 3 + y * 2) as u8).wrapping_add(shift)))
            .collect();
        GreyImage::new(width, height, pixels).expect("size matches")
    }

    #[test]
    fn content_hash_depends_on_pixels_and_size() {
        let a = gradient(20, 10, 0);
        assert_eq!(content_hash(&a), content_hash(&a.clone()));
        assert_ne!(content_hash(&a), content_hash(&gradient(20, 10, 1)));
        let same_pixels_other_shape = GreyImage::new(10, 20, a.pixels.clone()).expect("size");
        assert_ne!(content_hash(&a), content_hash(&same_pixels_other_shape));
    }

    #[test]
    fn thumbnail_of_constant_image_is_constant() {
        let thumb = thumbnail(&GreyImage::filled(300, 200, 77));
        assert_eq!(thumb.0.len(), (THUMBNAIL_SIDE * THUMBNAIL_SIDE) as usize);
        assert!(thumb.0.iter().all(|&p| p == 77));
        // Smaller than the thumbnail: pixels are repeated, not invented.
        let tiny = thumbnail(&GreyImage::filled(3, 5, 9));
        assert!(tiny.0.iter().all(|&p| p == 9));
    }

    #[test]
    fn thumbnail_distance_is_mean_absolute_difference() {
        let a = Thumbnail(vec![0, 10, 20, 30]);
        let b = Thumbnail(vec![10, 10, 0, 30]);
        assert_eq!(a.distance(&b), 7.5);
        assert_eq!(a.distance(&a), 0.0);
    }

    #[test]
    fn perceptual_hash_is_stable_under_small_changes_and_differs_for_other_content() {
        let base = gradient(128, 96, 0);
        let brighter = GreyImage::new(
            128,
            96,
            base.pixels.iter().map(|p| p.saturating_add(2)).collect(),
        )
        .expect("size");
        let h = perceptual_hash(&thumbnail(&base));
        assert!(h.distance(&perceptual_hash(&thumbnail(&brighter))) <= 8);
        let checker = GreyImage::new(
            128,
            96,
            (0..96u32)
                .flat_map(|y| {
                    (0..128u32).map(move |x| if (x / 16 + y / 16) % 2 == 0 { 0 } else { 255 })
                })
                .collect(),
        )
        .expect("size");
        assert!(h.distance(&perceptual_hash(&thumbnail(&checker))) > 40);
    }
}
