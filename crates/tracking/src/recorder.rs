//! [`RunRecorder`]: what training and evaluation call to track a run. Every record goes to the
//! run's [`Journal`] first, then to the store; an outage is reported once and never stops the
//! caller, and delivery resumes by itself when the store is back.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::TrackingError;
use crate::file_store::now_ms;
use crate::journal::{Journal, Record};
use crate::sink::{ModelRecord, Sink, StoredRun};
use crate::target::TrackingTarget;
use crate::{Metric, Param, RunStatus, Tag};

/// After an outage, delivery is not tried again for this long (records keep being journaled).
const OUTAGE_PAUSE: Duration = Duration::from_secs(30);

/// Tracks one run.
pub struct RunRecorder {
    journal: Journal,
    sink: Option<Box<dyn Sink>>,
    paused_until: Option<Instant>,
}

/// Where a run stands when its recorder finishes.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The tracking URI.
    pub target: String,
    /// The run in its store, once created there.
    pub run: Option<StoredRun>,
    /// Ids of the logged models delivered.
    pub model_ids: Vec<String>,
    /// Records not delivered yet (`covidct runs sync` delivers them).
    pub pending: usize,
    /// The journal folder (gone when everything was delivered and the run ended).
    pub journal_dir: PathBuf,
}

impl RunRecorder {
    /// Starts a run in `experiment` on `target`, journaled under `spool_root`.
    pub fn start(
        target: &TrackingTarget,
        spool_root: &Path,
        experiment: &str,
        run_name: &str,
        tags: Vec<Tag>,
    ) -> Result<Self, TrackingError> {
        let sink = target.open()?;
        let journal = Journal::create(spool_root, &sink.target())?;
        let mut recorder = Self {
            journal,
            sink: Some(sink),
            paused_until: None,
        };
        recorder.record(Record::CreateRun {
            experiment: experiment.to_owned(),
            run_name: run_name.to_owned(),
            start_ms: now_ms(),
            tags,
        });
        Ok(recorder)
    }

    /// Continues the run of an existing journal (a resumed training run): the run is marked
    /// running again and later records join it.
    pub fn reopen(journal_dir: &Path) -> Result<Self, TrackingError> {
        let journal = Journal::open(journal_dir)?;
        let sink = TrackingTarget::from_uri(&journal.state().target).open()?;
        let mut recorder = Self {
            journal,
            sink: Some(sink),
            paused_until: None,
        };
        recorder.record(Record::UpdateRun {
            status: RunStatus::Running,
            end_ms: None,
        });
        Ok(recorder)
    }

    /// The journal folder (stored by callers that may reopen the run).
    pub fn journal_dir(&self) -> &Path {
        self.journal.dir()
    }

    /// The tracking URI records go to.
    pub fn target(&self) -> &str {
        &self.journal.state().target
    }

    /// The run in its store, once created there.
    pub fn run(&self) -> Option<&StoredRun> {
        self.journal.state().run.as_ref()
    }

    /// Logs parameters.
    pub fn log_params(&mut self, params: Vec<Param>) {
        self.log_batch(Vec::new(), params, Vec::new());
    }

    /// Sets tags.
    pub fn set_tags(&mut self, tags: Vec<Tag>) {
        self.log_batch(Vec::new(), Vec::new(), tags);
    }

    /// Logs metric values at `step`, all with the current time. Non-finite values are left out
    /// (MLflow's JSON cannot carry them) with a warning.
    pub fn log_metrics<K: AsRef<str>>(&mut self, step: i64, values: &[(K, f64)]) {
        let timestamp_ms = now_ms();
        let metrics = values
            .iter()
            .filter(|(key, value)| {
                let finite = value.is_finite();
                if !finite {
                    tracing::warn!(
                        metric = key.as_ref(),
                        value,
                        "not tracking a non-finite metric"
                    );
                }
                finite
            })
            .map(|(key, value)| Metric {
                key: key.as_ref().to_owned(),
                value: *value,
                timestamp_ms,
                step,
            })
            .collect();
        self.log_batch(metrics, Vec::new(), Vec::new());
    }

    fn log_batch(&mut self, metrics: Vec<Metric>, params: Vec<Param>, tags: Vec<Tag>) {
        if metrics.is_empty() && params.is_empty() && tags.is_empty() {
            return;
        }
        self.record(Record::LogBatch {
            metrics,
            params,
            tags,
        });
    }

