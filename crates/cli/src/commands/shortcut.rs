//! `covidct data shortcut`: the metadata shortcut test on a dataset's files, without a model.

use anyhow::{Result, bail};
use covidct_data::{Manifest, scan_dataset};
use covidct_evaluation::{ShortcutConfig, ShortcutVerdict, shortcut_test};
use covidct_imaging::DecodeOptions;
use covidct_training::bias::probe_metadata;

use crate::cli::ShortcutArgs;
use crate::config::ConfigFile;
use crate::exit::ExitStatus;
use crate::progress::StageBar;

/// `covidct data shortcut`: the shortcut test on a dataset's files without a model; returns
/// [`ExitStatus::Refused`] for a shortcut under `--deny-shortcut`.
pub fn shortcut(config: &ConfigFile, args: &ShortcutArgs) -> Result<ExitStatus> {
    let decode: DecodeOptions = config.resolve("decode", &args.dataset.decode)?;
    let dir = &args.dataset.dir;
    let (mut paths, mut classes, mut groups) = (Vec::new(), Vec::new(), Vec::new());
    match &args.manifest {
        Some(manifest) => {
            for row in Manifest::read(manifest)?.rows {
                paths.push(dir.join(&row.path));
                classes.push(row.label);
                groups.push(row.group);
            }
        }
        None => {
            tracing::warn!(
                "no --manifest: every image is its own group, so slices of one patient can sit \
                 in training and test folds and inflate the result"
            );
            for file in scan_dataset(dir, args.dataset.skip_invalid)?.files {
                paths.push(file.path);
                classes.push(file.class);
                groups.push(file.relative);
            }
        }
    }
    if !classes
        .iter()
        .any(|c| c.eq_ignore_ascii_case(&args.positive_class))
    {
        let mut names = classes.clone();
        names.sort();
        names.dedup();
        bail!(
            "the positive class `{}` is not among the labels {names:?} (--positive-class)",
            args.positive_class
        );
    }
    let labels: Vec<bool> = classes
        .iter()
        .map(|c| c.eq_ignore_ascii_case(&args.positive_class))
        .collect();
    let mut stages = StageBar::default();
    let metadata = probe_metadata(&paths, &decode, &mut |stage, done, total| {
        stages.update(stage, done, total)
    })?;
    stages.clear();
    let report = shortcut_test(
        &metadata,
        &labels,
        &groups,
        &ShortcutConfig {
            seed: args.seed,
            ..ShortcutConfig::default()
        },
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} images ({} {}), {} groups, {}-fold cross-validation by group",
            report.n, report.positives, args.positive_class, report.groups, report.folds
        );
        println!(
            "  metadata model: ROC-AUC {:.3}, accuracy {:.3} (majority baseline {:.3})",
            report.cv_roc_auc, report.cv_accuracy, report.majority_baseline
        );
        for feature in &report.features {
            println!(
                "  {:<16} alone: ROC-AUC {:.3}",
                feature.feature, feature.cv_roc_auc
            );
        }
        for layout in &report.layouts {
            println!(
                "  layout {:<20} {} {} / {} other",
                layout.layout, layout.positives, args.positive_class, layout.negatives
            );
        }
        println!("{}", report.summary());
    }
    Ok(ExitStatus::refused_if(
        args.deny_shortcut && report.verdict == ShortcutVerdict::Shortcut,
    ))
}
