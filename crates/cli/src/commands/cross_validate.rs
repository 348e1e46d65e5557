//! `covidct cross-validate`: one `covidct train` per fold of a group K-fold split, then the
//! spread of the test metrics over the folds.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use covidct_data::{Analysis, SplitConfig, split_dataset};
use covidct_evaluation::{
    CrossValidationSummary, fold_refusals, read_report, summarize_folds, write_atomically,
};
use covidct_tracking::{Param, RunRecorder, RunStatus, Tag};
use covidct_training::{TrainConfig, checkpoint};

use crate::cli::{CrossValidateArgs, TrainArgs};
use crate::commands::{tracking, train};
use crate::config::ConfigFile;

/// `covidct cross-validate`; returns the exit status (that of an interrupted fold).
pub fn cross_validate(config: &ConfigFile, args: &CrossValidateArgs) -> Result<u8> {
    let mut split: SplitConfig = config.resolve("data.split", &serde_json::json!({}))?;
    split.folds = args.folds;
    split.validate()?;
    let settings: TrainConfig = config.resolve("train", &args.settings)?;
    settings.validate()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let analysis = train::decode_dataset(config, &args.data_dir)?;

    // The parent MLflow run of this invocation: the folds it trains point at it, and it holds
    // the summary.
    let mut parent = tracking::start(
        &args.tracking,
        &args.out,
        false,
        &format!("cross-validate-{}", settings.architecture),
        vec![
            Tag::new("covidct.kind", "cross-validation"),
            Tag::new("covidct.architecture", settings.architecture.to_string()),
            Tag::new("covidct.split_strategy", split.strategy.as_str()),
            Tag::new("mlflow.source.name", "covidct cross-validate"),
        ],
    );
    if let Some(parent) = parent.as_mut() {
        let mut params = tracking::params_of(&serde_json::to_value(&settings)?);
        params.push(Param::new("folds", args.folds.to_string()));
        params.push(Param::new("split_seed", split.seed.to_string()));
        parent.log_params(params);
    }
    let parent_id = parent
        .as_ref()
        .and_then(|p| p.run().map(|run| run.run_id.clone()));
    let outcome = run_folds(config, args, &analysis, &split, parent_id);
    let status = match &outcome {
        Ok(Ok(_)) => RunStatus::Finished,
        Ok(Err(_)) => RunStatus::Killed,
        Err(_) => RunStatus::Failed,
    };
    if let Some(mut parent) = parent {
        if let Ok(Ok((summary, path))) = &outcome {
            log_summary(&mut parent, summary, path);
        }
        tracking::finish(parent, status, &args.out);
    }
    match outcome? {
        Ok((summary, path)) => {
            print_summary(&summary, &path);
            Ok(0)
        }
        Err(interrupted) => Ok(interrupted),
    }
}

/// Trains (or keeps) every fold and writes the summary; the inner `Err` is the exit status of
/// an interrupted fold.
fn run_folds(
    config: &ConfigFile,
    args: &CrossValidateArgs,
    analysis: &Analysis,
    split: &SplitConfig,
    parent_id: Option<String>,
) -> Result<std::result::Result<(CrossValidationSummary, PathBuf), u8>> {
    let mut reports = Vec::with_capacity(args.folds);
    let mut group_reports = Vec::with_capacity(args.folds);
    let mut refusals = Vec::with_capacity(args.folds);
    for fold in 0..args.folds {
        let run = args.out.join(format!("fold-{fold}"));
        let report_path = run.join("evaluation").join("report.json");
        if run.join("model.ctpkg").is_file() && report_path.is_file() {
            tracing::info!(fold, run = %run.display(), "fold already trained; kept");
        } else {
            let manifest = args.out.join(format!("split-fold-{fold}.csv"));
            split_dataset(
                analysis,
                &SplitConfig {
                    fold,
                    ..split.clone()
                },
            )?
            .write(&manifest)?;
            tracing::info!(fold, folds = args.folds, manifest = %manifest.display(), "training fold");
            let mut tags = vec![
                Tag::new("covidct.cv_fold", fold.to_string()),
                Tag::new("covidct.cv_folds", args.folds.to_string()),
            ];
            if let Some(id) = &parent_id {
                tags.push(Tag::new("mlflow.parentRunId", id));
            }
            let status = train::train_with(
                config,
                &TrainArgs {
                    data_dir: args.data_dir.clone(),
                    manifest: Some(manifest),
                    resume: checkpoint::load(&run)?.is_some(),
                    out: run,
                    name: args.name.clone(),
                    cross_validation: None,
                    settings: args.settings.clone(),
                    tracking: args.tracking.clone(),
                    extra_tags: tags,
                    log_package: false,
                },
                Some(analysis),
            )?;
            if status != 0 {
                eprintln!(
                    "cross-validation stopped in fold {fold}: run the same command again to \
                     continue"
                );
                return Ok(Err(status));
            }
        }
        let report = read_report(&report_path)?;
        group_reports.extend(report.group.map(|group| group.metrics.point));
        refusals.push(report.refusals);
        reports.push(report.metrics.point);
    }
    let mut summary = summarize_folds(&reports, Some(&group_reports))?;
    summary.refusals = fold_refusals(&refusals);
    let path = args.out.join("cross-validation.json");
    write_atomically(&path, &serde_json::to_vec_pretty(&summary)?)?;
    Ok(Ok((summary, path)))
}

