//! `covidct evaluate` and `covidct predict`: a model package applied to labelled or unlabelled
//! images.

use anyhow::{Context, Result, bail};
use covidct_data::{Manifest, Sample, SplitName, scan_dataset};
use covidct_evaluation::{BootstrapConfig, MetricsWithCi, write_report};
use covidct_model::{ModelPackage, Predictor, select_device};
use covidct_training::{EvaluationTarget, SplitSamples, evaluate_predictor};

use crate::cli::{EvaluateArgs, ModelArgs, PredictArgs};
use crate::commands::train::dataset_name;
use crate::progress;

/// Loads and verifies a package and builds its predictor.
pub fn load_predictor(args: &ModelArgs) -> Result<Predictor> {
    let package = ModelPackage::load(&args.model)?;
    let device = select_device(&args.device)?;
    Ok(Predictor::new(&package, &device)?)
}

/// The labelled images to evaluate: a manifest split (with its groups) or every image of a
/// class-folder dataset (each image its own group).
fn target_samples(args: &EvaluateArgs, class_names: &[String]) -> Result<(SplitSamples, String)> {
    let label_index = |label: &str| {
        class_names
            .iter()
            .position(|c| c == label)
            .with_context(|| format!("label `{label}` is not a class of the model {class_names:?}"))
    };
    let mut samples = SplitSamples::default();
    match &args.manifest {
        Some(path) => {
            let split: SplitName = serde_json::from_value(serde_json::json!(args.split))
                .with_context(|| {
                    format!("--split `{}`: expected train, val or test", args.split)
                })?;
            let manifest = Manifest::read(path)?;
            for row in manifest.split(split) {
                samples.samples.push(Sample {
                    path: args.data_dir.join(&row.path),
                    label: label_index(&row.label)?,
                });
                samples.groups.push(row.group.clone());
            }
            Ok((samples, args.split.clone()))
        }
        None => {
            let scan = scan_dataset(&args.data_dir, false)?;
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

/// `covidct evaluate`.
pub fn evaluate(args: &EvaluateArgs) -> Result<()> {
    let predictor = load_predictor(&args.model)?;
    let (samples, split) = target_samples(args, &predictor.metadata().class_names)?;
    if samples.is_empty() {
        bail!("no images to evaluate in {}", args.data_dir.display());
    }
    let bar = progress::bar(samples.len(), "scoring");
    let report = evaluate_predictor(
        &predictor,
        &EvaluationTarget {
            dataset_name: dataset_name(&args.data_dir),
            split,
            samples: &samples,
            bootstrap: BootstrapConfig {
                resamples: args.bootstrap,
                seed: args.seed,
                ..BootstrapConfig::default()
            },
        },
        &mut |done, _| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    let files = write_report(&args.out, &report)?;
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
    }
    Ok(())
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

/// `covidct predict`: returns the exit status (1 when any file failed).
pub fn predict(args: &PredictArgs) -> Result<u8> {
    let predictor = load_predictor(&args.model)?;
    let mut failed = false;
    for path in &args.files {
        let result = predictor
            .score_files(std::slice::from_ref(path), 1, &mut |_| {})
            .map(|mut logits| predictor.interpret(logits.pop().unwrap_or_default()));
        match result {
            Ok(prediction) => {
                if args.json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "file": path,
                            "label": prediction.label,
                            "probability": prediction.probability,
                            "threshold": prediction.threshold,
                        })
                    );
                } else {
                    println!(
                        "{}\t{}\tp={:.4}\tthreshold={:.4}",
                        path.display(),
                        prediction.label,
                        prediction.probability,
                        prediction.threshold
                    );
                }
            }
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
    Ok(u8::from(failed))
}
