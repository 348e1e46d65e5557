//! Cheap checks that an image can be a slice like those a model was trained on, before any
//! network looks at it: size and shape, colour (CT is grey), intensity spread (blank and
//! saturated images), histogram entropy (pure noise) and the share of the image the body covers.
//!
//! The accepted ranges are fitted on the training slices ([`ImageChecks::fit`]): the 0.1 % and
//! 99.9 % quantiles of each statistic, widened by a tenth of the span between them (at least a
//! small fixed margin per statistic), so a model trained on another dataset gets checks of its
//! own. Refusing is the caller's decision; this
//! module only says which checks fail and why.

use serde::{Deserialize, Serialize};

use crate::features::{ImageFeatures, image_features};
use crate::mask::body_mask;
use crate::types::DecodedImage;

/// The statistics the checks read, from one decoded image.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SliceStats {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Share of pixels with colour content ([`DecodedImage::coloured_pixels`]).
    pub colour_share: f64,
    /// Mean grey level (0–255).
    pub mean: f64,
    /// Standard deviation of the grey level.
    pub std: f64,
    /// Entropy of the 256-bin histogram, in bits.
    pub entropy: f64,
    /// Share of the image inside the body mask ([`body_mask`]).
    pub body_share: f64,
}

impl SliceStats {
    /// The statistics of a decoded image.
    pub fn of(decoded: &DecodedImage) -> Self {
        Self::with_features(decoded, &image_features(&decoded.image))
    }

    /// The statistics of a decoded image whose [`ImageFeatures`] are already computed (e.g. for
    /// the prediction log): the histogram is not read twice.
    pub fn with_features(decoded: &DecodedImage, features: &ImageFeatures) -> Self {
        let image = &decoded.image;
        let pixels = image.pixels.len().max(1) as f64;
        Self {
            width: image.width,
            height: image.height,
            colour_share: decoded.coloured_pixels as f64 / pixels,
            mean: features.mean,
            std: features.std,
            entropy: features.entropy,
            body_share: body_mask(image).area() as f64 / pixels,
        }
    }

    /// Longer side over shorter side (infinite for an empty image).
    pub fn aspect(&self) -> f64 {
        let (long, short) = (self.width.max(self.height), self.width.min(self.height));
        if short == 0 {
            f64::INFINITY
        } else {
            f64::from(long) / f64::from(short)
        }
    }
}

/// An accepted closed interval of one statistic.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Range {
    /// Smallest accepted value.
    pub min: f64,
    /// Largest accepted value.
    pub max: f64,
}

impl Range {
    /// The quantile range of `values` (0.1 %–99.9 %) widened on each side by a tenth of its span,
    /// and at least by `least`: a homogeneous training set must still accept a re-encoded copy
    /// of its own slices (a JPEG of a PNG moves the entropy a little).
    fn fitted(values: &mut [f64], least: f64) -> Self {
        values.sort_by(f64::total_cmp);
        let (lo, hi) = (quantile(values, 0.001), quantile(values, 0.999));
        let margin = (0.1 * (hi - lo)).max(least);
        Self {
            min: lo - margin,
            max: hi + margin,
        }
    }

    fn contains(&self, value: f64) -> bool {
        (self.min..=self.max).contains(&value)
    }
}

/// Nearest-rank quantile of sorted values (0 when empty).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// One failed check: which, and why, in words a user can act on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Refusal {
    /// Machine-readable name of the check (`too_small`, `aspect`, `colour`, `intensity_mean`,
    /// `intensity_std`, `entropy`, `body_area`, or `features` for the model's own check).
    pub check: String,
    /// What was measured against what was accepted.
    pub message: String,
}

/// Smallest colour share ever accepted: CT is grey, so a few coloured pixels (an annotation, a
/// logo) are tolerated but a colour picture is not.
const MIN_COLOUR_ALLOWANCE: f64 = 0.01;

/// Acceptance ranges of [`SliceStats`], fitted on training slices.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageChecks {
    /// Smallest accepted shorter side, in pixels: half the smallest training side.
    pub min_side: u32,
    /// Largest accepted ratio of the longer to the shorter side: 1.5 × the training maximum.
    pub max_aspect: f64,
    /// Largest accepted share of coloured pixels.
    pub max_colour_share: f64,
    /// Accepted mean grey level.
    pub mean: Range,
    /// Accepted spread of grey levels (blank and saturated images fall below it).
    pub std: Range,
    /// Accepted histogram entropy (pure noise lies above it).
    pub entropy: Range,
    /// Accepted share of the image covered by the body.
    pub body_share: Range,
    /// Training slices the ranges were fitted on.
    pub fitted_on: usize,
}

