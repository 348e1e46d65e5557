//! The linear probe: an L2-regularised logistic regression on standardised frozen-backbone
//! features, its strength `C` chosen on validation (or cross-fitted: chosen on out-of-fold scores
//! of patient-grouped folds and refitted on every row), folded into the network's linear head.
//!
//! The objective of one binary problem is `C · Σᵢ sᵢ · log(1 + exp(−yᵢ(w·x̃ᵢ + b))) + ½‖w‖²`
//! (scikit-learn's convention; `sᵢ` are class weights, `x̃` the standardised features), minimised
//! by L-BFGS in `f64`. Two classes are one problem; more classes are one-vs-rest.

use covidct_evaluation::{sigmoid, softplus};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{gather_rows, split_by_fold};
use crate::error::TrainError;

/// The probe of one regularisation strength, scored on validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeCandidate {
    /// Inverse regularisation strength.
    pub c: f64,
    /// Validation ROC-AUC of the positive class (out-of-fold over every row when cross-fitted).
    pub val_roc_auc: f64,
    /// Mean validation (or out-of-fold) cross-entropy (plain, unweighted).
    pub val_loss: f64,
    /// Mean weighted training log loss at the optimum (averaged over folds when cross-fitted).
    pub train_loss: f64,
    /// L-BFGS iterations used (summed over one-vs-rest problems).
    pub iterations: usize,
}

/// A fitted probe expressed as a linear head on raw (unstandardised) features.
#[derive(Debug, Clone)]
pub struct LinearHead {
    /// `[dim, classes]`, row-major: the weight of feature `j` for class `k` is at `j · classes + k`.
    pub weight: Vec<f32>,
    /// One bias per class.
    pub bias: Vec<f32>,
}

/// Per-feature mean and standard deviation of a feature matrix (rows × dim).
#[derive(Debug, Clone)]
pub struct Standardiser {
    mean: Vec<f64>,
    scale: Vec<f64>,
}

impl Standardiser {
    /// Fits the mean and standard deviation of every column; constant columns get scale 1.
    pub fn fit(values: &[f32], dim: usize) -> Self {
        let rows = values.len().checked_div(dim).unwrap_or(0).max(1);
        let mut mean = vec![0.0; dim];
        for row in values.chunks(dim) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += f64::from(v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= rows as f64);
        let mut var = vec![0.0; dim];
        for row in values.chunks(dim) {
            for ((s, &v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (f64::from(v) - m).powi(2);
            }
        }
        let scale = var
            .into_iter()
            .map(|s| {
                let sd = (s / rows as f64).sqrt();
                if sd > 1e-12 { sd } else { 1.0 }
            })
            .collect();
        Self { mean, scale }
    }

    /// The standardised copy of `values`.
    pub fn apply(&self, values: &[f32]) -> Vec<f64> {
        let dim = self.mean.len();
        let mut out = Vec::with_capacity(values.len());
        for row in values.chunks(dim) {
            out.extend(
                row.iter()
                    .zip(self.mean.iter().zip(&self.scale))
                    .map(|(&v, (m, s))| (f64::from(v) - m) / s),
            );
        }
        out
    }
}

/// One binary logistic regression on standardised rows.
struct BinaryProblem<'a> {
    x: &'a [f64],
    dim: usize,
    target: Vec<f64>,
    weight: Vec<f64>,
    c: f64,
}

