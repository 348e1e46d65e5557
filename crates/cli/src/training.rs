//! What `covidct train` and `covidct cross-validate` share: the dataset decoded once with a
//! bar, Ctrl-C (the first press asks the trainer to checkpoint after the current batch and
//! return, the second exits at once), and the training progress on the terminal.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use covidct_data::Analysis;
use covidct_training::{TrainError, TrainObserver};

use crate::config::ConfigFile;
use crate::exit::ExitStatus;
use crate::progress::{self, BarObserver, StageBar};

/// Raised by Ctrl-C; the trainer polls it after every batch.
static STOP: AtomicBool = AtomicBool::new(false);

/// Makes Ctrl-C raise [`STOP`]; installs the handler once per process.
fn install_stop_handler() -> Result<()> {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    let mut result = Ok(());
    INSTALLED.call_once(|| {
        result = ctrlc::set_handler(|| {
            if STOP.swap(true, Ordering::SeqCst) {
                std::process::exit(ExitStatus::Interrupted as i32);
            }
            eprintln!(
                "\nstopping after this batch and saving a checkpoint (Ctrl-C again to abort)"
            );
        });
    });
    result.context("cannot install the Ctrl-C handler")
}

/// Decodes `data_dir` (decode settings from the configuration), checks that it can be trained
/// on, and runs `work` on it with Ctrl-C and progress bars in place.
pub fn run_with_progress<T>(
    config: &ConfigFile,
    data_dir: &Path,
    work: impl FnOnce(
        &Analysis,
        &AtomicBool,
        &mut dyn TrainObserver,
        &mut dyn FnMut(&str, usize, usize),
    ) -> Result<T, TrainError>,
) -> Result<T> {
    let decode = config.resolve("decode", &serde_json::json!({}))?;
    let analysis = progress::decode_dataset(data_dir, false, &decode)?;
    analysis.require_usable(false)?;
    install_stop_handler()?;
    let (mut bars, mut stages) = (BarObserver::default(), StageBar::default());
    let result = work(&analysis, &STOP, &mut bars, &mut |stage, done, total| {
        stages.update(stage, done, total)
    });
    bars.finish();
    stages.clear();
    Ok(result?)
}
