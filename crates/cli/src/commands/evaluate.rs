//! `covidct evaluate` and `covidct predict`: a model package applied to labelled or unlabelled
//! images.

use std::path::Path;

use anyhow::{Context, Result, bail};
use covidct_data::{Manifest, Sample, SplitName, scan_dataset};
use covidct_evaluation::{BootstrapConfig, EvaluationReport, MetricsWithCi, write_report};
use covidct_imaging::SliceStats;
use covidct_model::{ModelPackage, Predictor, select_device};
use covidct_tracking::{RunStatus, Tag};
use covidct_training::{EvaluationTarget, SplitSamples, report_of_probabilities, score_split};

use crate::cli::{
    BiasArgs, EvalDataArgs, EvaluateArgs, ModelArgs, PredictArgs, SampleArgs, StoreArgs,
};
use crate::commands::bias::{self, BiasOutcome};
use crate::commands::models::{package_sha256, resolve_source};
use crate::commands::robustness;
use crate::commands::tracking;
use crate::commands::train::dataset_name;
use crate::progress;

/// A package file and its registry version when it came from `models:/…`.
pub struct LoadedModel {
    /// The predictor.
    pub predictor: Predictor,
    /// The package file.
    pub path: std::path::PathBuf,
    /// The registry version, for `models:/` sources.
    pub version: Option<covidct_tracking::ModelVersion>,
}

/// Resolves the model source (a package path or a `models:/` URI), verifies the package and
/// builds its predictor.
pub fn load_model(args: &ModelArgs, store: &StoreArgs) -> Result<LoadedModel> {
    let (path, version) = resolve_source(&args.model, &store.tracking_uri, &args.model_cache)?;
    Ok(LoadedModel {
        predictor: load_predictor(&path, &args.device)?,
        path,
        version,
    })
}

/// Loads and verifies a package file and builds its predictor.
fn load_predictor(path: &Path, device: &str) -> Result<Predictor> {
    let package = ModelPackage::load(path)?;
    Ok(Predictor::new(&package, &select_device(device)?)?)
}

/// The labelled images to evaluate: a manifest split (with its groups) or every image of a
/// class-folder dataset (each image its own group).
pub fn target_samples(data: &SampleArgs, class_names: &[String]) -> Result<(SplitSamples, String)> {
    let label_index = |label: &str| {
        class_names
            .iter()
            .position(|c| c == label)
            .with_context(|| format!("label `{label}` is not a class of the model {class_names:?}"))
    };
    let mut samples = SplitSamples::default();
    match &data.manifest {
        Some(path) => {
            let split: SplitName = serde_json::from_value(serde_json::json!(data.split))
                .with_context(|| {
                    format!("--split `{}`: expected train, val or test", data.split)
                })?;
            let manifest = Manifest::read(path)?;
            for row in manifest.split(split) {
                samples.samples.push(Sample {
                    path: data.data_dir.join(&row.path),
                    label: label_index(&row.label)?,
                });
                samples.groups.push(row.group.clone());
            }
            Ok((samples, data.split.clone()))
        }
        None => {
            let scan = scan_dataset(&data.data_dir, false)?;
            for file in &scan.files {
                samples.samples.push(Sample {
                    path: file.path.clone(),
                    label: label_index(&file.class)?,
                });
                samples.groups.push(file.relative.clone());
            }
            Ok((samples, "all".to_owned()))
        }
    }
}

/// What [`evaluate_with`] produced.
struct Evaluation {
    report: EvaluationReport,
    files: covidct_evaluation::ReportFiles,
    bias: Option<BiasOutcome>,
    /// The evaluated images, for analyses that score them again (robustness).
    samples: SplitSamples,
}

