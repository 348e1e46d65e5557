//! The shortcut test: can a simple classifier that sees only file metadata (size, aspect,
//! original pixel layout, file size) predict the class? If it can, the dataset carries a
//! shortcut a network may learn instead of the anatomy.
//!
//! **Model.** L2-penalised logistic regression (penalty [`ShortcutConfig::l2`] on the summed
//! log-loss, intercept unpenalised) fitted by Newton's method with step halving. Numeric
//! features enter as z-scores (mean and standard deviation of the training fold) and their
//! squares, so a band of values (e.g. one middle size) is learnable as well as a trend; the
//! numeric features are the logarithms of width, height, aspect (width / height), file size
//! and bytes per pixel. The original layout enters one-hot (layouts unseen in training get
//! all zeros).
//!
//! **Validation.** k-fold cross-validation grouped by patient or pseudo-patient: every group
//! lies in exactly one test fold, so metadata shared by the slices of one patient cannot leak
//! from training into test. Groups are dealt into folds by
//! [`crate::folds::group_folds`] (seeded by [`ShortcutConfig::seed`], stratified by class).
//! The out-of-fold probabilities of all folds are pooled into one ROC-AUC and one accuracy
//! (probability ≥ 0.5).
//!
//! **Verdict.** [`ShortcutVerdict::Shortcut`] when the cross-validated ROC-AUC of the full model
//! reaches [`ShortcutConfig::auc_threshold`] (default 0.75: a quarter of the way from chance to
//! perfect separation is far more than metadata of a clean dataset should carry). The same
//! cross-validation of each feature alone says which features carry it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bootstrap::group_members;
use crate::error::{EvalError, check_lengths, class_counts, require_both_classes};
use crate::folds::group_folds;
use crate::metrics::roc_auc;

/// What the shortcut test knows of one image file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMetadata {
    /// Original width in pixels.
    pub width: u32,
    /// Original height in pixels.
    pub height: u32,
    /// File size in bytes.
    pub file_bytes: u64,
    /// Original pixel layout, e.g. `PNG RGB 8-bit`.
    pub layout: String,
}

/// Settings of the shortcut test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShortcutConfig {
    /// Cross-validation folds (default 5; fewer when there are fewer groups).
    pub folds: usize,
    /// Cross-validated ROC-AUC from which the verdict is `shortcut` (default 0.75).
    pub auc_threshold: f64,
    /// L2 penalty of the logistic regression (default 1.0).
    pub l2: f64,
    /// Seed of the fold assignment (default 42).
    pub seed: u64,
}

impl Default for ShortcutConfig {
    fn default() -> Self {
        Self {
            folds: 5,
            auc_threshold: 0.75,
            l2: 1.0,
            seed: 42,
        }
    }
}

impl ShortcutConfig {
    /// Checks that there are at least 2 folds, the threshold lies in (0.5, 1] and the penalty
    /// is a finite number above 0.
    pub fn validate(&self) -> Result<(), EvalError> {
        if self.folds < 2 {
            return Err(EvalError::InvalidSetting {
                field: "shortcut.folds",
                reason: format!("{} folds; cross-validation needs at least 2", self.folds),
            });
        }
        if !(self.auc_threshold > 0.5 && self.auc_threshold <= 1.0) {
            return Err(EvalError::InvalidSetting {
                field: "shortcut.auc_threshold",
                reason: format!("{} is not in (0.5, 1]", self.auc_threshold),
            });
        }
        if !(self.l2.is_finite() && self.l2 > 0.0) {
            return Err(EvalError::InvalidSetting {
                field: "shortcut.l2",
                reason: format!("{} is not a finite number above 0", self.l2),
            });
        }
        Ok(())
    }
}

/// Whether metadata predicts the class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShortcutVerdict {
    /// Cross-validated ROC-AUC at or above the threshold.
    Shortcut,
    /// Below it.
    NoShortcut,
}

