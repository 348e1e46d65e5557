//! Robustness to image perturbations: the same samples scored clean and under graded
//! perturbations (noise, blur, JPEG…), accuracy at the model's threshold and ROC-AUC at every
//! severity, their loss against clean, and for each perturbation the mildest severity that
//! costs more than a given share of accuracy ([`DEFAULT_MAX_ACCURACY_DROP`], 5 points).
//!
//! The comparison is paired: every severity scores the very samples of the clean baseline, so
//! a drop measures the perturbation, not a different sample. The perturbations themselves are
//! the caller's (see `covidct_imaging::Perturbation`); here they are names, units and
//! severities.

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, check_probabilities};
use crate::metrics::BinaryMetrics;
use crate::report::{EvaluationReport, ExtraSection, LinePlot, PlotGuide, PlotSeries};

/// The accuracy loss (as a share, 0.05 = 5 points) beyond which a severity counts as harmful.
pub const DEFAULT_MAX_ACCURACY_DROP: f64 = 0.05;

/// Probabilities of the samples under one severity of a perturbation.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelScores {
    /// The severity, in the perturbation's unit.
    pub severity: f64,
    /// Positive-class probability of every sample, in the order of the clean baseline.
    pub probabilities: Vec<f64>,
}

/// Probabilities of the samples under every severity of one perturbation.
#[derive(Debug, Clone, PartialEq)]
pub struct PerturbationScores {
    /// Name of the perturbation, e.g. `noise`.
    pub perturbation: String,
    /// What its severity measures, e.g. `noise σ, grey levels of 255`.
    pub unit: String,
    /// The severities, mildest first.
    pub levels: Vec<LevelScores>,
}

/// The metrics at one severity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RobustnessLevel {
    /// Position in the perturbation's severities, from 1 (0 is the clean baseline).
    pub level: usize,
    /// The severity, in the perturbation's unit.
    pub severity: f64,
    /// Accuracy at the threshold.
    pub accuracy: f64,
    /// ROC-AUC.
    pub roc_auc: f64,
    /// Clean accuracy minus this accuracy (positive: worse).
    pub accuracy_drop: f64,
    /// Clean ROC-AUC minus this ROC-AUC (positive: worse).
    pub roc_auc_drop: f64,
}

/// The metrics of one perturbation at every severity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RobustnessCurve {
    /// Name of the perturbation.
    pub perturbation: String,
    /// What its severity measures.
    pub unit: String,
    /// One entry per severity, mildest first.
    pub levels: Vec<RobustnessLevel>,
    /// The first (mildest) severity whose accuracy drop exceeds the allowed drop; `None` when
    /// no severity tried does.
    pub breaking_severity: Option<f64>,
}

impl RobustnessCurve {
    /// The largest accuracy drop over the severities (0 when none is worse than clean).
    pub fn worst_accuracy_drop(&self) -> f64 {
        self.levels
            .iter()
            .map(|l| l.accuracy_drop)
            .fold(0.0, f64::max)
    }

    /// The severities tried, mildest first, as written.
    pub fn severities(&self) -> Vec<String> {
        self.levels.iter().map(|l| l.severity.to_string()).collect()
    }

    /// The verdict in words: the breaking severity, or `none up to <most severe>`.
    pub fn verdict(&self) -> String {
        match (self.breaking_severity, self.levels.last()) {
            (Some(severity), _) => severity.to_string(),
            (None, Some(last)) => format!("none up to {}", last.severity),
            (None, None) => "none tried".to_owned(),
        }
    }
}

/// Robustness of a model to every perturbation tried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RobustnessAnalysis {
    /// Number of samples (the same at every severity).
    pub n: usize,
    /// Positive samples among them.
    pub positives: usize,
    /// The decision threshold.
    pub threshold: f64,
    /// The accuracy loss (share) beyond which a severity is harmful.
    pub max_accuracy_drop: f64,
    /// Accuracy of the clean samples.
    pub clean_accuracy: f64,
    /// ROC-AUC of the clean samples.
    pub clean_roc_auc: f64,
    /// One curve per perturbation, in the order given.
    pub curves: Vec<RobustnessCurve>,
}

/// Tolerance for comparing drops that are sums of `1/n` steps with the allowed drop.
const DROP_TOLERANCE: f64 = 1e-9;

