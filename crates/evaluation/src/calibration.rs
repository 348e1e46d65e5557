//! Temperature scaling of a binary logit (Guo et al. 2017).
//!
//! The logit `z` is the log-odds of the positive class: for a two-logit head, the positive
//! logit minus the negative one. The calibrated probability is `sigmoid(z / T)`.

use crate::error::{EvalError, check_lengths, require_both_classes};

/// The range a fitted temperature is kept in.
pub const TEMPERATURE_RANGE: (f64, f64) = (0.05, 20.0);

/// The logistic function, computed without overflow for any finite `z`.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// `ln(1 + e^x)` without overflow.
pub fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

fn check_logits(logits: &[f64], labels: &[bool]) -> Result<(), EvalError> {
    check_lengths("logits", logits.len(), "labels", labels.len())?;
    match logits.iter().position(|z| !z.is_finite()) {
        Some(index) => Err(EvalError::NonFiniteLogit {
            index,
            value: logits[index],
        }),
        None => Ok(()),
    }
}

fn check_temperature(temperature: f64) -> Result<(), EvalError> {
    if temperature.is_finite() && temperature > 0.0 {
        Ok(())
    } else {
        Err(EvalError::InvalidSetting {
            field: "temperature",
            reason: format!("{temperature} is not a finite number above 0"),
        })
    }
}

/// Mean negative log-likelihood (natural log) of `labels` under `sigmoid(logit / temperature)`.
pub fn negative_log_likelihood(
    logits: &[f64],
    labels: &[bool],
    temperature: f64,
) -> Result<f64, EvalError> {
    check_logits(logits, labels)?;
    check_temperature(temperature)?;
    Ok(nll(logits, labels, 1.0 / temperature))
}

fn nll(logits: &[f64], labels: &[bool], inverse_temperature: f64) -> f64 {
    let sum: f64 = logits
        .iter()
        .zip(labels)
        .map(|(&z, &y)| {
            let x = inverse_temperature * z;
            softplus(x) - if y { x } else { 0.0 }
        })
        .sum();
    sum / logits.len() as f64
}

/// Derivative of the mean NLL against soft `targets` with respect to the inverse temperature
/// `s`; it never decreases as `s` grows, because the NLL is convex in `s`.
fn nll_slope(logits: &[f64], targets: &[f64], s: f64) -> f64 {
    let sum: f64 = logits
        .iter()
        .zip(targets)
        .map(|(&z, &t)| (sigmoid(s * z) - t) * z)
        .sum();
    sum / logits.len() as f64
}

/// Fits the temperature `T` minimising the mean NLL of `sigmoid(z / T)` against `labels`.
///
/// The NLL is convex in `1/T`, so its minimum is found by bisection of the derivative on
/// `ln(1/T)`; the result is kept in [`TEMPERATURE_RANGE`] (the bound is returned when the
/// optimum lies beyond it, e.g. for perfectly separated data). Needs both classes; all-zero
/// logits give 1, as every temperature fits them equally.
pub fn fit_temperature(logits: &[f64], labels: &[bool]) -> Result<f64, EvalError> {
    let targets: Vec<f64> = labels.iter().map(|&y| f64::from(u8::from(y))).collect();
    fit_to_targets(logits, labels, &targets)
}

/// [`fit_temperature`] against Platt's smoothed targets — `(N₊ + 1) / (N₊ + 2)` for positives,
/// `1 / (N₋ + 2)` for negatives — so that a few perfectly separated samples (a handful of
/// validation patients) give a finite temperature instead of the coldest bound.
pub fn fit_temperature_smoothed(logits: &[f64], labels: &[bool]) -> Result<f64, EvalError> {
    let positives = labels.iter().filter(|&&y| y).count() as f64;
    let negatives = labels.len() as f64 - positives;
    let targets: Vec<f64> = labels
        .iter()
        .map(|&y| {
            if y {
                (positives + 1.0) / (positives + 2.0)
            } else {
                1.0 / (negatives + 2.0)
            }
        })
        .collect();
    fit_to_targets(logits, labels, &targets)
}

fn fit_to_targets(logits: &[f64], labels: &[bool], targets: &[f64]) -> Result<f64, EvalError> {
    check_logits(logits, labels)?;
    require_both_classes(labels, "temperature scaling")?;
    if logits.iter().all(|&z| z == 0.0) {
        return Ok(1.0);
    }
    let (t_min, t_max) = TEMPERATURE_RANGE;
    // u = ln(1/T): from ln(1/t_max) (hottest) to ln(1/t_min) (coldest).
    let (mut low, mut high) = ((1.0 / t_max).ln(), (1.0 / t_min).ln());
    if nll_slope(logits, targets, low.exp()) >= 0.0 {
        return Ok(t_max);
    }
    if nll_slope(logits, targets, high.exp()) <= 0.0 {
        return Ok(t_min);
    }
    for _ in 0..100 {
        let middle = 0.5 * (low + high);
        if nll_slope(logits, targets, middle.exp()) < 0.0 {
            low = middle;
        } else {
            high = middle;
        }
        if high - low < 1e-12 {
            break;
        }
    }
    Ok(1.0 / (0.5 * (low + high)).exp())
}

/// Calibrated probabilities of the positive class: `sigmoid(z / temperature)` for each logit.
pub fn apply_temperature(logits: &[f64], temperature: f64) -> Result<Vec<f64>, EvalError> {
    check_temperature(temperature)?;
    if logits.is_empty() {
        return Err(EvalError::Empty { what: "logits" });
    }
    logits
        .iter()
        .enumerate()
        .map(|(index, &z)| {
            if z.is_finite() {
                Ok(sigmoid(z / temperature))
            } else {
                Err(EvalError::NonFiniteLogit { index, value: z })
            }
        })
        .collect()
}