impl BinaryProblem<'_> {
    /// Objective and gradient at `theta` = (w, b).
    fn evaluate(&self, theta: &[f64]) -> (f64, Vec<f64>) {
        let dim = self.dim;
        let (w, b) = theta.split_at(dim);
        let b = b[0];
        // Partial sums over fixed blocks of rows, added in order: the same result on any number
        // of threads (a work-stealing reduction would add in a varying order).
        let partials: Vec<(f64, Vec<f64>)> = self
            .x
            .par_chunks(dim * ROWS_PER_BLOCK)
            .zip(self.target.par_chunks(ROWS_PER_BLOCK))
            .zip(self.weight.par_chunks(ROWS_PER_BLOCK))
            .map(|((rows, targets), weights)| {
                let mut loss = 0.0;
                let mut grad = vec![0.0; dim + 1];
                for ((row, &t), &s) in rows.chunks(dim).zip(targets).zip(weights) {
                    let z = row.iter().zip(w).map(|(a, b)| a * b).sum::<f64>() + b;
                    // log(1 + exp(z)) − t·z, stable for both signs.
                    loss += s * (softplus(z) - t * z);
                    let r = s * (sigmoid(z) - t);
                    for (g, &a) in grad.iter_mut().zip(row) {
                        *g += r * a;
                    }
                    grad[dim] += r;
                }
                (loss, grad)
            })
            .collect();
        let mut loss = 0.0;
        let mut grad = vec![0.0; dim + 1];
        for (block_loss, block_grad) in partials {
            loss += block_loss;
            grad.iter_mut().zip(block_grad).for_each(|(a, b)| *a += b);
        }
        let penalty: f64 = w.iter().map(|v| v * v).sum::<f64>() * 0.5;
        let mut grad: Vec<f64> = grad.into_iter().map(|g| g * self.c).collect();
        for (g, v) in grad.iter_mut().zip(w) {
            *g += v;
        }
        (self.c * loss + penalty, grad)
    }

    /// Mean weighted log loss at `theta`.
    fn mean_loss(&self, theta: &[f64]) -> f64 {
        let (objective, _) = self.evaluate(theta);
        let penalty: f64 = theta[..self.dim].iter().map(|v| v * v).sum::<f64>() * 0.5;
        let total: f64 = self.weight.iter().sum();
        (objective - penalty) / self.c / total.max(1e-12)
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Rows per block of the objective's parallel sum.
const ROWS_PER_BLOCK: usize = 64;

/// Iterations after which L-BFGS stops even if not converged.
const MAX_ITERATIONS: usize = 2000;
/// Past gradients L-BFGS remembers.
const MEMORY: usize = 10;

/// Minimises a binary problem by L-BFGS with a backtracking (Armijo) line search; returns the
/// optimum and the iterations used. Deterministic.
fn minimise(problem: &BinaryProblem<'_>) -> (Vec<f64>, usize) {
    let n = problem.dim + 1;
    let mut theta = vec![0.0; n];
    let (mut f, mut g) = problem.evaluate(&theta);
    let tolerance = 1e-6 * g.iter().fold(0.0_f64, |m, v| m.max(v.abs())).max(1e-12);
    let mut history: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)> =
        std::collections::VecDeque::new();
    for iteration in 0..MAX_ITERATIONS {
        if g.iter().fold(0.0_f64, |m, v| m.max(v.abs())) <= tolerance {
            return (theta, iteration);
        }
        // Two-loop recursion: direction = −H·g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(history.len());
        for (s, y, rho) in history.iter().rev() {
            let alpha = rho * dot(s, &q);
            q.iter_mut().zip(y).for_each(|(q, y)| *q -= alpha * y);
            alphas.push(alpha);
        }
        let gamma = history
            .back()
            .map_or(1.0 / dot(&g, &g).sqrt().max(1e-12), |(s, y, _)| {
                dot(s, y) / dot(y, y).max(1e-300)
            });
        q.iter_mut().for_each(|v| *v *= gamma);
        for ((s, y, rho), alpha) in history.iter().zip(alphas.into_iter().rev()) {
            let beta = rho * dot(y, &q);
            q.iter_mut()
                .zip(s)
                .for_each(|(q, s)| *q += (alpha - beta) * s);
        }
        let mut direction: Vec<f64> = q.into_iter().map(|v| -v).collect();
        let mut slope = dot(&g, &direction);
        if slope >= 0.0 {
            // Not a descent direction (numerical trouble): restart from steepest descent.
            history.clear();
            let norm = dot(&g, &g).sqrt().max(1e-12);
            direction = g.iter().map(|v| -v / norm).collect();
            slope = dot(&g, &direction);
        }
        let mut step = 1.0;
        let (next, f_next, g_next) = loop {
            let candidate: Vec<f64> = theta
                .iter()
                .zip(&direction)
                .map(|(t, d)| t + step * d)
                .collect();
            let (f_c, g_c) = problem.evaluate(&candidate);
            if f_c <= f + 1e-4 * step * slope || step < 1e-12 {
                break (candidate, f_c, g_c);
            }
            step *= 0.5;
        };
        let s: Vec<f64> = next.iter().zip(&theta).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = g_next.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        let converged = (f - f_next).abs() <= 1e-12 * f.abs().max(1.0);
        theta = next;
        f = f_next;
        g = g_next;
        if converged {
            return (theta, iteration + 1);
        }
        if sy > 1e-12 {
            if history.len() == MEMORY {
                history.pop_front();
            }
            history.push_back((s, y, 1.0 / sy));
        }
    }
    (theta, MAX_ITERATIONS)
}