/// Computes accuracy (at `threshold`) and ROC-AUC clean and under every severity, the drops
/// against clean, and each perturbation's breaking severity: the first whose accuracy drop
/// exceeds `max_accuracy_drop` (a share in `[0, 1]`).
///
/// Fails on empty or invalid clean probabilities or threshold, labels of one class, a
/// perturbation without severities or with a non-finite one, or severity probabilities that do
/// not match the labels (the error names the perturbation and severity).
pub fn robustness_analysis(
    clean: &[f64],
    labels: &[bool],
    threshold: f64,
    perturbations: &[PerturbationScores],
    max_accuracy_drop: f64,
) -> Result<RobustnessAnalysis, EvalError> {
    if !(max_accuracy_drop.is_finite() && (0.0..=1.0).contains(&max_accuracy_drop)) {
        return Err(EvalError::InvalidSetting {
            field: "robustness.max_accuracy_drop",
            reason: format!("{max_accuracy_drop} is not a finite number in [0, 1]"),
        });
    }
    let base = BinaryMetrics::compute(clean, labels, threshold)?;
    let mut curves = Vec::with_capacity(perturbations.len());
    for scores in perturbations {
        let invalid = |reason: String| EvalError::InvalidSetting {
            field: "robustness.perturbations",
            reason: format!("`{}`: {reason}", scores.perturbation),
        };
        if scores.levels.is_empty() {
            return Err(invalid("no severities".to_owned()));
        }
        let mut levels = Vec::with_capacity(scores.levels.len());
        for (k, level) in scores.levels.iter().enumerate() {
            if !level.severity.is_finite() {
                return Err(invalid(format!(
                    "severity {} is not finite",
                    level.severity
                )));
            }
            check_probabilities(&level.probabilities, labels)
                .map_err(|e| invalid(format!("severity {}: {e}", level.severity)))?;
            let m = BinaryMetrics::compute(&level.probabilities, labels, threshold)?;
            levels.push(RobustnessLevel {
                level: k + 1,
                severity: level.severity,
                accuracy: m.accuracy,
                roc_auc: m.roc_auc,
                accuracy_drop: base.accuracy - m.accuracy,
                roc_auc_drop: base.roc_auc - m.roc_auc,
            });
        }
        let breaking_severity = levels
            .iter()
            .find(|l| l.accuracy_drop > max_accuracy_drop + DROP_TOLERANCE)
            .map(|l| l.severity);
        curves.push(RobustnessCurve {
            perturbation: scores.perturbation.clone(),
            unit: scores.unit.clone(),
            levels,
            breaking_severity,
        });
    }
    Ok(RobustnessAnalysis {
        n: base.n,
        positives: base.positives,
        threshold,
        max_accuracy_drop,
        clean_accuracy: base.accuracy,
        clean_roc_auc: base.roc_auc,
        curves,
    })
}

/// File of the accuracy plot in the report folder.
pub const ACCURACY_PLOT: &str = "robustness_accuracy.png";
/// File of the ROC-AUC plot in the report folder.
pub const ROC_AUC_PLOT: &str = "robustness_roc_auc.png";

/// Formats severities as `4, 8, 16`.
fn list(values: impl Iterator<Item = f64>) -> String {
    values.map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
}

impl RobustnessAnalysis {
    /// The allowed drop in points (5 for 0.05), for labels.
    fn points(&self) -> String {
        format!("{}", (self.max_accuracy_drop * 1000.0).round() / 10.0)
    }

    /// A line per perturbation: `[x = level, y = metric]`, starting at the clean baseline.
    fn series(&self, clean: f64, metric: fn(&RobustnessLevel) -> f64) -> Vec<PlotSeries> {
        self.curves
            .iter()
            .map(|curve| PlotSeries {
                name: curve.perturbation.clone(),
                points: std::iter::once([0.0, clean])
                    .chain(curve.levels.iter().map(|l| [l.level as f64, metric(l)]))
                    .collect(),
            })
            .collect()
    }