/// Scores `predictor` on the evaluation data, adds the `--bias` checks when asked, and writes
/// the report into `out`.
fn evaluate_with(
    predictor: &Predictor,
    data: &EvalDataArgs,
    out: &Path,
    bias: Option<&BiasArgs>,
) -> Result<Evaluation> {
    let (samples, split) = target_samples(&data.samples, &predictor.metadata().class_names)?;
    if samples.is_empty() {
        bail!(
            "no images to evaluate in {}",
            data.samples.data_dir.display()
        );
    }
    let bar = progress::bar(samples.len(), "scoring");
    let target = EvaluationTarget {
        dataset_name: dataset_name(&data.samples.data_dir),
        split,
        samples: &samples,
        bootstrap: BootstrapConfig {
            resamples: data.bootstrap,
            seed: data.seed,
            ..BootstrapConfig::default()
        },
    };
    // `--bias` reads each image's original layout and intensity from the same decode.
    let scored = score_split(
        predictor,
        &samples,
        &mut |done, _| bar.set_position(done as u64),
        &|decoded| bias.map(|_| bias::ImageProperties::of(decoded)),
    )?;
    bar.finish_and_clear();
    let (probabilities, properties) = (scored.probabilities, scored.inspected);
    let mut report = report_of_probabilities(predictor, &target, &probabilities, &scored.verdicts)?;
    let outcome = match bias {
        Some(args) => Some(bias::analyse(
            &mut report,
            predictor,
            bias::EvaluatedImages {
                samples: &samples,
                probabilities: &probabilities,
                properties: &properties.into_iter().flatten().collect::<Vec<_>>(),
            },
            &data.samples,
            args,
            &target.bootstrap,
        )?),
        None => None,
    };
    let files = write_report(out, &report)?;
    Ok(Evaluation {
        report,
        files,
        bias: outcome,
        samples,
    })
}

/// Evaluates the package at `path` on `data`, writing the report into `out`.
pub fn evaluate_source(
    path: &Path,
    device: &str,
    data: &EvalDataArgs,
    out: &Path,
) -> Result<EvaluationReport> {
    let predictor = load_predictor(path, device)?;
    Ok(evaluate_with(&predictor, data, out, None)?.report)
}

/// `covidct evaluate`: scores the model, writes the report and tracks the evaluation as an
/// MLflow run tagged with the model it evaluated.
pub fn evaluate(args: &EvaluateArgs) -> Result<()> {
    let model = load_model(&args.model, &args.tracking.store)?;
    let bias_args = args.bias.bias.then_some(&args.bias);
    let Evaluation {
        mut report,
        mut files,
        bias,
        samples,
    } = evaluate_with(&model.predictor, &args.data, &args.out, bias_args)?;
    // After the standard report is on disk, so a long robustness run never costs it.
    let robustness = if args.robustness.robustness {
        let analysis = robustness::analyse(
            &mut report,
            &model.predictor,
            &samples,
            &args.robustness,
            args.data.seed,
        )?;
        files = write_report(&args.out, &report)?;
        Some(analysis)
    } else {
        None
    };
    let meta = model.predictor.metadata();
    let mut tags = vec![
        Tag::new("covidct.kind", "evaluation"),
        Tag::new("covidct.model_source", &args.model.model),
        Tag::new("covidct.model_sha256", package_sha256(&model.path)?),
        Tag::new("covidct.architecture", meta.architecture.to_string()),
        Tag::new("covidct.dataset", dataset_name(&args.data.samples.data_dir)),
        Tag::new("covidct.split", &report.dataset.split),
    ];
    if let Some(version) = &model.version {
        tags.push(Tag::new("covidct.registered_model", &version.name));
        tags.push(Tag::new(
            "covidct.model_version",
            version.version.to_string(),
        ));
        if let Some(run_id) = &version.run_id {
            tags.push(Tag::new("covidct.model_run_id", run_id));
        }
    }
    if let Some(shortcut) = bias.as_ref().and_then(BiasOutcome::widest_shortcut) {
        tags.push(Tag::new(
            "covidct.shortcut_verdict",
            shortcut.verdict.as_str(),
        ));
    }
    let run_name = format!("evaluate-{}-{}", meta.architecture, report.dataset.split);
    if let Some(mut recorder) = tracking::start(&args.tracking, &args.out, false, &run_name, tags) {
        recorder.log_params(tracking::params_of(&serde_json::json!({
            "data_dir": args.data.samples.data_dir,
            "manifest": args.data.samples.manifest,
            "split": args.data.samples.split,
            "bootstrap": args.data.bootstrap,
            "seed": args.data.seed,
        })));
        tracking::log_report(
            &mut recorder,
            &report.dataset.split,
            0,
            &report,
            &args.out,
            "evaluation",
        );
        if let Some(bias) = &bias {
            let values = bias.metric_values();
            let values: Vec<(&str, f64)> = values.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            recorder.log_metrics(0, &values);
        }
        if let Some(analysis) = &robustness {
            robustness::log(&mut recorder, analysis);
        }
        tracking::finish(recorder, RunStatus::Finished, &args.out);
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
        print_intervals(m);
        print_group(&report);
        print_refusals(&report);
        if let Some(bias) = &bias {
            bias.print();
        }
        if let Some(analysis) = &robustness {
            robustness::print(analysis);
        }
    }
    Ok(())
}

