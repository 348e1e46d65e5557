//! Progress bars on standard error (hidden when it is not a terminal).

use covidct_training::{TrainEvent, TrainObserver};
use indicatif::{ProgressBar, ProgressStyle};

/// A bar counting `total` items, labelled with `message`.
pub fn bar(total: usize, message: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta}) {prefix}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(message);
    bar
}

/// One bar per stage of a multi-stage job, fed (stage, done, total); cleared when dropped.
#[derive(Default)]
pub struct StageBar {
    bar: Option<ProgressBar>,
    stage: String,
}

impl StageBar {
    /// Shows `done` of `total` for `stage`, starting a new bar when the stage changes.
    pub fn update(&mut self, stage: &str, done: usize, total: usize) {
        if self.stage != stage || self.bar.is_none() {
            self.clear();
            let bar = bar(total, "working");
            bar.set_message(stage.to_owned());
            self.bar = Some(bar);
            self.stage = stage.to_owned();
        }
        if let Some(bar) = &self.bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    }

    /// Removes the bar.
    pub fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for StageBar {
    fn drop(&mut self) {
        self.clear();
    }
}

/// A bar for scoring, fed (done, total).
pub fn scoring_bar() -> impl FnMut(usize, usize) {
    let bar = bar(0, "scoring");
    move |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        if done == total {
            bar.finish_and_clear();
        }
    }
}

/// Scans and decodes the dataset folder `dir` once, with a bar.
pub fn decode_dataset(
    dir: &std::path::Path,
    skip_invalid: bool,
    decode: &covidct_imaging::DecodeOptions,
) -> anyhow::Result<covidct_data::Analysis> {
    let progress = bar(0, "decoding");
    let analysis = covidct_data::Analysis::of_dir(
        dir,
        skip_invalid,
        decode,
        |total| progress.set_length(total as u64),
        &|| progress.inc(1),
    )?;
    progress.finish_and_clear();
    Ok(analysis)
}

/// Draws training progress: one bar per stage and per epoch, with the live loss.
#[derive(Default)]
pub struct BarObserver {
    bar: Option<ProgressBar>,
}

impl BarObserver {
    fn replace(&mut self, bar: ProgressBar) {
        if let Some(old) = self.bar.replace(bar) {
            old.finish_and_clear();
        }
    }

    /// Removes the bar.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl TrainObserver for BarObserver {
    fn on_event(&mut self, event: &TrainEvent<'_>) {
        match event {
            TrainEvent::Stage { name, total } => {
                let bar = bar(*total, "prepare");
                bar.set_message(name.to_string());
                self.replace(bar);
            }
            TrainEvent::StageProgress(done) => {
                if let Some(bar) = &self.bar {
                    bar.set_position(*done as u64);
                }
            }
            TrainEvent::EpochStart {
                phase,
                epoch,
                epochs,
                batches,
                done,
            } => {
                let bar = bar(*batches, "epoch");
                bar.set_message(format!("{phase:?} {epoch}/{epochs}"));
                bar.set_position(*done as u64);
                self.replace(bar);
            }
            TrainEvent::Batch {
                done,
                loss,
                learning_rate,
            } => {
                if let Some(bar) = &self.bar {
                    bar.set_position(*done as u64);
                    bar.set_prefix(format!("loss {loss:.4} lr {learning_rate:.2e}"));
                }
            }
            TrainEvent::EpochEnd(record) => {
                self.finish();
                eprintln!(
                    "{:?} epoch {}: train loss {:.4}, val loss {:.4}, val ROC-AUC {:.4}, val acc \
                     {:.4} ({:.0} s)",
                    record.phase,
                    record.epoch,
                    record.train_loss,
                    record.val_loss,
                    record.val_roc_auc,
                    record.val_accuracy,
                    record.seconds
                );
            }
            TrainEvent::Checkpoint(path) => {
                tracing::debug!(path = %path.display(), "checkpoint written");
            }
            TrainEvent::EarlyStop {
                epochs_without_improvement,
            } => {
                tracing::info!(
                    epochs_without_improvement,
                    "early stopping: validation ROC-AUC no longer improves"
                );
            }
        }
    }
}
