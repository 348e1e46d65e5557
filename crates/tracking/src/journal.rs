//! The durable journal behind every tracked run: each record is appended to disk (and synced)
//! before delivery is tried, and a cursor written after each delivered record says how far the
//! store has it. A server that goes away therefore loses nothing: `covidct runs sync` (or the
//! next run) delivers the rest in order, and no record is delivered twice.
//!
//! A journal is a folder in the spool: `journal.jsonl` (one [`Entry`] per line), `state.json`
//! (the cursor, the run's id in its store) and `files/` (copies of artifacts, so the run folder
//! may change or go before delivery).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::TrackingError;
use covidct_common::write_atomically;

use crate::file_store::random_hex_id;
use crate::sink::{ModelRecord, Sink, StoredRun};
use crate::{Metric, Param, RunStatus, Tag};

/// One thing to record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Record {
    /// Create the run.
    CreateRun {
        /// Experiment name.
        experiment: String,
        /// Run name.
        run_name: String,
        /// Start time (ms since the epoch).
        start_ms: i64,
        /// Tags set at creation.
        tags: Vec<Tag>,
    },
    /// Metrics, parameters and tags.
    LogBatch {
        /// Metrics.
        metrics: Vec<Metric>,
        /// Parameters.
        params: Vec<Param>,
        /// Tags.
        tags: Vec<Tag>,
    },
    /// A run artifact.
    Artifact {
        /// Path inside the run's artifacts.
        path: String,
        /// The journal's copy of the file.
        file: PathBuf,
    },
    /// A logged model, output of the run.
    Model(ModelRecord),
    /// The run's status.
    UpdateRun {
        /// New status.
        status: RunStatus,
        /// End time (ms since the epoch) for terminal states.
        end_ms: Option<i64>,
    },
}

/// A numbered record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the journal, from 1.
    pub seq: u64,
    /// The record.
    pub record: Record,
}

/// A record the store refused for good (not an outage); it is skipped so the rest arrives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejected {
    /// The record's position.
    pub seq: u64,
    /// The store's answer.
    pub error: String,
}

/// What the journal knows about delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalState {
    /// Tracking URI the records go to.
    pub target: String,
    /// Records up to this position are in the store.
    pub delivered: u64,
    /// The run, once created in the store.
    pub run: Option<StoredRun>,
    /// Ids of the models logged so far.
    pub model_ids: Vec<String>,
    /// Records the store refused.
    pub rejected: Vec<Rejected>,
}

/// The outcome of a delivery attempt.
#[derive(Debug)]
pub struct Delivery {
    /// Records delivered by this attempt.
    pub delivered: usize,
    /// Records still waiting.
    pub pending: usize,
    /// The outage that stopped delivery, if any.
    pub outage: Option<TrackingError>,
}

/// A run's journal in the spool.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    state: JournalState,
    entries: Vec<Entry>,
}

const JOURNAL_FILE: &str = "journal.jsonl";
const STATE_FILE: &str = "state.json";

impl Journal {
    /// Starts a new journal in `spool_root` for records bound to `target`.
    pub fn create(spool_root: &Path, target: &str) -> Result<Self, TrackingError> {
        let dir = spool_root.join(random_hex_id());
        fs::create_dir_all(dir.join("files")).map_err(|e| TrackingError::io(&dir, e))?;
        let journal = Self {
            dir,
            state: JournalState {
                target: target.to_owned(),
                delivered: 0,
                run: None,
                model_ids: Vec::new(),
                rejected: Vec::new(),
            },
            entries: Vec::new(),
        };
        journal.save_state()?;
        Ok(journal)
    }

