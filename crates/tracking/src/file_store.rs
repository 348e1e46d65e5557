//! A local MLflow tracking store in MLflow's own file layout (`./mlruns`), so that
//! `MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri ./mlruns` shows the runs and
//! `mlflow migrate-filestore` moves them into a database. MLflow 3 keeps this layout in
//! maintenance mode; it is the one MLflow store a program can write without MLflow's Python code.
//!
//! Layout written (as MLflow 3.17 writes it):
//! `<root>/<experiment_id>/meta.yaml`, `<root>/<experiment_id>/<run_id>/{meta.yaml, params/,
//! metrics/, tags/, artifacts/, outputs/<model_id>/meta.yaml}` and
//! `<root>/<experiment_id>/models/<model_id>/{meta.yaml, params/, tags/, artifacts/}`.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use covidct_common::write_atomically_from;

use crate::error::TrackingError;
use crate::sink::{ModelRecord, Sink, StoredRun};
use crate::{Metric, Param, RunStatus, Tag};

/// The default experiment MLflow expects in every store.
const DEFAULT_EXPERIMENT_ID: &str = "0";

/// A local MLflow file store rooted at a folder.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    /// Opens (creating when needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Self, TrackingError> {
        let root = if root.is_absolute() {
            root.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| TrackingError::io(root, e))?
                .join(root)
        };
        let store = Self { root };
        create_dir(&store.root.join(".trash"))?;
        let default = store.root.join(DEFAULT_EXPERIMENT_ID);
        if !default.join("meta.yaml").exists() {
            store.write_experiment(DEFAULT_EXPERIMENT_ID, "Default")?;
        }
        Ok(store)
    }

    /// The store's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `file://` URI of a folder inside the store.
    fn file_uri(path: &Path) -> String {
        format!("file://{}", path.display())
    }

    /// The id of the experiment called `name`, if the store has one.
    pub fn find_experiment(&self, name: &str) -> Result<Option<String>, TrackingError> {
        let entries = fs::read_dir(&self.root).map_err(|e| TrackingError::io(&self.root, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| TrackingError::io(&self.root, e))?;
            let meta = entry.path().join("meta.yaml");
            if !meta.is_file() {
                continue;
            }
            let text = fs::read_to_string(&meta).map_err(|e| TrackingError::io(&meta, e))?;
            if yaml_field(&text, "name").as_deref() == Some(name) {
                return Ok(Some(entry.file_name().to_string_lossy().into_owned()));
            }
        }
        Ok(None)
    }

    fn write_experiment(&self, id: &str, name: &str) -> Result<(), TrackingError> {
        let dir = self.root.join(id);
        create_dir(&dir)?;
        let now = now_ms();
        let meta = yaml(&[
            ("artifact_location", quoted(&Self::file_uri(&dir))),
            ("creation_time", now.to_string()),
            ("experiment_id", quoted(id)),
            ("last_update_time", now.to_string()),
            ("lifecycle_stage", "active".to_owned()),
            ("name", quoted(name)),
            ("workspace", "default".to_owned()),
        ]);
        self.write_file(&dir.join("meta.yaml"), meta.as_bytes())
    }

    fn experiment_id(&self, name: &str) -> Result<String, TrackingError> {
        if let Some(id) = self.find_experiment(name)? {
            return Ok(id);
        }
        let id = unique_integer_id();
        self.write_experiment(&id, name)?;
        Ok(id)
    }

    fn run_dir(&self, run: &StoredRun) -> PathBuf {
        self.root.join(&run.experiment_id).join(&run.run_id)
    }

    fn write_run_meta(
        &self,
        run: &StoredRun,
        run_name: &str,
        start_ms: i64,
        status: RunStatus,
        end_ms: Option<i64>,
    ) -> Result<(), TrackingError> {
        let meta = yaml(&[
            ("artifact_uri", quoted(&run.artifact_uri)),
            (
                "end_time",
                end_ms.map_or_else(|| "null".to_owned(), |t| t.to_string()),
            ),
            ("entry_point_name", quoted("")),
            ("experiment_id", quoted(&run.experiment_id)),
            ("lifecycle_stage", "active".to_owned()),
            ("run_id", run.run_id.clone()),
            ("run_name", quoted(run_name)),
            ("source_name", quoted("")),
            // SourceType.LOCAL
            ("source_type", "4".to_owned()),
            ("source_version", quoted("")),
            ("start_time", start_ms.to_string()),
            ("status", run_status_code(status).to_string()),
            ("tags", "[]".to_owned()),
            ("user_id", quoted(&user())),
        ]);
        self.write_file(&self.run_dir(run).join("meta.yaml"), meta.as_bytes())
    }

    fn write_values<'a>(
        &self,
        dir: &Path,
        values: impl Iterator<Item = (&'a String, &'a String)>,
    ) -> Result<(), TrackingError> {
        for (key, value) in values {
            self.write_file(&key_path(dir, key)?, value.as_bytes())?;
        }
        Ok(())
    }

    fn copy_into(&self, dir: &Path, relative: &str, file: &Path) -> Result<(), TrackingError> {
        let mut source = fs::File::open(file).map_err(|e| TrackingError::io(file, e))?;
        Ok(write_atomically_from(
            &key_path(dir, relative)?,
            &self.root,
            &mut source,
        )?)
    }

    /// Writes `path` atomically, the temporary file in the store's root: outside the folders
    /// MLflow lists (params/, metrics/, tags/…), so a crash leaves no stray key.
    fn write_file(&self, path: &Path, mut bytes: &[u8]) -> Result<(), TrackingError> {
        Ok(write_atomically_from(path, &self.root, &mut bytes)?)
    }
}