/// What every probe fit of one run shares: the feature dimension, the classes and their loss
/// weights.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSpec<'a> {
    /// Per-class loss weights (index = class).
    pub class_weights: &'a [f64],
    /// Feature dimension.
    pub dim: usize,
    /// Number of classes.
    pub classes: usize,
    /// Index of the positive class (candidates are scored by its ROC-AUC).
    pub positive: usize,
}

/// Feature rows (`rows × dim`, row-major) with their class indices.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    /// The features.
    pub features: &'a [f32],
    /// One class index per row.
    pub labels: &'a [usize],
}

/// The chosen probe as a head, with every candidate's figures.
pub struct ProbeFit {
    /// The head of the chosen `C`, on raw features.
    pub head: LinearHead,
    /// Index of the chosen candidate in `candidates`.
    pub chosen: usize,
    /// Every `C` tried, in the order given.
    pub candidates: Vec<ProbeCandidate>,
}

/// A cross-fitted probe ([`cross_fit_probe`]): the head refitted on every row, and the
/// out-of-fold logits that calibrate it.
pub struct CrossFit {
    /// The head of the chosen `C` fitted on every row; candidates carry out-of-fold figures.
    pub fit: ProbeFit,
    /// Logits (`rows × classes`) of each row by the chosen `C`'s probe of the folds without it.
    pub out_of_fold: Vec<Vec<f64>>,
}

/// Fits one probe per value of `c_grid` on `train` and keeps the one with the best ROC-AUC on
/// `val` (ties: the lower validation loss, then the stronger regularisation).
pub fn fit_probe(
    spec: ProbeSpec<'_>,
    train: Rows<'_>,
    val: Rows<'_>,
    c_grid: &[f64],
) -> Result<ProbeFit, TrainError> {
    check_inputs(spec, train, c_grid)?;
    let mut fits = Vec::with_capacity(c_grid.len());
    for (&c, (head, train_loss, iterations)) in c_grid.iter().zip(fit_heads(spec, train, c_grid)) {
        let logits = head_logits(&head, val.features, spec.dim, spec.classes);
        let (val_roc_auc, val_loss) = score(spec, &logits, val.labels)?;
        tracing::info!(c, val_roc_auc, val_loss, iterations, "probe fitted");
        fits.push((
            head,
            ProbeCandidate {
                c,
                val_roc_auc,
                val_loss,
                train_loss,
                iterations,
            },
        ));
    }
    let candidates: Vec<ProbeCandidate> = fits.iter().map(|(_, c)| c.clone()).collect();
    let chosen = choose(&candidates);
    let head = fits.swap_remove(chosen).0;
    Ok(ProbeFit {
        head,
        chosen,
        candidates,
    })
}