    /// Opens an existing journal. A torn last line (a crash while appending) is dropped: the
    /// record it held was never acknowledged.
    pub fn open(dir: &Path) -> Result<Self, TrackingError> {
        let state_path = dir.join(STATE_FILE);
        let text =
            fs::read_to_string(&state_path).map_err(|e| TrackingError::io(&state_path, e))?;
        let state: JournalState =
            serde_json::from_str(&text).map_err(|e| TrackingError::Decode {
                endpoint: state_path.display().to_string(),
                reason: e.to_string(),
            })?;
        let journal_path = dir.join(JOURNAL_FILE);
        let text = match fs::read_to_string(&journal_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(TrackingError::io(&journal_path, e)),
        };
        let mut entries = Vec::new();
        let mut good_len = 0;
        for (index, line) in text.split_inclusive('\n').enumerate() {
            let parsed = line
                .strip_suffix('\n')
                .ok_or_else(|| "no line end".to_owned())
                .and_then(|l| serde_json::from_str::<Entry>(l).map_err(|e| e.to_string()));
            match parsed {
                Ok(entry) => {
                    entries.push(entry);
                    good_len += line.len();
                }
                Err(error) => {
                    tracing::warn!(
                        journal = %journal_path.display(),
                        line = index + 1,
                        %error,
                        "dropping an unreadable journal tail (torn write?)"
                    );
                    let file = fs::OpenOptions::new()
                        .write(true)
                        .open(&journal_path)
                        .map_err(|e| TrackingError::io(&journal_path, e))?;
                    file.set_len(good_len as u64)
                        .map_err(|e| TrackingError::io(&journal_path, e))?;
                    break;
                }
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            state,
            entries,
        })
    }

    /// Every journal folder in `spool_root`.
    pub fn list(spool_root: &Path) -> Result<Vec<PathBuf>, TrackingError> {
        if !spool_root.exists() {
            return Ok(Vec::new());
        }
        let mut dirs = Vec::new();
        for entry in fs::read_dir(spool_root).map_err(|e| TrackingError::io(spool_root, e))? {
            let path = entry.map_err(|e| TrackingError::io(spool_root, e))?.path();
            if path.join(STATE_FILE).is_file() {
                dirs.push(path);
            }
        }
        dirs.sort();
        Ok(dirs)
    }

    /// The journal's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Delivery state.
    pub fn state(&self) -> &JournalState {
        &self.state
    }