impl ShortcutVerdict {
    /// `shortcut` or `no_shortcut`, as in JSON and MLflow tags.
    pub fn as_str(self) -> &'static str {
        match self {
            ShortcutVerdict::Shortcut => "shortcut",
            ShortcutVerdict::NoShortcut => "no_shortcut",
        }
    }
}

/// How well one feature alone predicts the class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureAuc {
    /// The feature: `width`, `height`, `aspect`, `file size`, `bytes per pixel` or `layout`.
    pub feature: String,
    /// Cross-validated ROC-AUC of the model on this feature alone.
    pub cv_roc_auc: f64,
}

/// How many images of each class have a layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutCount {
    /// The original layout.
    pub layout: String,
    /// Positive images with it.
    pub positives: usize,
    /// Negative images with it.
    pub negatives: usize,
}

/// The result of [`shortcut_test`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShortcutReport {
    /// Images.
    pub n: usize,
    /// Positive images.
    pub positives: usize,
    /// Distinct groups.
    pub groups: usize,
    /// Folds used.
    pub folds: usize,
    /// Cross-validated ROC-AUC of the metadata model.
    pub cv_roc_auc: f64,
    /// Cross-validated accuracy at probability 0.5.
    pub cv_accuracy: f64,
    /// Accuracy of always answering the majority class, for comparison.
    pub majority_baseline: f64,
    /// The threshold the verdict used.
    pub auc_threshold: f64,
    /// The verdict.
    pub verdict: ShortcutVerdict,
    /// Each feature alone, highest ROC-AUC first.
    pub features: Vec<FeatureAuc>,
    /// Images per layout and class.
    pub layouts: Vec<LayoutCount>,
}

impl ShortcutReport {
    /// The features whose own cross-validated ROC-AUC reaches the threshold.
    pub fn telling_features(&self) -> Vec<&FeatureAuc> {
        self.features
            .iter()
            .filter(|f| f.cv_roc_auc >= self.auc_threshold)
            .collect()
    }

    /// One sentence: the verdict, the ROC-AUC and the features that carry the shortcut.
    pub fn summary(&self) -> String {
        match self.verdict {
            ShortcutVerdict::Shortcut => {
                let telling: Vec<String> = self
                    .telling_features()
                    .iter()
                    .map(|f| format!("{} alone {:.2}", f.feature, f.cv_roc_auc))
                    .collect();
                format!(
                    "SHORTCUT: metadata alone predicts the class (cross-validated ROC-AUC {:.3} ≥ {:.2}){}",
                    self.cv_roc_auc,
                    self.auc_threshold,
                    if telling.is_empty() {
                        "; no single feature does, only their combination".to_owned()
                    } else {
                        format!("; {}", telling.join(", "))
                    }
                )
            }
            ShortcutVerdict::NoShortcut => format!(
                "no shortcut: metadata alone does not predict the class (cross-validated ROC-AUC {:.3} < {:.2})",
                self.cv_roc_auc, self.auc_threshold
            ),
        }
    }
}

/// The numeric features, in this order, each the logarithm of a positive quantity.
const NUMERIC: [&str; 5] = ["width", "height", "aspect", "file size", "bytes per pixel"];
/// The categorical feature.
const LAYOUT: &str = "layout";

fn numeric_values(m: &ImageMetadata) -> [f64; NUMERIC.len()] {
    let ln = |v: f64| v.max(1.0).ln();
    let (w, h, bytes) = (f64::from(m.width), f64::from(m.height), m.file_bytes as f64);
    [
        ln(w),
        ln(h),
        ln(w) - ln(h),
        ln(bytes),
        ln(bytes) - ln(w) - ln(h),
    ]
}

/// Which features a model sees.
#[derive(Clone, Copy)]
struct Selection<'a> {
    numeric: &'a [usize],
    layout: bool,
}