/// Cross-fitting: for every `C` of `c_grid`, one probe per fold of `fold_of` fitted on the
/// other folds scores the fold's rows; the `C` with the best out-of-fold ROC-AUC over all rows
/// (ties as in [`fit_probe`]) is refitted on every row. The out-of-fold logits are what an
/// unseen row looks like to the refitted head, so calibration fitted on them holds for it.
pub fn cross_fit_probe(
    spec: ProbeSpec<'_>,
    rows: Rows<'_>,
    fold_of: &[usize],
    c_grid: &[f64],
) -> Result<CrossFit, TrainError> {
    check_inputs(spec, rows, c_grid)?;
    let n = rows.labels.len();
    let folds = fold_of.iter().copied().max().map_or(0, |f| f + 1);
    if fold_of.len() != n || folds < 2 {
        return Err(TrainError::Config {
            field: "probe_folds",
            reason: format!(
                "cross-fitting needs a fold for each of the {n} rows and at least 2 folds \
                 (got {} rows in {folds} folds)",
                fold_of.len()
            ),
        });
    }
    let dim = spec.dim;
    let gather = |indices: &[usize]| gather_rows(rows.features, dim, indices);
    // Per C: the out-of-fold logits of every row, the mean training loss, the iterations.
    let mut per_c = vec![(vec![Vec::new(); n], 0.0, 0); c_grid.len()];
    for fold in 0..folds {
        let (inside, outside) = split_by_fold(fold_of, fold);
        let labels: Vec<usize> = outside.iter().map(|&i| rows.labels[i]).collect();
        let features = gather(&outside);
        let held_out = gather(&inside);
        let train = Rows {
            features: &features,
            labels: &labels,
        };
        for ((logits, train_loss, iterations), (head, loss, used)) in
            per_c.iter_mut().zip(fit_heads(spec, train, c_grid))
        {
            *train_loss += loss / folds as f64;
            *iterations += used;
            for (&i, row) in inside
                .iter()
                .zip(head_logits(&head, &held_out, dim, spec.classes))
            {
                logits[i] = row;
            }
        }
    }
    let mut candidates = Vec::with_capacity(c_grid.len());
    let mut out_of_fold = Vec::with_capacity(c_grid.len());
    for (&c, (logits, train_loss, iterations)) in c_grid.iter().zip(per_c) {
        let (val_roc_auc, val_loss) = score(spec, &logits, rows.labels)?;
        tracing::info!(
            c,
            folds,
            val_roc_auc,
            val_loss,
            iterations,
            "probe cross-fitted"
        );
        candidates.push(ProbeCandidate {
            c,
            val_roc_auc,
            val_loss,
            train_loss,
            iterations,
        });
        out_of_fold.push(logits);
    }
    let chosen = choose(&candidates);
    let (head, _, _) = fit_heads(spec, rows, &[candidates[chosen].c])
        .pop()
        .ok_or_else(|| TrainError::Config {
            field: "probe_c",
            reason: "no C to refit".into(),
        })?;
    Ok(CrossFit {
        fit: ProbeFit {
            head,
            chosen,
            candidates,
        },
        out_of_fold: out_of_fold.swap_remove(chosen),
    })
}

fn check_inputs(spec: ProbeSpec<'_>, train: Rows<'_>, c_grid: &[f64]) -> Result<(), TrainError> {
    if spec.dim == 0 || train.labels.is_empty() || c_grid.is_empty() {
        return Err(TrainError::Config {
            field: "probe_c",
            reason: "the probe needs features, training rows and at least one C".into(),
        });
    }
    Ok(())
}

/// One probe per strength of `c_grid` on `train` (standardised once), each as a head on raw
/// features with its mean weighted training loss and the L-BFGS iterations used (summed over
/// one-vs-rest problems).
fn fit_heads(
    spec: ProbeSpec<'_>,
    train: Rows<'_>,
    c_grid: &[f64],
) -> Vec<(LinearHead, f64, usize)> {
    let standardiser = Standardiser::fit(train.features, spec.dim);
    let x = standardiser.apply(train.features);
    let problems = if spec.classes == 2 { 1 } else { spec.classes };
    let weight: Vec<f64> = train
        .labels
        .iter()
        .map(|&l| spec.class_weights.get(l).copied().unwrap_or(1.0))
        .collect();
    c_grid
        .iter()
        .map(|&c| {
            let mut thetas = Vec::with_capacity(problems);
            let mut iterations = 0;
            let mut train_loss = 0.0;
            for k in 0..problems {
                let class = if spec.classes == 2 { spec.positive } else { k };
                let problem = BinaryProblem {
                    x: &x,
                    dim: spec.dim,
                    target: train
                        .labels
                        .iter()
                        .map(|&l| f64::from(u8::from(l == class)))
                        .collect(),
                    weight: weight.clone(),
                    c,
                };
                let (theta, used) = minimise(&problem);
                iterations += used;
                train_loss += problem.mean_loss(&theta) / problems as f64;
                thetas.push((class, theta));
            }
            (
                to_head(&thetas, &standardiser, spec.classes),
                train_loss,
                iterations,
            )
        })
        .collect()
}

/// The best candidate: highest ROC-AUC, then lower loss, then stronger regularisation.
fn choose(candidates: &[ProbeCandidate]) -> usize {
    (0..candidates.len())
        .max_by(|&a, &b| {
            let (ca, cb) = (&candidates[a], &candidates[b]);
            ca.val_roc_auc
                .total_cmp(&cb.val_roc_auc)
                .then(cb.val_loss.total_cmp(&ca.val_loss))
                .then(cb.c.total_cmp(&ca.c))
        })
        .unwrap_or(0)
}

