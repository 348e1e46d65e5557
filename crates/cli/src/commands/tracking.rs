//! MLflow tracking of `covidct train` and `covidct evaluate` runs, and `covidct runs sync`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use covidct_evaluation::{EvaluationReport, MetricsWithCi};
use covidct_tracking::{
    ModelRecord, Param, RunRecorder, RunStatus, RunSummary, Tag, TrackingTarget, sync_spool,
};
use covidct_training::checkpoint::{EpochRecord, Phase};
use covidct_training::{Release, TrainEvent, TrainObserver};
use serde::{Deserialize, Serialize};

use crate::cli::{StoreArgs, SyncArgs, TrackingArgs};

/// The file in a run folder that links it to its tracking journal (for `--resume`) and to the
/// run and logged model in MLflow (for `covidct models register`).
const LINK_FILE: &str = "tracking.json";

/// What [`LINK_FILE`] holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunLink {
    /// Tracking URI of the run.
    pub target: String,
    /// The run's journal folder (while it exists).
    pub journal_dir: PathBuf,
    /// The run id in MLflow, once created there.
    pub run_id: Option<String>,
    /// Logged models of the run, once delivered.
    pub model_ids: Vec<String>,
}

impl RunLink {
    /// Reads the link of a run folder, if it has one.
    pub fn read(run_dir: &Path) -> Result<Option<Self>> {
        let path = run_dir.join(LINK_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a tracking link", path.display()))
            .map(Some)
    }

    fn write(&self, run_dir: &Path) -> Result<()> {
        covidct_evaluation::write_atomically(
            &run_dir.join(LINK_FILE),
            &serde_json::to_vec_pretty(self)?,
        )?;
        Ok(())
    }
}

/// The tracking store named by `--tracking-uri` / `MLFLOW_TRACKING_URI`.
pub fn target(store: &StoreArgs) -> TrackingTarget {
    TrackingTarget::from_uri(&store.tracking_uri)
}

/// Delivers what earlier runs left in the spool; reports and carries on when it cannot.
fn deliver_leftovers(args: &TrackingArgs) {
    match sync_spool(&args.spool_dir) {
        Ok(outcomes) => {
            for outcome in outcomes.iter().filter(|o| o.delivered > 0) {
                tracing::info!(
                    journal = %outcome.journal_dir.display(),
                    delivered = outcome.delivered,
                    pending = outcome.pending,
                    "delivered tracking records of an earlier run"
                );
            }
        }
        Err(error) => tracing::warn!(%error, "cannot read the tracking spool"),
    }
}

/// Starts tracking a run (or continues the one linked from `run_dir` when `resume`); `None`
/// when tracking is off or cannot start, which never stops the work itself.
pub fn start(
    args: &TrackingArgs,
    run_dir: &Path,
    resume: bool,
    run_name: &str,
    tags: Vec<Tag>,
) -> Option<RunRecorder> {
    if args.no_tracking {
        return None;
    }
    deliver_leftovers(args);
    let link = if resume {
        RunLink::read(run_dir).ok().flatten()
    } else {
        None
    };
    let started = match link.filter(|l| l.journal_dir.exists()) {
        Some(link) => RunRecorder::reopen(&link.journal_dir),
        None => RunRecorder::start(
            &target(&args.store),
            &args.spool_dir,
            &args.experiment,
            run_name,
            tags,
        ),
    };
    match started {
        Ok(recorder) => {
            let link = RunLink {
                target: recorder.target().to_owned(),
                journal_dir: recorder.journal_dir().to_path_buf(),
                run_id: recorder.run().map(|r| r.run_id.clone()),
                model_ids: Vec::new(),
            };
            if let Err(error) = link.write(run_dir) {
                tracing::warn!(%error, "cannot link the run folder to its tracking run");
            }
            Some(recorder)
        }
        Err(error) => {
            tracing::warn!(%error, "tracking is off for this run");
            None
        }
    }
}

/// Ends tracking, records where the run went and says so.
pub fn finish(recorder: RunRecorder, status: RunStatus, run_dir: &Path) -> RunSummary {
    let summary = recorder.finish(status);
    let link = RunLink {
        target: summary.target.clone(),
        journal_dir: summary.journal_dir.clone(),
        run_id: summary.run.as_ref().map(|r| r.run_id.clone()),
        model_ids: summary.model_ids.clone(),
    };
    if let Err(error) = link.write(run_dir) {
        tracing::warn!(%error, "cannot link the run folder to its tracking run");
    }
    match (&summary.run, summary.pending) {
        (Some(run), 0) => eprintln!(
            "tracked as MLflow run {} (experiment {}) at {}",
            run.run_id, run.experiment_id, summary.target
        ),
        (_, pending) => eprintln!(
            "tracking: {pending} records wait in {} for {}; `covidct runs sync` delivers them",
            summary.journal_dir.display(),
            summary.target
        ),
    }
    summary
}

/// Every field of a JSON object as MLflow parameters, nested keys joined with `.`.
pub fn params_of(value: &serde_json::Value) -> Vec<Param> {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut Vec<Param>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, inner) in map {
                    let name = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&name, inner, out);
                }
            }
            serde_json::Value::String(text) => out.push(Param::new(prefix, text)),
            other => out.push(Param::new(prefix, other.to_string())),
        }
    }
    let mut params = Vec::new();
    walk("", value, &mut params);
    params
}

