//! The out-of-distribution gate: whether an input is an image the model can judge at all.
//!
//! Two parts, both fitted when the model is trained and stored in its package:
//!
//! - **Image checks** ([`ImageChecks`]) on the decoded image: size, shape, colour, intensity
//!   spread, entropy and body area, with ranges from the training slices.
//! - **A feature density** ([`FeatureDensity`]) on the pooled features of the network's own
//!   forward pass (no second network): class-conditional Gaussians with one shared covariance
//!   (Lee et al., 2018), the covariance estimated as a probabilistic PCA (Tipping & Bishop,
//!   1999) — the principal directions that hold [`EXPLAINED_VARIANCE`] of the within-class
//!   variance keep their own variances, the rest share their mean — so it is well conditioned
//!   with fewer slices than feature dimensions. The score is the squared Mahalanobis distance
//!   to the nearest class mean divided by the dimension (about 1 for a typical training slice).
//!
//! The score threshold is chosen on held-out slices: the smallest that refuses at most
//! [`MAX_VALIDATION_REFUSED`] of them, image checks included (the validation split, or the
//! out-of-fold slices of training + validation when the release's calibration is cross-fitted).

use base64::Engine;
use covidct_imaging::{ImageChecks, Refusal, SliceStats};
use nalgebra::{DMatrix, SymmetricEigen};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ModelError;

/// Share of the within-class feature variance the principal directions keep.
pub const EXPLAINED_VARIANCE: f64 = 0.95;

/// Most principal directions kept (bounds the package size and the cost per image).
pub const MAX_COMPONENTS: usize = 256;

/// Largest share of validation slices the gate may refuse.
pub const MAX_VALIDATION_REFUSED: f64 = 0.01;

/// Class-conditional Gaussians with a shared probabilistic-PCA covariance over pooled features.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureDensity {
    /// Feature dimension.
    pub dim: usize,
    /// Mean feature of each class present in training, `dim` values each.
    pub class_means: Vec<Vec<f32>>,
    /// Principal directions, `components × dim` row-major, orthonormal rows; stored as base64
    /// of little-endian `f32`.
    #[serde(serialize_with = "to_base64", deserialize_with = "from_base64")]
    pub directions: Vec<f32>,
    /// Variance along each principal direction, largest first.
    pub variances: Vec<f64>,
    /// Variance of every remaining direction (their mean).
    pub residual_variance: f64,
}