/// The head on raw features equivalent to the standardised problems' solutions. Two classes:
/// the positive class gets `z/2`, the other `−z/2`, so the logit difference is the probe's `z`.
fn to_head(
    thetas: &[(usize, Vec<f64>)],
    standardiser: &Standardiser,
    classes: usize,
) -> LinearHead {
    let dim = standardiser.mean.len();
    let mut weight = vec![0.0_f32; dim * classes];
    let mut bias = vec![0.0_f32; classes];
    let mut place = |class: usize, sign: f64, theta: &[f64]| {
        let (w, b) = theta.split_at(dim);
        let mut offset = b[0];
        for j in 0..dim {
            let raw = w[j] / standardiser.scale[j];
            offset -= raw * standardiser.mean[j];
            weight[j * classes + class] = (sign * raw) as f32;
        }
        bias[class] = (sign * offset) as f32;
    };
    if classes == 2 {
        let (positive, theta) = &thetas[0];
        place(*positive, 0.5, theta);
        place(1 - *positive, -0.5, theta);
    } else {
        for (class, theta) in thetas {
            place(*class, 1.0, theta);
        }
    }
    LinearHead { weight, bias }
}

/// Logits `rows × classes` of raw feature rows through `head`.
fn head_logits(head: &LinearHead, x: &[f32], dim: usize, classes: usize) -> Vec<Vec<f64>> {
    x.chunks(dim)
        .map(|row| {
            (0..classes)
                .map(|k| {
                    f64::from(head.bias[k])
                        + row
                            .iter()
                            .enumerate()
                            .map(|(j, &v)| f64::from(v) * f64::from(head.weight[j * classes + k]))
                            .sum::<f64>()
                })
                .collect()
        })
        .collect()
}

