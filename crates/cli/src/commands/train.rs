//! `covidct train`: split (when no manifest is given), train, calibrate, evaluate, package.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use covidct_data::{Analysis, Manifest, SplitConfig, split_dataset};
use covidct_tracking::{Param, RunRecorder, RunStatus, Tag};
use covidct_training::{
    Provenance, Release, TrainConfig, TrainEvent, TrainObserver, Trainer, TrainingData, checkpoint,
    finalize,
};
use indicatif::ProgressBar;

use crate::cli::{DatasetArgs, DecodeArgs, TrainArgs};
use crate::commands::data::analyze;
use crate::commands::evaluate::{print_group, print_intervals, print_refusals};
use crate::commands::tracking::{self, TrackingObserver, log_release};
use crate::config::ConfigFile;
use crate::progress;

/// Raised by Ctrl-C: the trainer checkpoints after the current batch and returns.
static STOP: AtomicBool = AtomicBool::new(false);

/// Exit status of a run interrupted by Ctrl-C (128 + SIGINT).
pub const INTERRUPTED: u8 = 130;

/// `covidct train`; returns the exit status.
pub fn train(config: &ConfigFile, args: &TrainArgs) -> Result<u8> {
    train_with(config, args, None)
}

/// Decodes the dataset to train on (decode settings from the configuration) and checks that it
/// can be trained on.
pub fn decode_dataset(config: &ConfigFile, dir: &Path) -> Result<Analysis> {
    let analysis = analyze(
        config,
        &DatasetArgs {
            dir: dir.to_path_buf(),
            skip_invalid: false,
            decode: DecodeArgs {
                max_pixels: None,
                dicom_window: None,
            },
        },
    )?;
    analysis.require_usable(false)?;
    Ok(analysis)
}