/// Logs the summary on the parent run: `cv_mean_<metric>`, `cv_std_…`, `cv_min_…`, `cv_max_…`,
/// `cv_pooled_accuracy`, and the summary file.
fn log_summary(parent: &mut RunRecorder, summary: &CrossValidationSummary, path: &Path) {
    let mut values = Vec::new();
    for spread in &summary.metrics {
        let key = spread.metric.key();
        values.extend([
            (format!("cv_mean_{key}"), spread.mean),
            (format!("cv_std_{key}"), spread.std_dev),
            (format!("cv_min_{key}"), spread.min),
            (format!("cv_max_{key}"), spread.max),
        ]);
    }
    for spread in &summary.group_metrics {
        let key = spread.metric.key();
        values.extend([
            (format!("cv_group_mean_{key}"), spread.mean),
            (format!("cv_group_std_{key}"), spread.std_dev),
            (format!("cv_group_min_{key}"), spread.min),
        ]);
    }
    values.push(("cv_pooled_accuracy".into(), summary.pooled_accuracy));
    if let Some(refusals) = &summary.refusals {
        values.push(("cv_ood_refused_rate".into(), refusals.pooled_rate));
    }
    tracking::log_values(parent, 0, &values);
    parent.log_artifact("cross-validation.json", path);
}

fn print_summary(summary: &CrossValidationSummary, path: &Path) {
    println!(
        "{}-fold group cross-validation, {} test images (each tested once); {}",
        summary.folds,
        summary.images,
        path.display()
    );
    print_spreads("slices", &summary.metrics);
    if !summary.group_metrics.is_empty() {
        println!(
            "patients (groups): {} test groups, each scored by its fold's group rule",
            summary.groups
        );
        print_spreads("groups", &summary.group_metrics);
    }
    let show = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.4}"));
    let c = summary.pooled_confusion;
    println!(
        "slices pooled at each fold's threshold: accuracy {:.4}, sensitivity {}, specificity {} \
         (TP {}, FP {}, TN {}, FN {})",
        summary.pooled_accuracy,
        show(summary.pooled_sensitivity),
        show(summary.pooled_specificity),
        c.tp,
        c.fp,
        c.tn,
        c.fn_
    );
    if let Some(r) = &summary.refusals {
        let per_fold: Vec<String> = r.per_fold.iter().map(|v| format!("{v:.4}")).collect();
        println!(
            "out-of-distribution gate: {} of {} test images refused ({:.4}); per fold {}",
            r.refused,
            r.total,
            r.pooled_rate,
            per_fold.join(" ")
        );
    }
}

/// One table row per metric: mean ± sd, range and per-fold values.
fn print_spreads(unit: &str, spreads: &[covidct_evaluation::FoldSpread]) {
    println!(
        "  {:<28} {:>15}  {:>16}  per fold",
        format!("metric ({unit})"),
        "mean ± sd",
        "[min, max]"
    );
    for spread in spreads {
        println!(
            "  {:<28} {:>7.4} ± {:.4}  [{:.4}, {:.4}]  {}",
            spread.metric.label(),
            spread.mean,
            spread.std_dev,
            spread.min,
            spread.max,
            spread.per_fold().join(" ")
        );
    }
}