/// ROC-AUC of the positive class and mean cross-entropy of `logits` against `labels`.
fn score(
    spec: ProbeSpec<'_>,
    logits: &[Vec<f64>],
    labels: &[usize],
) -> Result<(f64, f64), TrainError> {
    let mut loss = 0.0;
    let mut probabilities = Vec::with_capacity(logits.len());
    for (row, &label) in logits.iter().zip(labels) {
        let p = covidct_model::calibrated_probabilities(row, 1.0);
        loss -= p.get(label).copied().unwrap_or(0.0).max(1e-12).ln();
        probabilities.push(p.get(spec.positive).copied().unwrap_or(0.0));
    }
    let truth: Vec<bool> = labels.iter().map(|&l| l == spec.positive).collect();
    let roc_auc = covidct_evaluation::roc_auc(&probabilities, &truth)?;
    Ok((roc_auc, loss / logits.len().max(1) as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The problem of [`blobs`]: 3 features, two equally weighted classes, class 1 positive.
    const TWO_BLOBS: ProbeSpec<'static> = ProbeSpec {
        class_weights: &[1.0, 1.0],
        dim: 3,
        classes: 2,
        positive: 1,
    };

    fn rows_of<'a>(features: &'a [f32], labels: &'a [usize]) -> Rows<'a> {
        Rows { features, labels }
    }

    /// Two Gaussian blobs in 3 dimensions, the third feature pure noise.
    fn blobs(n: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..n {
            let label = i % 2;
            let shift = if label == 1 { 1.5 } else { -1.5 };
            x.push(shift + rng.random_range(-1.0..1.0f32) * 2.0);
            x.push(100.0 + 10.0 * shift + rng.random_range(-1.0..1.0f32) * 20.0);
            x.push(rng.random_range(-1.0..1.0f32));
            y.push(label);
        }
        (x, y)
    }

    #[test]
    fn the_optimum_has_zero_gradient_and_the_head_reproduces_the_standardised_logits() {
        let (x, y) = blobs(200, 1);
        let standardiser = Standardiser::fit(&x, 3);
        let xs = standardiser.apply(&x);
        let problem = BinaryProblem {
            x: &xs,
            dim: 3,
            target: y.iter().map(|&l| l as f64).collect(),
            weight: vec![1.0; y.len()],
            c: 0.1,
        };
        let (theta, iterations) = minimise(&problem);
        let (_, grad) = problem.evaluate(&theta);
        assert!(iterations < MAX_ITERATIONS);
        assert!(grad.iter().all(|g| g.abs() < 1e-4), "{grad:?}");
        let head = to_head(&[(1, theta.clone())], &standardiser, 2);
        let logits = head_logits(&head, &x, 3, 2);
        for (row, logit) in xs.chunks(3).zip(&logits) {
            let z = dot(row, &theta[..3]) + theta[3];
            assert!((logit[1] - logit[0] - z).abs() < 1e-3, "{logit:?} vs {z}");
        }
    }

    #[test]
    fn stronger_regularisation_shrinks_the_weights_and_validation_picks_a_separating_c() {
        let (x, y) = blobs(200, 2);
        let (xv, yv) = blobs(100, 3);
        let spec = TWO_BLOBS;
        let (train, val) = (rows_of(&x, &y), rows_of(&xv, &yv));
        let fit = fit_probe(spec, train, val, &[1e-5, 1.0]).expect("fit");
        assert_eq!(fit.candidates.len(), 2);
        assert!(fit.candidates.iter().all(|c| c.val_roc_auc > 0.9));
        assert!(fit.candidates[0].train_loss > fit.candidates[1].train_loss);
        let weak = fit_probe(spec, train, val, &[1.0]).expect("fit").head;
        let strong = fit_probe(spec, train, val, &[1e-5]).expect("fit").head;
        let norm = |h: &LinearHead| h.weight.iter().map(|w| w.abs()).sum::<f32>();
        assert!(norm(&strong) < norm(&weak) * 0.1);
    }

    #[test]
    fn three_classes_are_fitted_one_versus_rest() {
        let (mut x, mut y) = blobs(150, 4);
        for (i, label) in y.iter_mut().enumerate() {
            if i % 3 == 0 {
                *label = 2;
                x[i * 3 + 2] += 5.0;
            }
        }
        let spec = ProbeSpec {
            class_weights: &[1.0, 1.0, 1.0],
            classes: 3,
            positive: 2,
            ..TWO_BLOBS
        };
        let rows = rows_of(&x, &y);
        let fit = fit_probe(spec, rows, rows, &[1.0]).expect("fit");
        assert_eq!(fit.head.bias.len(), 3);
        assert!(fit.candidates[0].val_roc_auc > 0.95);
    }

    #[test]
    fn cross_fitting_scores_every_row_out_of_fold_and_refits_on_all() {
        let (x, y) = blobs(200, 5);
        let spec = TWO_BLOBS;
        let rows = rows_of(&x, &y);
        let fold_of: Vec<usize> = (0..200).map(|i| (i / 10) % 4).collect();
        let cross = cross_fit_probe(spec, rows, &fold_of, &[1e-5, 1.0]).expect("cross-fit");
        assert_eq!(cross.out_of_fold.len(), 200);
        assert!(cross.fit.candidates.iter().all(|c| c.val_roc_auc > 0.9));
        // The head is the chosen C refitted on every row.
        let c = cross.fit.candidates[cross.fit.chosen].c;
        let all = fit_probe(spec, rows, rows, &[c]).expect("fit").head;
        assert_eq!(cross.fit.head.weight, all.weight);
        // A row's out-of-fold logit comes from the probe of the other folds, not from the head.
        let inside: Vec<usize> = (0..200).filter(|&i| fold_of[i] == 0).collect();
        let outside: Vec<usize> = (0..200).filter(|&i| fold_of[i] != 0).collect();
        let pick = |idx: &[usize]| -> Vec<f32> {
            idx.iter()
                .flat_map(|&i| x[i * 3..i * 3 + 3].to_vec())
                .collect()
        };
        let (xo, yo) = (
            pick(&outside),
            outside.iter().map(|&i| y[i]).collect::<Vec<_>>(),
        );
        let other = rows_of(&xo, &yo);
        let fold_head = fit_probe(spec, other, other, &[c]).expect("fit").head;
        let expected = head_logits(&fold_head, &pick(&inside), 3, 2);
        for (row, logits) in inside.iter().zip(&expected) {
            assert_eq!(&cross.out_of_fold[*row], logits);
        }
        assert!(matches!(
            cross_fit_probe(spec, rows, &vec![0; 200], &[1.0]),
            Err(TrainError::Config {
                field: "probe_folds",
                ..
            })
        ));
    }
}
