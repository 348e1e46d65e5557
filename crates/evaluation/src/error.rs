//! Errors of evaluation; every one names the input, setting or file at fault.

use std::path::PathBuf;

/// Why an evaluation step failed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A shared helper failed (an atomic write).
    #[error(transparent)]
    Common(#[from] covidct_common::CommonError),
    /// No samples were given.
    #[error("no samples: `{what}` is empty")]
    Empty {
        /// The input that is empty.
        what: &'static str,
    },
    /// Two inputs that must describe the same samples have different lengths.
    #[error("`{left}` has {left_len} values but `{right}` has {right_len}")]
    LengthMismatch {
        /// The first input.
        left: &'static str,
        /// Its length.
        left_len: usize,
        /// The second input.
        right: &'static str,
        /// Its length.
        right_len: usize,
    },
    /// A probability is not a finite number in [0, 1].
    #[error("probability #{index} is {value}, not a finite number in [0, 1]")]
    InvalidProbability {
        /// Position of the sample.
        index: usize,
        /// The value given.
        value: f64,
    },
    /// A logit is not finite.
    #[error("logit #{index} is {value}, not a finite number")]
    NonFiniteLogit {
        /// Position of the sample.
        index: usize,
        /// The value given.
        value: f64,
    },
    /// The labels hold one class only, so the quantity is undefined.
    #[error(
        "{what} needs both classes, but the labels hold {positives} positive(s) and {negatives} negative(s)"
    )]
    SingleClass {
        /// The quantity that could not be computed.
        what: &'static str,
        /// Number of positive labels.
        positives: usize,
        /// Number of negative labels.
        negatives: usize,
    },
    /// A metric asked for has no value on this data (one class only, say).
    #[error("{metric} is undefined on this data")]
    UndefinedMetric {
        /// The metric's key.
        metric: &'static str,
    },
    /// A setting or argument is out of range.
    #[error("invalid setting `{field}`: {reason}")]
    InvalidSetting {
        /// The setting at fault.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// Drawing a plot failed.
    #[error("plot {name}: {reason}")]
    Plot {
        /// The plot's file name.
        name: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// Serialising or reading a report as JSON failed.
    #[error("{path}: {source}")]
    Json {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder at fault.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Checks that `probabilities` and `labels` describe the same, non-empty set of samples and
/// that every probability is a finite number in [0, 1].
pub(crate) fn check_probabilities(probabilities: &[f64], labels: &[bool]) -> Result<(), EvalError> {
    check_lengths("probabilities", probabilities.len(), "labels", labels.len())?;
    match probabilities
        .iter()
        .position(|p| !(p.is_finite() && (0.0..=1.0).contains(p)))
    {
        Some(index) => Err(EvalError::InvalidProbability {
            index,
            value: probabilities[index],
        }),
        None => Ok(()),
    }
}

/// Checks that two inputs have the same, non-zero length.
pub(crate) fn check_lengths(
    left: &'static str,
    left_len: usize,
    right: &'static str,
    right_len: usize,
) -> Result<(), EvalError> {
    if left_len != right_len {
        return Err(EvalError::LengthMismatch {
            left,
            left_len,
            right,
            right_len,
        });
    }
    if left_len == 0 {
        return Err(EvalError::Empty { what: left });
    }
    Ok(())
}

/// Checks that a threshold is a finite number in [0, 1].
pub(crate) fn check_threshold(threshold: f64) -> Result<(), EvalError> {
    if threshold.is_finite() && (0.0..=1.0).contains(&threshold) {
        Ok(())
    } else {
        Err(EvalError::InvalidSetting {
            field: "threshold",
            reason: format!("{threshold} is not a finite number in [0, 1]"),
        })
    }
}

/// Counts (positives, negatives) in `labels`.
pub(crate) fn class_counts(labels: &[bool]) -> (usize, usize) {
    let positives = labels.iter().filter(|&&l| l).count();
    (positives, labels.len() - positives)
}

/// Fails with [`EvalError::SingleClass`] unless `labels` hold both classes.
pub(crate) fn require_both_classes(labels: &[bool], what: &'static str) -> Result<(), EvalError> {
    let (positives, negatives) = class_counts(labels);
    if positives == 0 || negatives == 0 {
        Err(EvalError::SingleClass {
            what,
            positives,
            negatives,
        })
    } else {
        Ok(())
    }
}