/// [`train`] on an already decoded `--data-dir` (cross-validation decodes it once for all
/// folds); `None` decodes it here.
pub fn train_with(
    config: &ConfigFile,
    args: &TrainArgs,
    analysis: Option<&Analysis>,
) -> Result<u8> {
    let settings: TrainConfig = config.resolve("train", &args.settings)?;
    settings.validate()?;
    // Fail before decoding the dataset when the initial weights are missing.
    settings.pretrained_file()?;
    let has_checkpoint = checkpoint::load(&args.out)?.is_some();
    match (has_checkpoint, args.resume) {
        (true, false) => bail!(
            "{} already holds a training checkpoint: pass --resume to continue it, or choose \
             another --out",
            args.out.display()
        ),
        (false, true) => bail!(
            "--resume: {} holds no checkpoint to continue",
            args.out.display()
        ),
        _ => {}
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create run folder {}", args.out.display()))?;

    let decoded;
    let analysis = match analysis {
        Some(analysis) => analysis,
        None => {
            decoded = decode_dataset(config, &args.data_dir)?;
            &decoded
        }
    };
    let split_path = args.out.join("split.csv");
    let (manifest, manifest_path) = match &args.manifest {
        Some(path) => (Manifest::read(path)?, path.clone()),
        None if args.resume => (Manifest::read(&split_path)?, split_path.clone()),
        None => {
            let split: SplitConfig = config.resolve("data.split", &serde_json::json!({}))?;
            let manifest = split_dataset(analysis, &split)?;
            manifest.write(&split_path)?;
            tracing::info!(
                strategy = split.strategy.as_str(),
                out = %split_path.display(),
                "split manifest written"
            );
            (manifest, split_path.clone())
        }
    };
    if args.manifest.is_some() {
        manifest.write(&split_path)?;
    }
    let data = TrainingData::from_manifest(
        &manifest,
        &args.data_dir,
        &settings.positive_class,
        &manifest_path,
    )?;
    tracing::info!(
        classes = ?data.class_names,
        train = ?data.summary(covidct_data::SplitName::Train),
        val = ?data.summary(covidct_data::SplitName::Val),
        test = ?data.summary(covidct_data::SplitName::Test),
        architecture = %settings.architecture,
        pretrained = %settings.pretrained,
        "training"
    );
    install_stop_handler()?;

    let provenance = Provenance {
        name: args.name.clone(),
        dataset_name: dataset_name(&args.data_dir),
        dataset_fingerprint: analysis.fingerprint(),
        git_commit: git_commit(),
        cross_validation: args
            .cross_validation
            .as_deref()
            .map(covidct_evaluation::read_json)
            .transpose()?,
    };
    let split_strategy = match &args.manifest {
        Some(path) => format!("manifest {}", path.display()),
        None => config
            .resolve::<SplitConfig>("data.split", &serde_json::json!({}))?
            .strategy
            .as_str()
            .to_owned(),
    };
    let mut recorder = tracking::start(
        &args.tracking,
        &args.out,
        args.resume,
        &format!("train-{}", settings.architecture),
        run_tags(
            &settings,
            &provenance,
            &split_strategy,
            &data.split_fingerprint,
        )
        .into_iter()
        .chain(args.extra_tags.iter().cloned())
        .collect(),
    );
    if let Some(recorder) = recorder.as_mut()
        && !args.resume
    {
        let mut params = tracking::params_of(&serde_json::to_value(&settings)?);
        params.push(Param::new("manifest", manifest_path.display().to_string()));
        recorder.log_params(params);
    }
    let result = train_and_release(&settings, &data, &provenance, args, recorder.as_mut());
    let status = match &result {
        Ok(None) => RunStatus::Killed,
        Ok(Some(_)) => RunStatus::Finished,
        Err(_) => RunStatus::Failed,
    };
    if let Some(recorder) = recorder {
        tracking::finish(recorder, status, &args.out);
    }
    match result? {
        None => {
            eprintln!(
                "interrupted: resume with `covidct train --resume --out {}` and the same settings",
                args.out.display()
            );
            Ok(INTERRUPTED)
        }
        Some(release) => {
            print_release(&release);
            Ok(0)
        }
    }
}

/// Makes Ctrl-C raise [`STOP`]; installed once per process (cross-validation trains several
/// times).
fn install_stop_handler() -> Result<()> {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    let mut result = Ok(());
    INSTALLED.call_once(|| {
        result = ctrlc::set_handler(|| {
            if STOP.swap(true, Ordering::SeqCst) {
                // A second Ctrl-C does not wait for the checkpoint.
                std::process::exit(i32::from(INTERRUPTED));
            }
            eprintln!(
                "\nstopping after this batch and saving a checkpoint (Ctrl-C again to abort)"
            );
        });
    });
    result.context("cannot install the Ctrl-C handler")
}

/// Tags of a training run in MLflow.
fn run_tags(
    settings: &TrainConfig,
    provenance: &Provenance,
    split_strategy: &str,
    split_fingerprint: &str,
) -> Vec<Tag> {
    let mut tags = vec![
        Tag::new("covidct.kind", "training"),
        Tag::new("covidct.architecture", settings.architecture.to_string()),
        Tag::new("covidct.pretrained", settings.pretrained.to_string()),
        Tag::new("covidct.split_strategy", split_strategy),
        Tag::new("covidct.split_fingerprint", split_fingerprint),
        Tag::new("covidct.dataset", &provenance.dataset_name),
        Tag::new(
            "covidct.dataset_fingerprint",
            &provenance.dataset_fingerprint,
        ),
        Tag::new("mlflow.source.type", "LOCAL"),
        Tag::new("mlflow.source.name", "covidct train"),
    ];
    if let Some(commit) = &provenance.git_commit {
        tags.push(Tag::new("mlflow.source.git.commit", commit));
        tags.push(Tag::new("covidct.git_commit", commit));
    }
    tags
}

/// Trains, then calibrates, evaluates and packages the best network; `None` when interrupted.
fn train_and_release(
    settings: &TrainConfig,
    data: &TrainingData,
    provenance: &Provenance,
    args: &TrainArgs,
    mut recorder: Option<&mut RunRecorder>,
) -> Result<Option<Release>> {
    let trainer = Trainer::new(settings.clone(), data, &args.out, &STOP)?
        .with_feature_cache(args.settings.feature_cache_dir());
    let mut bars = BarObserver::default();
    let outcome = match recorder.as_deref_mut() {
        Some(recorder) => trainer.run(&mut TrackingObserver {
            inner: &mut bars,
            recorder,
            head_epochs: settings.head_phase_epochs(),
        })?,
        None => trainer.run(&mut bars)?,
    };
    if outcome.interrupted {
        bars.finish();
        return Ok(None);
    }
    let frozen = trainer.frozen_logits(&outcome.best, &mut bars)?;
    bars.finish();
    let mut bar: Option<ProgressBar> = None;
    let release = finalize(
        outcome.best,
        settings,
        &outcome.state,
        data,
        provenance,
        &args.out,
        frozen.as_ref(),
        &mut |stage, done, total| {
            let current = bar.get_or_insert_with(|| progress::bar(total, "scoring"));
            current.set_message(stage.to_owned());
            current.set_length(total as u64);
            current.set_position(done as u64);
        },
    )?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some(recorder) = recorder {
        let step =
            i64::try_from(settings.head_phase_epochs() + settings.epochs).unwrap_or(i64::MAX);
        log_release(
            recorder,
            &release,
            &args.out,
            step,
            &args.name,
            args.log_package,
        );
    }
    Ok(Some(release))
}

fn print_release(release: &covidct_training::Release) {
    let m = &release.report.metrics;
    let meta = &release.package.metadata;
    println!(
        "model package  {}\nreport         {}\nthreshold      {:.4} ({})\ntemperature    {:.3}",
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
    print_intervals(m);
    print_group(&release.report);
    print_refusals(&release.report);
}

/// The dataset's folder name.
pub fn dataset_name(dir: &Path) -> String {
    dir.canonicalize()
        .unwrap_or_else(|_| dir.to_path_buf())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset".to_owned())
}

/// The source revision: `COVIDCT_GIT_COMMIT`, GitLab's `CI_COMMIT_SHA`, or `git rev-parse`.
pub fn git_commit() -> Option<String> {
    for var in ["COVIDCT_GIT_COMMIT", "CI_COMMIT_SHA"] {
        if let Ok(value) = std::env::var(var)
            && !value.is_empty()
        {
            return Some(value);
        }
    }
    let output = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Draws training progress: one bar per stage and per epoch, with the live loss.
#[derive(Default)]
struct BarObserver {
    bar: Option<ProgressBar>,
}

impl BarObserver {
    fn replace(&mut self, bar: ProgressBar) {
        if let Some(old) = self.bar.replace(bar) {
            old.finish_and_clear();
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl TrainObserver for BarObserver {
    fn on_event(&mut self, event: &TrainEvent<'_>) {
        match event {
            TrainEvent::Stage { name, total } => {
                let bar = progress::bar(*total, "prepare");
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
                let bar = progress::bar(*batches, "epoch");
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
