//! The prediction log: every prediction appended durably to SQLite (WAL mode, full sync) by one
//! writer thread, off the async runtime. Writes that arrive together share one transaction
//! (group commit); a request is answered only once its row is on disk. Feedback labels are
//! stored in their own table and join on the request id (`labelled_predictions` view). A study
//! is one `studies` row and one `predictions` row per slice (with its `study_id` and
//! `slice_index`), written in one transaction; its feedback goes to `study_feedback`
//! (`labelled_studies` view).

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};

use covidct_imaging::ImageFeatures;
use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use crate::error::{ApiError, ServeError};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS predictions (
    request_id TEXT PRIMARY KEY,
    created_unix_ms INTEGER NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    label TEXT NOT NULL,
    probability REAL NOT NULL,
    threshold REAL NOT NULL,
    features TEXT NOT NULL,
    image_path TEXT,
    in_distribution INTEGER NOT NULL DEFAULT 1,
    ood_score REAL,
    study_id TEXT,
    slice_index INTEGER
);
CREATE TABLE IF NOT EXISTS feedback (
    request_id TEXT PRIMARY KEY REFERENCES predictions(request_id),
    label TEXT NOT NULL,
    received_unix_ms INTEGER NOT NULL
);
CREATE VIEW IF NOT EXISTS labelled_predictions AS
    SELECT p.*, f.label AS true_label, f.received_unix_ms
    FROM predictions p JOIN feedback f USING (request_id);
CREATE TABLE IF NOT EXISTS studies (
    study_id TEXT PRIMARY KEY,
    created_unix_ms INTEGER NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    label TEXT NOT NULL,
    probability REAL,
    threshold REAL NOT NULL,
    rule TEXT NOT NULL,
    slices INTEGER NOT NULL,
    used INTEGER NOT NULL,
    refused INTEGER NOT NULL,
    study_uid TEXT,
    series_uid TEXT,
    reason TEXT
);
CREATE TABLE IF NOT EXISTS study_feedback (
    study_id TEXT PRIMARY KEY REFERENCES studies(study_id),
    label TEXT NOT NULL,
    received_unix_ms INTEGER NOT NULL
);
CREATE VIEW IF NOT EXISTS labelled_studies AS
    SELECT s.*, f.label AS true_label, f.received_unix_ms
    FROM studies s JOIN study_feedback f USING (study_id);
";

/// Most writes committed in one transaction.
const GROUP_COMMIT: usize = 256;

/// One logged prediction.
#[derive(Debug, Clone)]
pub struct PredictionRecord {
    /// The request id the client got (and gives back with feedback).
    pub request_id: String,
    /// When, in milliseconds since the Unix epoch.
    pub created_unix_ms: i64,
    /// Model name.
    pub model_name: String,
    /// Model version.
    pub model_version: String,
    /// Predicted label.
    pub label: String,
    /// Calibrated probability of the positive class.
    pub probability: f64,
    /// Threshold applied.
    pub threshold: f64,
    /// Monitoring features of the decoded image.
    pub features: ImageFeatures,
    /// Whether the out-of-distribution gate let the image through (refused images are logged
    /// with an empty label: the model gave no answer).
    pub in_distribution: bool,
    /// The gate's feature score, when the model has a gate.
    pub ood_score: Option<f64>,
    /// The uploaded bytes and a file extension, when images are stored.
    pub image: Option<(axum::body::Bytes, &'static str)>,
    /// The study this slice belongs to and its position in the study's order.
    pub study: Option<(String, usize)>,
}

/// One logged study (its slices are [`PredictionRecord`]s with [`PredictionRecord::study`]).
#[derive(Debug, Clone)]
pub struct StudyRecord {
    /// The study id the client got (and gives back with feedback).
    pub study_id: String,
    /// When, in milliseconds since the Unix epoch.
    pub created_unix_ms: i64,
    /// Model name.
    pub model_name: String,
    /// Model version.
    pub model_version: String,
    /// Predicted study label; empty when the study got no verdict.
    pub label: String,
    /// Calibrated study probability, when there is a verdict.
    pub probability: Option<f64>,
    /// The study threshold (NaN-free; 0 when the package has no study rule).
    pub threshold: f64,
    /// The aggregation rule, as text (empty without one).
    pub rule: String,
    /// Slices received for this study (decoded).
    pub slices: usize,
    /// Slices in the study score.
    pub used: usize,
    /// Slices the out-of-distribution gate refused.
    pub refused: usize,
    /// DICOM StudyInstanceUID.
    pub study_uid: Option<String>,
    /// DICOM SeriesInstanceUID.
    pub series_uid: Option<String>,
    /// Why there is no verdict.
    pub reason: Option<String>,
}

/// What a feedback id named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedbackTarget {
    /// A single-image prediction (or one slice of a study).
    Prediction,
    /// A study.
    Study,
}