    /// The two line charts: accuracy and ROC-AUC against the severity level, one line per
    /// perturbation, level 0 being the clean baseline.
    pub fn plots(&self) -> Vec<LinePlot> {
        let levels = self
            .curves
            .iter()
            .map(|c| c.levels.len())
            .max()
            .unwrap_or(0);
        let x_ticks: Vec<String> = std::iter::once("clean".to_owned())
            .chain((1..=levels).map(|l| l.to_string()))
            .collect();
        let plot = |file: &str, metric: &str, series, guides| LinePlot {
            file: file.to_owned(),
            title: format!("{metric} under perturbations ({} images)", self.n),
            x_label: "Severity level (mildest 1; values in the table)".to_owned(),
            y_label: metric.to_owned(),
            x_ticks: x_ticks.clone(),
            y_range: None,
            series,
            guides,
        };
        vec![
            plot(
                ACCURACY_PLOT,
                "Accuracy",
                self.series(self.clean_accuracy, |l| l.accuracy),
                vec![PlotGuide {
                    label: format!("clean − {} points", self.points()),
                    y: self.clean_accuracy - self.max_accuracy_drop,
                }],
            ),
            plot(
                ROC_AUC_PLOT,
                "ROC-AUC",
                self.series(self.clean_roc_auc, |l| l.roc_auc),
                Vec::new(),
            ),
        ]
    }

    /// Two report sections, tables with a header row: a summary per perturbation with the
    /// plots, and every severity's metrics.
    pub fn sections(&self) -> Vec<ExtraSection> {
        use serde_json::{Value, json};
        let mut summary = vec![json!([
            "perturbation",
            "severity",
            "levels 1…",
            "accuracy",
            "largest loss (points)",
            format!("loses > {} points of accuracy at", self.points()),
        ])];
        let mut levels = vec![json!([
            "perturbation",
            "level",
            "severity",
            "accuracy",
            "accuracy_drop",
            "roc_auc",
            "roc_auc_drop",
        ])];
        for curve in &self.curves {
            let accuracy = curve.levels.iter().map(|l| format!("{:.3}", l.accuracy));
            summary.push(json!([
                curve.perturbation,
                curve.unit,
                list(curve.levels.iter().map(|l| l.severity)),
                accuracy.collect::<Vec<_>>().join(", "),
                (curve.worst_accuracy_drop() * 1000.0).round() / 10.0,
                curve.verdict(),
            ]));
            levels.extend(curve.levels.iter().map(|l| {
                json!([
                    curve.perturbation,
                    l.level,
                    l.severity,
                    l.accuracy,
                    l.accuracy_drop,
                    l.roc_auc,
                    l.roc_auc_drop,
                ])
            }));
        }
        vec![
            ExtraSection {
                title: format!(
                    "Robustness to perturbations ({} images; clean accuracy {:.3}, ROC-AUC {:.3}, \
                     threshold {:.3})",
                    self.n, self.clean_accuracy, self.clean_roc_auc, self.threshold
                ),
                content: Value::Array(summary),
                plots: self.plots(),
            },
            ExtraSection {
                title: "Robustness: every severity".to_owned(),
                content: Value::Array(levels),
                plots: Vec::new(),
            },
        ]
    }