    /// Stores `file` as the run artifact `relative_path`.
    pub fn log_artifact(&mut self, relative_path: &str, file: &Path) {
        self.record(Record::Artifact {
            path: relative_path.to_owned(),
            file: file.to_path_buf(),
        });
    }

    /// Stores every file under `dir` as run artifacts under `relative_dir` (one level deep).
    pub fn log_artifact_dir(&mut self, relative_dir: &str, dir: &Path) {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect(),
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "cannot list artifacts to track");
                return;
            }
        };
        files.sort();
        for file in files {
            if let Some(name) = file.file_name() {
                let relative = format!("{relative_dir}/{}", name.to_string_lossy());
                self.log_artifact(&relative, &file);
            }
        }
    }

    /// Logs a model as an output of the run.
    pub fn log_model(&mut self, model: ModelRecord) {
        self.record(Record::Model(model));
    }

    /// Ends the run with `status` and tries a last delivery.
    pub fn finish(mut self, status: RunStatus) -> RunSummary {
        self.paused_until = None;
        self.record(Record::UpdateRun {
            status,
            end_ms: Some(now_ms()),
        });
        let summary = RunSummary {
            target: self.journal.state().target.clone(),
            run: self.journal.state().run.clone(),
            model_ids: self.journal.state().model_ids.clone(),
            pending: self.journal.pending(),
            journal_dir: self.journal.dir().to_path_buf(),
        };
        if self.journal.is_complete()
            && let Err(error) = self.journal.remove()
        {
            tracing::warn!(%error, "cannot remove the delivered tracking journal");
        }
        summary
    }

    /// Journals a record and delivers what is pending unless paused by an outage.
    fn record(&mut self, record: Record) {
        if let Err(error) = self.journal.append(record) {
            tracing::error!(%error, "cannot journal a tracking record; it is lost");
            return;
        }
        if self
            .paused_until
            .is_some_and(|until| Instant::now() < until)
        {
            return;
        }
        let Some(sink) = self.sink.as_mut() else {
            return;
        };
        match self.journal.deliver(sink.as_mut()) {
            Ok(delivery) => {
                if let Some(outage) = delivery.outage {
                    if self.paused_until.is_none() {
                        tracing::warn!(
                            target_uri = %self.journal.state().target,
                            journal = %self.journal.dir().display(),
                            pending = delivery.pending,
                            error = %outage,
                            "tracking store unavailable; records are kept on disk and sent \
                             when it is back (or by `covidct runs sync`)"
                        );
                    }
                    self.paused_until = Some(Instant::now() + OUTAGE_PAUSE);
                } else if self.paused_until.take().is_some() {
                    tracing::info!("tracking store reachable again; pending records delivered");
                }
            }
            Err(error) => tracing::error!(%error, "cannot update the tracking journal"),
        }
    }
}

/// What happened to one journal during [`sync_spool`].
#[derive(Debug)]
pub struct SyncOutcome {
    /// The journal folder.
    pub journal_dir: PathBuf,
    /// Its tracking URI.
    pub target: String,
    /// Records delivered now.
    pub delivered: usize,
    /// Records still waiting.
    pub pending: usize,
    /// The run, once created in its store.
    pub run: Option<StoredRun>,
    /// Why delivery stopped, if it did.
    pub error: Option<String>,
}

/// Delivers every journal in `spool_root` to its own tracking URI and removes the ones that
/// are complete.
pub fn sync_spool(spool_root: &Path) -> Result<Vec<SyncOutcome>, TrackingError> {
    let mut outcomes = Vec::new();
    for dir in Journal::list(spool_root)? {
        let mut journal = Journal::open(&dir)?;
        let target = journal.state().target.clone();
        let result = TrackingTarget::from_uri(&target)
            .open()
            .and_then(|mut sink| journal.deliver(sink.as_mut()));
        let (delivered, error) = match result {
            Ok(delivery) => (delivery.delivered, delivery.outage.map(|e| e.to_string())),
            Err(e) => (0, Some(e.to_string())),
        };
        outcomes.push(SyncOutcome {
            journal_dir: dir,
            target,
            delivered,
            pending: journal.pending(),
            run: journal.state().run.clone(),
            error,
        });
        if journal.is_complete() {
            journal.remove()?;
        }
    }
    Ok(outcomes)
}
