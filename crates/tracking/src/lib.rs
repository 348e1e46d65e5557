//! MLflow tracking for covidct: a blocking client of the MLflow 3 tracking server's REST API
//! (tested against MLflow 3.17.2), a local MLflow file store, and durable run recording.
//!
//! [`MlflowClient`] covers what covidct records about a training run and its model:
//!
//! - experiments and runs: [`MlflowClient::get_or_create_experiment`],
//!   [`MlflowClient::create_run`], [`MlflowClient::log_batch`] (split within MLflow's limits),
//!   [`MlflowClient::update_run`], [`MlflowClient::get_run`], [`MlflowClient::metric_history`];
//! - artifacts through the server's proxy (`mlflow-artifacts:/…` locations), streamed both
//!   ways: [`MlflowClient::upload_artifact`], [`MlflowClient::download_artifact`],
//!   [`MlflowClient::list_artifacts`];
//! - MLflow 3 logged models: [`MlflowClient::create_logged_model`],
//!   [`MlflowClient::finalize_logged_model`], [`MlflowClient::log_model_output`];
//! - the model registry: registered models, versions, aliases and tags, and
//!   [`MlflowClient::resolve_model_uri`] for `models:/name@alias` / `models:/name/3`
//!   ([`ModelUri`]).
//!
//! [`ServerConfig::from_env`] reads `MLFLOW_TRACKING_URI`, `MLFLOW_TRACKING_TOKEN`,
//! `MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD` as MLflow's own clients do.
//! Transient failures ([`TrackingError::is_transient`]: server unreachable, timeouts, 5xx, 429)
//! are retried with exponential backoff ([`RetryPolicy`]) and then returned, so that callers can
//! buffer records for later delivery; replaying a `log_batch` is harmless (MLflow stores a
//! metric point once per key, value, timestamp and step).
//!
//! On top of the client, what covidct's commands use: [`RunRecorder`] tracks a run through a
//! durable [`Journal`] (records survive an unreachable server and are delivered once, in order,
//! by [`sync_spool`]) into a [`Sink`]: an MLflow server ([`ServerSink`]) or a local MLflow file
//! store ([`FileStore`]), chosen by [`TrackingTarget`].
//!
//! Tracing: `info` when an experiment, run, logged model, registered model or version is
//! created, an alias set, or an artifact transferred; `warn` before each retry; `debug` per
//! request.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_docs)]

mod artifacts;
mod client;
mod error;
mod file_store;
mod journal;
mod models;
mod recorder;
mod registry;
mod run_link;
mod sink;
pub mod tags;
mod target;
mod tracking;
mod types;
mod uri;

pub use client::{Auth, DEFAULT_TIMEOUT, MlflowClient, RetryPolicy, ServerConfig};
pub use error::TrackingError;
pub use file_store::FileStore;
pub use journal::{Delivery, Entry, Journal, JournalState, Record, Rejected};
pub use models::{
    CHAMPION, Contender, GateOutcome, GateRequest, GateVerdict, MODEL_CARD_FILE, PACKAGE_FILE,
    PREVIOUS_CHAMPION, PulledModel, Registered, Registration, passes_gate, promote, pull, register,
    resolve_source,
};
pub use recorder::{RunRecorder, RunSummary, SyncOutcome, sync_spool};
pub use run_link::{LINK_FILE, RunLink, TrackingOptions, finish_run, params_of, start_run};
pub use sink::{ModelRecord, ServerSink, Sink, StoredRun};
pub use target::TrackingTarget;
pub use tracking::{
    MAX_ENTRIES_PER_BATCH, MAX_METRICS_PER_BATCH, MAX_PARAMS_PER_BATCH, MAX_TAGS_PER_BATCH,
};
pub use types::{
    ArtifactEntry, LoggedModel, LoggedModelStatus, Metric, ModelOutput, ModelVersion, Param,
    RegisteredModel, Run, RunData, RunInfo, RunStatus, Tag,
};
pub use uri::{ArtifactUri, ModelSelector, ModelUri};