impl ImageChecks {
    /// Fits the ranges on the statistics of training slices; `None` without any.
    pub fn fit(stats: &[SliceStats]) -> Option<Self> {
        if stats.is_empty() {
            return None;
        }
        let column = |f: fn(&SliceStats) -> f64, least: f64| -> Range {
            let mut values: Vec<f64> = stats.iter().map(f).collect();
            Range::fitted(&mut values, least)
        };
        let min_side = stats
            .iter()
            .map(|s| s.width.min(s.height))
            .min()
            .unwrap_or(0);
        let max_aspect = stats.iter().map(SliceStats::aspect).fold(1.0, f64::max);
        Some(Self {
            min_side: (min_side / 2).max(8),
            max_aspect: 1.5 * max_aspect,
            max_colour_share: column(|s| s.colour_share, 0.0)
                .max
                .max(MIN_COLOUR_ALLOWANCE),
            mean: column(|s| s.mean, 10.0),
            std: column(|s| s.std, 5.0),
            entropy: column(|s| s.entropy, 0.5),
            body_share: column(|s| s.body_share, 0.05),
            fitted_on: stats.len(),
        })
    }

    /// The checks `stats` fails, in a fixed order; empty when the image passes.
    pub fn failures(&self, stats: &SliceStats) -> Vec<Refusal> {
        let mut failed = Vec::new();
        let mut refuse = |check: &str, message: String| {
            failed.push(Refusal {
                check: check.to_owned(),
                message,
            })
        };
        let short = stats.width.min(stats.height);
        if short < self.min_side {
            refuse(
                "too_small",
                format!(
                    "{}×{} pixels: the shorter side is below the {} pixels accepted",
                    stats.width, stats.height, self.min_side
                ),
            );
        }
        if stats.aspect() > self.max_aspect {
            refuse(
                "aspect",
                format!(
                    "{}×{} pixels: a side ratio of {:.2} is above the {:.2} accepted (a heavy \
                     crop?)",
                    stats.width,
                    stats.height,
                    stats.aspect(),
                    self.max_aspect
                ),
            );
        }
        if stats.colour_share > self.max_colour_share {
            refuse(
                "colour",
                format!(
                    "{:.1}% of the pixels are coloured; CT slices are grey (at most {:.1}% \
                     accepted)",
                    100.0 * stats.colour_share,
                    100.0 * self.max_colour_share
                ),
            );
        }
        let ranged = [
            ("intensity_mean", "mean grey level", stats.mean, &self.mean),
            (
                "intensity_std",
                "grey-level spread (blank or saturated?)",
                stats.std,
                &self.std,
            ),
            (
                "entropy",
                "histogram entropy in bits (noise?)",
                stats.entropy,
                &self.entropy,
            ),
            (
                "body_area",
                "share of the image covered by a body",
                stats.body_share,
                &self.body_share,
            ),
        ];
        for (check, what, value, range) in ranged {
            if !range.contains(value) {
                refuse(
                    check,
                    format!(
                        "{what} {value:.3} is outside the {:.3}–{:.3} of the training slices",
                        range.min, range.max
                    ),
                );
            }
        }
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(width: u32, height: u32, mean: f64) -> SliceStats {
        SliceStats {
            width,
            height,
            colour_share: 0.0,
            mean,
            std: 60.0 + mean / 10.0,
            entropy: 6.5 + mean / 1000.0,
            body_share: 0.4 + mean / 1000.0,
        }
    }

    fn fitted() -> ImageChecks {
        let stats: Vec<SliceStats> = (0..200)
            .map(|i| slice(200 + i, 150 + i / 2, 60.0 + f64::from(i) / 4.0))
            .collect();
        ImageChecks::fit(&stats).expect("training statistics")
    }

    #[test]
    fn training_slices_pass_their_own_checks() {
        let checks = fitted();
        for i in 0..200 {
            let s = slice(200 + i, 150 + i / 2, 60.0 + f64::from(i) / 4.0);
            assert!(checks.failures(&s).is_empty(), "{s:?}");
        }
    }

    #[test]
    fn each_unusable_property_names_its_check() {
        let checks = fitted();
        let base = slice(250, 180, 80.0);
        let cases = [
            (
                SliceStats {
                    width: 40,
                    height: 40,
                    ..base
                },
                "too_small",
            ),
            (
                SliceStats {
                    width: 900,
                    height: 150,
                    ..base
                },
                "aspect",
            ),
            (
                SliceStats {
                    colour_share: 0.5,
                    ..base
                },
                "colour",
            ),
            (SliceStats { std: 0.0, ..base }, "intensity_std"),
            (
                SliceStats {
                    entropy: 8.0,
                    ..base
                },
                "entropy",
            ),
            (
                SliceStats {
                    body_share: 0.0,
                    ..base
                },
                "body_area",
            ),
            (
                SliceStats {
                    mean: 255.0,
                    ..base
                },
                "intensity_mean",
            ),
        ];
        for (stats, expected) in cases {
            let failed = checks.failures(&stats);
            assert!(
                failed.iter().any(|r| r.check == expected),
                "{expected}: {failed:?}"
            );
        }
    }

    #[test]
    fn no_training_slices_fit_no_checks() {
        assert!(ImageChecks::fit(&[]).is_none());
    }
}