enum Command {
    Record(Box<PredictionRecord>, oneshot::Sender<Result<(), String>>),
    Study(
        Box<StudyRecord>,
        Vec<PredictionRecord>,
        oneshot::Sender<Result<(), String>>,
    ),
    Feedback {
        request_id: String,
        label: String,
        received_unix_ms: i64,
        reply: oneshot::Sender<Result<Option<FeedbackTarget>, String>>,
    },
}

/// Handle to the writer thread.
pub struct PredictionLog {
    sender: Sender<Command>,
    store_images: Option<PathBuf>,
}

impl PredictionLog {
    /// Opens (or creates) the database at `path`; with `store_images`, uploaded images are
    /// written there as `<request id>.<ext>`.
    pub fn open(path: &Path, store_images: Option<PathBuf>) -> Result<Self, ServeError> {
        let fail = |reason: String| ServeError::Log {
            path: path.to_path_buf(),
            reason,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
        }
        if let Some(dir) = &store_images {
            std::fs::create_dir_all(dir)
                .map_err(|e| fail(format!("image folder {}: {e}", dir.display())))?;
        }
        let connection = Connection::open(path).map_err(|e| fail(e.to_string()))?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .and_then(|_| connection.pragma_update(None, "synchronous", "FULL"))
            .and_then(|_| connection.pragma_update(None, "foreign_keys", "ON"))
            .and_then(|_| connection.busy_timeout(std::time::Duration::from_secs(5)))
            .and_then(|_| connection.execute_batch(SCHEMA))
            .and_then(|_| add_gate_columns(&connection))
            .map_err(|e| fail(e.to_string()))?;
        let (sender, receiver) = mpsc::channel();
        let writer = Writer {
            connection,
            store_images: store_images.clone(),
        };
        std::thread::Builder::new()
            .name("covidct-prediction-log".to_owned())
            .spawn(move || writer.run(receiver))
            .map_err(|e| fail(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            sender,
            store_images,
        })
    }

    /// Whether uploaded images are kept.
    pub fn stores_images(&self) -> bool {
        self.store_images.is_some()
    }

    /// Appends a prediction; returns once it is committed.
    pub async fn record(&self, record: PredictionRecord) -> Result<(), ApiError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Record(Box::new(record), reply))?;
        answer
            .await
            .map_err(|_| ApiError::internal("the prediction log stopped"))?
            .map_err(ApiError::internal)
    }

    /// Appends a study and its slices in one transaction; returns once it is committed.
    pub async fn record_study(
        &self,
        study: StudyRecord,
        slices: Vec<PredictionRecord>,
    ) -> Result<(), ApiError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Study(Box::new(study), slices, reply))?;
        answer
            .await
            .map_err(|_| ApiError::internal("the prediction log stopped"))?
            .map_err(ApiError::internal)
    }

    /// Stores the true label of an earlier prediction or study (replacing an earlier
    /// feedback); `None` when no prediction or study has that id.
    pub async fn feedback(
        &self,
        request_id: &str,
        label: &str,
    ) -> Result<Option<FeedbackTarget>, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Feedback {
            request_id: request_id.to_owned(),
            label: label.to_owned(),
            received_unix_ms: now_unix_ms(),
            reply,
        })?;
        answer
            .await
            .map_err(|_| ApiError::internal("the prediction log stopped"))?
            .map_err(ApiError::internal)
    }

    fn send(&self, command: Command) -> Result<(), ApiError> {
        self.sender
            .send(command)
            .map_err(|_| ApiError::internal("the prediction log writer has stopped"))
    }
}

