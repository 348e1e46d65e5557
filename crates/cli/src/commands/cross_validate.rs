//! `covidct cross-validate`: one `covidct train` per fold of a group K-fold split, then the
//! spread of the test metrics over the folds.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use covidct_data::{SplitConfig, split_dataset};
use covidct_evaluation::{CrossValidationSummary, read_report, summarize_folds, write_atomically};
use covidct_training::checkpoint;

use crate::cli::{CrossValidateArgs, DatasetArgs, DecodeArgs, TrainArgs};
use crate::commands::data::analyze;
use crate::commands::train;
use crate::config::ConfigFile;

/// `covidct cross-validate`; returns the exit status (that of an interrupted fold).
pub fn cross_validate(config: &ConfigFile, args: &CrossValidateArgs) -> Result<u8> {
    let mut split: SplitConfig = config.resolve("data.split", &serde_json::json!({}))?;
    split.folds = args.folds;
    split.validate()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let analysis = analyze(
        config,
        &DatasetArgs {
            dir: args.data_dir.clone(),
            skip_invalid: false,
            decode: DecodeArgs {
                max_pixels: None,
                dicom_window: None,
            },
        },
    )?;
    analysis.require_usable(false)?;

    let mut reports = Vec::with_capacity(args.folds);
    for fold in 0..args.folds {
        let run = args.out.join(format!("fold-{fold}"));
        let report_path = report_of(&run);
        if run.join("model.ctpkg").is_file() && report_path.is_file() {
            tracing::info!(fold, run = %run.display(), "fold already trained; kept");
        } else {
            let manifest = args.out.join(format!("split-fold-{fold}.csv"));
            split_dataset(
                &analysis,
                &SplitConfig {
                    fold,
                    ..split.clone()
                },
            )?
            .write(&manifest)?;
            tracing::info!(fold, folds = args.folds, manifest = %manifest.display(), "training fold");
            let status = train::train(
                config,
                &TrainArgs {
                    data_dir: args.data_dir.clone(),
                    manifest: Some(manifest),
                    resume: checkpoint::load(&run)?.is_some(),
                    out: run,
                    name: args.name.clone(),
                    settings: args.settings.clone(),
                    tracking: args.tracking.clone(),
                },
            )?;
            if status != 0 {
                eprintln!(
                    "cross-validation stopped in fold {fold}: run the same command again to \
                     continue"
                );
                return Ok(status);
            }
        }
        reports.push(read_report(&report_path)?.metrics.point);
    }
    let summary = summarize_folds(&reports)?;
    let summary_path = args.out.join("cross-validation.json");
    write_atomically(&summary_path, &serde_json::to_vec_pretty(&summary)?)?;
    print_summary(&summary, &summary_path);
    Ok(0)
}

/// The evaluation report a fold's run writes.
fn report_of(run: &Path) -> PathBuf {
    run.join("evaluation").join("report.json")
}

fn print_summary(summary: &CrossValidationSummary, path: &Path) {
    println!(
        "{}-fold group cross-validation, {} test images (each tested once); {}",
        summary.folds,
        summary.images,
        path.display()
    );
    println!(
        "  {:<28} {:>15}  {:>16}  per fold",
        "metric", "mean ± sd", "[min, max]"
    );
    for spread in &summary.metrics {
        let per_fold: Vec<String> = spread
            .values
            .iter()
            .map(|v| v.map_or("n/a".to_owned(), |v| format!("{v:.3}")))
            .collect();
        println!(
            "  {:<28} {:>7.4} ± {:.4}  [{:.4}, {:.4}]  {}",
            spread.metric.label(),
            spread.mean,
            spread.std_dev,
            spread.min,
            spread.max,
            per_fold.join(" ")
        );
    }
    let show = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.4}"));
    let c = summary.pooled_confusion;
    println!(
        "pooled at each fold's threshold: accuracy {:.4}, sensitivity {}, specificity {} \
         (TP {}, FP {}, TN {}, FN {})",
        summary.pooled_accuracy,
        show(summary.pooled_sensitivity),
        show(summary.pooled_specificity),
        c.tp,
        c.fp,
        c.tn,
        c.fn_
    );
}
