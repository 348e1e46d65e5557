//! `covidct train`: split (when no manifest is given), train, calibrate, evaluate, package.

use anyhow::Result;
use covidct_training::{RunEnd, train_run};

use crate::cli::TrainArgs;
use crate::config::ConfigFile;
use crate::exit::ExitStatus;
use crate::training::run_with_progress;

/// `covidct train`.
pub fn train(config: &ConfigFile, args: &TrainArgs) -> Result<ExitStatus> {
    let request = args.request(config)?;
    request.check()?;
    let end = run_with_progress(config, &args.data_dir, |analysis, stop, bars, stages| {
        train_run(&request, analysis, stop, bars, stages)
    })?;
    match end {
        RunEnd::Interrupted => {
            eprintln!(
                "interrupted: resume with `covidct train --resume --out {}` and the same settings",
                args.out.display()
            );
            Ok(ExitStatus::Interrupted)
        }
        RunEnd::Done(release) => {
            let m = &release.report.metrics;
            let meta = &release.package.metadata;
            println!(
                "model package  {}\nreport         {}\nthreshold      {:.4} ({})\ntemperature    \
                 {:.3}",
                release.package_path.display(),
                release.report_dir.join("report.html").display(),
                meta.threshold,
                meta.threshold_rule,
                meta.temperature
            );
            println!(
                "test ({} images, {} groups), 95% CI by group bootstrap:",
                m.point.n, m.bootstrap.groups
            );
            print!("{}", release.report.metrics_text());
            Ok(ExitStatus::Success)
        }
    }
}