    /// Appends [`RobustnessAnalysis::sections`] to a report.
    pub fn add_to(&self, report: &mut EvaluationReport) {
        report.extra.extend(self.sections());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10 samples, 5 positive; clean probabilities classify all correctly at 0.5.
    fn clean() -> (Vec<f64>, Vec<bool>) {
        let labels: Vec<bool> = (0..10).map(|i| i < 5).collect();
        let probabilities = labels
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                if l {
                    0.9 - 0.01 * i as f64
                } else {
                    0.1 + 0.01 * i as f64
                }
            })
            .collect();
        (probabilities, labels)
    }

    /// The clean probabilities with the first `wrong` positives pushed below the threshold.
    fn degraded(wrong: usize) -> Vec<f64> {
        let (mut p, _) = clean();
        for v in p.iter_mut().take(wrong) {
            *v = 0.12; // below some negatives: ROC-AUC drops too
        }
        p
    }

    fn scores(name: &str, wrong: &[usize]) -> PerturbationScores {
        PerturbationScores {
            perturbation: name.to_owned(),
            unit: "units".to_owned(),
            levels: wrong
                .iter()
                .enumerate()
                .map(|(k, &w)| LevelScores {
                    severity: (k + 1) as f64 * 2.0,
                    probabilities: degraded(w),
                })
                .collect(),
        }
    }

    #[test]
    fn drops_and_breaking_severity_follow_the_accuracy() {
        let (p, labels) = clean();
        let analysis = robustness_analysis(
            &p,
            &labels,
            0.5,
            &[
                scores("noise", &[0, 0, 1, 3]),
                scores("blur", &[0, 0, 0, 0]),
            ],
            DEFAULT_MAX_ACCURACY_DROP,
        )
        .expect("valid input");
        assert_eq!(analysis.clean_accuracy, 1.0);
        assert_eq!(analysis.clean_roc_auc, 1.0);
        assert_eq!((analysis.n, analysis.positives), (10, 5));
        let noise = &analysis.curves[0];
        let drops: Vec<f64> = noise.levels.iter().map(|l| l.accuracy_drop).collect();
        for (drop, expected) in drops.iter().zip([0.0, 0.0, 0.1, 0.3]) {
            assert!((drop - expected).abs() < 1e-12, "{drops:?}");
        }
        assert_eq!(noise.levels[2].level, 3);
        // One wrong sample in ten is 10 points: the third severity (6.0) breaks.
        assert_eq!(noise.breaking_severity, Some(6.0));
        assert_eq!(noise.verdict(), "6");
        assert!((noise.worst_accuracy_drop() - 0.3).abs() < 1e-12);
        assert!(noise.levels[3].roc_auc_drop > 0.0);
        let blur = &analysis.curves[1];
        assert_eq!(blur.breaking_severity, None);
        assert_eq!(blur.verdict(), "none up to 8");
        assert_eq!(blur.worst_accuracy_drop(), 0.0);
    }

    #[test]
    fn a_drop_of_exactly_the_limit_does_not_break() {
        let (p, labels) = clean();
        let analysis = robustness_analysis(&p, &labels, 0.5, &[scores("jpeg", &[1, 2])], 0.1)
            .expect("valid input");
        assert_eq!(analysis.curves[0].breaking_severity, Some(4.0));
        // Improvements are negative drops and never break.
        let better = PerturbationScores {
            levels: vec![LevelScores {
                severity: 1.0,
                probabilities: p.clone(),
            }],
            ..scores("gamma", &[])
        };
        let worse_clean = degraded(2);
        let analysis =
            robustness_analysis(&worse_clean, &labels, 0.5, &[better], 0.0).expect("valid input");
        assert!(analysis.curves[0].levels[0].accuracy_drop < 0.0);
        assert_eq!(analysis.curves[0].breaking_severity, None);
    }

    #[test]
    fn invalid_inputs_name_the_perturbation() {
        let (p, labels) = clean();
        let mut short = scores("noise", &[0]);
        short.levels[0].probabilities.pop();
        let error = robustness_analysis(&p, &labels, 0.5, &[short], 0.05).expect_err("short");
        assert!(error.to_string().contains("`noise`: severity 2"), "{error}");
        let mut nan = scores("blur", &[0]);
        nan.levels[0].probabilities[3] = f64::NAN;
        let error = robustness_analysis(&p, &labels, 0.5, &[nan], 0.05).expect_err("NaN");
        assert!(error.to_string().contains("`blur`"), "{error}");
        let empty = scores("crop", &[]);
        let error = robustness_analysis(&p, &labels, 0.5, &[empty], 0.05).expect_err("empty");
        assert!(
            error.to_string().contains("`crop`: no severities"),
            "{error}"
        );
        let error = robustness_analysis(&p, &labels, 0.5, &[], 1.5).expect_err("drop");
        assert!(error.to_string().contains("max_accuracy_drop"), "{error}");
        let one_class = vec![true; 10];
        assert!(matches!(
            robustness_analysis(&p, &one_class, 0.5, &[], 0.05),
            Err(EvalError::SingleClass { .. })
        ));
    }

    /// The clean scores, and their analysis with noise (three severities) and blur (two).
    fn noise_and_blur() -> (Vec<f64>, Vec<bool>, RobustnessAnalysis) {
        let (p, labels) = clean();
        let analysis = robustness_analysis(
            &p,
            &labels,
            0.5,
            &[scores("noise", &[0, 1, 3]), scores("blur", &[0, 0])],
            0.05,
        )
        .expect("valid input");
        (p, labels, analysis)
    }

    #[test]
    fn sections_and_plots_describe_every_perturbation() {
        let (_, _, analysis) = noise_and_blur();
        let sections = analysis.sections();
        assert_eq!(sections.len(), 2);
        let summary = sections[0].content.as_array().expect("rows");
        assert_eq!(summary.len(), 3, "header and two perturbations");
        assert_eq!(summary[0][0], "perturbation");
        assert_eq!(summary[0][5], "loses > 5 points of accuracy at");
        assert_eq!(summary[1][2], "2, 4, 6");
        assert_eq!(summary[1][3], "1.000, 0.900, 0.700");
        assert_eq!(summary[1][4], 30.0);
        assert_eq!(summary[1][5], "4");
        assert_eq!(summary[2][5], "none up to 4");
        let levels = sections[1].content.as_array().expect("rows");
        assert_eq!(levels.len(), 6, "header and five severities");
        assert_eq!(levels[2][0], "noise");
        assert_eq!(levels[2][1], 2);
        assert_eq!(levels[2][3], 0.9);
        let plots = &sections[0].plots;
        assert_eq!(plots.len(), 2);
        assert_eq!(plots[0].file, ACCURACY_PLOT);
        assert_eq!(plots[0].series[0].points[0], [0.0, 1.0]);
        assert_eq!(plots[0].series[0].points.len(), 4);
        assert_eq!(plots[0].x_ticks, vec!["clean", "1", "2", "3"]);
        assert!((plots[0].guides[0].y - 0.95).abs() < 1e-12);
        assert_eq!(plots[1].file, ROC_AUC_PLOT);
    }

    fn report(probabilities: &[f64], labels: &[bool]) -> EvaluationReport {
        use crate::report::{ModelInfo, ReportInput, ThresholdInfo};
        let groups: Vec<String> = (0..labels.len()).map(|i| format!("g{i}")).collect();
        EvaluationReport::compute(ReportInput {
            model: ModelInfo::default(),
            dataset_name: "synthetic".into(),
            split: "test".into(),
            class_names: vec!["COVID".into(), "non-COVID".into()],
            positive_class: "COVID".into(),
            probabilities,
            labels,
            groups: &groups,
            threshold: ThresholdInfo {
                value: 0.5,
                rule: crate::ThresholdRule::Fixed(0.5),
                chosen_on: "validation".into(),
            },
            temperature: None,
            bootstrap: crate::BootstrapConfig {
                resamples: 20,
                ..crate::BootstrapConfig::default()
            },
            group: None,
        })
        .expect("report")
    }

    #[test]
    fn the_written_report_holds_the_tables_and_the_curves() {
        let (p, labels, analysis) = noise_and_blur();
        let mut report = report(&p, &labels);
        analysis.add_to(&mut report);
        let dir = tempfile::tempdir().expect("temporary folder");
        let files = crate::write_report(dir.path(), &report).expect("written");
        assert_eq!(
            files.extra_plots,
            vec![
                dir.path().join(ACCURACY_PLOT),
                dir.path().join(ROC_AUC_PLOT)
            ]
        );
        for path in &files.extra_plots {
            let bytes = std::fs::read(path).expect("plot written");
            assert!(
                bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
                "{}",
                path.display()
            );
        }
        let html = std::fs::read_to_string(&files.html).expect("HTML written");
        assert_eq!(html.matches("data:image/png;base64,").count(), 4 + 2);
        assert!(html.contains("<th>perturbation</th><th>severity</th><th>levels 1…</th>"));
        assert!(html.contains("<th>loses &gt; 5 points of accuracy at</th></tr>"));
        assert!(html.contains("<td>none up to 4</td></tr>"));
        let back = crate::read_report(&files.json).expect("JSON read back");
        assert_eq!(back.extra, report.extra);
    }

    #[test]
    fn plot_files_must_be_plain_unique_png_names() {
        let (p, labels) = clean();
        let analysis =
            robustness_analysis(&p, &labels, 0.5, &[scores("noise", &[0])], 0.05).expect("valid");
        let dir = tempfile::tempdir().expect("temporary folder");
        for bad in [
            "../escape.png",
            "roc.png",
            "plot.svg",
            ".hidden.png",
            ROC_AUC_PLOT,
        ] {
            let mut report = report(&p, &labels);
            analysis.add_to(&mut report);
            report.extra[0].plots[0].file = bad.to_owned();
            let error = crate::write_report(dir.path(), &report).expect_err(bad);
            assert!(error.to_string().contains("extra.plots.file"), "{error}");
        }
        assert!(!dir.path().join("report.json").exists(), "nothing written");
    }
}
