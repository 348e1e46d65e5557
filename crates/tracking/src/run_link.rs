//! Tracking a command's run: where it goes ([`TrackingOptions`]), how a run folder remembers its
//! MLflow run ([`RunLink`], for `--resume` and `covidct models register`), and the start and end
//! of tracking that never stop the work itself ([`start_run`], [`finish_run`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::recorder::{RunRecorder, RunSummary, sync_spool};
use crate::types::{Param, RunStatus, Tag};
use crate::{TrackingError, TrackingTarget};

/// The file in a run folder that links it to its tracking journal and MLflow run.
pub const LINK_FILE: &str = "tracking.json";

/// Where and whether a command tracks its run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackingOptions {
    /// `false` tracks nothing (`--no-tracking`).
    pub enabled: bool,
    /// Tracking URI: an MLflow server's URL or a local file store.
    pub tracking_uri: String,
    /// Folder of the journals that wait for delivery.
    pub spool_dir: PathBuf,
    /// MLflow experiment of the run.
    pub experiment: String,
}

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
    pub fn read(run_dir: &Path) -> Result<Option<Self>, TrackingError> {
        let path = run_dir.join(LINK_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| TrackingError::io(&path, e))?;
        serde_json::from_str(&text)
            .map_err(|e| TrackingError::InvalidFile {
                path: path.clone(),
                reason: format!("not a tracking link: {e}"),
            })
            .map(Some)
    }

    /// Writes the link into `run_dir` atomically.
    pub fn write(&self, run_dir: &Path) -> Result<(), TrackingError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| TrackingError::InvalidFile {
            path: run_dir.join(LINK_FILE),
            reason: e.to_string(),
        })?;
        covidct_common::write_atomically(&run_dir.join(LINK_FILE), &bytes)?;
        Ok(())
    }

    /// Writes the link, warning (not failing) when it cannot.
    fn write_or_warn(&self, run_dir: &Path) {
        if let Err(error) = self.write(run_dir) {
            tracing::warn!(%error, "cannot link the run folder to its tracking run");
        }
    }
}

/// Delivers what earlier runs left in the spool; reports and carries on when it cannot.
fn deliver_leftovers(spool_dir: &Path) {
    match sync_spool(spool_dir) {
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

/// Starts tracking a run (or, with `resume`, continues the one linked from `run_dir`) and
/// links `run_dir` to it; `None` when tracking is off or cannot start, which never stops the
/// work itself.
pub fn start_run(
    options: &TrackingOptions,
    run_dir: &Path,
    resume: bool,
    run_name: &str,
    tags: Vec<Tag>,
) -> Option<RunRecorder> {
    if !options.enabled {
        return None;
    }
    deliver_leftovers(&options.spool_dir);
    let link = if resume {
        RunLink::read(run_dir).ok().flatten()
    } else {
        None
    };
    let started = match link.filter(|l| l.journal_dir.exists()) {
        Some(link) => RunRecorder::reopen(&link.journal_dir),
        None => RunRecorder::start(
            &TrackingTarget::from_uri(&options.tracking_uri),
            &options.spool_dir,
            &options.experiment,
            run_name,
            tags,
        ),
    };
    match started {
        Ok(recorder) => {
            RunLink {
                target: recorder.target().to_owned(),
                journal_dir: recorder.journal_dir().to_path_buf(),
                run_id: recorder.run().map(|r| r.run_id.clone()),
                model_ids: Vec::new(),
            }
            .write_or_warn(run_dir);
            Some(recorder)
        }
        Err(error) => {
            tracing::warn!(%error, "tracking is off for this run");
            None
        }
    }
}

/// Ends tracking, records in `run_dir` where the run went, and says so.
pub fn finish_run(recorder: RunRecorder, status: RunStatus, run_dir: &Path) -> RunSummary {
    let summary = recorder.finish(status);
    RunLink {
        target: summary.target.clone(),
        journal_dir: summary.journal_dir.clone(),
        run_id: summary.run.as_ref().map(|r| r.run_id.clone()),
        model_ids: summary.model_ids.clone(),
    }
    .write_or_warn(run_dir);
    match (&summary.run, summary.pending) {
        (Some(run), 0) => tracing::info!(
            "tracked as MLflow run {} (experiment {}) at {}",
            run.run_id,
            run.experiment_id,
            summary.target
        ),
        (_, pending) => tracing::warn!(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_flatten_nested_objects() {
        let params = params_of(&serde_json::json!({
            "epochs": 3,
            "optimizer": {"lr": 0.001, "name": "adamw"},
        }));
        let pairs: Vec<(&str, &str)> = params
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("epochs", "3"),
                ("optimizer.lr", "0.001"),
                ("optimizer.name", "adamw")
            ]
        );
    }

    #[test]
    fn link_round_trips_and_a_broken_link_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(RunLink::read(dir.path()).unwrap().is_none());
        let link = RunLink {
            target: "http://mlflow:5000".into(),
            journal_dir: dir.path().join("journal"),
            run_id: Some("abc".into()),
            model_ids: vec!["m-1".into()],
        };
        link.write(dir.path()).unwrap();
        let read = RunLink::read(dir.path()).unwrap().unwrap();
        assert_eq!(read.run_id.as_deref(), Some("abc"));
        assert_eq!(read.model_ids, ["m-1"]);
        std::fs::write(dir.path().join(LINK_FILE), "{").unwrap();
        let error = RunLink::read(dir.path()).unwrap_err().to_string();
        assert!(error.contains(LINK_FILE), "{error}");
    }

    #[test]
    fn disabled_tracking_starts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let options = TrackingOptions {
            enabled: false,
            tracking_uri: dir.path().join("store").display().to_string(),
            spool_dir: dir.path().join("spool"),
            experiment: "covidct".into(),
        };
        assert!(start_run(&options, dir.path(), false, "run", Vec::new()).is_none());
        assert!(!dir.path().join(LINK_FILE).exists());
    }
}
