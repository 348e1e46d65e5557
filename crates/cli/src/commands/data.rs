//! `covidct data inspect | split | fetch`.

use crate::cli::{DatasetArgs, FetchArgs, InspectArgs, SplitArgs};
use crate::config::ConfigFile;
use crate::exit::ExitStatus;
use crate::progress;
use anyhow::Result;
use covidct_data::{
    Analysis, FolderLayout, InspectConfig, InspectReport, SplitConfig, SplitStrategy,
    leakage_table, measure_leakage, split_dataset,
};
use covidct_imaging::DecodeOptions;

/// Scans and decodes the whole dataset once, with a progress bar.
fn analyze(config: &ConfigFile, dataset: &DatasetArgs) -> Result<Analysis> {
    let decode: DecodeOptions = config.resolve("decode", &dataset.decode)?;
    progress::decode_dataset(&dataset.dir, dataset.skip_invalid, &decode)
}

/// `covidct data inspect`: [`ExitStatus::Refused`] for warnings under `--deny-warnings`.
pub fn inspect(config: &ConfigFile, args: &InspectArgs) -> Result<ExitStatus> {
    let settings: InspectConfig = config.resolve("data.inspect", &args.settings)?;
    let analysis = analyze(config, &args.dataset)?;
    let report = InspectReport::build(&analysis, &settings);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(ExitStatus::refused_if(
        args.deny_warnings && report.has_warnings(),
    ))
}

/// `covidct data split`.
pub fn split(config: &ConfigFile, args: &SplitArgs) -> Result<()> {
    let settings: SplitConfig = config.resolve("data.split", &args.settings)?;
    let analysis = analyze(config, &args.dataset)?;
    analysis.require_usable(args.dataset.skip_invalid)?;
    let manifest = split_dataset(&analysis, &settings)?;
    manifest.write(&args.out)?;
    tracing::info!(
        out = %args.out.display(),
        strategy = settings.strategy.as_str(),
        groups = manifest.group_count(),
        "manifest written"
    );
    let leakage = if args.report {
        let mut strategies = vec![
            SplitStrategy::Blocks,
            SplitStrategy::Similarity,
            SplitStrategy::Random,
        ];
        if analysis.scan.layout == FolderLayout::SplitFolders {
            strategies.push(SplitStrategy::Folders);
        }
        if settings.groups_csv.is_some() {
            strategies.push(SplitStrategy::Manifest);
        }
        let mut summaries = Vec::new();
        for strategy in strategies {
            let candidate = if strategy == settings.strategy {
                manifest.clone()
            } else {
                split_dataset(
                    &analysis,
                    &SplitConfig {
                        strategy,
                        ..settings.clone()
                    },
                )?
            };
            summaries.push(measure_leakage(strategy.as_str(), &analysis, &candidate));
        }
        Some(summaries)
    } else {
        None
    };
    if args.json {
        let summary = serde_json::json!({
            "out": args.out,
            "strategy": settings.strategy,
            "settings": settings,
            "dataset_fingerprint": analysis.fingerprint(),
            "groups": manifest.group_count(),
            "counts": manifest.counts(),
            "skipped": analysis.invalid,
            "leakage": leakage,
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        let folds = if settings.folds > 0 {
            format!(", test fold {} of 0..{}", settings.fold, settings.folds)
        } else {
            String::new()
        };
        println!(
            "Wrote {} ({} images, {} groups, strategy {}, seed {}{folds}, dataset fingerprint {})",
            args.out.display(),
            manifest.rows.len(),
            manifest.group_count(),
            settings.strategy.as_str(),
            settings.seed,
            analysis.fingerprint()
        );
        for (split, labels) in manifest.counts() {
            let parts: Vec<String> = labels.iter().map(|(l, n)| format!("{l} {n}")).collect();
            println!("  {:<5} {}", split.as_str(), parts.join(", "));
        }
        for problem in &analysis.invalid {
            println!("  skipped {}: {}", problem.path, problem.reason);
        }
        if let Some(summaries) = &leakage {
            println!();
            print!("{}", leakage_table(summaries));
        }
    }
    Ok(())
}

/// `covidct data fetch`.
pub fn fetch(args: &FetchArgs) -> Result<()> {
    use std::io::IsTerminal;
    let options = covidct_fetch::KaggleFetchOptions {
        dataset: args.kaggle.clone(),
        out_dir: args.out.clone(),
        api_base: args.kaggle_api_url.clone(),
        expected_sha256: args.sha256.clone(),
        overwrite: args.overwrite,
        redownload: args.redownload,
        show_progress: std::io::stderr().is_terminal(),
        ..Default::default()
    };
    let credentials = covidct_fetch::KaggleCredentials::from_environment()?;
    let report = covidct_fetch::fetch_kaggle(&options, &credentials)?;
    println!("{report}");
    Ok(())
}