fn to_base64<S: Serializer>(values: &[f32], serializer: S) -> Result<S::Ok, S::Error> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn from_base64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<f32>, D::Error> {
    let text = String::deserialize(deserializer)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(serde::de::Error::custom)?;
    if bytes.len() % 4 != 0 {
        return Err(serde::de::Error::custom(
            "directions: not a whole number of f32 values",
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

impl FeatureDensity {
    /// Fits the density on `rows` (`n × dim` features) with their class `labels`.
    pub fn fit(rows: &[f32], dim: usize, labels: &[usize]) -> Result<Self, ModelError> {
        let n = labels.len();
        if dim == 0 || rows.len() != n * dim || n < 2 {
            return Err(invalid(
                "features",
                format!("{} values for {n} labels of dimension {dim}", rows.len()),
                "need at least two training slices of one feature dimension",
            ));
        }
        let classes = labels.iter().max().map_or(0, |&c| c + 1);
        let mut sums = vec![vec![0.0f64; dim]; classes];
        let mut counts = vec![0usize; classes];
        for (row, &label) in rows.chunks(dim).zip(labels) {
            counts[label] += 1;
            for (s, &v) in sums[label].iter_mut().zip(row) {
                *s += f64::from(v);
            }
        }
        let means: Vec<Vec<f64>> = sums
            .into_iter()
            .zip(&counts)
            .map(|(sum, &count)| sum.into_iter().map(|s| s / count.max(1) as f64).collect())
            .collect();
        let centred = DMatrix::from_fn(n, dim, |i, j| {
            f64::from(rows[i * dim + j]) - means[labels[i]][j]
        });
        let covariance = (centred.transpose() * &centred) / n as f64;
        let trace = covariance.trace();
        if !(trace.is_finite() && trace > 0.0) {
            return Err(invalid(
                "features",
                format!("total within-class variance {trace}"),
                "the training features do not vary",
            ));
        }
        let eigen = SymmetricEigen::new(covariance);
        let mut order: Vec<usize> = (0..dim).collect();
        order.sort_by(|&a, &b| eigen.eigenvalues[b].total_cmp(&eigen.eigenvalues[a]));
        let mut kept = 0.0;
        let mut components = 0;
        for &i in &order {
            if components >= MAX_COMPONENTS.min(n - 1).min(dim - 1)
                || kept >= EXPLAINED_VARIANCE * trace
            {
                break;
            }
            kept += eigen.eigenvalues[i].max(0.0);
            components += 1;
        }
        let residual_variance =
            ((trace - kept) / (dim - components) as f64).max(trace / dim as f64 * 1e-6);
        let mut directions = Vec::with_capacity(components * dim);
        let mut variances = Vec::with_capacity(components);
        for &i in &order[..components] {
            directions.extend(eigen.eigenvectors.column(i).iter().map(|&v| v as f32));
            variances.push(eigen.eigenvalues[i].max(residual_variance));
        }
        Ok(Self {
            dim,
            class_means: means
                .into_iter()
                .zip(&counts)
                .filter(|(_, count)| **count > 0)
                .map(|(mean, _)| mean.into_iter().map(|v| v as f32).collect())
                .collect(),
            directions,
            variances,
            residual_variance,
        })
    }

    /// Checks the shapes that scoring relies on.
    pub fn validate(&self) -> Result<(), ModelError> {
        let components = self.variances.len();
        let shapes_fit = self.dim > 0
            && !self.class_means.is_empty()
            && self.class_means.iter().all(|m| m.len() == self.dim)
            && self.directions.len() == components * self.dim;
        let positive = self.residual_variance > 0.0 && self.variances.iter().all(|&v| v > 0.0);
        if shapes_fit && positive {
            Ok(())
        } else {
            Err(invalid(
                "ood.features",
                format!(
                    "dim {}, {} class means, {} directions for {components} variances",
                    self.dim,
                    self.class_means.len(),
                    self.directions.len()
                ),
                "inconsistent shapes or non-positive variances",
            ))
        }
    }

    /// The squared Mahalanobis distance of `features` to the nearest class mean, divided by the
    /// dimension; infinite for a row of the wrong length or with non-finite values.
    pub fn score(&self, features: &[f32]) -> f64 {
        if features.len() != self.dim || features.iter().any(|v| !v.is_finite()) {
            return f64::INFINITY;
        }
        let mut best = f64::INFINITY;
        for mean in &self.class_means {
            let delta: Vec<f64> = features
                .iter()
                .zip(mean)
                .map(|(&x, &m)| f64::from(x) - f64::from(m))
                .collect();
            let total: f64 = delta.iter().map(|d| d * d).sum();
            let mut projected = 0.0;
            let mut along = 0.0;
            for (direction, variance) in self.directions.chunks(self.dim).zip(&self.variances) {
                let z: f64 = direction
                    .iter()
                    .zip(&delta)
                    .map(|(&v, d)| f64::from(v) * d)
                    .sum();
                projected += z * z;
                along += z * z / variance;
            }
            let rest = (total - projected).max(0.0) / self.residual_variance;
            best = best.min(along + rest);
        }
        best / self.dim as f64
    }
}

fn invalid(field: &'static str, value: String, reason: &'static str) -> ModelError {
    ModelError::Config {
        field,
        value,
        reason,
    }
}

/// The fitted gate a package carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OodGate {
    /// Checks on the decoded image.
    pub image: ImageChecks,
    /// Density of the training slices' pooled features.
    pub features: FeatureDensity,
    /// Feature score above which a slice is refused.
    pub threshold: f64,
    /// How the threshold was chosen.
    pub threshold_rule: String,
    /// Validation slices the threshold was chosen on.
    pub validation_slices: usize,
    /// Share of them the gate refuses (image checks and feature score together).
    pub validation_refused: f64,
}

/// What the gate says about one input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OodAssessment {
    /// Whether the model may judge the input.
    pub in_distribution: bool,
    /// The feature score ([`FeatureDensity::score`]).
    pub score: f64,
    /// The score's threshold.
    pub threshold: f64,
    /// Every check the input failed (empty when in distribution).
    pub refusals: Vec<Refusal>,
}

impl OodAssessment {
    /// One line naming every failed check, for error messages and logs.
    pub fn summary(&self) -> String {
        self.refusals
            .iter()
            .map(|r| format!("{}: {}", r.check, r.message))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Held-out slices as the gate sees them: their feature scores and whether the image checks
/// refuse them, both from a gate fitted without them.
#[derive(Clone, Copy, Debug)]
pub struct GateValidation<'a> {
    /// [`FeatureDensity::score`] of each held-out slice.
    pub scores: &'a [f64],
    /// Whether [`ImageChecks::failures`] refuses each of them, in the same order.
    pub image_refused: &'a [bool],
    /// What the slices are, for the threshold rule ("validation").
    pub held_out: &'a str,
}

impl OodGate {
    /// The gate of `image` checks and the `features` density, with the score threshold chosen
    /// on `validation` ([`MAX_VALIDATION_REFUSED`]).
    pub fn fit(
        image: ImageChecks,
        features: FeatureDensity,
        validation: GateValidation<'_>,
    ) -> Result<Self, ModelError> {
        let n = validation.scores.len();
        if n == 0 || validation.image_refused.len() != n {
            return Err(invalid(
                "ood",
                format!(
                    "{n} held-out scores for {} image checks",
                    validation.image_refused.len()
                ),
                "the threshold needs held-out slices",
            ));
        }
        let image_refused = validation.image_refused;
        // Scores of the slices the image checks let through, descending: refusing the top `r`
        // of them costs `r` more refusals.
        let mut passing: Vec<f64> = validation
            .scores
            .iter()
            .zip(image_refused)
            .filter(|(_, refused)| !**refused)
            .map(|(&s, _)| s)
            .collect();
        passing.sort_by(|a, b| b.total_cmp(a));
        let allowed = (MAX_VALIDATION_REFUSED * n as f64).floor() as usize;
        let by_image = image_refused.iter().filter(|&&r| r).count();
        let extra = allowed.saturating_sub(by_image).min(passing.len());
        // Just above the highest score that must still pass (or anything, if all may pass).
        let threshold = match passing.get(extra) {
            Some(&kept) if kept.is_finite() => kept * (1.0 + 1e-9) + f64::EPSILON,
            _ => f64::MAX,
        };
        let refused = validation
            .scores
            .iter()
            .zip(image_refused)
            .filter(|(score, by_image)| **by_image || score.is_nan() || **score > threshold)
            .count();
        Ok(Self {
            image,
            features,
            threshold,
            threshold_rule: format!(
                "smallest score refusing at most {:.0}% of the {n} {} slices (image checks \
                 included)",
                100.0 * MAX_VALIDATION_REFUSED,
                validation.held_out
            ),
            validation_slices: n,
            validation_refused: refused as f64 / n as f64,
        })
    }

    /// Checks the stored gate before it is used.
    pub fn validate(&self) -> Result<(), ModelError> {
        self.features.validate()?;
        if self.threshold.is_nan() || self.threshold <= 0.0 {
            return Err(invalid(
                "ood.threshold",
                self.threshold.to_string(),
                "must be a positive number",
            ));
        }
        Ok(())
    }

    /// The gate's verdict on an image with these statistics and this feature score
    /// ([`FeatureDensity::score`] of its pooled features).
    pub fn assess(&self, stats: &SliceStats, score: f64) -> OodAssessment {
        let mut refusals = self.image.failures(stats);
        if score.is_nan() || score > self.threshold {
            refusals.push(Refusal {
                check: "features".to_owned(),
                message: format!(
                    "the network's features are unlike its training slices (score {score:.3}, \
                     threshold {:.3})",
                    self.threshold
                ),
            });
        }
        OodAssessment {
            in_distribution: refusals.is_empty(),
            score,
            threshold: self.threshold,
            refusals,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// `n` rows of dimension `dim` around `centre`, variance decaying over the coordinates.
    fn cloud(n: usize, dim: usize, centre: f32, rng: &mut ChaCha8Rng) -> Vec<f32> {
        (0..n * dim)
            .map(|i| {
                let j = i % dim;
                centre + rng.random_range(-1.0f32..1.0) * (4.0 / (1.0 + j as f32))
            })
            .collect()
    }

    #[test]
    fn scores_training_like_rows_near_one_and_outliers_far_above() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let dim = 16;
        let mut rows = cloud(200, dim, 0.0, &mut rng);
        rows.extend(cloud(200, dim, 2.0, &mut rng));
        let labels: Vec<usize> = (0..400).map(|i| i / 200).collect();
        let density = FeatureDensity::fit(&rows, dim, &labels).expect("fit");
        density.validate().expect("consistent");
        let typical: f64 = rows.chunks(dim).map(|r| density.score(r)).sum::<f64>() / 400.0;
        assert!((0.5..1.5).contains(&typical), "mean score {typical}");
        let far = vec![30.0f32; dim];
        assert!(density.score(&far) > 50.0 * typical);
        // Small along the high-variance axis is fine; the same step along a low-variance axis
        // is not.
        let mut along_wide = vec![0.0f32; dim];
        along_wide[0] = 3.0;
        let mut along_narrow = vec![0.0f32; dim];
        along_narrow[dim - 1] = 3.0;
        assert!(density.score(&along_narrow) > 10.0 * density.score(&along_wide));
        assert!(density.score(&[1.0; 3]).is_infinite());
    }

    #[test]
    fn survives_its_own_serialisation() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let rows = cloud(50, 8, 1.0, &mut rng);
        let density = FeatureDensity::fit(&rows, 8, &[0; 50]).expect("fit");
        let json = serde_json::to_string(&density).expect("serialise");
        let back: FeatureDensity = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, density);
    }

    #[test]
    fn threshold_refuses_at_most_one_percent_of_validation() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let dim = 8;
        let rows = cloud(300, dim, 0.0, &mut rng);
        let density = FeatureDensity::fit(&rows, dim, &[0; 300]).expect("fit");
        let stats: Vec<SliceStats> = (0..300)
            .map(|i| SliceStats {
                width: 200 + i,
                height: 200,
                colour_share: 0.0,
                mean: 80.0 + f64::from(i % 7),
                std: 50.0 + f64::from(i % 5),
                entropy: 6.0 + f64::from(i % 3) / 10.0,
                body_share: 0.4 + f64::from(i % 4) / 100.0,
            })
            .collect();
        let val = cloud(250, dim, 0.0, &mut rng);
        let scores: Vec<f64> = val.chunks(dim).map(|r| density.score(r)).collect();
        let image = ImageChecks::fit(&stats).expect("checks");
        let image_refused: Vec<bool> = stats[..250]
            .iter()
            .map(|s| !image.failures(s).is_empty())
            .collect();
        let gate = OodGate::fit(
            image,
            density,
            GateValidation {
                scores: &scores,
                image_refused: &image_refused,
                held_out: "validation",
            },
        )
        .expect("gate");
        assert!(gate.threshold_rule.contains("of the 250 validation slices"));
        gate.validate().expect("valid");
        let refused = val
            .chunks(dim)
            .zip(&stats)
            .filter(|(row, s)| !gate.assess(s, gate.features.score(row)).in_distribution)
            .count();
        assert!(refused <= 2, "{refused} of 250 refused");
        assert_eq!(gate.validation_refused, refused as f64 / 250.0);
        let outlier = gate.assess(&stats[0], gate.features.score(&[20.0; 8]));
        assert!(!outlier.in_distribution);
        assert_eq!(outlier.refusals[0].check, "features");
        assert!(outlier.summary().starts_with("features: "));
    }
}