/// Adds the gate's and the studies' columns to a log written before they existed.
fn add_gate_columns(connection: &Connection) -> rusqlite::Result<()> {
    let mut statement = connection.prepare("SELECT name FROM pragma_table_info('predictions')")?;
    let columns: Vec<String> = statement
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if !columns.iter().any(|c| c == "in_distribution") {
        connection.execute_batch(
            "ALTER TABLE predictions ADD COLUMN in_distribution INTEGER NOT NULL DEFAULT 1;
             ALTER TABLE predictions ADD COLUMN ood_score REAL;",
        )?;
    }
    if !columns.iter().any(|c| c == "study_id") {
        connection.execute_batch(
            "ALTER TABLE predictions ADD COLUMN study_id TEXT;
             ALTER TABLE predictions ADD COLUMN slice_index INTEGER;",
        )?;
    }
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

struct Writer {
    connection: Connection,
    store_images: Option<PathBuf>,
}

/// The outcome of one command inside a transaction, answered after the commit.
enum Outcome {
    Record(oneshot::Sender<Result<(), String>>, Result<(), String>),
    Feedback(
        oneshot::Sender<Result<Option<FeedbackTarget>, String>>,
        Result<Option<FeedbackTarget>, String>,
    ),
}

impl Writer {
    fn run(mut self, receiver: Receiver<Command>) {
        while let Ok(first) = receiver.recv() {
            let mut commands = vec![first];
            while commands.len() < GROUP_COMMIT {
                match receiver.try_recv() {
                    Ok(command) => commands.push(command),
                    Err(_) => break,
                }
            }
            self.commit(commands);
        }
    }

    fn commit(&mut self, commands: Vec<Command>) {
        let mut transaction = match self.connection.transaction() {
            Ok(t) => t,
            Err(e) => return answer_all(commands, &e.to_string()),
        };
        let mut outcomes = Vec::with_capacity(commands.len());
        for command in commands {
            outcomes.push(match command {
                Command::Record(record, reply) => {
                    let result = insert(&transaction, &record, self.store_images.as_deref());
                    Outcome::Record(reply, result)
                }
                Command::Study(study, slices, reply) => {
                    // One savepoint per study: a failed study leaves no partial rows behind.
                    let result = transaction.savepoint().map_err(|e| e.to_string()).and_then(
                        |mut savepoint| {
                            insert_study(&savepoint, &study)?;
                            for slice in &slices {
                                insert(&savepoint, slice, self.store_images.as_deref())?;
                            }
                            savepoint.set_drop_behavior(rusqlite::DropBehavior::Commit);
                            Ok(())
                        },
                    );
                    Outcome::Record(reply, result)
                }
                Command::Feedback {
                    request_id,
                    label,
                    received_unix_ms,
                    reply,
                } => {
                    let result =
                        store_feedback(&transaction, &request_id, &label, received_unix_ms)
                            .map_err(|e| e.to_string());
                    Outcome::Feedback(reply, result)
                }
            });
        }
        let committed = transaction.commit().map_err(|e| e.to_string());
        for outcome in outcomes {
            // A reply nobody waits for any more (client gone) is dropped.
            match outcome {
                Outcome::Record(reply, result) => {
                    let _ = reply.send(committed.clone().and(result));
                }
                Outcome::Feedback(reply, result) => {
                    let _ = reply.send(committed.clone().and(result));
                }
            }
        }
    }
}

/// Stores feedback on a prediction, else on a study, with that id.
fn store_feedback(
    connection: &Connection,
    id: &str,
    label: &str,
    received_unix_ms: i64,
) -> rusqlite::Result<Option<FeedbackTarget>> {
    for (target, table, key, source) in [
        (
            FeedbackTarget::Prediction,
            "feedback",
            "request_id",
            "predictions",
        ),
        (
            FeedbackTarget::Study,
            "study_feedback",
            "study_id",
            "studies",
        ),
    ] {
        let changed = connection.execute(
            &format!(
                "INSERT INTO {table} ({key}, label, received_unix_ms)
                 SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM {source} WHERE {key} = ?1)
                 ON CONFLICT ({key}) DO UPDATE SET
                     label = excluded.label, received_unix_ms = excluded.received_unix_ms"
            ),
            params![id, label, received_unix_ms],
        )?;
        if changed > 0 {
            return Ok(Some(target));
        }
    }
    Ok(None)
}

