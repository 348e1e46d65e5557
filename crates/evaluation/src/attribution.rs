//! Summary of where a saliency method (Grad-CAM) puts its attribution: per image, the share of
//! positive attribution that falls inside the body; over a split, its distribution per class.
//!
//! A model that looks at the patient should put most of its attribution inside the body; a
//! large share outside (background, table, text burnt into the image) hints at a shortcut.

use serde::{Deserialize, Serialize};

use crate::bootstrap::percentile;
use crate::error::{EvalError, check_lengths};

/// Below this share of attribution inside the body an image counts as "mostly outside".
pub const INSIDE_CUTOFF: f64 = 0.5;

/// The distribution of the inside-body share over a set of images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributionStats {
    /// Images explained.
    pub images: usize,
    /// Of them, images without a share: no positive attribution anywhere, or no body found.
    pub undefined: usize,
    /// Mean share inside the body; `None` when no image has a share.
    pub mean: Option<f64>,
    /// Median share.
    pub median: Option<f64>,
    /// 10th percentile of the share.
    pub p10: Option<f64>,
    /// Fraction of the images with a share that have less than [`INSIDE_CUTOFF`] inside.
    pub mostly_outside: Option<f64>,
}

impl AttributionStats {
    fn of(shares: impl Iterator<Item = Option<f64>>) -> Self {
        let mut images = 0;
        let mut values = Vec::new();
        for share in shares {
            images += 1;
            values.extend(share);
        }
        values.sort_unstable_by(f64::total_cmp);
        let count = values.len();
        Self {
            images,
            undefined: images - count,
            mean: (count > 0).then(|| values.iter().sum::<f64>() / count as f64),
            median: percentile(&values, 0.5),
            p10: percentile(&values, 0.1),
            mostly_outside: (count > 0).then(|| {
                values.iter().filter(|&&v| v < INSIDE_CUTOFF).count() as f64 / count as f64
            }),
        }
    }
}

/// The inside-body share over a split: all images, then each class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributionSummary {
    /// Every image explained.
    pub all: AttributionStats,
    /// Images of the positive class.
    pub positive: AttributionStats,
    /// Images of the other classes.
    pub negative: AttributionStats,
}

/// Summarises per-image inside-body shares (`None` where undefined) with each image's label.
///
/// Fails on empty or mismatched inputs and on shares outside [0, 1].
pub fn summarize_attribution(
    shares: &[Option<f64>],
    labels: &[bool],
) -> Result<AttributionSummary, EvalError> {
    check_lengths("shares", shares.len(), "labels", labels.len())?;
    if let Some(bad) = shares
        .iter()
        .flatten()
        .find(|s| !(s.is_finite() && (0.0..=1.0).contains(*s)))
    {
        return Err(EvalError::InvalidSetting {
            field: "shares",
            reason: format!("{bad} is not a share in [0, 1]"),
        });
    }
    let class = |wanted: bool| {
        AttributionStats::of(
            shares
                .iter()
                .zip(labels)
                .filter(move |(_, l)| **l == wanted)
                .map(|(s, _)| *s),
        )
    };
    Ok(AttributionSummary {
        all: AttributionStats::of(shares.iter().copied()),
        positive: class(true),
        negative: class(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_per_class() {
        let shares = [Some(0.9), Some(0.2), None, Some(1.0), Some(0.4)];
        let labels = [true, true, true, false, false];
        let s = summarize_attribution(&shares, &labels).expect("summary");
        assert_eq!((s.all.images, s.all.undefined), (5, 1));
        assert!((s.all.mean.expect("mean") - 0.625).abs() < 1e-12);
        assert_eq!(s.all.median, Some(0.65));
        assert_eq!(s.all.mostly_outside, Some(0.5));
        assert_eq!((s.positive.images, s.positive.undefined), (3, 1));
        assert_eq!(s.positive.mostly_outside, Some(0.5));
        assert_eq!(s.negative.median, Some(0.7));
        assert!((s.negative.p10.expect("p10") - 0.46).abs() < 1e-12);
    }

    #[test]
    fn no_shares_and_bad_shares() {
        let s = summarize_attribution(&[None], &[true]).expect("summary");
        assert_eq!((s.all.mean, s.all.mostly_outside), (None, None));
        assert_eq!(s.negative.images, 0);
        assert!(summarize_attribution(&[Some(1.5)], &[true]).is_err());
        assert!(summarize_attribution(&[], &[]).is_err());
    }
}
