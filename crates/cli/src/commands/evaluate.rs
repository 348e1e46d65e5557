//! `covidct evaluate`: a model package scored on labelled images, with the optional bias and
//! robustness analyses, written as a report and tracked as an MLflow run.

use anyhow::Result;
use covidct_evaluation::write_report;
use covidct_tracking::{RunStatus, Tag, finish_run, params_of, start_run, tags};
use covidct_training::bias::{BiasOutcome, EvaluatedImages, ImageProperties, analyse_bias};
use covidct_training::tracked::{log_report, log_robustness};
use covidct_training::{
    RobustnessPlan, dataset_name, evaluation_target, report_of_probabilities, robustness_of,
    score_split, stratified_subset, target_samples,
};

use crate::cli::EvaluateArgs;
use crate::exit::ExitStatus;
use crate::progress::StageBar;

/// `covidct evaluate`: scores the model, writes the report (again after each added analysis,
/// so a long robustness run never costs the rest) and tracks the evaluation.
pub fn evaluate(args: &EvaluateArgs) -> Result<ExitStatus> {
    let model = args.model.load(&args.tracking.store)?;
    let predictor = &model.predictor;
    let request = args.data.request();
    let plan = args.robustness.robustness.then(|| {
        let r = &args.robustness;
        RobustnessPlan::new(&r.robustness_kinds, r.robustness_severities, request.seed)
    });
    if let Some(plan) = &plan {
        plan.validate()?;
    }
    let (samples, split) = target_samples(&request.samples, &predictor.metadata().class_names)?;
    let target = evaluation_target(&request, &samples, split);
    let with_bias = args.bias.bias;
    let mut stages = StageBar::default();
    // `--bias` reads each image's original layout and intensity from the same decode.
    let scored = score_split(
        predictor,
        &samples,
        &mut |done, total| stages.update("scoring", done, total),
        &|decoded| with_bias.then(|| ImageProperties::of(decoded)),
    )?;
    let mut report =
        report_of_probabilities(predictor, &target, &scored.probabilities, &scored.verdicts)?;
    let bias = if with_bias {
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
            &request.samples,
            args.bias.attribution_max_images,
            &target.bootstrap,
            &mut |stage, done, total| stages.update(stage, done, total),
        )?)
    } else {
        None
    };
    let mut files = write_report(&args.out, &report)?;
    let robustness = match &plan {
        Some(plan) => {
            let subset = match args.robustness.robustness_max_images {
                Some(max) => stratified_subset(&samples, max, request.seed),
                None => samples.clone(),
            };
            eprintln!(
                "robustness: {} perturbation(s), {} severities + the clean pass over {} of {} \
                 images = {} images to score",
                plan.perturbations.len(),
                plan.passes() - 1,
                subset.len(),
                samples.len(),
                subset.len() * plan.passes()
            );
            let analysis = robustness_of(predictor, &subset, plan, &mut |done, total| {
                stages.update("robustness", done, total)
            })?;
            analysis.add_to(&mut report);
            files = write_report(&args.out, &report)?;
            Some(analysis)
        }
        None => None,
    };
    stages.clear();

    let meta = predictor.metadata();
    let mut run_tags = vec![
        Tag::new(tags::KIND, "evaluation"),
        Tag::new(tags::MODEL_SOURCE, &args.model.model),
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
    if let Some(shortcut) = bias.as_ref().and_then(BiasOutcome::widest_shortcut) {
        run_tags.push(Tag::new(tags::SHORTCUT_VERDICT, shortcut.verdict.as_str()));
    }
    let run_name = format!("evaluate-{}-{}", meta.architecture, report.dataset.split);
    let tracking = args.tracking.options();
    if let Some(mut recorder) = start_run(&tracking, &args.out, false, &run_name, run_tags) {
        recorder.log_params(params_of(&serde_json::json!({
            "data_dir": request.samples.data_dir,
            "manifest": request.samples.manifest,
            "split": request.samples.split,
            "bootstrap": request.bootstrap,
            "seed": request.seed,
        })));
        let split = &report.dataset.split;
        log_report(&mut recorder, split, 0, &report, &args.out, "evaluation");
        if let Some(bias) = &bias {
            recorder.log_metrics(0, &bias.metric_values());
        }
        if let Some(analysis) = &robustness {
            log_robustness(&mut recorder, analysis);
        }
        finish_run(recorder, RunStatus::Finished, &args.out);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let m = &report.metrics;
        println!(
            "{} images, {} groups; threshold {:.4}; report {}",
            m.point.n,
            m.bootstrap.groups,
            report.threshold.value,
            files.html.display()
        );
        print!("{}", report.metrics_text());
        if let Some(bias) = &bias {
            print!("{bias}");
        }
        if let Some(analysis) = &robustness {
            print!("{analysis}");
        }
    }
    Ok(ExitStatus::Success)
}
