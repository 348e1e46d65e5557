//! Training checkpoints: everything needed to continue a run exactly where it stopped.
//!
//! A checkpoint is a folder `checkpoint/` in the run folder:
//! - `state.json`: the [`TrainState`] (phase, epoch, batch, history, best score, config);
//! - `model.bpk`: the network being trained (burn record, parameter ids kept, so the optimiser
//!   state below still refers to the right tensors);
//! - `best.bpk`: the best network so far by validation ROC-AUC;
//! - `optim-head.bpk`, `optim-backbone.bpk`: AdamW moments.
//!
//! It is written into `checkpoint.tmp/` and then swapped in with renames, so a crash while saving
//! leaves the previous checkpoint intact.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::ModuleRecord;
use covidct_model::Network;
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::error::TrainError;

/// The two phases of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Head only, on cached features of the frozen backbone.
    Head,
    /// The whole network, the backbone at a lower rate.
    FineTune,
    /// Training is over.
    Done,
}

/// One epoch's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// The phase.
    pub phase: Phase,
    /// Epoch within the phase (1-based).
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Mean validation loss (plain cross-entropy, no smoothing or weights).
    pub val_loss: f64,
    /// Validation ROC-AUC of the positive class.
    pub val_roc_auc: f64,
    /// Validation accuracy at probability 0.5.
    pub val_accuracy: f64,
    /// Learning rate (of the head) at the end of the epoch; for the probe, the chosen `C`.
    pub learning_rate: f64,
    /// Wall-clock seconds of the epoch, validation included.
    pub seconds: f64,
}

/// Where a run stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// The configuration the run started with; a resume must use the same.
    pub config: TrainConfig,
    /// Fingerprint of the split manifest the run trains on.
    pub split_fingerprint: String,
    /// The current phase.
    pub phase: Phase,
    /// Next epoch to run within the phase (0-based).
    pub epoch: usize,
    /// Next batch to run within the epoch (0 at epoch boundaries).
    pub batch: usize,
    /// Sum of the training losses of the batches run so far in this epoch.
    pub epoch_loss_sum: f64,
    /// Seconds spent so far in this epoch.
    pub epoch_seconds: f64,
    /// Every finished epoch.
    pub history: Vec<EpochRecord>,
    /// The best validation ROC-AUC so far and where it was reached.
    pub best: Option<(Phase, usize, f64)>,
    /// Fine-tuning epochs since the last improvement.
    pub epochs_without_improvement: usize,
    /// The probe's candidates (`C`, validation figures) when the head was fitted as a probe.
    #[serde(default)]
    pub probe: Vec<crate::probe::ProbeCandidate>,
    /// The cross-fitted probe's out-of-fold logits of the training then the validation images
    /// (empty unless [`TrainConfig::cross_fits_probe`]): what calibration is fitted on.
    #[serde(default)]
    pub out_of_fold: Vec<Vec<f64>>,
}

impl TrainState {
    /// A fresh state.
    pub fn new(config: &TrainConfig, split_fingerprint: &str) -> Self {
        Self {
            config: config.clone(),
            split_fingerprint: split_fingerprint.to_owned(),
            phase: if config.head_epochs > 0 {
                Phase::Head
            } else {
                Phase::FineTune
            },
            epoch: 0,
            batch: 0,
            epoch_loss_sum: 0.0,
            epoch_seconds: 0.0,
            history: Vec::new(),
            best: None,
            epochs_without_improvement: 0,
            probe: Vec::new(),
            out_of_fold: Vec::new(),
        }
    }
}

/// The trainable parts of a checkpoint.
pub struct CheckpointParts<'a> {
    /// The network being trained.
    pub model: &'a Network,
    /// The best network so far.
    pub best: &'a Network,
    /// Optimiser of the head.
    pub head_optimizer: &'a ModuleOptimizer,
    /// Optimiser of the backbone.
    pub backbone_optimizer: &'a ModuleOptimizer,
}

/// A checkpoint read back.
pub struct LoadedCheckpoint {
    /// The state.
    pub state: TrainState,
    /// Record of the network being trained.
    pub model: ModuleRecord,
    /// Record of the best network.
    pub best: ModuleRecord,
    /// Path of the head optimiser's state.
    pub head_optimizer: PathBuf,
    /// Path of the backbone optimiser's state.
    pub backbone_optimizer: PathBuf,
}

fn checkpoint_error(path: &Path, reason: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The checkpoint folder of a run folder.
pub fn checkpoint_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoint")
}

/// Saves a checkpoint of the run in `run_dir`, replacing the previous one atomically.
pub fn save(
    run_dir: &Path,
    state: &TrainState,
    parts: CheckpointParts<'_>,
) -> Result<(), TrainError> {
    let final_dir = checkpoint_dir(run_dir);
    let tmp = run_dir.join("checkpoint.tmp");
    let old = run_dir.join("checkpoint.old");
    let io = |path: &Path, e: std::io::Error| checkpoint_error(path, e);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    let json = serde_json::to_vec_pretty(state).map_err(|e| checkpoint_error(&tmp, e))?;
    std::fs::write(tmp.join("state.json"), json).map_err(|e| io(&tmp, e))?;
    let record_err = |e: burn::store::RecordError| checkpoint_error(&tmp, e);
    // Recorded from `valid()` snapshots: a BatchNorm's latest running-statistics update is
    // pending until a sync, which `valid()` performs; `into_record` alone would miss it. The
    // snapshot keeps the parameter ids the optimiser state refers to.
    parts
        .model
        .valid()
        .into_record()
        .save(tmp.join("model.bpk"))
        .map_err(record_err)?;
    parts
        .best
        .valid()
        .into_record()
        .save(tmp.join("best.bpk"))
        .map_err(record_err)?;
    parts
        .head_optimizer
        .save(tmp.join("optim-head.bpk"))
        .map_err(record_err)?;
    parts
        .backbone_optimizer
        .save(tmp.join("optim-backbone.bpk"))
        .map_err(record_err)?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
    }
    if final_dir.exists() {
        std::fs::rename(&final_dir, &old).map_err(|e| io(&final_dir, e))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| io(&tmp, e))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
    }
    Ok(())
}

/// Reads the checkpoint of `run_dir`, if there is one (falling back to `checkpoint.old` when a
/// crash interrupted the swap).
pub fn load(run_dir: &Path) -> Result<Option<LoadedCheckpoint>, TrainError> {
    let mut dir = checkpoint_dir(run_dir);
    if !dir.join("state.json").exists() {
        dir = run_dir.join("checkpoint.old");
        if !dir.join("state.json").exists() {
            return Ok(None);
        }
    }
    let state_path = dir.join("state.json");
    let bytes = std::fs::read(&state_path).map_err(|e| checkpoint_error(&state_path, e))?;
    let state: TrainState =
        serde_json::from_slice(&bytes).map_err(|e| checkpoint_error(&state_path, e))?;
    let record = |name: &str| {
        let path = dir.join(name);
        ModuleRecord::load(&path).map_err(|e| checkpoint_error(&path, e))
    };
    Ok(Some(LoadedCheckpoint {
        state,
        model: record("model.bpk")?,
        best: record("best.bpk")?,
        head_optimizer: dir.join("optim-head.bpk"),
        backbone_optimizer: dir.join("optim-backbone.bpk"),
    }))
}