/// Maps raw features to a design row, with statistics of the training fold.
struct Design {
    selection: Vec<usize>,
    means: Vec<f64>,
    stds: Vec<f64>,
    layouts: Vec<String>,
}

impl Design {
    fn fit(numeric: &[[f64; 5]], layouts: &[&str], train: &[usize], selection: Selection) -> Self {
        let n = train.len().max(1) as f64;
        let (mut means, mut stds) = (Vec::new(), Vec::new());
        for &k in selection.numeric {
            let mean = train.iter().map(|&i| numeric[i][k]).sum::<f64>() / n;
            let var = train
                .iter()
                .map(|&i| (numeric[i][k] - mean).powi(2))
                .sum::<f64>()
                / n;
            means.push(mean);
            stds.push(if var > 1e-24 { var.sqrt() } else { 1.0 });
        }
        let mut seen: Vec<String> = if selection.layout {
            train.iter().map(|&i| layouts[i].to_owned()).collect()
        } else {
            Vec::new()
        };
        seen.sort();
        seen.dedup();
        Self {
            selection: selection.numeric.to_vec(),
            means,
            stds,
            layouts: seen,
        }
    }

    fn width(&self) -> usize {
        1 + 2 * self.selection.len() + self.layouts.len()
    }

    fn row(&self, numeric: &[f64; 5], layout: &str, out: &mut Vec<f64>) {
        out.clear();
        out.push(1.0);
        for (j, &k) in self.selection.iter().enumerate() {
            let z = (numeric[k] - self.means[j]) / self.stds[j];
            out.push(z);
            out.push(z * z);
        }
        out.extend(
            self.layouts
                .iter()
                .map(|l| f64::from(u8::from(l == layout))),
        );
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Penalised negative log-likelihood of `beta` (intercept unpenalised).
fn loss(x: &[Vec<f64>], y: &[bool], beta: &[f64], l2: f64) -> f64 {
    let data: f64 = x
        .iter()
        .zip(y)
        .map(|(row, &label)| {
            let z: f64 = row.iter().zip(beta).map(|(a, b)| a * b).sum();
            // log(1 + e^z) − y·z, computed stably.
            let softplus = if z > 0.0 {
                z + (-z).exp().ln_1p()
            } else {
                z.exp().ln_1p()
            };
            softplus - if label { z } else { 0.0 }
        })
        .sum();
    data + 0.5 * l2 * beta[1..].iter().map(|b| b * b).sum::<f64>()
}

/// Fits the L2-penalised logistic regression by Newton's method with step halving.
// Symmetric and triangular matrix updates read clearest as index loops.
#[allow(clippy::needless_range_loop)]
fn fit_logistic(x: &[Vec<f64>], y: &[bool], l2: f64) -> Vec<f64> {
    let d = x.first().map_or(1, Vec::len);
    let mut beta = vec![0.0; d];
    let mut current = loss(x, y, &beta, l2);
    for _ in 0..100 {
        let mut gradient = vec![0.0; d];
        let mut hessian = vec![vec![0.0; d]; d];
        for (row, &label) in x.iter().zip(y) {
            let p = sigmoid(row.iter().zip(&beta).map(|(a, b)| a * b).sum());
            let residual = p - f64::from(u8::from(label));
            let weight = (p * (1.0 - p)).max(1e-12);
            for a in 0..d {
                gradient[a] += residual * row[a];
                for b in 0..=a {
                    hessian[a][b] += weight * row[a] * row[b];
                }
            }
        }
        for a in 0..d {
            for b in 0..a {
                hessian[b][a] = hessian[a][b];
            }
            if a > 0 {
                gradient[a] += l2 * beta[a];
                hessian[a][a] += l2;
            }
        }
        hessian[0][0] += 1e-9;
        let Some(step) = solve(hessian, gradient) else {
            break;
        };
        let mut scale = 1.0;
        let mut accepted = false;
        for _ in 0..30 {
            let candidate: Vec<f64> = beta.iter().zip(&step).map(|(b, s)| b - scale * s).collect();
            let value = loss(x, y, &candidate, l2);
            if value <= current {
                beta = candidate;
                current = value;
                accepted = true;
                break;
            }
            scale /= 2.0;
        }
        let largest = step.iter().fold(0.0f64, |m, s| m.max((scale * s).abs()));
        if !accepted || largest < 1e-9 {
            break;
        }
    }
    beta
}

/// Solves `a · x = b` by Gaussian elimination with partial pivoting; `None` when singular.
// Symmetric and triangular matrix updates read clearest as index loops.
#[allow(clippy::needless_range_loop)]
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-300 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..n {
            let factor = a[row][col] / a[col][col];
            if factor != 0.0 {
                for k in col..n {
                    a[row][k] -= factor * a[col][k];
                }
                b[row] -= factor * b[col];
            }
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - tail) / a[row][row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Out-of-fold probabilities of the model on `selection`.
fn cross_validate(
    numeric: &[[f64; 5]],
    layouts: &[&str],
    labels: &[bool],
    fold_of: &[usize],
    k: usize,
    selection: Selection,
    l2: f64,
) -> Vec<f64> {
    let mut out = vec![0.5; labels.len()];
    let mut row = Vec::new();
    for fold in 0..k {
        let train: Vec<usize> = (0..labels.len()).filter(|&i| fold_of[i] != fold).collect();
        let test: Vec<usize> = (0..labels.len()).filter(|&i| fold_of[i] == fold).collect();
        if train.is_empty() || test.is_empty() {
            continue;
        }
        let design = Design::fit(numeric, layouts, &train, selection);
        let x: Vec<Vec<f64>> = train
            .iter()
            .map(|&i| {
                design.row(&numeric[i], layouts[i], &mut row);
                row.clone()
            })
            .collect();
        let y: Vec<bool> = train.iter().map(|&i| labels[i]).collect();
        let beta = if y.iter().all(|&l| l == y[0]) {
            // One class in training: the intercept alone, at that class.
            let mut beta = vec![0.0; design.width()];
            beta[0] = if y[0] { 20.0 } else { -20.0 };
            beta
        } else {
            fit_logistic(&x, &y, l2)
        };
        for &i in &test {
            design.row(&numeric[i], layouts[i], &mut row);
            out[i] = sigmoid(row.iter().zip(&beta).map(|(a, b)| a * b).sum());
        }
    }
    out
}

/// Runs the shortcut test on image metadata, labels (`true` = positive class) and groups
/// (patients or pseudo-patients; give each image its own group when unknown, which lets
/// metadata shared by one patient's slices inflate the result).
///
/// Fails on empty or mismatched inputs, labels of one class, fewer than two groups, or invalid
/// settings.
pub fn shortcut_test<S: AsRef<str>>(
    metadata: &[ImageMetadata],
    labels: &[bool],
    groups: &[S],
    config: &ShortcutConfig,
) -> Result<ShortcutReport, EvalError> {
    check_lengths("metadata", metadata.len(), "labels", labels.len())?;
    check_lengths("groups", groups.len(), "labels", labels.len())?;
    config.validate()?;
    require_both_classes(labels, "the shortcut test")?;
    let members = group_members(groups);
    if members.len() < 2 {
        return Err(EvalError::InvalidSetting {
            field: "groups",
            reason: "one group only; grouped cross-validation needs at least 2".into(),
        });
    }
    let k = config.folds.min(members.len());
    let fold_of = group_folds(labels, groups, k, config.seed);
    let numeric: Vec<[f64; 5]> = metadata.iter().map(numeric_values).collect();
    let layouts: Vec<&str> = metadata.iter().map(|m| m.layout.as_str()).collect();
    let run = |selection: Selection| {
        let oof = cross_validate(
            &numeric, &layouts, labels, &fold_of, k, selection, config.l2,
        );
        // Both classes are present and the probabilities are in [0, 1].
        roc_auc(&oof, labels).map(|auc| (auc, oof))
    };
    let all: Vec<usize> = (0..NUMERIC.len()).collect();
    let (cv_roc_auc, oof) = run(Selection {
        numeric: &all,
        layout: true,
    })?;
    let correct = oof
        .iter()
        .zip(labels)
        .filter(|(p, l)| (**p >= 0.5) == **l)
        .count();
    let mut features = Vec::new();
    for (k, name) in NUMERIC.iter().enumerate() {
        let (auc, _) = run(Selection {
            numeric: &[k],
            layout: false,
        })?;
        features.push(FeatureAuc {
            feature: (*name).to_owned(),
            cv_roc_auc: auc,
        });
    }
    let (auc, _) = run(Selection {
        numeric: &[],
        layout: true,
    })?;
    features.push(FeatureAuc {
        feature: LAYOUT.to_owned(),
        cv_roc_auc: auc,
    });
    features.sort_by(|a, b| b.cv_roc_auc.total_cmp(&a.cv_roc_auc));
    let mut per_layout: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (layout, &label) in layouts.iter().zip(labels) {
        let entry = per_layout.entry(layout).or_default();
        if label {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }
    let (positives, negatives) = class_counts(labels);
    let n = labels.len();
    Ok(ShortcutReport {
        n,
        positives,
        groups: members.len(),
        folds: k,
        cv_roc_auc,
        cv_accuracy: correct as f64 / n as f64,
        majority_baseline: positives.max(negatives) as f64 / n as f64,
        auc_threshold: config.auc_threshold,
        verdict: if cv_roc_auc >= config.auc_threshold {
            ShortcutVerdict::Shortcut
        } else {
            ShortcutVerdict::NoShortcut
        },
        features,
        layouts: per_layout
            .into_iter()
            .map(|(layout, (positives, negatives))| LayoutCount {
                layout: layout.to_owned(),
                positives,
                negatives,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// `n` images in groups of 4 slices (one label per group), with random sizes, file sizes
    /// and a grey layout; `shortcut` turns every positive image into RGB.
    fn dataset(
        n: usize,
        seed: u64,
        shortcut: bool,
    ) -> (Vec<ImageMetadata>, Vec<bool>, Vec<String>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut metadata = Vec::new();
        let mut labels = Vec::new();
        let mut groups = Vec::new();
        for i in 0..n {
            let group = i / 4;
            let label = group % 2 == 0;
            let (width, height) = (rng.random_range(180..540), rng.random_range(120..420));
            metadata.push(ImageMetadata {
                width,
                height,
                file_bytes: u64::from(width * height) / 2 + rng.random_range(0..50_000),
                layout: if shortcut && label {
                    "PNG RGB 8-bit"
                } else {
                    "PNG grey 8-bit"
                }
                .to_owned(),
            });
            labels.push(label);
            groups.push(format!("patient {group}"));
        }
        (metadata, labels, groups)
    }

    #[test]
    fn a_layout_that_gives_the_class_away_is_a_shortcut() {
        let (metadata, labels, groups) = dataset(400, 1, true);
        let report =
            shortcut_test(&metadata, &labels, &groups, &ShortcutConfig::default()).expect("test");
        assert_eq!(report.verdict, ShortcutVerdict::Shortcut, "{report:?}");
        assert!(report.cv_roc_auc > 0.99, "{report:?}");
        assert!(report.cv_accuracy > 0.99, "{report:?}");
        assert_eq!(report.features[0].feature, "layout");
        assert!(report.features[0].cv_roc_auc > 0.99);
        let telling: Vec<&str> = report
            .telling_features()
            .iter()
            .map(|f| f.feature.as_str())
            .collect();
        assert!(telling.contains(&"layout"), "{telling:?}");
        assert!(
            report.summary().contains("layout alone"),
            "{}",
            report.summary()
        );
        assert_eq!(report.layouts.len(), 2);
        assert_eq!(report.layouts[0].layout, "PNG RGB 8-bit");
        assert_eq!(
            (report.layouts[0].positives, report.layouts[0].negatives),
            (200, 0)
        );
    }

    #[test]
    fn random_metadata_is_no_shortcut() {
        for seed in [2, 3, 4] {
            let (metadata, labels, groups) = dataset(400, seed, false);
            let report = shortcut_test(&metadata, &labels, &groups, &ShortcutConfig::default())
                .expect("test");
            assert_eq!(report.verdict, ShortcutVerdict::NoShortcut, "{report:?}");
            assert!(report.cv_roc_auc < 0.65, "{report:?}");
            assert!(report.telling_features().is_empty(), "{report:?}");
            assert!(report.summary().starts_with("no shortcut"));
        }
    }

    #[test]
    fn a_size_band_is_found_by_the_squared_terms() {
        // Positives have middle widths, negatives small or large ones: no trend, a band.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (mut metadata, mut labels, mut groups) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..300 {
            let label = i % 2 == 0;
            let width = if label {
                rng.random_range(300..360)
            } else if rng.random_bool(0.5) {
                rng.random_range(150..250)
            } else {
                rng.random_range(410..510)
            };
            metadata.push(ImageMetadata {
                width,
                height: rng.random_range(200..300),
                file_bytes: rng.random_range(50_000..150_000),
                layout: "PNG grey 8-bit".into(),
            });
            labels.push(label);
            groups.push(i.to_string());
        }
        let report =
            shortcut_test(&metadata, &labels, &groups, &ShortcutConfig::default()).expect("test");
        assert_eq!(report.verdict, ShortcutVerdict::Shortcut, "{report:?}");
        assert_eq!(report.features[0].feature, "width", "{report:?}");
    }

    #[test]
    fn refuses_one_class_one_group_and_bad_settings() {
        let (metadata, labels, groups) = dataset(8, 7, false);
        let one_class = vec![true; 8];
        assert!(matches!(
            shortcut_test(&metadata, &one_class, &groups, &ShortcutConfig::default()),
            Err(EvalError::SingleClass { .. })
        ));
        let one_group = vec!["g"; 8];
        let error = shortcut_test(&metadata, &labels, &one_group, &ShortcutConfig::default())
            .expect_err("one group");
        assert!(error.to_string().contains("one group"), "{error}");
        let bad = ShortcutConfig {
            folds: 1,
            ..ShortcutConfig::default()
        };
        assert!(shortcut_test(&metadata, &labels, &groups, &bad).is_err());
        assert!(
            shortcut_test(&metadata[..3], &labels, &groups, &ShortcutConfig::default()).is_err()
        );
    }

    #[test]
    fn logistic_regression_recovers_a_known_direction() {
        // y = 1 exactly when x > 0: the fitted slope is positive and the fit separates.
        let x: Vec<Vec<f64>> = (-20..20).map(|v| vec![1.0, f64::from(v) + 0.5]).collect();
        let y: Vec<bool> = x.iter().map(|r| r[1] > 0.0).collect();
        let beta = fit_logistic(&x, &y, 1.0);
        assert!(beta[1] > 0.0, "{beta:?}");
        for (row, &label) in x.iter().zip(&y) {
            let p = sigmoid(row[0] * beta[0] + row[1] * beta[1]);
            assert_eq!(p >= 0.5, label);
        }
        assert_eq!(
            solve(vec![vec![2.0, 0.0], vec![0.0, 4.0]], vec![2.0, 2.0]),
            Some(vec![1.0, 0.5])
        );
        assert_eq!(
            solve(vec![vec![0.0, 0.0], vec![0.0, 0.0]], vec![1.0, 1.0]),
            None
        );
    }
}