fn insert_study(connection: &Connection, study: &StudyRecord) -> Result<(), String> {
    connection
        .execute(
            "INSERT INTO studies (study_id, created_unix_ms, model_name, model_version, label,
                 probability, threshold, rule, slices, used, refused, study_uid, series_uid,
                 reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                study.study_id,
                study.created_unix_ms,
                study.model_name,
                study.model_version,
                study.label,
                study.probability,
                study.threshold,
                study.rule,
                study.slices as i64,
                study.used as i64,
                study.refused as i64,
                study.study_uid,
                study.series_uid,
                study.reason,
            ],
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn insert(
    connection: &Connection,
    record: &PredictionRecord,
    store_images: Option<&Path>,
) -> Result<(), String> {
    let image_path = match (&record.image, store_images) {
        (Some((bytes, ext)), Some(dir)) => {
            let path = dir.join(format!("{}.{ext}", record.request_id));
            std::fs::write(&path, bytes)
                .map_err(|e| format!("cannot store image {}: {e}", path.display()))?;
            Some(path.display().to_string())
        }
        _ => None,
    };
    let features = serde_json::to_string(&record.features).map_err(|e| e.to_string())?;
    connection
        .execute(
            "INSERT INTO predictions (request_id, created_unix_ms, model_name, model_version,
                 label, probability, threshold, features, image_path, in_distribution, ood_score,
                 study_id, slice_index)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                record.request_id,
                record.created_unix_ms,
                record.model_name,
                record.model_version,
                record.label,
                record.probability,
                record.threshold,
                features,
                image_path,
                record.in_distribution,
                record.ood_score,
                record.study.as_ref().map(|(id, _)| id),
                record.study.as_ref().map(|&(_, i)| i as i64),
            ],
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn answer_all(commands: Vec<Command>, reason: &str) {
    for command in commands {
        match command {
            Command::Record(_, reply) | Command::Study(_, _, reply) => {
                let _ = reply.send(Err(reason.to_owned()));
            }
            Command::Feedback { reply, .. } => {
                let _ = reply.send(Err(reason.to_owned()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use covidct_imaging::{GreyImage, image_features};

    fn record(id: &str) -> PredictionRecord {
        PredictionRecord {
            request_id: id.to_owned(),
            created_unix_ms: now_unix_ms(),
            model_name: "m".into(),
            model_version: "1".into(),
            label: "COVID".into(),
            probability: 0.9,
            threshold: 0.5,
            features: image_features(&GreyImage::filled(4, 4, 9)),
            in_distribution: true,
            ood_score: Some(0.8),
            image: Some((axum::body::Bytes::from_static(b"png"), "png")),
            study: None,
        }
    }

    #[tokio::test]
    async fn records_join_feedback_and_images_are_kept_when_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("log/predictions.sqlite");
        let log = PredictionLog::open(&db, Some(dir.path().join("images"))).expect("open");
        log.record(record("r1")).await.expect("record");
        log.record(record("r2")).await.expect("record");
        let prediction = Some(FeedbackTarget::Prediction);
        assert_eq!(
            log.feedback("r1", "non-COVID").await.expect("feedback"),
            prediction
        );
        assert_eq!(
            log.feedback("r1", "COVID").await.expect("again"),
            prediction
        );
        assert_eq!(
            log.feedback("nope", "COVID").await.expect("unknown id"),
            None
        );
        assert!(log.record(record("r1")).await.is_err(), "duplicate id");
        drop(log);

        let connection = Connection::open(&db).expect("reopen");
        let mode: String = connection
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("mode");
        assert_eq!(mode, "wal");
        let (id, truth, mean): (String, String, f64) = connection
            .query_row(
                "SELECT request_id, true_label, json_extract(features, '$.mean')
                 FROM labelled_predictions",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("joined row");
        assert_eq!((id.as_str(), truth.as_str(), mean), ("r1", "COVID", 9.0));
        assert!(dir.path().join("images/r2.png").is_file());
    }

    fn study(id: &str) -> StudyRecord {
        StudyRecord {
            study_id: id.to_owned(),
            created_unix_ms: now_unix_ms(),
            model_name: "m".into(),
            model_version: "1".into(),
            label: "COVID".into(),
            probability: Some(0.8),
            threshold: 0.5,
            rule: "mean".into(),
            slices: 2,
            used: 2,
            refused: 0,
            study_uid: Some("1.2".into()),
            series_uid: None,
            reason: None,
        }
    }

    fn slice(study: &str, index: usize) -> PredictionRecord {
        PredictionRecord {
            study: Some((study.to_owned(), index)),
            image: None,
            ..record(&format!("{study}-{index}"))
        }
    }

    #[tokio::test]
    async fn a_study_is_written_whole_or_not_at_all_and_takes_feedback() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("predictions.sqlite");
        let log = PredictionLog::open(&db, None).expect("open");
        log.record_study(study("s1"), vec![slice("s1", 0), slice("s1", 1)])
            .await
            .expect("study");
        // A slice id already taken fails the second study, which leaves no row behind.
        let clash = log
            .record_study(study("s2"), vec![slice("s2", 0), slice("s1", 1)])
            .await;
        assert!(clash.is_err());
        assert_eq!(
            log.feedback("s1", "COVID").await.expect("feedback"),
            Some(FeedbackTarget::Study)
        );
        assert_eq!(log.feedback("s2", "COVID").await.expect("absent"), None);
        drop(log);
        let connection = Connection::open(&db).expect("reopen");
        let count =
            |sql: &str| -> i64 { connection.query_row(sql, [], |r| r.get(0)).expect("count") };
        assert_eq!(count("SELECT COUNT(*) FROM studies"), 1);
        assert_eq!(
            count("SELECT COUNT(*) FROM predictions WHERE study_id = 's1'"),
            2
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM predictions WHERE study_id = 's2'"),
            0
        );
        assert_eq!(count("SELECT MAX(slice_index) FROM predictions"), 1);
        assert_eq!(count("SELECT COUNT(*) FROM labelled_studies"), 1);
    }
}