/// Prints the patient-level (group) metrics of `report`, when it has them.
pub fn print_group(report: &EvaluationReport) {
    if let Some(group) = &report.group {
        let c = &group.calibration;
        println!(
            "patients ({} groups; rule {}, temperature {:.3}, threshold {:.4}, fitted on {} \
             validation groups):",
            group.metrics.point.n, c.rule, c.temperature, c.threshold, c.fitted_on_groups
        );
        print_intervals(&group.metrics);
    }
}

/// Prints what the out-of-distribution gate refused and the metrics without those images.
pub fn print_refusals(report: &EvaluationReport) {
    if let Some(r) = &report.refusals {
        let checks = r.failed_checks();
        println!(
            "out-of-distribution gate: {} of {} images refused ({:.2}%){}",
            r.refused,
            r.total,
            100.0 * r.rate,
            if checks.is_empty() {
                String::new()
            } else {
                format!("; failed checks: {checks}")
            }
        );
        if let Some(accepted) = &r.accepted {
            println!("accepted images only:");
            print_intervals(accepted);
        }
    }
}

/// Prints each metric with its interval, one per line.
pub fn print_intervals(metrics: &MetricsWithCi) {
    for (metric, interval) in &metrics.intervals {
        let show = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.4}"));
        println!(
            "  {:<28} {}  [{}, {}]",
            metric.label(),
            show(interval.value),
            show(interval.lower),
            show(interval.upper)
        );
    }
}

/// One prediction as `covidct predict --json` shows it: the gate's score and threshold, then
/// the label, probability and threshold, or, for a refused image, the failed checks instead.
pub fn prediction_json(prediction: &covidct_model::Prediction) -> Result<serde_json::Value> {
    let ood = prediction.ood.as_ref();
    let mut line = serde_json::json!({
        "in_distribution": prediction.in_distribution(),
        "ood_score": ood.map(|o| o.score),
        "ood_threshold": ood.map(|o| o.threshold),
    });
    if prediction.in_distribution() {
        line["label"] = prediction.label.clone().into();
        line["probability"] = prediction.probability.into();
        line["threshold"] = prediction.threshold.into();
    } else if let Some(ood) = ood {
        line["refusals"] = serde_json::to_value(&ood.refusals)?;
    }
    Ok(line)
}

/// Exit status of `covidct predict` when some file was refused by the out-of-distribution gate
/// (and none failed to decode, which is status 1).
pub const OUT_OF_DISTRIBUTION: u8 = 4;

/// `covidct predict`: returns the exit status (1 when any file failed, else
/// [`OUT_OF_DISTRIBUTION`] when any was refused, else 0).
pub fn predict(args: &PredictArgs) -> Result<u8> {
    let model = load_model(&args.model, &args.store)?;
    if args.study {
        return crate::commands::study::predict_study(&model, args);
    }
    let predictor = model.predictor;
    let (mut failed, mut refused) = (false, false);
    for path in &args.files {
        let result = predictor
            .score_files_inspecting(std::slice::from_ref(path), 1, &mut |_| {}, &SliceStats::of)
            .map(|mut scored| {
                scored
                    .pop()
                    .map(|(scored, stats)| predictor.judge(scored, &stats))
            });
        match result {
            Ok(Some(prediction)) => {
                let judged = prediction.in_distribution();
                refused |= !judged;
                let ood = prediction.ood.as_ref();
                if args.json {
                    let mut line = prediction_json(&prediction)?;
                    line["file"] = serde_json::json!(path);
                    println!("{line}");
                } else if judged {
                    println!(
                        "{}\t{}\tp={:.4}\tthreshold={:.4}",
                        path.display(),
                        prediction.label,
                        prediction.probability,
                        prediction.threshold
                    );
                } else {
                    println!(
                        "{}\trefused\tnot an image this model can judge: {}",
                        path.display(),
                        ood.map(|o| o.summary()).unwrap_or_default()
                    );
                }
            }
            Ok(None) => {}
            Err(error) => {
                failed = true;
                if args.json {
                    println!(
                        "{}",
                        serde_json::json!({"file": path, "error": error.to_string()})
                    );
                } else {
                    eprintln!("{}: {error}", path.display());
                }
            }
        }
    }
    Ok(if failed {
        1
    } else if refused {
        OUT_OF_DISTRIBUTION
    } else {
        0
    })
}