/// Metric values and their interval bounds as `<prefix>_<metric>`, `…_ci_lower`, `…_ci_upper`.
pub fn metric_values(prefix: &str, metrics: &MetricsWithCi) -> Vec<(String, f64)> {
    let mut values = Vec::new();
    for (metric, interval) in &metrics.intervals {
        let name = format!("{prefix}_{}", metric.key());
        for (suffix, value) in [
            ("", interval.value),
            ("_ci_lower", interval.lower),
            ("_ci_upper", interval.upper),
        ] {
            if let Some(value) = value {
                values.push((format!("{name}{suffix}"), value));
            }
        }
    }
    values
}

/// Logs named metric values at `step`.
pub fn log_values(recorder: &mut RunRecorder, step: i64, values: &[(String, f64)]) {
    let borrowed: Vec<(&str, f64)> = values.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    recorder.log_metrics(step, &borrowed);
}

/// Logs an evaluation report: its metrics at `step` and its files as artifacts under
/// `artifact_dir`.
pub fn log_report(
    recorder: &mut RunRecorder,
    prefix: &str,
    step: i64,
    report: &EvaluationReport,
    report_dir: &Path,
    artifact_dir: &str,
) {
    log_values(recorder, step, &metric_values(prefix, &report.metrics));
    if let Some(group) = &report.group {
        let values = metric_values(&format!("{prefix}_group"), &group.metrics);
        log_values(recorder, step, &values);
    }
    if let Some(refusals) = &report.refusals {
        log_values(
            recorder,
            step,
            &[(format!("{prefix}_ood_refused_rate"), refusals.rate)],
        );
        if let Some(accepted) = &refusals.accepted {
            let values = metric_values(&format!("{prefix}_accepted"), accepted);
            log_values(recorder, step, &values);
        }
    }
    recorder.log_artifact_dir(artifact_dir, report_dir);
}

/// Logs a finished training run's results: final metrics, the split manifest, the evaluation
/// report, the model card and, with `log_package`, the package as a logged model.
pub fn log_release(
    recorder: &mut RunRecorder,
    release: &Release,
    run_dir: &Path,
    step: i64,
    model_name: &str,
    log_package: bool,
) {
    let meta = &release.package.metadata;
    log_values(
        recorder,
        step,
        &[
            ("val_roc_auc_final".to_owned(), release.validation_roc_auc),
            ("threshold".to_owned(), meta.threshold),
            ("temperature".to_owned(), meta.temperature),
        ],
    );
    log_report(
        recorder,
        "test",
        step,
        &release.report,
        &release.report_dir,
        "evaluation",
    );
    recorder.log_artifact("split/split.csv", &run_dir.join("split.csv"));
    let card = run_dir.join("MODEL_CARD.md");
    recorder.log_artifact("MODEL_CARD.md", &card);
    if !log_package {
        return;
    }
    recorder.log_model(ModelRecord {
        name: model_name.to_owned(),
        model_type: "covidct-package".to_owned(),
        files: vec![
            ("model.ctpkg".to_owned(), release.package_path.clone()),
            ("MODEL_CARD.md".to_owned(), card),
        ],
        params: vec![
            Param::new("architecture", meta.architecture.to_string()),
            Param::new("image_size", meta.preprocess.size.to_string()),
        ],
        tags: vec![Tag::new(
            "covidct.package_sha256",
            crate::commands::models::package_sha256(&release.package_path).unwrap_or_default(),
        )],
        step,
    });
}

/// Forwards training events to another observer and logs each epoch's metrics, with the step
/// counting epochs across both phases.
pub struct TrackingObserver<'a> {
    /// The observer drawing progress.
    pub inner: &'a mut dyn TrainObserver,
    /// The run's recorder.
    pub recorder: &'a mut RunRecorder,
    /// Epochs of the head phase (fine-tuning steps follow them).
    pub head_epochs: usize,
}

impl TrackingObserver<'_> {
    /// The run-wide step of an epoch.
    pub fn step(head_epochs: usize, record: &EpochRecord) -> i64 {
        let offset = match record.phase {
            Phase::Head => 0,
            Phase::FineTune | Phase::Done => head_epochs,
        };
        i64::try_from(offset + record.epoch).unwrap_or(i64::MAX)
    }
}

impl TrainObserver for TrackingObserver<'_> {
    fn on_event(&mut self, event: &TrainEvent<'_>) {
        self.inner.on_event(event);
        if let TrainEvent::EpochEnd(record) = event {
            self.recorder.log_metrics(
                Self::step(self.head_epochs, record),
                &[
                    ("train_loss", record.train_loss),
                    ("val_loss", record.val_loss),
                    ("val_roc_auc", record.val_roc_auc),
                    ("val_accuracy", record.val_accuracy),
                    ("learning_rate", record.learning_rate),
                    ("epoch_seconds", record.seconds),
                ],
            );
        }
    }
}

/// `covidct runs sync`: delivers the journals waiting in the spool; returns the exit status
/// (1 while records still wait).
pub fn sync(args: &SyncArgs) -> Result<u8> {
    let outcomes = sync_spool(&args.spool_dir)?;
    if outcomes.is_empty() {
        println!("nothing to deliver in {}", args.spool_dir.display());
        return Ok(0);
    }
    let mut waiting = false;
    for outcome in &outcomes {
        let run = outcome
            .run
            .as_ref()
            .map_or("(not created yet)", |r| r.run_id.as_str());
        println!(
            "{}  run {run}  delivered {}  pending {}{}",
            outcome.target,
            outcome.delivered,
            outcome.pending,
            outcome
                .error
                .as_ref()
                .map(|e| format!("  ({e})"))
                .unwrap_or_default()
        );
        waiting |= outcome.pending > 0;
    }
    Ok(u8::from(waiting))
}