impl Sink for FileStore {
    fn target(&self) -> String {
        Self::file_uri(&self.root)
    }

    fn create_run(
        &mut self,
        experiment: &str,
        run_name: &str,
        start_ms: i64,
        tags: &[Tag],
    ) -> Result<StoredRun, TrackingError> {
        let experiment_id = self.experiment_id(experiment)?;
        let run_id = random_hex_id();
        let dir = self.root.join(&experiment_id).join(&run_id);
        for sub in ["params", "metrics", "tags", "artifacts"] {
            create_dir(&dir.join(sub))?;
        }
        let run = StoredRun {
            run_id,
            experiment_id,
            artifact_uri: Self::file_uri(&dir.join("artifacts")),
        };
        self.write_run_meta(&run, run_name, start_ms, RunStatus::Running, None)?;
        let mut all_tags = vec![Tag::new("mlflow.runName", run_name)];
        all_tags.extend_from_slice(tags);
        self.write_values(
            &dir.join("tags"),
            all_tags.iter().map(|t| (&t.key, &t.value)),
        )?;
        Ok(run)
    }

    fn log_batch(
        &mut self,
        run: &StoredRun,
        metrics: &[Metric],
        params: &[Param],
        tags: &[Tag],
    ) -> Result<(), TrackingError> {
        let dir = self.run_dir(run);
        for param in params {
            let path = key_path(&dir.join("params"), &param.key)?;
            if let Ok(existing) = fs::read_to_string(&path)
                && existing != param.value
            {
                return Err(TrackingError::Api {
                    endpoint: path.display().to_string(),
                    status: 400,
                    error_code: "INVALID_PARAMETER_VALUE".to_owned(),
                    message: format!(
                        "parameter `{}` was already logged as `{existing}`; parameters cannot \
                         change within a run (new value `{}`)",
                        param.key, param.value
                    ),
                });
            }
        }
        self.write_values(
            &dir.join("params"),
            params.iter().map(|p| (&p.key, &p.value)),
        )?;
        self.write_values(&dir.join("tags"), tags.iter().map(|t| (&t.key, &t.value)))?;
        for metric in metrics {
            let path = key_path(&dir.join("metrics"), &metric.key)?;
            let mut file = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| TrackingError::io(&path, e))?;
            writeln!(
                file,
                "{} {} {}",
                metric.timestamp_ms, metric.value, metric.step
            )
            .map_err(|e| TrackingError::io(&path, e))?;
        }
        Ok(())
    }

    fn upload_artifact(
        &mut self,
        run: &StoredRun,
        relative_path: &str,
        file: &Path,
    ) -> Result<(), TrackingError> {
        self.copy_into(&self.run_dir(run).join("artifacts"), relative_path, file)
    }

    fn log_model(&mut self, run: &StoredRun, model: &ModelRecord) -> Result<String, TrackingError> {
        let model_id = format!("m-{}", random_hex_id());
        let dir = self
            .root
            .join(&run.experiment_id)
            .join("models")
            .join(&model_id);
        for sub in ["params", "metrics", "tags", "artifacts"] {
            create_dir(&dir.join(sub))?;
        }
        for (relative, file) in &model.files {
            self.copy_into(&dir.join("artifacts"), relative, file)?;
        }
        self.write_values(
            &dir.join("params"),
            model.params.iter().map(|p| (&p.key, &p.value)),
        )?;
        self.write_values(
            &dir.join("tags"),
            model.tags.iter().map(|t| (&t.key, &t.value)),
        )?;
        let now = now_ms();
        let meta = yaml(&[
            (
                "artifact_location",
                quoted(&Self::file_uri(&dir.join("artifacts"))),
            ),
            ("creation_timestamp", now.to_string()),
            ("experiment_id", quoted(&run.experiment_id)),
            ("last_updated_timestamp", now.to_string()),
            ("model_id", model_id.clone()),
            ("model_type", quoted(&model.model_type)),
            ("name", quoted(&model.name)),
            ("source_run_id", run.run_id.clone()),
            // LoggedModelStatus.READY
            ("status", "2".to_owned()),
            ("status_message", "null".to_owned()),
        ]);
        self.write_file(&dir.join("meta.yaml"), meta.as_bytes())?;
        let output = self.run_dir(run).join("outputs").join(&model_id);
        create_dir(&output)?;
        let link = yaml(&[
            ("destination_id", model_id.clone()),
            ("destination_type", "MODEL_OUTPUT".to_owned()),
            ("source_id", model_id.clone()),
            ("source_type", "RUN_OUTPUT".to_owned()),
            ("step", model.step.to_string()),
            ("tags", "{}".to_owned()),
        ]);
        self.write_file(&output.join("meta.yaml"), link.as_bytes())?;
        Ok(model_id)
    }

    fn update_run(
        &mut self,
        run: &StoredRun,
        status: RunStatus,
        end_ms: Option<i64>,
    ) -> Result<(), TrackingError> {
        let path = self.run_dir(run).join("meta.yaml");
        let text = fs::read_to_string(&path).map_err(|e| TrackingError::io(&path, e))?;
        let field = |key: &str| yaml_field(&text, key).unwrap_or_default();
        let start_ms = field("start_time").parse().unwrap_or_else(|_| now_ms());
        self.write_run_meta(run, &field("run_name"), start_ms, status, end_ms)
    }
}

