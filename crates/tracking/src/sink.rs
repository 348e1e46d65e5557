//! Where tracking records go: an MLflow server or a local MLflow file store, behind one trait
//! so the journal delivers to either.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::TrackingError;
use crate::{Metric, MlflowClient, Param, RunStatus, ServerConfig, Tag};

/// A run as its store knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRun {
    /// The store's run id.
    pub run_id: String,
    /// The experiment holding the run.
    pub experiment_id: String,
    /// Root URI of the run's artifacts.
    pub artifact_uri: String,
}

/// A model to log as an MLflow 3 logged model, output of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// The logged model's name.
    pub name: String,
    /// The model type shown by MLflow.
    pub model_type: String,
    /// Files of the model: path inside the model's artifacts, local file.
    pub files: Vec<(String, PathBuf)>,
    /// Parameters of the model.
    pub params: Vec<Param>,
    /// Tags of the model.
    pub tags: Vec<Tag>,
    /// The run step that produced it.
    pub step: i64,
}

/// Receives tracking records.
pub trait Sink {
    /// The tracking URI records go to.
    fn target(&self) -> String;
    /// Creates a run in the experiment called `experiment` (created when missing).
    fn create_run(
        &mut self,
        experiment: &str,
        run_name: &str,
        start_ms: i64,
        tags: &[Tag],
    ) -> Result<StoredRun, TrackingError>;
    /// Logs metrics, parameters and tags.
    fn log_batch(
        &mut self,
        run: &StoredRun,
        metrics: &[Metric],
        params: &[Param],
        tags: &[Tag],
    ) -> Result<(), TrackingError>;
    /// Stores a file as a run artifact at `relative_path`.
    fn upload_artifact(
        &mut self,
        run: &StoredRun,
        relative_path: &str,
        file: &Path,
    ) -> Result<(), TrackingError>;
    /// Logs a model produced by the run; returns its model id.
    fn log_model(&mut self, run: &StoredRun, model: &ModelRecord) -> Result<String, TrackingError>;
    /// Sets the run's status and end time.
    fn update_run(
        &mut self,
        run: &StoredRun,
        status: RunStatus,
        end_ms: Option<i64>,
    ) -> Result<(), TrackingError>;
}

/// Records delivered to an MLflow tracking server.
pub struct ServerSink {
    client: MlflowClient,
}

impl ServerSink {
    /// A sink for the server described by `config`.
    pub fn new(config: ServerConfig) -> Result<Self, TrackingError> {
        Ok(Self {
            client: MlflowClient::new(config)?,
        })
    }
}

impl Sink for ServerSink {
    fn target(&self) -> String {
        self.client.base_url().to_owned()
    }

    fn create_run(
        &mut self,
        experiment: &str,
        run_name: &str,
        start_ms: i64,
        tags: &[Tag],
    ) -> Result<StoredRun, TrackingError> {
        let experiment_id = self.client.get_or_create_experiment(experiment)?;
        let info = self
            .client
            .create_run(&experiment_id, run_name, start_ms, tags)?;
        Ok(StoredRun {
            run_id: info.run_id,
            experiment_id: info.experiment_id,
            artifact_uri: info.artifact_uri,
        })
    }

    fn log_batch(
        &mut self,
        run: &StoredRun,
        metrics: &[Metric],
        params: &[Param],
        tags: &[Tag],
    ) -> Result<(), TrackingError> {
        self.client.log_batch(&run.run_id, metrics, params, tags)
    }

    fn upload_artifact(
        &mut self,
        run: &StoredRun,
        relative_path: &str,
        file: &Path,
    ) -> Result<(), TrackingError> {
        self.client
            .upload_artifact(&run.artifact_uri, relative_path, file)
    }

    fn log_model(&mut self, run: &StoredRun, model: &ModelRecord) -> Result<String, TrackingError> {
        let logged = self.client.create_logged_model(
            &run.experiment_id,
            &model.name,
            Some(&run.run_id),
            &model.params,
            &model.tags,
        )?;
        for (relative, file) in &model.files {
            self.client
                .upload_artifact(&logged.artifact_location, relative, file)?;
        }
        self.client.finalize_logged_model(&logged.model_id)?;
        self.client
            .log_model_output(&run.run_id, &logged.model_id, model.step)?;
        Ok(logged.model_id)
    }

    fn update_run(
        &mut self,
        run: &StoredRun,
        status: RunStatus,
        end_ms: Option<i64>,
    ) -> Result<(), TrackingError> {
        self.client.update_run(&run.run_id, status, end_ms)
    }
}
