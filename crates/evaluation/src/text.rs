//! Terminal summaries of the results: each metric with its interval, the patient-level and
//! out-of-distribution sections of a report, a cross-validation's spread over folds, and the
//! robustness verdicts. Every command that prints a result uses these.

use std::fmt;

use crate::bootstrap::MetricsWithCi;
use crate::cross_validation::{CrossValidationSummary, FoldSpread};
use crate::group::GroupEvaluation;
use crate::report::{EvaluationReport, RefusalSummary};
use crate::robustness::RobustnessAnalysis;

/// A value to four decimals, `n/a` where undefined.
fn show(value: Option<f64>) -> String {
    value.map_or("n/a".to_owned(), |v| format!("{v:.4}"))
}

/// One line per metric: label, value and interval.
impl fmt::Display for MetricsWithCi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (metric, interval) in &self.intervals {
            writeln!(
                f,
                "  {:<28} {}  [{}, {}]",
                metric.label(),
                show(interval.value),
                show(interval.lower),
                show(interval.upper)
            )?;
        }
        Ok(())
    }
}

/// The group rule and calibration, then the patient-level metrics.
impl fmt::Display for GroupEvaluation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.calibration;
        writeln!(
            f,
            "patients ({} groups; rule {}, temperature {:.3}, threshold {:.4}, fitted on {} \
             held-out groups):",
            self.metrics.point.n, c.rule, c.temperature, c.threshold, c.fitted_on_groups
        )?;
        write!(f, "{}", self.metrics)
    }
}

/// What the out-of-distribution gate refused, then the metrics without those images.
impl fmt::Display for RefusalSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let checks = self.failed_checks();
        writeln!(
            f,
            "out-of-distribution gate: {} of {} images refused ({:.2}%){}",
            self.refused,
            self.total,
            100.0 * self.rate,
            if checks.is_empty() {
                String::new()
            } else {
                format!("; failed checks: {checks}")
            }
        )?;
        if let Some(accepted) = &self.accepted {
            writeln!(f, "accepted images only:")?;
            write!(f, "{accepted}")?;
        }
        Ok(())
    }
}

impl EvaluationReport {
    /// The value of `metric` on all the data.
    pub fn metric_value(&self, metric: crate::metrics::Metric) -> Result<f64, crate::EvalError> {
        self.metrics
            .intervals
            .get(&metric)
            .and_then(|i| i.value)
            .ok_or(crate::EvalError::UndefinedMetric {
                metric: metric.key(),
            })
    }

    /// The slice metrics, then the patient-level and gate sections where the report has them.
    pub fn metrics_text(&self) -> String {
        let mut text = self.metrics.to_string();
        if let Some(group) = &self.group {
            text.push_str(&group.to_string());
        }
        if let Some(refusals) = &self.refusals {
            text.push_str(&refusals.to_string());
        }
        text
    }
}

/// One table of spreads: mean ± sd, range and per-fold values per metric.
fn write_spreads(f: &mut fmt::Formatter<'_>, unit: &str, spreads: &[FoldSpread]) -> fmt::Result {
    writeln!(
        f,
        "  {:<28} {:>15}  {:>16}  per fold",
        format!("metric ({unit})"),
        "mean ± sd",
        "[min, max]"
    )?;
    for spread in spreads {
        writeln!(
            f,
            "  {:<28} {:>7.4} ± {:.4}  [{:.4}, {:.4}]  {}",
            spread.metric.label(),
            spread.mean,
            spread.std_dev,
            spread.min,
            spread.max,
            spread.per_fold().join(" ")
        )?;
    }
    Ok(())
}

/// The spread of slice and patient metrics over the folds, the pooled decisions and the gate.
impl fmt::Display for CrossValidationSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}-fold group cross-validation, {} test images (each tested once)",
            self.folds, self.images
        )?;
        write_spreads(f, "slices", &self.metrics)?;
        if !self.group_metrics.is_empty() {
            writeln!(
                f,
                "patients (groups): {} test groups, each scored by its fold's group rule",
                self.groups
            )?;
            write_spreads(f, "groups", &self.group_metrics)?;
        }
        let c = self.pooled_confusion;
        writeln!(
            f,
            "slices pooled at each fold's threshold: accuracy {:.4}, sensitivity {}, \
             specificity {} (TP {}, FP {}, TN {}, FN {})",
            self.pooled_accuracy,
            show(self.pooled_sensitivity),
            show(self.pooled_specificity),
            c.tp,
            c.fp,
            c.tn,
            c.fn_
        )?;
        if let Some(r) = &self.refusals {
            let per_fold: Vec<String> = r.per_fold.iter().map(|v| format!("{v:.4}")).collect();
            writeln!(
                f,
                "out-of-distribution gate: {} of {} test images refused ({:.4}); per fold {}",
                r.refused,
                r.total,
                r.pooled_rate,
                per_fold.join(" ")
            )?;
        }
        Ok(())
    }
}

/// Per perturbation, the severities tried and the one costing more than the allowed accuracy.
impl fmt::Display for RobustnessAnalysis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "robustness on {} images (clean accuracy {:.4}, ROC-AUC {:.4}); loses > {} points \
             of accuracy at:",
            self.n,
            self.clean_accuracy,
            self.clean_roc_auc,
            self.max_accuracy_drop * 100.0
        )?;
        for curve in &self.curves {
            writeln!(
                f,
                "  {:<12} {:<16} (largest loss {:4.1} points; {}: {})",
                curve.perturbation,
                curve.verdict(),
                curve.worst_accuracy_drop() * 100.0,
                curve.unit,
                curve.severities().join(", ")
            )?;
        }
        Ok(())
    }
}