/// MLflow's numeric `RunStatus` codes.
fn run_status_code(status: RunStatus) -> u8 {
    match status {
        RunStatus::Running => 1,
        RunStatus::Finished => 3,
        RunStatus::Failed => 4,
        RunStatus::Killed => 5,
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// 32 random hex digits (MLflow's run id format).
pub fn random_hex_id() -> String {
    let mut bytes = [0u8; 16];
    fill_random(&mut bytes);
    hex::encode(bytes)
}

/// A positive 63-bit decimal id (MLflow's experiment id format for file stores).
fn unique_integer_id() -> String {
    let mut bytes = [0u8; 8];
    fill_random(&mut bytes);
    (u64::from_le_bytes(bytes) >> 1).max(1).to_string()
}

fn fill_random(bytes: &mut [u8]) {
    use rand::RngCore;
    rand::rng().fill_bytes(bytes);
}

fn user() -> String {
    std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned())
}

/// A YAML mapping of already-rendered scalar values, one per line.
fn yaml(fields: &[(&str, String)]) -> String {
    fields
        .iter()
        .map(|(key, value)| format!("{key}: {value}\n"))
        .collect()
}

/// A single-quoted YAML string.
fn quoted(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The scalar value of a top-level `key: value` line, unquoted.
fn yaml_field(text: &str, key: &str) -> Option<String> {
    let prefix = format!("{key}: ");
    let raw = text.lines().find_map(|line| line.strip_prefix(&prefix))?;
    let raw = raw.trim();
    Some(
        match raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
            Some(inner) => inner.replace("''", "'"),
            None => raw
                .strip_prefix('"')
                .and_then(|r| r.strip_suffix('"'))
                .unwrap_or(raw)
                .to_owned(),
        },
    )
}

/// The file for a param, metric or tag key; MLflow keys may hold `/` (sub-folders) but never
/// climb out of the folder.
fn key_path(dir: &Path, key: &str) -> Result<PathBuf, TrackingError> {
    let relative = safe_relative(key)?;
    let path = dir.join(relative);
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    Ok(path)
}

/// Checks that a key or artifact path stays inside its folder.
fn safe_relative(path: &str) -> Result<&Path, TrackingError> {
    let relative = Path::new(path);
    let ok = !path.is_empty()
        && relative
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if ok {
        Ok(relative)
    } else {
        Err(TrackingError::InvalidUri {
            uri: path.to_owned(),
            reason: "a key or artifact path must be relative and must not contain `..`".to_owned(),
        })
    }
}

fn create_dir(dir: &Path) -> Result<(), TrackingError> {
    fs::create_dir_all(dir).map_err(|e| TrackingError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_fields_round_trip_through_quoting() {
        let text = yaml(&[("name", quoted("it's a test")), ("status", "3".to_owned())]);
        assert_eq!(yaml_field(&text, "name").as_deref(), Some("it's a test"));
        assert_eq!(yaml_field(&text, "status").as_deref(), Some("3"));
        assert_eq!(
            yaml_field("name: plain\n", "name").as_deref(),
            Some("plain")
        );
        assert_eq!(yaml_field(&text, "missing"), None);
    }

    #[test]
    fn keys_cannot_escape_their_folder() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(key_path(dir.path(), "../evil").is_err());
        assert!(key_path(dir.path(), "/abs").is_err());
        assert!(key_path(dir.path(), "").is_err());
        let nested = key_path(dir.path(), "eval/roc_auc").expect("nested key");
        assert!(nested.starts_with(dir.path()));
    }

    #[test]
    fn runs_land_in_mlflow_layout() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = FileStore::open(dir.path()).expect("store");
        let run = store
            .create_run("exp", "first", 1000, &[Tag::new("a", "b")])
            .expect("run");
        let metric = Metric {
            key: "loss".to_owned(),
            value: 0.5,
            timestamp_ms: 1001,
            step: 1,
        };
        store
            .log_batch(&run, &[metric], &[Param::new("lr", "0.001")], &[])
            .expect("batch");
        // The same parameter again is fine, another value is refused with the key named.
        store
            .log_batch(&run, &[], &[Param::new("lr", "0.001")], &[])
            .expect("same value");
        let err = store
            .log_batch(&run, &[], &[Param::new("lr", "0.1")], &[])
            .expect_err("changed value");
        assert!(err.to_string().contains("lr"), "{err}");
        store
            .update_run(&run, RunStatus::Finished, Some(2000))
            .expect("end");
        let run_dir = dir.path().join(&run.experiment_id).join(&run.run_id);
        let metrics = fs::read_to_string(run_dir.join("metrics/loss")).expect("metrics");
        assert_eq!(metrics, "1001 0.5 1\n");
        let meta = fs::read_to_string(run_dir.join("meta.yaml")).expect("meta");
        assert_eq!(yaml_field(&meta, "status").as_deref(), Some("3"));
        assert_eq!(yaml_field(&meta, "run_name").as_deref(), Some("first"));
        assert_eq!(yaml_field(&meta, "start_time").as_deref(), Some("1000"));
        assert_eq!(
            store.find_experiment("exp").expect("find"),
            Some(run.experiment_id.clone())
        );
    }
}
