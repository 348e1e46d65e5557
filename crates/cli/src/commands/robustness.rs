//! `covidct evaluate --robustness`: accuracy and ROC-AUC under graded image perturbations,
//! added to the report (tables and curves), printed, and logged to MLflow.

use std::time::Instant;

use anyhow::{Result, bail};
use covidct_evaluation::{EvaluationReport, RobustnessAnalysis};
use covidct_imaging::{PerturbError, Perturbation};
use covidct_model::Predictor;
use covidct_tracking::{Param, RunRecorder};
use covidct_training::{RobustnessPlan, SplitSamples, robustness_of, stratified_subset};

use crate::cli::RobustnessArgs;
use crate::progress;

/// Parses one `--robustness-kinds` name.
pub fn parse_perturbation(text: &str) -> Result<Perturbation, String> {
    text.parse()
        .map_err(|error: PerturbError| error.to_string())
}

/// Scores `samples` (or the stratified subset `--robustness-max-images` asks for, seeded by
/// `seed`) clean and under every perturbation asked for, and appends the robustness sections
/// and plots to `report`. Says up front how many images will be scored, and after the clean
/// pass how long the rest should take.
pub fn analyse(
    report: &mut EvaluationReport,
    predictor: &Predictor,
    samples: &SplitSamples,
    args: &RobustnessArgs,
    seed: u64,
) -> Result<RobustnessAnalysis> {
    let plan = RobustnessPlan::new(&args.robustness_kinds, args.robustness_severities, seed);
    plan.validate()?;
    let subset = match args.robustness_max_images {
        Some(max) => stratified_subset(samples, max, seed),
        None => samples.clone(),
    };
    if subset.is_empty() {
        bail!("--robustness: no images to perturb");
    }
    let n = subset.len();
    let total = n * plan.passes();
    let severities = plan.passes() - 1;
    eprintln!(
        "robustness: {} perturbation(s), {severities} severities + the clean pass over {n} of \
         {} images = {total} images to score",
        plan.perturbations.len(),
        samples.len(),
    );
    let bar = progress::bar(total, "robustness");
    let started = Instant::now();
    let mut estimated = false;
    let analysis = robustness_of(predictor, &subset, &plan, &mut |done, total| {
        bar.set_position(done as u64);
        if !estimated && done >= n {
            estimated = true;
            let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-3);
            bar.suspend(|| {
                eprintln!(
                    "robustness: clean pass at {rate:.1} images/s; about {:.1} min to go",
                    (total - done) as f64 / rate / 60.0
                )
            });
        }
    })?;
    bar.finish_and_clear();
    eprintln!(
        "robustness: {total} images scored in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    analysis.add_to(report);
    Ok(analysis)
}

/// MLflow metric name of a curve's metric, e.g. `robustness_noise_accuracy`.
fn metric_name(perturbation: &str, metric: &str) -> String {
    format!("robustness_{perturbation}_{metric}")
}

/// Logs the curves as metrics (`robustness_<kind>_accuracy` and `…_roc_auc`, step = severity
/// level, 0 the clean baseline) and, per perturbation, its severities and the severity costing
/// more than the allowed accuracy as parameters.
pub fn log(recorder: &mut RunRecorder, analysis: &RobustnessAnalysis) {
    let mut params = vec![
        Param::new("robustness.images", analysis.n.to_string()),
        Param::new(
            "robustness.max_accuracy_drop",
            analysis.max_accuracy_drop.to_string(),
        ),
    ];
    for curve in &analysis.curves {
        let (accuracy, roc_auc) = (
            metric_name(&curve.perturbation, "accuracy"),
            metric_name(&curve.perturbation, "roc_auc"),
        );
        recorder.log_metrics(
            0,
            &[
                (accuracy.as_str(), analysis.clean_accuracy),
                (roc_auc.as_str(), analysis.clean_roc_auc),
            ],
        );
        for level in &curve.levels {
            recorder.log_metrics(
                i64::try_from(level.level).unwrap_or(i64::MAX),
                &[
                    (accuracy.as_str(), level.accuracy),
                    (roc_auc.as_str(), level.roc_auc),
                ],
            );
        }
        let severities: Vec<String> = curve
            .levels
            .iter()
            .map(|l| l.severity.to_string())
            .collect();
        let prefix = format!("robustness.{}", curve.perturbation);
        params.push(Param::new(
            format!("{prefix}.severities"),
            severities.join(", "),
        ));
        params.push(Param::new(
            format!("{prefix}.accuracy_drop_severity"),
            curve.verdict(),
        ));
    }
    recorder.log_params(params);
}

/// Prints, per perturbation, the severities tried and the one costing more than the allowed
/// accuracy.
pub fn print(analysis: &RobustnessAnalysis) {
    let points = analysis.max_accuracy_drop * 100.0;
    println!(
        "robustness on {} images (clean accuracy {:.4}, ROC-AUC {:.4}); loses > {points} points \
         of accuracy at:",
        analysis.n, analysis.clean_accuracy, analysis.clean_roc_auc
    );
    for curve in &analysis.curves {
        let severities: Vec<String> = curve
            .levels
            .iter()
            .map(|l| l.severity.to_string())
            .collect();
        println!(
            "  {:<12} {:<16} (largest loss {:4.1} points; {}: {})",
            curve.perturbation,
            curve.verdict(),
            curve.worst_accuracy_drop() * 100.0,
            curve.unit,
            severities.join(", ")
        );
    }
}
