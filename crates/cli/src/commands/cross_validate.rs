//! `covidct cross-validate`: one training run per fold of a group K-fold split, then the spread
//! of the test metrics over the folds.

use anyhow::Result;
use covidct_training::{RunEnd, cross_validate as run_cross_validation};

use crate::cli::CrossValidateArgs;
use crate::config::ConfigFile;
use crate::exit::ExitStatus;
use crate::training::run_with_progress;

/// `covidct cross-validate`; running it again continues an interrupted cross-validation.
pub fn cross_validate(config: &ConfigFile, args: &CrossValidateArgs) -> Result<ExitStatus> {
    let request = args.request(config)?;
    request.settings.validate()?;
    let end = run_with_progress(config, &args.data_dir, |analysis, stop, bars, stages| {
        run_cross_validation(&request, args.folds, analysis, stop, bars, stages)
    })?;
    match end {
        RunEnd::Interrupted => {
            eprintln!("cross-validation interrupted: run the same command again to continue");
            Ok(ExitStatus::Interrupted)
        }
        RunEnd::Done((summary, path)) => {
            print!("{summary}");
            println!("summary {}", path.display());
            Ok(ExitStatus::Success)
        }
    }
}
