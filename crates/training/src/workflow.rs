//! The tracked workflows of `covidct train` and `covidct cross-validate`: a typed request, the
//! split, training, calibration, evaluation and packaging, and the MLflow run around them.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use covidct_data::{Analysis, Manifest, SplitConfig, SplitName, split_dataset};
use covidct_evaluation::{
    CrossValidationSummary, fold_refusals, read_json, read_report, summarize_folds,
    write_atomically,
};
use covidct_tracking::{
    Param, RunRecorder, RunStatus, Tag, TrackingOptions, finish_run, params_of, start_run, tags,
};

use crate::checkpoint;
use crate::config::TrainConfig;
use crate::data::TrainingData;
use crate::error::TrainError;
use crate::evaluation::dataset_name;
use crate::finalize::{Provenance, Release, finalize};
use crate::tracked::{TrackingObserver, log_cross_validation, log_release};
use crate::trainer::{TrainObserver, Trainer};

/// Everything one training run needs, settings resolved.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    /// Training settings.
    pub settings: TrainConfig,
    /// How to split the dataset when no manifest is given.
    pub split: SplitConfig,
    /// The dataset root.
    pub data_dir: PathBuf,
    /// A split manifest to train on instead of splitting here.
    pub manifest: Option<PathBuf>,
    /// The run folder.
    pub out: PathBuf,
    /// Continue the checkpoint in `out`.
    pub resume: bool,
    /// Registered model name recorded in the package.
    pub name: String,
    /// A cross-validation summary (JSON) of the same settings, shown first in the model card.
    pub cross_validation: Option<PathBuf>,
    /// Where the run is tracked.
    pub tracking: TrackingOptions,
    /// Tags added to the run (a fold's number and parent run, say).
    pub extra_tags: Vec<Tag>,
    /// Log the package as an MLflow logged model.
    pub log_package: bool,
    /// Folder of the frozen-feature cache; `None` keeps none.
    pub feature_cache: Option<PathBuf>,
}

/// How a run ended.
#[derive(Debug)]
pub enum RunEnd<T> {
    /// Finished, with its result.
    Done(T),
    /// Stopped by the caller's stop flag after saving a checkpoint; the same request with
    /// `resume` continues it.
    Interrupted,
}

