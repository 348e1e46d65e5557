//! The training loop: head training on cached backbone features, then fine-tuning of the whole
//! network, with validation ROC-AUC model selection, early stopping, checkpoints and exact
//! resume.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::{Module, Param, ParamId};
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use covidct_data::{BatchLoader, ImageCache, LoaderConfig};
use covidct_imaging::{DecodeOptions, PreprocessConfig};
use covidct_model::{Network, StateDict, tensor_to_vec};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::checkpoint::{self, CheckpointParts, EpochRecord, Phase, TrainState};
use crate::config::{ClassWeights, HeadSolver, TrainConfig};
use crate::data::{SplitSamples, TrainingData};
use crate::error::TrainError;
use crate::probe::{self, ProbeSpec, Rows};
use crate::schedule::WarmupCosine;

/// Progress reported while training.
#[derive(Debug, Clone)]
pub enum TrainEvent<'a> {
    /// A stage of work that is not an epoch (decoding images, computing features).
    Stage {
        /// What is being done.
        name: &'a str,
        /// Units of work.
        total: usize,
    },
    /// Units of the current stage done so far.
    StageProgress(usize),
    /// An epoch starts.
    EpochStart {
        /// The phase.
        phase: Phase,
        /// Epoch within the phase (1-based).
        epoch: usize,
        /// Epochs planned in the phase.
        epochs: usize,
        /// Batches in the epoch.
        batches: usize,
        /// Batches already done (when resuming mid-epoch).
        done: usize,
    },
    /// A batch finished.
    Batch {
        /// Batches done in the epoch.
        done: usize,
        /// Mean loss of the epoch so far.
        loss: f64,
        /// Current learning rate (head).
        learning_rate: f64,
    },
    /// An epoch finished and was validated.
    EpochEnd(&'a EpochRecord),
    /// A checkpoint was written.
    Checkpoint(&'a Path),
    /// Fine-tuning stopped early.
    EarlyStop {
        /// Epochs without improvement.
        epochs_without_improvement: usize,
    },
}

/// Receives [`TrainEvent`]s (a progress bar, a log, a tracker).
pub trait TrainObserver {
    /// Called for each event.
    fn on_event(&mut self, event: &TrainEvent<'_>);
}

/// An observer that ignores everything.
pub struct Silent;

impl TrainObserver for Silent {
    fn on_event(&mut self, _event: &TrainEvent<'_>) {}
}

/// What a finished (or interrupted) run hands back.
pub struct TrainOutcome {
    /// The network with the best validation ROC-AUC (inference mode).
    pub best: Network,
    /// The final state (history, best epoch).
    pub state: TrainState,
    /// Whether the run stopped on request before finishing; resume it with the same run folder.
    pub interrupted: bool,
}

/// Raw logits of the validation and test images, computed by the head over the frozen
/// backbone's cached features (see [`Trainer::frozen_logits`]), in sample order, with the
/// features themselves (what the out-of-distribution gate is fitted on).
#[derive(Debug, Clone)]
pub struct SplitLogits {
    /// Validation logits, one row of class logits per image.
    pub val: Vec<Vec<f64>>,
    /// Test logits.
    pub test: Vec<Vec<f64>>,
    /// Pooled features of every split.
    pub features: SplitFeatures,
}

/// Pooled backbone features of the three splits, `rows × dim` each, in sample order.
#[derive(Debug, Clone, Default)]
pub struct SplitFeatures {
    /// Feature dimension.
    pub dim: usize,
    /// Training features.
    pub train: Vec<f32>,
    /// Validation features.
    pub val: Vec<f32>,
    /// Test features.
    pub test: Vec<f32>,
}

/// Saves a checkpoint at least this often (seconds) during an epoch.
const CHECKPOINT_INTERVAL_SECS: f64 = 120.0;

/// A training run in a run folder.
pub struct Trainer<'a> {
    config: TrainConfig,
    data: &'a TrainingData,
    run_dir: PathBuf,
    device: Device,
    stop: &'a AtomicBool,
    feature_cache: Option<PathBuf>,
    /// [`Trainer::backbone_key`], computed on first use: it reads the whole weights file.
    backbone_key: std::sync::OnceLock<String>,
}

/// A seed for one step, mixed from the run seed and the position in the run.
fn step_seed(seed: u64, phase: Phase, epoch: usize, batch: usize) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&seed.to_le_bytes());
    hasher.update(&[phase as u8]);
    hasher.update(&(epoch as u64).to_le_bytes());
    hasher.update(&(batch as u64).to_le_bytes());
    let bytes = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

impl<'a> Trainer<'a> {
    /// A trainer writing into `run_dir`; `stop` is polled after every batch (set it from a
    /// Ctrl-C handler to checkpoint and return).
    pub fn new(
        config: TrainConfig,
        data: &'a TrainingData,
        run_dir: &Path,
        stop: &'a AtomicBool,
    ) -> Result<Self, TrainError> {
        config.validate()?;
        let device = covidct_model::select_device(&config.device)?;
        Ok(Self {
            config,
            data,
            run_dir: run_dir.to_path_buf(),
            device,
            stop,
            feature_cache: None,
            backbone_key: std::sync::OnceLock::new(),
        })
    }

    /// Keeps the frozen backbone's features in `dir` (content-addressed: backbone weights and
    /// preprocessed pixels), so that runs over the same images (cross-validation folds, the final
    /// fit) compute each image's features once. `None` (the default) keeps nothing.
    pub fn with_feature_cache(mut self, dir: Option<PathBuf>) -> Self {
        self.feature_cache = dir;
        self
    }

    /// What identifies the frozen backbone: architecture and initial weights (file content, or
    /// the seed of a random initialisation). Hashed once per trainer.
    fn backbone_key(&self) -> Result<String, TrainError> {
        if let Some(key) = self.backbone_key.get() {
            return Ok(key.clone());
        }
        let key = self.hash_backbone()?;
        Ok(self.backbone_key.get_or_init(|| key).clone())
    }

    fn hash_backbone(&self) -> Result<String, TrainError> {
        let mut hasher = blake3::Hasher::new();
        hasher.update(FEATURE_FORMAT.as_bytes());
        hasher.update(self.config.architecture.name().as_bytes());
        let files = self.config.pretrained_files()?;
        for file in &files {
            let bytes = std::fs::read(file).map_err(|source| TrainError::Io {
                path: file.clone(),
                source,
            })?;
            hasher.update(&bytes);
        }
        if files.is_empty() {
            hasher.update(b"random");
            hasher.update(&self.config.seed.to_le_bytes());
        }
        Ok(format!(
            "{}-{}",
            self.config.architecture.name(),
            &hasher.finalize().to_hex()[..16]
        ))
    }

    /// The preprocessing every image of the run goes through.
    pub fn preprocess(&self) -> PreprocessConfig {
        self.config.preprocess()
    }

    fn loader_config(&self, batch_size: usize, augment: bool) -> LoaderConfig {
        LoaderConfig {
            preprocess: self.preprocess(),
            augment: if augment {
                self.config.augment.clone()
            } else {
                None
            },
            decode: DecodeOptions::default(),
            batch_size,
            seed: self.config.seed,
        }
    }

    /// The initial network: ImageNet transfer, a checkpoint file, or random.
    fn initial_network(&self, device: &Device) -> Result<Network, TrainError> {
        let classes = self.data.class_names.len();
        let arch = self.config.architecture;
        device.seed(self.config.seed);
        let files = self.config.pretrained_files()?;
        if files.is_empty() {
            return Ok(Network::new(arch, 1, classes, device)?.materialized()?);
        }
        let checkpoints = files
            .iter()
            .map(|file| {
                let mut checkpoint = covidct_weights::load_checkpoint(file)
                    .map_err(|e| TrainError::Weights(e.to_string()))?;
                // An inflated-3D encoder becomes its 2D twin (a no-op for 2D checkpoints).
                covidct_weights::collapse_depth(&mut checkpoint);
                Ok(checkpoint)
            })
            .collect::<Result<Vec<_>, TrainError>>()?;
        let network = Network::from_pretrained(arch, &checkpoints, classes, device)
            .or_else(|e| match &checkpoints[..] {
                // One file may also hold the whole 1-channel network (a package's weights).
                [whole] => Network::new(arch, 1, classes, device)?.load_pretrained(whole),
                _ => Err(e),
            })
            .map_err(|e| {
                let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
                TrainError::Weights(format!("{}: {e}", names.join(" + ")))
            })?;
        Ok(network.materialized()?)
    }

    /// Runs (or resumes) training to the end, or until `stop` is set.
    pub fn run(&self, observer: &mut dyn TrainObserver) -> Result<TrainOutcome, TrainError> {
        let ad = self.device.clone().autodiff();
        std::fs::create_dir_all(&self.run_dir).map_err(|source| TrainError::Io {
            path: self.run_dir.clone(),
            source,
        })?;
        let mut model = self.initial_network(&ad)?;
        // A deep copy (see `track_best`): a clone would share BatchNorm running statistics.
        let mut best = model.valid().train();
        let mut head_optim = self.optimizer();
        let mut backbone_optim = self.optimizer();
        let mut state = TrainState::new(&self.config, &self.data.split_fingerprint);
        if let Some(saved) = checkpoint::load(&self.run_dir)? {
            self.check_resumable(&saved.state)?;
            tracing::info!(
                phase = ?saved.state.phase,
                epoch = saved.state.epoch + 1,
                batch = saved.state.batch,
                "resuming from checkpoint"
            );
            model = model
                .try_load_record(saved.model)
                .map_err(|e| self.checkpoint_error(e))?;
            best = best
                .try_load_record(saved.best)
                .map_err(|e| self.checkpoint_error(e))?;
            head_optim = head_optim
                .load(&saved.head_optimizer)
                .map_err(|e| self.checkpoint_error(e))?;
            backbone_optim = backbone_optim
                .load(&saved.backbone_optimizer)
                .map_err(|e| self.checkpoint_error(e))?;
            state = saved.state;
        }

        let train_cache = self.cache(&self.data.train, "decoding training images", observer)?;
        let val_cache = self.cache(&self.data.val, "decoding validation images", observer)?;
        let mut optims = Optimizers {
            head: head_optim,
            backbone: backbone_optim,
        };
        let mut interrupted = false;
        if state.phase == Phase::Head {
            interrupted = self.head_phase(
                &mut model,
                &mut best,
                &mut optims,
                &mut state,
                (&train_cache, &val_cache),
                observer,
            )?;
        }
        if !interrupted && state.phase == Phase::FineTune {
            interrupted = self.fine_tune_phase(
                &mut model,
                &mut best,
                &mut optims,
                &mut state,
                (&train_cache, &val_cache),
                observer,
            )?;
        }
        if !interrupted {
            self.save(&state, &model, &best, &optims, observer)?;
        }
        Ok(TrainOutcome {
            best: best.valid(),
            state,
            interrupted,
        })
    }

    fn checkpoint_error(&self, e: impl std::fmt::Display) -> TrainError {
        TrainError::Checkpoint {
            path: checkpoint::checkpoint_dir(&self.run_dir),
            reason: e.to_string(),
        }
    }

    fn check_resumable(&self, saved: &TrainState) -> Result<(), TrainError> {
        if saved.split_fingerprint != self.data.split_fingerprint {
            return Err(self.checkpoint_error(
                "it was made on a different split manifest; use a new run folder",
            ));
        }
        if saved.config != self.config {
            let ours = serde_json::to_value(&self.config).unwrap_or_default();
            let theirs = serde_json::to_value(&saved.config).unwrap_or_default();
            let differing: Vec<String> = match (ours, theirs) {
                (serde_json::Value::Object(a), serde_json::Value::Object(b)) => a
                    .iter()
                    .filter(|(k, v)| b.get(*k) != Some(v))
                    .map(|(k, _)| k.clone())
                    .collect(),
                _ => Vec::new(),
            };
            return Err(self.checkpoint_error(format!(
                "it was made with a different configuration (fields {differing:?}); resume with \
                 the same settings or use a new run folder"
            )));
        }
        Ok(())
    }

    /// The warm-up + cosine schedule of a phase of `steps` optimiser steps.
    fn schedule(&self, steps: usize) -> WarmupCosine {
        WarmupCosine::new(
            self.config.learning_rate,
            steps,
            self.config.warmup_fraction,
            self.config.min_lr_fraction,
        )
    }

    fn optimizer(&self) -> ModuleOptimizer {
        AdamWConfig::new()
            .with_weight_decay(self.config.weight_decay as f32)
            .init()
    }

    fn cache(
        &self,
        split: &SplitSamples,
        stage: &str,
        observer: &mut dyn TrainObserver,
    ) -> Result<ImageCache, TrainError> {
        let cache = ImageCache::new(
            split.samples.clone(),
            self.preprocess(),
            DecodeOptions::default(),
        );
        observer.on_event(&TrainEvent::Stage {
            name: stage,
            total: cache.len(),
        });
        cache.warm(|_| {})?;
        observer.on_event(&TrainEvent::StageProgress(cache.len()));
        Ok(cache)
    }

    /// The loss weight of each class: 1, or the inverse training frequency normalised to mean 1.
    fn class_weights(&self) -> Vec<f64> {
        let classes = self.data.class_names.len();
        match self.config.class_weights {
            ClassWeights::None => vec![1.0; classes],
            ClassWeights::Balanced => {
                let counts = self.data.train.class_counts(classes);
                let total: usize = counts.iter().sum();
                counts
                    .iter()
                    .map(|&c| total as f64 / (classes as f64 * c.max(1) as f64))
                    .collect()
            }
        }
    }

    fn loss(&self, device: &Device) -> CrossEntropyLoss {
        let weights = (self.config.class_weights == ClassWeights::Balanced)
            .then(|| self.class_weights().into_iter().map(|w| w as f32).collect());
        CrossEntropyLossConfig::new()
            .with_weights(weights)
            .with_smoothing(
                (self.config.label_smoothing > 0.0).then_some(self.config.label_smoothing as f32),
            )
            .init(device)
    }

    fn save(
        &self,
        state: &TrainState,
        model: &Network,
        best: &Network,
        optims: &Optimizers,
        observer: &mut dyn TrainObserver,
    ) -> Result<(), TrainError> {
        checkpoint::save(
            &self.run_dir,
            state,
            CheckpointParts {
                model,
                best,
                head_optimizer: &optims.head,
                backbone_optimizer: &optims.backbone,
            },
        )?;
        observer.on_event(&TrainEvent::Checkpoint(&checkpoint::checkpoint_dir(
            &self.run_dir,
        )));
        Ok(())
    }

    /// Head training on features of the frozen backbone, computed once.
    fn head_phase(
        &self,
        model: &mut Network,
        best: &mut Network,
        optims: &mut Optimizers,
        state: &mut TrainState,
        (train_cache, val_cache): (&ImageCache, &ImageCache),
        observer: &mut dyn TrainObserver,
    ) -> Result<bool, TrainError> {
        let frozen = model.valid();
        let train_features = self.features(
            &frozen,
            train_cache,
            "computing training features",
            observer,
        )?;
        let val_features = self.features(
            &frozen,
            val_cache,
            "computing validation features",
            observer,
        )?;
        if self.config.head_solver == HeadSolver::Probe {
            self.fit_probe_head(
                model,
                best,
                state,
                (&train_features, &val_features),
                observer,
            )?;
        } else if self.adamw_head(
            model,
            best,
            optims,
            state,
            (&train_features, &val_features),
            observer,
        )? {
            return Ok(true);
        }
        // Fine-tuning starts from the best head.
        *model = model.clone().with_head(best.head().clone());
        state.phase = if self.config.epochs > 0 {
            Phase::FineTune
        } else {
            Phase::Done
        };
        state.epoch = 0;
        state.batch = 0;
        self.save(state, model, best, optims, observer)?;
        Ok(false)
    }

    /// The linear probe as the head: one deterministic fit per `C`, the best on validation, or
    /// cross-fitted on training + validation ([`TrainConfig::cross_fits_probe`]).
    fn fit_probe_head(
        &self,
        model: &mut Network,
        best: &mut Network,
        state: &mut TrainState,
        (train_features, val_features): (&FeatureMatrix, &FeatureMatrix),
        observer: &mut dyn TrainObserver,
    ) -> Result<(), TrainError> {
        let started = Instant::now();
        let classes = self.data.class_names.len();
        let labels = |split: &SplitSamples| -> Vec<usize> {
            split.samples.iter().map(|s| s.label).collect()
        };
        let (train_labels, val_labels) = (labels(&self.data.train), labels(&self.data.val));
        let class_weights = self.class_weights();
        let spec = ProbeSpec {
            class_weights: &class_weights,
            dim: train_features.dim,
            classes,
            positive: self.data.positive_class,
        };
        let (fit, val_logits) = if self.config.cross_fits_probe() {
            let features = [&train_features.values[..], &val_features.values].concat();
            let all_labels = [&train_labels[..], &val_labels].concat();
            let fold_of = self
                .data
                .calibration_folds(self.config.probe_folds, self.config.seed);
            let cross = probe::cross_fit_probe(
                spec,
                Rows {
                    features: &features,
                    labels: &all_labels,
                },
                &fold_of,
                &self.config.probe_c,
            )?;
            let val_oof = cross.out_of_fold[train_labels.len()..].concat();
            state.out_of_fold = cross.out_of_fold;
            let logits = Tensor::<2>::from_data(
                TensorData::new(
                    val_oof.into_iter().map(|v| v as f32).collect(),
                    [val_labels.len(), classes],
                ),
                &self.device,
            );
            (cross.fit, Some(logits))
        } else {
            let fit = probe::fit_probe(
                spec,
                Rows {
                    features: &train_features.values,
                    labels: &train_labels,
                },
                Rows {
                    features: &val_features.values,
                    labels: &val_labels,
                },
                &self.config.probe_c,
            )?;
            (fit, None)
        };
        let chosen = &fit.candidates[fit.chosen];
        tracing::info!(
            c = chosen.c,
            val_roc_auc = chosen.val_roc_auc,
            cross_fitted = val_logits.is_some(),
            "probe chosen"
        );
        let ad = self.device.clone().autodiff();
        let weight = Tensor::<2>::from_data(
            TensorData::new(fit.head.weight.clone(), [train_features.dim, classes]),
            &ad,
        );
        let bias = Tensor::<1>::from_data(TensorData::new(fit.head.bias.clone(), [classes]), &ad);
        let mut head = model.head().clone();
        head.weight = Param::from_tensor(weight);
        head.bias = Some(Param::from_tensor(bias));
        *model = model.clone().with_head(head);
        state.epoch_loss_sum = chosen.train_loss;
        state.probe = fit.candidates.clone();
        // Cross-fitted, the validation images were in the head's training rows: the epoch
        // records their out-of-fold scores, the ones calibration is fitted on.
        let logits = val_logits.unwrap_or_else(|| {
            model
                .valid()
                .classify(val_features.all_tensor(&self.device))
        });
        let record = self.finish_epoch(state, Phase::Head, 1, chosen.c, started, logits)?;
        self.track_best(state, &record, model, best, false);
        observer.on_event(&TrainEvent::EpochEnd(&record));
        Ok(())
    }

    /// `head_epochs` of AdamW on the cached features; true when stopped on request.
    fn adamw_head(
        &self,
        model: &mut Network,
        best: &mut Network,
        optims: &mut Optimizers,
        state: &mut TrainState,
        (train_features, val_features): (&FeatureMatrix, &FeatureMatrix),
        observer: &mut dyn TrainObserver,
    ) -> Result<bool, TrainError> {
        let ad = self.device.clone().autodiff();
        let loss_fn = self.loss(&ad);
        let n = train_features.rows;
        let batch = self.config.head_batch_size.min(n);
        let batches = n.div_ceil(batch);
        let epochs = self.config.head_epochs;
        let schedule = self.schedule(epochs * batches);
        let labels: Vec<i64> = self
            .data
            .train
            .samples
            .iter()
            .map(|s| s.label as i64)
            .collect();
        while state.epoch < epochs {
            let epoch = state.epoch;
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(step_seed(
                self.config.seed,
                Phase::Head,
                epoch,
                usize::MAX,
            )));
            observer.on_event(&TrainEvent::EpochStart {
                phase: Phase::Head,
                epoch: epoch + 1,
                epochs,
                batches,
                done: state.batch,
            });
            let started = Instant::now();
            let mut lr = schedule.at(epoch * batches + state.batch);
            while state.batch < batches {
                let b = state.batch;
                let rows = &order[b * batch..((b + 1) * batch).min(n)];
                ad.seed(step_seed(self.config.seed, Phase::Head, epoch, b));
                let x = train_features.rows_tensor(rows, &ad);
                let y = targets(rows.iter().map(|&r| labels[r]), &ad);
                let logits = model.classify(x);
                let loss = loss_fn.forward(logits, y);
                let loss_value = scalar(loss.clone())?;
                if !loss_value.is_finite() {
                    return Err(TrainError::Diverged(format!("head epoch {}", epoch + 1)));
                }
                let grads = GradientsParams::from_grads(loss.backward(), &*model);
                lr = schedule.at(epoch * batches + b);
                *model = optims.head.step(lr, model.clone(), grads);
                record_batch(state, loss_value, lr, observer);
            }
            let logits = model
                .valid()
                .classify(val_features.all_tensor(&self.device));
            let record = self.finish_epoch(state, Phase::Head, batches, lr, started, logits)?;
            self.track_best(state, &record, model, best, false);
            observer.on_event(&TrainEvent::EpochEnd(&record));
            if self.stop.load(Ordering::Relaxed) {
                self.save(state, model, best, optims, observer)?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whole-network fine-tuning on augmented images; the backbone learns at a lower rate.
    fn fine_tune_phase(
        &self,
        model: &mut Network,
        best: &mut Network,
        optims: &mut Optimizers,
        state: &mut TrainState,
        (train_cache, val_cache): (&ImageCache, &ImageCache),
        observer: &mut dyn TrainObserver,
    ) -> Result<bool, TrainError> {
        let ad = self.device.clone().autodiff();
        let loss_fn = self.loss(&ad);
        let loader_config = self.loader_config(self.config.batch_size, true);
        let loader = BatchLoader::training(train_cache, &loader_config);
        let batches = loader.batches_per_epoch();
        let epochs = self.config.epochs;
        let schedule = self.schedule(epochs * batches);
        let head_ids = head_param_ids(model);
        *model = model.clone().freeze_early(self.config.fine_tune_units);
        let mut last_save = Instant::now();
        while state.epoch < epochs {
            let epoch = state.epoch;
            observer.on_event(&TrainEvent::EpochStart {
                phase: Phase::FineTune,
                epoch: epoch + 1,
                epochs,
                batches,
                done: state.batch,
            });
            let started = Instant::now();
            let mut lr = schedule.at(epoch * batches + state.batch);
            while state.batch < batches {
                let b = state.batch;
                let batch = loader.batch(epoch as u64, b)?;
                ad.seed(step_seed(self.config.seed, Phase::FineTune, epoch, b));
                let x = Tensor::<4>::from_data(TensorData::new(batch.images, batch.shape), &ad);
                let y = targets(batch.labels.iter().map(|&l| l as i64), &ad);
                let loss = loss_fn.forward(model.forward(x), y);
                let loss_value = scalar(loss.clone())?;
                if !loss_value.is_finite() {
                    return Err(TrainError::Diverged(format!(
                        "fine-tuning epoch {} batch {}",
                        epoch + 1,
                        b + 1
                    )));
                }
                let mut grads = loss.backward();
                let head_grads = GradientsParams::from_params(&mut grads, &*model, &head_ids);
                let backbone_grads = GradientsParams::from_module(&mut grads, &*model);
                lr = schedule.at(epoch * batches + b);
                *model = optims.head.step(lr, model.clone(), head_grads);
                *model = optims.backbone.step(
                    lr * self.config.backbone_lr_factor,
                    model.clone(),
                    backbone_grads,
                );
                record_batch(state, loss_value, lr, observer);
                let stopping = self.stop.load(Ordering::Relaxed);
                if (stopping || last_save.elapsed().as_secs_f64() > CHECKPOINT_INTERVAL_SECS)
                    && state.batch < batches
                {
                    state.epoch_seconds += started.elapsed().as_secs_f64();
                    self.save(state, model, best, optims, observer)?;
                    state.epoch_seconds -= started.elapsed().as_secs_f64();
                    last_save = Instant::now();
                    if stopping {
                        return Ok(true);
                    }
                }
            }
            let logits = self.logits(&model.valid(), val_cache)?;
            let record = self.finish_epoch(state, Phase::FineTune, batches, lr, started, logits)?;
            let improved = self.track_best(state, &record, model, best, true);
            observer.on_event(&TrainEvent::EpochEnd(&record));
            let patience = self.config.patience;
            let early_stop =
                !improved && patience > 0 && state.epochs_without_improvement >= patience;
            if early_stop {
                observer.on_event(&TrainEvent::EarlyStop {
                    epochs_without_improvement: state.epochs_without_improvement,
                });
                state.epoch = epochs;
            }
            self.save(state, model, best, optims, observer)?;
            last_save = Instant::now();
            if self.stop.load(Ordering::Relaxed) && state.epoch < epochs {
                return Ok(true);
            }
        }
        state.phase = Phase::Done;
        Ok(false)
    }

    /// Validates, records the epoch and resets the per-epoch counters.
    fn finish_epoch(
        &self,
        state: &mut TrainState,
        phase: Phase,
        batches: usize,
        learning_rate: f64,
        started: Instant,
        val_logits: Tensor<2>,
    ) -> Result<EpochRecord, TrainError> {
        let logits = tensor_to_vec("validation logits", val_logits)?;
        let classes = self.data.class_names.len();
        let scores = ValidationScores::compute(&logits, classes, self.data)?;
        let record = EpochRecord {
            phase,
            epoch: state.epoch + 1,
            train_loss: state.epoch_loss_sum / batches.max(1) as f64,
            val_loss: scores.loss,
            val_roc_auc: scores.roc_auc,
            val_accuracy: scores.accuracy,
            learning_rate,
            seconds: state.epoch_seconds + started.elapsed().as_secs_f64(),
        };
        tracing::info!(
            phase = ?phase,
            epoch = record.epoch,
            train_loss = record.train_loss,
            val_loss = record.val_loss,
            val_roc_auc = record.val_roc_auc,
            val_accuracy = record.val_accuracy,
            seconds = record.seconds,
            "epoch finished"
        );
        state.history.push(record.clone());
        state.epoch += 1;
        state.batch = 0;
        state.epoch_loss_sum = 0.0;
        state.epoch_seconds = 0.0;
        Ok(record)
    }

    /// Keeps `model` as the best when its validation ROC-AUC beats the best so far (ties broken
    /// by the lower validation loss); counts epochs without improvement when `count`.
    fn track_best(
        &self,
        state: &mut TrainState,
        record: &EpochRecord,
        model: &Network,
        best: &mut Network,
        count: bool,
    ) -> bool {
        let previous_loss = state
            .best
            .and_then(|(phase, epoch, _)| {
                state
                    .history
                    .iter()
                    .find(|r| r.phase == phase && r.epoch == epoch)
            })
            .map(|r| r.val_loss);
        let improved = match (state.best, previous_loss) {
            (None, _) => true,
            (Some((_, _, auc)), loss) => {
                record.val_roc_auc > auc
                    || (record.val_roc_auc == auc && loss.is_some_and(|l| record.val_loss < l))
            }
        };
        if improved {
            state.best = Some((record.phase, record.epoch, record.val_roc_auc));
            state.epochs_without_improvement = 0;
            // A deep copy: a clone would share the BatchNorm running statistics, which later
            // training updates in place. `valid()` snapshots them (synced) into new state;
            // `train()` brings the copy back onto the training device.
            *best = model.valid().train();
        } else if count {
            state.epochs_without_improvement += 1;
        }
        improved
    }

    /// Pooled features of every image of `cache`, by the frozen backbone.
    fn features(
        &self,
        frozen: &Network,
        cache: &ImageCache,
        stage: &str,
        observer: &mut dyn TrainObserver,
    ) -> Result<FeatureMatrix, TrainError> {
        observer.on_event(&TrainEvent::Stage {
            name: stage,
            total: cache.len(),
        });
        let loader = BatchLoader::evaluation(cache, &self.loader_config(32, false));
        let store = match &self.feature_cache {
            Some(dir) => Some(FeatureStore::open(dir, &self.backbone_key()?)?),
            None => None,
        };
        let mut values = Vec::new();
        let mut done = 0;
        let mut reused = 0;
        for batch in loader.batches(0) {
            let batch = batch?;
            let n = batch.labels.len();
            let per_image = batch.images.len() / n.max(1);
            let keys: Vec<String> = batch
                .images
                .chunks(per_image.max(1))
                .map(FeatureStore::image_key)
                .collect();
            let stored: Option<Vec<Vec<f32>>> = store
                .as_ref()
                .and_then(|store| keys.iter().map(|key| store.get(key)).collect());
            match stored {
                Some(rows) => {
                    reused += n;
                    rows.into_iter().for_each(|row| values.extend(row));
                }
                None => {
                    let x = Tensor::<4>::from_data(
                        TensorData::new(batch.images, batch.shape),
                        &self.device,
                    );
                    let computed = tensor_to_vec("features", frozen.features(x))?;
                    if let Some(store) = &store {
                        let dim = computed.len() / n.max(1);
                        for (key, row) in keys.iter().zip(computed.chunks(dim.max(1))) {
                            store.put(key, row)?;
                        }
                    }
                    values.extend(computed);
                }
            }
            done += n;
            observer.on_event(&TrainEvent::StageProgress(done));
        }
        if store.is_some() {
            tracing::info!(
                stage,
                images = done,
                reused,
                "backbone features (content-addressed cache)"
            );
        }
        let rows = cache.len();
        let dim = values.len().checked_div(rows).unwrap_or(0);
        Ok(FeatureMatrix { values, rows, dim })
    }

    /// The validation and test logits of `best` from the feature cache, when its backbone is the
    /// frozen pretrained one (no fine-tuning epochs) and the cache is on: a CT backbone costs one
    /// feature pass per image for a whole cross-validation instead of one per fold and split.
    /// `None` otherwise (the released predictor then scores the images itself).
    pub fn frozen_logits(
        &self,
        best: &Network,
        observer: &mut dyn TrainObserver,
    ) -> Result<Option<SplitLogits>, TrainError> {
        if self.config.epochs > 0 || self.feature_cache.is_none() {
            return Ok(None);
        }
        let mut features = |split: &SplitSamples, stage: &str| -> Result<_, TrainError> {
            let cache = self.cache(split, "decoding images", observer)?;
            self.features(best, &cache, stage, observer)
        };
        let train = features(&self.data.train, "training features (cached)")?;
        let val = features(&self.data.val, "validation features (cached)")?;
        let test = features(&self.data.test, "test features")?;
        let logits = |features: &FeatureMatrix| -> Result<Vec<Vec<f64>>, TrainError> {
            let values = tensor_to_vec(
                "logits",
                best.head().forward(features.all_tensor(&self.device)),
            )?;
            let classes = self.data.class_names.len().max(1);
            Ok(values
                .chunks(classes)
                .map(|row| row.iter().map(|&v| f64::from(v)).collect())
                .collect())
        };
        Ok(Some(SplitLogits {
            val: logits(&val)?,
            test: logits(&test)?,
            features: SplitFeatures {
                dim: train.dim,
                train: train.values,
                val: val.values,
                test: test.values,
            },
        }))
    }

    /// Logits `[n, classes]` of every image of `cache` (no augmentation, batches of 32).
    fn logits(&self, network: &Network, cache: &ImageCache) -> Result<Tensor<2>, TrainError> {
        let loader = BatchLoader::evaluation(cache, &self.loader_config(32, false));
        let mut parts = Vec::new();
        for batch in loader.batches(0) {
            let batch = batch?;
            let x =
                Tensor::<4>::from_data(TensorData::new(batch.images, batch.shape), &self.device);
            parts.push(network.forward(x));
        }
        Ok(Tensor::cat(parts, 0))
    }
}

struct Optimizers {
    head: ModuleOptimizer,
    backbone: ModuleOptimizer,
}

/// Adds a finished batch's loss to the epoch and reports the running mean.
fn record_batch(
    state: &mut TrainState,
    loss: f64,
    learning_rate: f64,
    observer: &mut dyn TrainObserver,
) {
    state.epoch_loss_sum += loss;
    state.batch += 1;
    observer.on_event(&TrainEvent::Batch {
        done: state.batch,
        loss: state.epoch_loss_sum / state.batch as f64,
        learning_rate,
    });
}

fn head_param_ids(model: &Network) -> Vec<ParamId> {
    let head = model.head();
    let mut ids = vec![head.weight.id];
    if let Some(bias) = &head.bias {
        ids.push(bias.id);
    }
    ids
}

fn targets(labels: impl Iterator<Item = i64>, device: &Device) -> Tensor<1, Int> {
    let values: Vec<i64> = labels.collect();
    let n = values.len();
    Tensor::<1, Int>::from_data(TensorData::new(values, [n]), device)
}

fn scalar(loss: Tensor<1>) -> Result<f64, TrainError> {
    Ok(tensor_to_vec("loss", loss)?
        .first()
        .copied()
        .map(f64::from)
        .unwrap_or(f64::NAN))
}

/// Version of the feature files' layout and of what the key covers.
const FEATURE_FORMAT: &str = "covidct-features-v1";

/// Pooled backbone features on disk, one little-endian `f32` file per image, named by the
/// hash of the preprocessed pixels, in a folder per backbone.
struct FeatureStore {
    dir: PathBuf,
}

impl FeatureStore {
    fn open(root: &Path, backbone: &str) -> Result<Self, TrainError> {
        let dir = root.join(backbone);
        std::fs::create_dir_all(&dir).map_err(|source| TrainError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self { dir })
    }

    /// The key of one preprocessed image.
    fn image_key(pixels: &[f32]) -> String {
        let mut hasher = blake3::Hasher::new();
        for v in pixels {
            hasher.update(&v.to_le_bytes());
        }
        hasher.finalize().to_hex()[..32].to_owned()
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.f32"))
    }

    /// The stored features of `key`; `None` when absent or unreadable (they are recomputed).
    fn get(&self, key: &str) -> Option<Vec<f32>> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        (bytes.len() % 4 == 0 && !bytes.is_empty()).then(|| {
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        })
    }

    /// Stores `row` under `key` (temp file, then rename).
    fn put(&self, key: &str, row: &[f32]) -> Result<(), TrainError> {
        let bytes: Vec<u8> = row.iter().flat_map(|v| v.to_le_bytes()).collect();
        covidct_common::write_atomically(&self.path(key), &bytes)?;
        Ok(())
    }
}

/// Backbone features held in memory, one row per image.
struct FeatureMatrix {
    values: Vec<f32>,
    rows: usize,
    dim: usize,
}

impl FeatureMatrix {
    fn rows_tensor(&self, rows: &[usize], device: &Device) -> Tensor<2> {
        let mut values = Vec::with_capacity(rows.len() * self.dim);
        for &r in rows {
            values.extend_from_slice(&self.values[r * self.dim..(r + 1) * self.dim]);
        }
        Tensor::from_data(TensorData::new(values, [rows.len(), self.dim]), device)
    }

    fn all_tensor(&self, device: &Device) -> Tensor<2> {
        Tensor::from_data(
            TensorData::new(self.values.clone(), [self.rows, self.dim]),
            device,
        )
    }
}

/// Validation loss, ROC-AUC and accuracy at 0.5 from raw logits.
struct ValidationScores {
    loss: f64,
    roc_auc: f64,
    accuracy: f64,
}

impl ValidationScores {
    fn compute(logits: &[f32], classes: usize, data: &TrainingData) -> Result<Self, TrainError> {
        let positive = data.positive_class;
        let labels = &data.val.samples;
        let mut loss = 0.0;
        let mut probabilities = Vec::with_capacity(labels.len());
        for (row, sample) in logits.chunks(classes).zip(labels) {
            let row: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
            let p = covidct_model::calibrated_probabilities(&row, 1.0);
            loss -= p.get(sample.label).copied().unwrap_or(0.0).max(1e-12).ln();
            probabilities.push(p.get(positive).copied().unwrap_or(0.0));
        }
        let truth = data.val.positives(positive);
        let metrics = covidct_evaluation::BinaryMetrics::compute(&probabilities, &truth, 0.5)?;
        Ok(Self {
            loss: loss / labels.len().max(1) as f64,
            roc_auc: metrics.roc_auc,
            accuracy: metrics.accuracy,
        })
    }
}
