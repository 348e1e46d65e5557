//! The prediction log: every prediction appended durably to SQLite (WAL mode, full sync) by one
//! writer thread, off the async runtime. Writes that arrive together share one transaction
//! (group commit); a request is answered only once its row is on disk. Feedback labels are
//! stored in their own table and join on the request id (`labelled_predictions` view).

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
    ood_score REAL
);
CREATE TABLE IF NOT EXISTS feedback (
    request_id TEXT PRIMARY KEY REFERENCES predictions(request_id),
    label TEXT NOT NULL,
    received_unix_ms INTEGER NOT NULL
);
CREATE VIEW IF NOT EXISTS labelled_predictions AS
    SELECT p.*, f.label AS true_label, f.received_unix_ms
    FROM predictions p JOIN feedback f USING (request_id);
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
}

enum Command {
    Record(Box<PredictionRecord>, oneshot::Sender<Result<(), String>>),
    Feedback {
        request_id: String,
        label: String,
        received_unix_ms: i64,
        reply: oneshot::Sender<Result<bool, String>>,
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

    /// Stores the true label of an earlier prediction (replacing an earlier feedback); `false`
    /// when no prediction has that request id.
    pub async fn feedback(&self, request_id: &str, label: &str) -> Result<bool, ApiError> {
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

/// Adds the gate's columns to a log written before they existed.
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
    Feedback(oneshot::Sender<Result<bool, String>>, Result<bool, String>),
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
        let transaction = match self.connection.transaction() {
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
                Command::Feedback {
                    request_id,
                    label,
                    received_unix_ms,
                    reply,
                } => {
                    let result = transaction
                        .execute(
                            "INSERT INTO feedback (request_id, label, received_unix_ms)
                             SELECT ?1, ?2, ?3 WHERE EXISTS
                                 (SELECT 1 FROM predictions WHERE request_id = ?1)
                             ON CONFLICT (request_id) DO UPDATE SET
                                 label = excluded.label,
                                 received_unix_ms = excluded.received_unix_ms",
                            params![request_id, label, received_unix_ms],
                        )
                        .map(|changed| changed > 0)
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
                 label, probability, threshold, features, image_path, in_distribution, ood_score)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
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
            ],
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn answer_all(commands: Vec<Command>, reason: &str) {
    for command in commands {
        match command {
            Command::Record(_, reply) => {
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
        }
    }

    #[tokio::test]
    async fn records_join_feedback_and_images_are_kept_when_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("log/predictions.sqlite");
        let log = PredictionLog::open(&db, Some(dir.path().join("images"))).expect("open");
        log.record(record("r1")).await.expect("record");
        log.record(record("r2")).await.expect("record");
        assert!(log.feedback("r1", "non-COVID").await.expect("feedback"));
        assert!(log.feedback("r1", "COVID").await.expect("feedback again"));
        assert!(!log.feedback("nope", "COVID").await.expect("unknown id"));
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
}
