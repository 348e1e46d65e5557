//! Percentile confidence intervals by cluster bootstrap over groups (patients or
//! pseudo-patients): each resample draws as many groups as there are, with replacement, and
//! takes all the samples of each group drawn.

use std::collections::{BTreeMap, HashMap};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, check_lengths, check_probabilities};
use crate::metrics::{BinaryMetrics, Metric, compute_unchecked};

/// Settings of the bootstrap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BootstrapConfig {
    /// Number of resamples (default 1000).
    pub resamples: usize,
    /// Coverage of the intervals, in (0, 1) (default 0.95).
    pub confidence: f64,
    /// Seed of the resampling; the same seed gives the same intervals (default 42).
    pub seed: u64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        Self {
            resamples: 1000,
            confidence: 0.95,
            seed: 42,
        }
    }
}

impl BootstrapConfig {
    /// Checks that `resamples` is at least 1 and `confidence` lies in (0, 1).
    pub fn validate(&self) -> Result<(), EvalError> {
        if self.resamples == 0 {
            return Err(EvalError::InvalidSetting {
                field: "bootstrap.resamples",
                reason: "must be at least 1".into(),
            });
        }
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(EvalError::InvalidSetting {
                field: "bootstrap.confidence",
                reason: format!("{} is not in (0, 1)", self.confidence),
            });
        }
        Ok(())
    }
}

/// A point estimate with its percentile bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The metric on all the data; `None` where undefined.
    pub value: Option<f64>,
    /// Lower bound; `None` when no resample defined the metric.
    pub lower: Option<f64>,
    /// Upper bound; `None` when no resample defined the metric.
    pub upper: Option<f64>,
    /// Number of resamples in which the metric was defined.
    pub resamples: usize,
}

/// How the intervals were obtained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootstrapSummary {
    /// Resamples drawn.
    pub resamples: usize,
    /// Resamples skipped because they held one class only.
    pub skipped: usize,
    /// Coverage of the intervals.
    pub confidence: f64,
    /// Seed of the resampling.
    pub seed: u64,
    /// Number of groups resampled.
    pub groups: usize,
}

/// Metrics on all the data with a confidence interval for each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsWithCi {
    /// Every metric on all the data, with the confusion matrix.
    pub point: BinaryMetrics,
    /// Interval of every [`Metric`].
    pub intervals: BTreeMap<Metric, Interval>,
    /// How the intervals were obtained.
    pub bootstrap: BootstrapSummary,
}

/// Computes [`BinaryMetrics`] at `threshold` and a percentile interval for each metric by
/// resampling the groups (`groups[i]` names the group of sample `i`; give every sample its own
/// group for an image-level bootstrap).
///
/// Resamples holding one class only are skipped and counted; a metric undefined in a resample
/// (e.g. precision with nothing called positive) is left out of that metric's interval only.
/// Resample `r` uses its own ChaCha8 stream of `config.seed`, so the result does not depend on
/// the number of threads.
pub fn bootstrap_metrics<S: AsRef<str> + Sync>(
    probabilities: &[f64],
    labels: &[bool],
    groups: &[S],
    threshold: f64,
    config: &BootstrapConfig,
) -> Result<MetricsWithCi, EvalError> {
    check_probabilities(probabilities, labels)?;
    check_lengths("groups", groups.len(), "labels", labels.len())?;
    config.validate()?;
    let point = BinaryMetrics::compute(probabilities, labels, threshold)?;
    let members = group_members(groups);
    let draws = resample_groups(&members, config, |indices| {
        let probs: Vec<f64> = indices.iter().map(|&i| probabilities[i]).collect();
        let labs: Vec<bool> = indices.iter().map(|&i| labels[i]).collect();
        compute_unchecked(&probs, &labs, threshold, &mut Vec::new())
            .map(|m| Metric::ALL.map(|metric| m.get(metric)))
    });

    let skipped = draws.iter().filter(|d| d.is_none()).count();
    let intervals = Metric::ALL
        .iter()
        .enumerate()
        .map(|(k, &metric)| {
            let values = draws.iter().filter_map(|d| d.and_then(|d| d[k]));
            (
                metric,
                interval(point.get(metric), values, config.confidence),
            )
        })
        .collect();
    Ok(MetricsWithCi {
        point,
        intervals,
        bootstrap: BootstrapSummary {
            resamples: config.resamples,
            skipped,
            confidence: config.confidence,
            seed: config.seed,
            groups: members.len(),
        },
    })
}

/// Evaluates `statistic` on each of `config.resamples` cluster-bootstrap resamples: each draws
/// as many groups of `members` as there are, with replacement, and passes the sample indices of
/// the groups drawn. Resample `r` uses its own ChaCha8 stream of `config.seed`, so the result
/// does not depend on the number of threads.
pub(crate) fn resample_groups<T: Send>(
    members: &[Vec<usize>],
    config: &BootstrapConfig,
    statistic: impl Fn(&[usize]) -> T + Sync,
) -> Vec<T> {
    (0..config.resamples)
        .into_par_iter()
        .map_init(Vec::new, |indices, r| {
            let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
            rng.set_stream(r as u64);
            indices.clear();
            for _ in 0..members.len() {
                indices.extend_from_slice(&members[rng.random_range(0..members.len())]);
            }
            statistic(indices)
        })
        .collect()
}

/// The percentile interval of resampled `values` (in any order) around the point `value`.
pub(crate) fn interval(
    value: Option<f64>,
    values: impl Iterator<Item = f64>,
    confidence: f64,
) -> Interval {
    let mut values: Vec<f64> = values.collect();
    values.sort_unstable_by(f64::total_cmp);
    let tail = (1.0 - confidence) / 2.0;
    Interval {
        value,
        lower: percentile(&values, tail),
        upper: percentile(&values, 1.0 - tail),
        resamples: values.len(),
    }
}

/// The sample indices of each group, groups in order of first appearance.
pub(crate) fn group_members<S: AsRef<str>>(groups: &[S]) -> Vec<Vec<usize>> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for (i, group) in groups.iter().enumerate() {
        let k = *index.entry(group.as_ref()).or_insert_with(|| {
            members.push(Vec::new());
            members.len() - 1
        });
        members[k].push(i);
    }
    members
}

/// The `q`-quantile of sorted values with linear interpolation (NumPy's default).
pub(crate) fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let position = q * last as f64;
    let below = position.floor() as usize;
    let above = position.ceil() as usize;
    let weight = position - below as f64;
    Some(sorted[below] + (sorted[above] - sorted[below]) * weight)
}