    /// Records not yet delivered.
    pub fn pending(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.seq > self.state.delivered)
            .count()
    }

    /// Whether every record is delivered and the run has ended (the journal can go).
    pub fn is_complete(&self) -> bool {
        self.pending() == 0
            && matches!(
                self.entries.last().map(|e| &e.record),
                Some(Record::UpdateRun {
                    status: RunStatus::Finished | RunStatus::Failed,
                    ..
                })
            )
    }

    /// Appends a record durably. Files named by artifacts and models are copied into the
    /// journal first.
    pub fn append(&mut self, record: Record) -> Result<u64, TrackingError> {
        let seq = self.entries.last().map_or(1, |e| e.seq + 1);
        let record = match record {
            Record::Artifact { path, file } => Record::Artifact {
                file: self.keep_file(seq, 0, &file)?,
                path,
            },
            Record::Model(mut model) => {
                for (index, (_, file)) in model.files.iter_mut().enumerate() {
                    *file = self.keep_file(seq, index, file)?;
                }
                Record::Model(model)
            }
            other => other,
        };
        let entry = Entry { seq, record };
        let mut line = serde_json::to_string(&entry).map_err(|e| TrackingError::Decode {
            endpoint: "journal".to_owned(),
            reason: e.to_string(),
        })?;
        line.push('\n');
        let path = self.dir.join(JOURNAL_FILE);
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| TrackingError::io(&path, e))?;
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|e| TrackingError::io(&path, e))?;
        self.entries.push(entry);
        Ok(seq)
    }

    /// A copy of `file` inside the journal (a hard link where the filesystem allows).
    fn keep_file(&self, seq: u64, index: usize, file: &Path) -> Result<PathBuf, TrackingError> {
        let name = file
            .file_name()
            .map_or_else(|| "file".into(), |n| n.to_os_string());
        let dir = self.dir.join("files").join(format!("{seq}-{index}"));
        fs::create_dir_all(&dir).map_err(|e| TrackingError::io(&dir, e))?;
        let kept = dir.join(name);
        if fs::hard_link(file, &kept).is_err() {
            fs::copy(file, &kept).map_err(|e| TrackingError::io(file, e))?;
        }
        Ok(kept)
    }

    /// Delivers pending records in order until done or an outage (unreachable server, 5xx,
    /// 429, rejected credentials) stops it. Other refusals are recorded in
    /// [`JournalState::rejected`] and skipped.
    pub fn deliver(&mut self, sink: &mut dyn Sink) -> Result<Delivery, TrackingError> {
        let mut delivered = 0;
        let pending: Vec<Entry> = self
            .entries
            .iter()
            .filter(|e| e.seq > self.state.delivered)
            .cloned()
            .collect();
        for entry in &pending {
            match self.apply(sink, &entry.record) {
                Ok(()) => delivered += 1,
                Err(error)
                    if error.is_transient()
                        || matches!(error, TrackingError::Unauthorized { .. }) =>
                {
                    return Ok(Delivery {
                        delivered,
                        pending: self.pending(),
                        outage: Some(error),
                    });
                }
                Err(error) => {
                    tracing::error!(
                        journal = %self.dir.display(),
                        seq = entry.seq,
                        %error,
                        "the tracking store refused a record; skipping it"
                    );
                    self.state.rejected.push(Rejected {
                        seq: entry.seq,
                        error: error.to_string(),
                    });
                }
            }
            self.state.delivered = entry.seq;
            self.save_state()?;
        }
        Ok(Delivery {
            delivered,
            pending: 0,
            outage: None,
        })
    }

    fn apply(&mut self, sink: &mut dyn Sink, record: &Record) -> Result<(), TrackingError> {
        if let Record::CreateRun {
            experiment,
            run_name,
            start_ms,
            tags,
        } = record
        {
            if self.state.run.is_none() {
                self.state.run = Some(sink.create_run(experiment, run_name, *start_ms, tags)?);
            }
            return Ok(());
        }
        let run = self
            .state
            .run
            .clone()
            .ok_or_else(|| TrackingError::Decode {
                endpoint: self.dir.display().to_string(),
                reason: "the journal records data for a run that was never created".to_owned(),
            })?;
        match record {
            Record::CreateRun { .. } => Ok(()),
            Record::LogBatch {
                metrics,
                params,
                tags,
            } => sink.log_batch(&run, metrics, params, tags),
            Record::Artifact { path, file } => sink.upload_artifact(&run, path, file),
            Record::Model(model) => {
                let id = sink.log_model(&run, model)?;
                self.state.model_ids.push(id);
                Ok(())
            }
            Record::UpdateRun { status, end_ms } => sink.update_run(&run, *status, *end_ms),
        }
    }

    fn save_state(&self) -> Result<(), TrackingError> {
        let path = self.dir.join(STATE_FILE);
        let bytes = serde_json::to_vec_pretty(&self.state).map_err(|e| TrackingError::Decode {
            endpoint: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(write_atomically(&path, &bytes)?)
    }

    /// Deletes the journal's folder.
    pub fn remove(self) -> Result<(), TrackingError> {
        fs::remove_dir_all(&self.dir).map_err(|e| TrackingError::io(&self.dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store that is down for its first `down_for` calls and then records what it receives.
    struct FlakySink {
        down_for: usize,
        calls: usize,
        received: Vec<String>,
    }

    impl FlakySink {
        fn call(&mut self, what: String) -> Result<(), TrackingError> {
            self.calls += 1;
            if self.calls <= self.down_for {
                return Err(TrackingError::Api {
                    endpoint: "fake".to_owned(),
                    status: 503,
                    error_code: "TEMPORARILY_UNAVAILABLE".to_owned(),
                    message: "down".to_owned(),
                });
            }
            self.received.push(what);
            Ok(())
        }
    }

    impl Sink for FlakySink {
        fn target(&self) -> String {
            "http://fake".to_owned()
        }
        fn create_run(
            &mut self,
            _: &str,
            run_name: &str,
            _: i64,
            _: &[Tag],
        ) -> Result<StoredRun, TrackingError> {
            self.call(format!("create {run_name}"))?;
            Ok(StoredRun {
                run_id: "r1".to_owned(),
                experiment_id: "1".to_owned(),
                artifact_uri: "mlflow-artifacts:/1/r1/artifacts".to_owned(),
            })
        }
        fn log_batch(
            &mut self,
            _: &StoredRun,
            metrics: &[Metric],
            _: &[Param],
            _: &[Tag],
        ) -> Result<(), TrackingError> {
            let steps: Vec<String> = metrics.iter().map(|m| m.step.to_string()).collect();
            self.call(format!("metrics {}", steps.join(",")))
        }
        fn upload_artifact(
            &mut self,
            _: &StoredRun,
            relative_path: &str,
            file: &Path,
        ) -> Result<(), TrackingError> {
            let text = fs::read_to_string(file).map_err(|e| TrackingError::io(file, e))?;
            self.call(format!("artifact {relative_path}={text}"))
        }
        fn log_model(
            &mut self,
            _: &StoredRun,
            model: &ModelRecord,
        ) -> Result<String, TrackingError> {
            self.call(format!("model {}", model.name))?;
            Ok("m-1".to_owned())
        }
        fn update_run(
            &mut self,
            _: &StoredRun,
            status: RunStatus,
            _: Option<i64>,
        ) -> Result<(), TrackingError> {
            self.call(format!("status {status:?}"))
        }
    }

    fn metrics(step: i64) -> Record {
        Record::LogBatch {
            metrics: vec![Metric {
                key: "loss".to_owned(),
                value: 1.0,
                timestamp_ms: 7,
                step,
            }],
            params: Vec::new(),
            tags: Vec::new(),
        }
    }

    #[test]
    fn an_outage_delays_records_in_order_and_none_twice_even_across_reopening() {
        let spool = tempfile::tempdir().expect("spool");
        let artifact = spool.path().join("note.txt");
        fs::write(&artifact, "v1").expect("artifact");
        let mut sink = FlakySink {
            down_for: 2,
            calls: 0,
            received: Vec::new(),
        };
        let mut journal =
            Journal::create(&spool.path().join("journals"), "http://fake").expect("journal");
        journal
            .append(Record::CreateRun {
                experiment: "e".to_owned(),
                run_name: "run".to_owned(),
                start_ms: 1,
                tags: Vec::new(),
            })
            .expect("append");
        let delivery = journal.deliver(&mut sink).expect("deliver");
        assert!(delivery.outage.is_some_and(|e| e.is_transient()));
        assert_eq!(delivery.pending, 1);
        journal.append(metrics(1)).expect("append");
        journal
            .append(Record::Artifact {
                path: "notes/note.txt".to_owned(),
                file: artifact.clone(),
            })
            .expect("append");
        // The journal keeps its own copy: the original may change or go.
        fs::remove_file(&artifact).expect("remove");
        assert!(
            journal
                .deliver(&mut sink)
                .expect("deliver")
                .outage
                .is_some()
        );
        assert_eq!(journal.pending(), 3);

        // A new process picks the journal up and delivers everything once, in order.
        let dir = journal.dir().to_path_buf();
        drop(journal);
        let mut journal = Journal::open(&dir).expect("reopen");
        let delivery = journal.deliver(&mut sink).expect("deliver");
        assert!(delivery.outage.is_none());
        assert_eq!(delivery.delivered, 3);
        journal.append(metrics(2)).expect("append");
        journal
            .append(Record::UpdateRun {
                status: RunStatus::Finished,
                end_ms: Some(9),
            })
            .expect("append");
        journal.deliver(&mut sink).expect("deliver");
        assert!(journal.is_complete());
        assert_eq!(
            sink.received,
            [
                "create run",
                "metrics 1",
                "artifact notes/note.txt=v1",
                "metrics 2",
                "status Finished"
            ]
        );
        assert_eq!(journal.deliver(&mut sink).expect("again").delivered, 0);
        assert_eq!(
            Journal::list(&spool.path().join("journals"))
                .expect("list")
                .len(),
            1
        );
        journal.remove().expect("remove");
        assert!(
            Journal::list(&spool.path().join("journals"))
                .expect("list")
                .is_empty()
        );
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_a_refused_record_is_skipped() {
        let spool = tempfile::tempdir().expect("spool");
        let mut journal = Journal::create(spool.path(), "http://fake").expect("journal");
        journal
            .append(Record::CreateRun {
                experiment: "e".to_owned(),
                run_name: "run".to_owned(),
                start_ms: 1,
                tags: Vec::new(),
            })
            .expect("append");
        journal.append(metrics(1)).expect("append");
        let path = journal.dir().join(JOURNAL_FILE);
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        file.write_all(b"{\"seq\":3,\"record\":{\"op\":\"log_ba")
            .expect("torn");
        let dir = journal.dir().to_path_buf();
        let mut journal = Journal::open(&dir).expect("reopen");
        assert_eq!(journal.pending(), 2);

        /// Refuses metric batches for good (a 400), accepts the rest.
        struct Refusing(Vec<String>);
        impl Sink for Refusing {
            fn target(&self) -> String {
                "http://fake".to_owned()
            }
            fn create_run(
                &mut self,
                _: &str,
                _: &str,
                _: i64,
                _: &[Tag],
            ) -> Result<StoredRun, TrackingError> {
                self.0.push("create".to_owned());
                Ok(StoredRun {
                    run_id: "r".to_owned(),
                    experiment_id: "1".to_owned(),
                    artifact_uri: String::new(),
                })
            }
            fn log_batch(
                &mut self,
                _: &StoredRun,
                _: &[Metric],
                _: &[Param],
                _: &[Tag],
            ) -> Result<(), TrackingError> {
                Err(TrackingError::Api {
                    endpoint: "log-batch".to_owned(),
                    status: 400,
                    error_code: "INVALID_PARAMETER_VALUE".to_owned(),
                    message: "bad".to_owned(),
                })
            }
            fn upload_artifact(
                &mut self,
                _: &StoredRun,
                _: &str,
                _: &Path,
            ) -> Result<(), TrackingError> {
                Ok(())
            }
            fn log_model(
                &mut self,
                _: &StoredRun,
                _: &ModelRecord,
            ) -> Result<String, TrackingError> {
                Ok(String::new())
            }
            fn update_run(
                &mut self,
                _: &StoredRun,
                _: RunStatus,
                _: Option<i64>,
            ) -> Result<(), TrackingError> {
                self.0.push("status".to_owned());
                Ok(())
            }
        }
        let mut sink = Refusing(Vec::new());
        journal
            .append(Record::UpdateRun {
                status: RunStatus::Failed,
                end_ms: Some(2),
            })
            .expect("append after the torn line");
        let delivery = journal.deliver(&mut sink).expect("deliver");
        assert!(delivery.outage.is_none());
        assert_eq!(sink.0, ["create", "status"]);
        assert_eq!(journal.state().rejected.len(), 1);
        assert_eq!(journal.state().rejected[0].seq, 2);
        assert!(journal.is_complete());
        // The record appended after the torn tail reads back intact.
        let reopened = Journal::open(&dir).expect("reopen");
        assert_eq!(reopened.entries.len(), 3);
        assert_eq!(reopened.pending(), 0);
    }
}
