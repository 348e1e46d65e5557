//! Image statistics for monitoring: the one definition shared by the service's prediction log and
//! the monitoring export, so that drift is always measured on the same numbers.

use serde::{Deserialize, Serialize};

use crate::types::GreyImage;

/// Summary statistics of one canonical grey image, on the 0–255 intensity scale.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageFeatures {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Mean intensity.
    pub mean: f64,
    /// Standard deviation of the intensity (population).
    pub std: f64,
    /// 1st percentile of the intensity (nearest rank).
    pub p01: f64,
    /// 5th percentile.
    pub p05: f64,
    /// 25th percentile.
    pub p25: f64,
    /// Median.
    pub p50: f64,
    /// 75th percentile.
    pub p75: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Shannon entropy of the 256-bin intensity histogram, in bits (0–8).
    pub entropy: f64,
    /// Robust contrast: `(p95 − p05) / 255`, in 0–1.
    pub contrast: f64,
    /// Sharpness: variance of the 4-neighbour Laplacian over the interior pixels (0 for images
    /// narrower or lower than 3 pixels).
    pub sharpness: f64,
}

/// Names of the [`ImageFeatures`] fields in declaration order (their serde names), e.g. the
/// feature columns of a CSV export.
pub const FEATURE_NAMES: [&str; 14] = [
    "width",
    "height",
    "mean",
    "std",
    "p01",
    "p05",
    "p25",
    "p50",
    "p75",
    "p95",
    "p99",
    "entropy",
    "contrast",
    "sharpness",
];

impl ImageFeatures {
    /// Every feature as `(name, value)`, in [`FEATURE_NAMES`] order, so a CSV export and the
    /// service's JSON log use the same names.
    pub fn named_values(&self) -> [(&'static str, f64); 14] {
        let values = [
            f64::from(self.width),
            f64::from(self.height),
            self.mean,
            self.std,
            self.p01,
            self.p05,
            self.p25,
            self.p50,
            self.p75,
            self.p95,
            self.p99,
            self.entropy,
            self.contrast,
            self.sharpness,
        ];
        std::array::from_fn(|i| (FEATURE_NAMES[i], values[i]))
    }
}

/// Computes the [`ImageFeatures`] of an image.
pub fn image_features(image: &GreyImage) -> ImageFeatures {
    let mut histogram = [0u64; 256];
    for &p in &image.pixels {
        histogram[usize::from(p)] += 1;
    }
    let n = image.pixels.len().max(1) as f64;
    let mean = histogram
        .iter()
        .enumerate()
        .map(|(v, &c)| v as f64 * c as f64)
        .sum::<f64>()
        / n;
    let variance = histogram
        .iter()
        .enumerate()
        .map(|(v, &c)| (v as f64 - mean).powi(2) * c as f64)
        .sum::<f64>()
        / n;
    let entropy = histogram
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum::<f64>();
    let percentile = |q: f64| percentile(&histogram, image.pixels.len() as u64, q);
    let (p05, p95) = (percentile(0.05), percentile(0.95));
    ImageFeatures {
        width: image.width,
        height: image.height,
        mean,
        std: variance.sqrt(),
        p01: percentile(0.01),
        p05,
        p25: percentile(0.25),
        p50: percentile(0.50),
        p75: percentile(0.75),
        p95,
        p99: percentile(0.99),
        entropy,
        contrast: (p95 - p05) / 255.0,
        sharpness: laplacian_variance(image),
    }
}

/// The nearest-rank `q`-quantile of `total` values counted in `histogram` (0 when empty).
fn percentile(histogram: &[u64; 256], total: u64, q: f64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (value, &count) in histogram.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return value as f64;
        }
    }
    255.0
}

/// Variance of `4·p − (up + down + left + right)` over the pixels that have all four neighbours.
fn laplacian_variance(image: &GreyImage) -> f64 {
    let (w, h) = (image.width as usize, image.height as usize);
    if w < 3 || h < 3 {
        return 0.0;
    }
    let px = |x: usize, y: usize| f64::from(image.pixels[y * w + x]);
    let (mut sum, mut sum_sq) = (0.0, 0.0);
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let l = 4.0 * px(x, y) - px(x - 1, y) - px(x + 1, y) - px(x, y - 1) - px(x, y + 1);
            sum += l;
            sum_sq += l * l;
        }
    }
    let count = ((w - 2) * (h - 2)) as f64;
    let mean = sum / count;
    (sum_sq / count - mean * mean).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_image_has_no_spread_entropy_or_edges() {
        let f = image_features(&GreyImage::filled(10, 8, 77));
        assert_eq!((f.width, f.height), (10, 8));
        assert_eq!(f.mean, 77.0);
        assert_eq!(f.std, 0.0);
        assert_eq!((f.p01, f.p50, f.p99), (77.0, 77.0, 77.0));
        assert_eq!(f.entropy, 0.0);
        assert_eq!(f.contrast, 0.0);
        assert_eq!(f.sharpness, 0.0);
    }

    #[test]
    fn two_level_image_has_one_bit_and_sharp_edges() {
        // Left half 0, right half 200.
        let pixels = (0..16 * 16)
            .map(|i| if i % 16 < 8 { 0 } else { 200 })
            .collect();
        let image = GreyImage::new(16, 16, pixels).expect("16×16 pixels");
        let f = image_features(&image);
        assert!((f.mean - 100.0).abs() < 1e-9);
        assert!((f.std - 100.0).abs() < 1e-9);
        assert!((f.entropy - 1.0).abs() < 1e-9);
        assert_eq!((f.p25, f.p75), (0.0, 200.0));
        assert!((f.contrast - 200.0 / 255.0).abs() < 1e-9);
        assert!(f.sharpness > 0.0);
    }

    #[test]
    fn named_values_match_the_serialised_fields() {
        let f = image_features(&GreyImage::filled(5, 3, 40));
        let json = serde_json::to_value(f).expect("features serialise");
        let object = json.as_object().expect("an object");
        let named = f.named_values();
        assert_eq!(named.len(), object.len());
        for (name, value) in named {
            let serialised = object[name].as_f64().expect("a number");
            assert_eq!(serialised, value, "{name}");
        }
        let names: Vec<&str> = named.iter().map(|(n, _)| *n).collect();
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, keys, "serde_json sorts keys; same set of names");
    }

    #[test]
    fn tiny_and_empty_images_do_not_panic() {
        let f = image_features(&GreyImage::filled(2, 1, 5));
        assert_eq!(f.sharpness, 0.0);
        let empty = image_features(&GreyImage::filled(0, 0, 0));
        assert_eq!(empty.p50, 0.0);
    }
}