impl TrainRequest {
    /// Checks what can be checked before the dataset is decoded: the settings, the initial
    /// weights, and that `out` holds a checkpoint exactly when resuming.
    pub fn check(&self) -> Result<(), TrainError> {
        self.settings.validate()?;
        self.settings.pretrained_files()?;
        let refuse = |reason: &str| TrainError::Request {
            what: self.out.display().to_string(),
            reason: reason.to_owned(),
        };
        match (checkpoint::load(&self.out)?.is_some(), self.resume) {
            (true, false) => Err(refuse(
                "already holds a training checkpoint: pass --resume to continue it, or choose \
                 another --out",
            )),
            (false, true) => Err(refuse("--resume: holds no checkpoint to continue")),
            _ => Ok(()),
        }
    }
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

/// The split manifest of a run: the one given, the run's own on resume, or a new split.
fn run_manifest(
    request: &TrainRequest,
    analysis: &Analysis,
) -> Result<(Manifest, PathBuf, String), TrainError> {
    let split_path = request.out.join("split.csv");
    let strategy = request.split.strategy.as_str().to_owned();
    let (manifest, path, strategy) = match &request.manifest {
        Some(path) => {
            let manifest = Manifest::read(path)?;
            manifest.write(&split_path)?;
            let strategy = format!("manifest {}", path.display());
            (manifest, path.clone(), strategy)
        }
        None if request.resume => (Manifest::read(&split_path)?, split_path, strategy),
        None => {
            let manifest = split_dataset(analysis, &request.split)?;
            manifest.write(&split_path)?;
            tracing::info!(%strategy, out = %split_path.display(), "split manifest written");
            (manifest, split_path, strategy)
        }
    };
    Ok((manifest, path, strategy))
}

/// Tags of a training run in MLflow.
fn run_tags(
    request: &TrainRequest,
    provenance: &Provenance,
    strategy: &str,
    data: &TrainingData,
) -> Vec<Tag> {
    let settings = &request.settings;
    let mut run_tags = vec![
        Tag::new(tags::KIND, "training"),
        Tag::new(tags::ARCHITECTURE, settings.architecture.to_string()),
        Tag::new(tags::PRETRAINED, settings.pretrained.to_string()),
        Tag::new(tags::SPLIT_STRATEGY, strategy),
        Tag::new(tags::SPLIT_FINGERPRINT, &data.split_fingerprint),
        Tag::new(tags::DATASET, &provenance.dataset_name),
        Tag::new(tags::DATASET_FINGERPRINT, &provenance.dataset_fingerprint),
        Tag::new(tags::SOURCE_TYPE, "LOCAL"),
        Tag::new(tags::SOURCE_NAME, "covidct train"),
    ];
    if let Some(commit) = &provenance.git_commit {
        run_tags.push(Tag::new(tags::SOURCE_GIT_COMMIT, commit));
        run_tags.push(Tag::new(tags::GIT_COMMIT, commit));
    }
    run_tags.extend(request.extra_tags.iter().cloned());
    run_tags
}

/// Trains on the decoded dataset `analysis`, then calibrates, evaluates and packages the best
/// network into `request.out`, tracking the run; `stop` interrupts it at the next batch.
/// `observer` sees the training events, `progress` the (stage, done, total) of the scoring after.
pub fn train_run(
    request: &TrainRequest,
    analysis: &Analysis,
    stop: &AtomicBool,
    observer: &mut dyn TrainObserver,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<RunEnd<Release>, TrainError> {
    request.check()?;
    let settings = &request.settings;
    let out = &request.out;
    std::fs::create_dir_all(out).map_err(|source| TrainError::Io {
        path: out.clone(),
        source,
    })?;
    let (manifest, manifest_path, strategy) = run_manifest(request, analysis)?;
    let data = TrainingData::from_manifest(
        &manifest,
        &request.data_dir,
        &settings.positive_class,
        &manifest_path,
    )?;
    tracing::info!(
        classes = ?data.class_names,
        train = ?data.summary(SplitName::Train),
        val = ?data.summary(SplitName::Val),
        test = ?data.summary(SplitName::Test),
        architecture = %settings.architecture,
        pretrained = %settings.pretrained,
        "training"
    );
    let provenance = Provenance {
        name: request.name.clone(),
        dataset_name: dataset_name(&request.data_dir),
        dataset_fingerprint: analysis.fingerprint(),
        git_commit: git_commit(),
        cross_validation: request
            .cross_validation
            .as_deref()
            .map(read_json)
            .transpose()?,
    };
    let mut recorder = start_run(
        &request.tracking,
        out,
        request.resume,
        &format!("train-{}", settings.architecture),
        run_tags(request, &provenance, &strategy, &data),
    );
    if let Some(recorder) = recorder.as_mut()
        && !request.resume
    {
        let mut params = params_of(&serde_json::to_value(settings).unwrap_or_default());
        params.push(Param::new("manifest", manifest_path.display().to_string()));
        recorder.log_params(params);
    }
    let result = release(
        request,
        &data,
        &provenance,
        stop,
        observer,
        progress,
        recorder.as_mut(),
    );
    let status = match &result {
        Ok(RunEnd::Interrupted) => RunStatus::Killed,
        Ok(RunEnd::Done(_)) => RunStatus::Finished,
        Err(_) => RunStatus::Failed,
    };
    if let Some(recorder) = recorder {
        finish_run(recorder, status, out);
    }
    result
}

/// Trains, then calibrates, evaluates and packages the best network, logging it.
fn release(
    request: &TrainRequest,
    data: &TrainingData,
    provenance: &Provenance,
    stop: &AtomicBool,
    observer: &mut dyn TrainObserver,
    progress: &mut dyn FnMut(&str, usize, usize),
    mut recorder: Option<&mut RunRecorder>,
) -> Result<RunEnd<Release>, TrainError> {
    let settings = &request.settings;
    let trainer = Trainer::new(settings.clone(), data, &request.out, stop)?
        .with_feature_cache(request.feature_cache.clone());
    let outcome = match recorder.as_deref_mut() {
        Some(recorder) => trainer.run(&mut TrackingObserver {
            inner: observer,
            recorder,
            head_epochs: settings.head_phase_epochs(),
        })?,
        None => trainer.run(observer)?,
    };
    if outcome.interrupted {
        return Ok(RunEnd::Interrupted);
    }
    let frozen = trainer.frozen_logits(&outcome.best, observer)?;
    let release = finalize(
        outcome.best,
        settings,
        &outcome.state,
        data,
        provenance,
        &request.out,
        frozen.as_ref(),
        progress,
    )?;
    if let Some(recorder) = recorder {
        let step =
            i64::try_from(settings.head_phase_epochs() + settings.epochs).unwrap_or(i64::MAX);
        log_release(
            recorder,
            &release,
            &request.out,
            step,
            &request.name,
            request.log_package,
        );
    }
    Ok(RunEnd::Done(release))
}

/// A group K-fold cross-validation: `base` trained once per fold of `base.split` (with
/// `folds` folds) into `base.out/fold-<k>`, folds already trained kept, under one parent run.
/// Returns the summary and where it was written.
pub fn cross_validate(
    base: &TrainRequest,
    folds: usize,
    analysis: &Analysis,
    stop: &AtomicBool,
    observer: &mut dyn TrainObserver,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<RunEnd<(CrossValidationSummary, PathBuf)>, TrainError> {
    let split = SplitConfig {
        folds,
        ..base.split.clone()
    };
    split.validate()?;
    base.settings.validate()?;
    let out = &base.out;
    std::fs::create_dir_all(out).map_err(|source| TrainError::Io {
        path: out.clone(),
        source,
    })?;
    let settings = &base.settings;
    let mut parent = start_run(
        &base.tracking,
        out,
        false,
        &format!("cross-validate-{}", settings.architecture),
        vec![
            Tag::new(tags::KIND, "cross-validation"),
            Tag::new(tags::ARCHITECTURE, settings.architecture.to_string()),
            Tag::new(tags::SPLIT_STRATEGY, split.strategy.as_str()),
            Tag::new(tags::SOURCE_NAME, "covidct cross-validate"),
        ],
    );
    if let Some(parent) = parent.as_mut() {
        let mut params = params_of(&serde_json::to_value(settings).unwrap_or_default());
        params.push(Param::new("folds", folds.to_string()));
        params.push(Param::new("split_seed", split.seed.to_string()));
        parent.log_params(params);
    }
    let parent_id = parent
        .as_ref()
        .and_then(|p| p.run().map(|r| r.run_id.clone()));
    let outcome = run_folds(base, &split, analysis, parent_id, stop, observer, progress);
    let status = match &outcome {
        Ok(RunEnd::Done(_)) => RunStatus::Finished,
        Ok(RunEnd::Interrupted) => RunStatus::Killed,
        Err(_) => RunStatus::Failed,
    };
    if let Some(mut parent) = parent {
        if let Ok(RunEnd::Done((summary, path))) = &outcome {
            log_cross_validation(&mut parent, summary, path);
        }
        finish_run(parent, status, out);
    }
    outcome
}

/// Trains (or keeps) every fold and writes the summary.
fn run_folds(
    base: &TrainRequest,
    split: &SplitConfig,
    analysis: &Analysis,
    parent_id: Option<String>,
    stop: &AtomicBool,
    observer: &mut dyn TrainObserver,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<RunEnd<(CrossValidationSummary, PathBuf)>, TrainError> {
    let folds = split.folds;
    let (mut reports, mut group_reports, mut refusals) = (Vec::new(), Vec::new(), Vec::new());
    for fold in 0..folds {
        let run = base.out.join(format!("fold-{fold}"));
        let report_path = run.join("evaluation").join("report.json");
        if run.join(covidct_tracking::PACKAGE_FILE).is_file() && report_path.is_file() {
            tracing::info!(fold, run = %run.display(), "fold already trained; kept");
        } else {
            let manifest = base.out.join(format!("split-fold-{fold}.csv"));
            split_dataset(
                analysis,
                &SplitConfig {
                    fold,
                    ..split.clone()
                },
            )?
            .write(&manifest)?;
            tracing::info!(fold, folds, manifest = %manifest.display(), "training fold");
            let mut extra_tags = vec![
                Tag::new(tags::CV_FOLD, fold.to_string()),
                Tag::new(tags::CV_FOLDS, folds.to_string()),
            ];
            if let Some(id) = &parent_id {
                extra_tags.push(Tag::new(tags::PARENT_RUN_ID, id));
            }
            let request = TrainRequest {
                manifest: Some(manifest),
                resume: checkpoint::load(&run)?.is_some(),
                out: run,
                cross_validation: None,
                extra_tags,
                log_package: false,
                ..base.clone()
            };
            if let RunEnd::Interrupted = train_run(&request, analysis, stop, observer, progress)? {
                return Ok(RunEnd::Interrupted);
            }
        }
        let report = read_report(&report_path)?;
        group_reports.extend(report.group.map(|group| group.metrics.point));
        refusals.push(report.refusals);
        reports.push(report.metrics.point);
    }
    let mut summary = summarize_folds(&reports, Some(&group_reports))?;
    summary.refusals = fold_refusals(&refusals);
    let path = base.out.join("cross-validation.json");
    let bytes = serde_json::to_vec_pretty(&summary).map_err(|e| TrainError::Io {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    write_atomically(&path, &bytes)?;
    Ok(RunEnd::Done((summary, path)))
}
