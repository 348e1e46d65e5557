//! `covidct evaluate` as one call: a package scored on labelled images, the optional bias and
//! robustness analyses added to its report, the report written again after each analysis (so
//! a long robustness run never costs the rest), and the run tracked in MLflow.

use std::path::Path;

use covidct_evaluation::{EvaluationReport, ReportFiles, RobustnessAnalysis, write_report};
use covidct_tracking::{RunStatus, Tag, TrackingOptions, finish_run, params_of, start_run, tags};

use crate::bias::{BiasOutcome, EvaluatedImages, ImageProperties, StageProgress, analyse_bias};
use crate::error::TrainError;
use crate::evaluation::{
    EvaluationRequest, LoadedModel, dataset_name, evaluation_target, target_samples,
};
use crate::finalize::{report_of_probabilities, score_split};
use crate::robustness::{RobustnessPlan, robustness_of, stratified_subset};
use crate::tracked::{log_report, log_robustness};

/// The robustness analysis to run: the perturbations and on how many images.
#[derive(Debug, Clone)]
pub struct RobustnessRequest {
    /// Perturbations and severities.
    pub plan: RobustnessPlan,
    /// Most images to perturb, chosen stratified by class with the request's seed; `None`
    /// takes every evaluated image.
    pub max_images: Option<usize>,
}

/// An evaluation with its optional analyses.
#[derive(Debug, Clone)]
pub struct AnalysisRequest {
    /// The images and intervals.
    pub evaluation: EvaluationRequest,
    /// Run the bias and shortcut checks, explaining at most this many images by Grad-CAM
    /// (0 skips Grad-CAM).
    pub bias_attribution_images: Option<usize>,
    /// Run the robustness analysis.
    pub robustness: Option<RobustnessRequest>,
}

/// What an analysed evaluation produced.
#[derive(Debug)]
pub struct AnalysedEvaluation {
    /// The report, every analysis included.
    pub report: EvaluationReport,
    /// Where it was last written.
    pub files: ReportFiles,
    /// The bias and shortcut checks, when requested.
    pub bias: Option<BiasOutcome>,
    /// The robustness analysis, when requested.
    pub robustness: Option<RobustnessAnalysis>,
}

/// Scores `model` on the request's images, runs the requested analyses and writes the report
/// into `out` (after scoring and again after the robustness analysis); `progress` receives
/// (stage, done, total). An invalid robustness plan fails before anything is scored.
pub fn evaluate_with_analyses(
    model: &LoadedModel,
    request: &AnalysisRequest,
    out: &Path,
    progress: StageProgress<'_>,
) -> Result<AnalysedEvaluation, TrainError> {
    if let Some(robustness) = &request.robustness {
        robustness.plan.validate()?;
    }
    let predictor = &model.predictor;
    let evaluation = &request.evaluation;
    let (samples, split) = target_samples(&evaluation.samples, &predictor.metadata().class_names)?;
    let target = evaluation_target(evaluation, &samples, split);
    let with_bias = request.bias_attribution_images.is_some();
    // The bias checks read each image's original layout and intensity from the same decode.
    let scored = score_split(
        predictor,
        &samples,
        &mut |done, total| progress("scoring", done, total),
        &|decoded| with_bias.then(|| ImageProperties::of(decoded)),
    )?;
    let mut report =
        report_of_probabilities(predictor, &target, &scored.probabilities, &scored.verdicts)?;
    let bias = match request.bias_attribution_images {
        Some(attribution_max_images) => {
            let properties: Vec<_> = scored.inspected.into_iter().flatten().collect();
            let evaluated = EvaluatedImages {
                samples: &samples,
                probabilities: &scored.probabilities,
                properties: &properties,
            };
            Some(analyse_bias(
                &mut report,
                predictor,
                evaluated,
                &evaluation.samples,
                attribution_max_images,
                &target.bootstrap,
                progress,
            )?)
        }
        None => None,
    };
    let mut files = write_report(out, &report)?;
    let robustness = match &request.robustness {
        Some(RobustnessRequest { plan, max_images }) => {
            let subset = match max_images {
                Some(max) => stratified_subset(&samples, *max, evaluation.seed),
                None => samples.clone(),
            };
            tracing::info!(
                "robustness: {} perturbation(s), {} severities + the clean pass over {} of {} \
                 images = {} images to score",
                plan.perturbations.len(),
                plan.passes() - 1,
                subset.len(),
                samples.len(),
                subset.len() * plan.passes()
            );
            let analysis = robustness_of(predictor, &subset, plan, &mut |done, total| {
                progress("robustness", done, total)
            })?;
            analysis.add_to(&mut report);
            files = write_report(out, &report)?;
            Some(analysis)
        }
        None => None,
    };
    Ok(AnalysedEvaluation {
        report,
        files,
        bias,
        robustness,
    })
}

/// Tracks an analysed evaluation of `model` (named `model_source` by the user) as an MLflow
/// run linked to `out`: tags for the model, its checksum and registry version, the dataset,
/// split and shortcut verdict; the request as parameters; every metric of the report and the
/// analyses. Nothing happens with tracking disabled.
pub fn track_evaluation(
    options: &TrackingOptions,
    model: &LoadedModel,
    model_source: &str,
    request: &EvaluationRequest,
    outcome: &AnalysedEvaluation,
    out: &Path,
) -> Result<(), TrainError> {
    let meta = model.predictor.metadata();
    let report = &outcome.report;
    let mut run_tags = vec![
        Tag::new(tags::KIND, "evaluation"),
        Tag::new(tags::MODEL_SOURCE, model_source),
        Tag::new(
            tags::MODEL_SHA256,
            covidct_common::sha256_file(&model.path)?,
        ),
        Tag::new(tags::ARCHITECTURE, meta.architecture.to_string()),
        Tag::new(tags::DATASET, dataset_name(&request.samples.data_dir)),
        Tag::new(tags::SPLIT, &report.dataset.split),
    ];
    if let Some(version) = &model.version {
        run_tags.push(Tag::new(tags::REGISTERED_MODEL, &version.name));
        run_tags.push(Tag::new(tags::MODEL_VERSION, version.version.to_string()));
        if let Some(run_id) = &version.run_id {
            run_tags.push(Tag::new(tags::MODEL_RUN_ID, run_id));
        }
    }
    if let Some(shortcut) = outcome.bias.as_ref().and_then(BiasOutcome::widest_shortcut) {
        run_tags.push(Tag::new(tags::SHORTCUT_VERDICT, shortcut.verdict.as_str()));
    }
    let run_name = format!("evaluate-{}-{}", meta.architecture, report.dataset.split);
    let Some(mut recorder) = start_run(options, out, false, &run_name, run_tags) else {
        return Ok(());
    };
    recorder.log_params(params_of(&serde_json::json!({
        "data_dir": request.samples.data_dir,
        "manifest": request.samples.manifest,
        "split": request.samples.split,
        "bootstrap": request.bootstrap,
        "seed": request.seed,
    })));
    log_report(
        &mut recorder,
        &report.dataset.split,
        0,
        report,
        out,
        "evaluation",
    );
    if let Some(bias) = &outcome.bias {
        recorder.log_metrics(0, &bias.metric_values());
    }
    if let Some(analysis) = &outcome.robustness {
        log_robustness(&mut recorder, analysis);
    }
    finish_run(recorder, RunStatus::Finished, out);
    Ok(())
}
