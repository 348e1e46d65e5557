//! The records this crate sends and receives, and the private shapes of MLflow's JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// One point of a metric's history.
///
/// Serialized (for journals) with the field names below; on the wire MLflow calls
/// `timestamp_ms` `timestamp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// The metric's name, e.g. `val_auc`.
    pub key: String,
    /// Its value; must be finite to be sent (JSON has no NaN or infinity).
    pub value: f64,
    /// When it was measured, in milliseconds since the UNIX epoch.
    pub timestamp_ms: i64,
    /// The training step (or epoch) it belongs to.
    pub step: i64,
}

/// A run parameter. MLflow refuses to change a parameter's value once logged (logging the same
/// value again is accepted).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Param {
    /// The parameter's name.
    pub key: String,
    /// Its value (at most 6000 characters for MLflow).
    pub value: String,
}

/// A tag on a run, logged model or model version (tags, unlike parameters, can be overwritten).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tag {
    /// The tag's name.
    pub key: String,
    /// Its value.
    pub value: String,
}

impl Param {
    /// A parameter from anything string-like.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

impl Tag {
    /// A tag from anything string-like.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

impl Metric {
    /// A metric point.
    pub fn new(key: impl Into<String>, value: f64, timestamp_ms: i64, step: i64) -> Self {
        Self {
            key: key.into(),
            value,
            timestamp_ms,
            step,
        }
    }
}

/// The lifecycle status of a run. Serialized in snake_case (`"finished"`); MLflow's spelling
/// (`"FINISHED"`) is [`RunStatus::as_mlflow_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The run is in progress.
    Running,
    /// The run ended normally.
    Finished,
    /// The run ended with an error.
    Failed,
    /// The run was stopped (e.g. Ctrl-C).
    Killed,
}

impl RunStatus {
    /// MLflow's name of the status, as sent on the wire: `RUNNING`, `FINISHED`, `FAILED`,
    /// `KILLED`.
    pub fn as_mlflow_str(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Finished => "FINISHED",
            Self::Failed => "FAILED",
            Self::Killed => "KILLED",
        }
    }

    /// The status from MLflow's name (`SCHEDULED` and unknown names give `None`).
    pub fn from_mlflow_str(name: &str) -> Option<Self> {
        match name {
            "RUNNING" => Some(Self::Running),
            "FINISHED" => Some(Self::Finished),
            "FAILED" => Some(Self::Failed),
            "KILLED" => Some(Self::Killed),
            _ => None,
        }
    }

    /// Whether the run has ended (finished, failed or killed).
    pub fn is_terminated(self) -> bool {
        !matches!(self, Self::Running)
    }
}

/// The metadata of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The run's id (32 hex digits).
    pub run_id: String,
    /// The experiment the run belongs to.
    pub experiment_id: String,
    /// The run's display name.
    pub run_name: String,
    /// Its status.
    pub status: RunStatus,
    /// Where its artifacts go, e.g. `mlflow-artifacts:/1/<run_id>/artifacts`.
    pub artifact_uri: String,
    /// Start time, in milliseconds since the UNIX epoch.
    pub start_time_ms: Option<i64>,
    /// End time, once the run has ended.
    pub end_time_ms: Option<i64>,
    /// `active` or `deleted`.
    pub lifecycle_stage: String,
}

/// A run's parameters, latest metric values and tags.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunData {
    /// The latest value of each metric (use [`MlflowClient::metric_history`] for every point).
    ///
    /// [`MlflowClient::metric_history`]: crate::MlflowClient::metric_history
    pub metrics: Vec<Metric>,
    /// The parameters.
    pub params: Vec<Param>,
    /// The tags, including MLflow's own (`mlflow.runName`, `mlflow.user`…).
    pub tags: Vec<Tag>,
}

impl RunData {
    /// The value of parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.value.as_str())
    }

    /// The value of tag `key`.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.as_str())
    }

    /// The latest point of metric `key`.
    pub fn metric(&self, key: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.key == key)
    }
}

/// A logged model recorded as an output of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelOutput {
    /// The logged model's id (`m-…`).
    pub model_id: String,
    /// The step at which the run produced it.
    pub step: i64,
}

/// A run: its metadata, data, and the logged models it produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Metadata.
    pub info: RunInfo,
    /// Parameters, latest metrics, tags.
    pub data: RunData,
    /// Logged models linked to the run as outputs ([`MlflowClient::log_model_output`]).
    ///
    /// [`MlflowClient::log_model_output`]: crate::MlflowClient::log_model_output
    pub model_outputs: Vec<ModelOutput>,
}

/// The status of an MLflow 3 logged model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoggedModelStatus {
    /// The server did not say.
    Unspecified,
    /// Created; its files are not all uploaded yet.
    Pending,
    /// Finalized: its files are complete.
    Ready,
    /// Uploading its files failed.
    UploadFailed,
}

impl LoggedModelStatus {
    /// MLflow's name of the status, e.g. `LOGGED_MODEL_READY`.
    pub fn as_mlflow_str(self) -> &'static str {
        match self {
            Self::Unspecified => "LOGGED_MODEL_STATUS_UNSPECIFIED",
            Self::Pending => "LOGGED_MODEL_PENDING",
            Self::Ready => "LOGGED_MODEL_READY",
            Self::UploadFailed => "LOGGED_MODEL_UPLOAD_FAILED",
        }
    }

    fn from_mlflow_str(name: &str) -> Option<Self> {
        match name {
            "LOGGED_MODEL_STATUS_UNSPECIFIED" | "" => Some(Self::Unspecified),
            "LOGGED_MODEL_PENDING" => Some(Self::Pending),
            "LOGGED_MODEL_READY" => Some(Self::Ready),
            "LOGGED_MODEL_UPLOAD_FAILED" => Some(Self::UploadFailed),
            _ => None,
        }
    }
}

/// An MLflow 3 logged model: a model's files and metadata, independent of the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedModel {
    /// Its id, `m-` followed by 32 hex digits.
    pub model_id: String,
    /// The experiment that owns it.
    pub experiment_id: String,
    /// Its name.
    pub name: String,
    /// Where its files go, e.g. `mlflow-artifacts:/1/models/m-…/artifacts`: upload them there
    /// with [`MlflowClient::upload_artifact`], then finalize the model.
    ///
    /// [`MlflowClient::upload_artifact`]: crate::MlflowClient::upload_artifact
    pub artifact_location: String,
    /// Its status.
    pub status: LoggedModelStatus,
    /// The run that produced it, if one was given.
    pub source_run_id: Option<String>,
    /// Its parameters.
    pub params: Vec<Param>,
    /// Its tags.
    pub tags: Vec<Tag>,
}

/// A version of a registered model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelVersion {
    /// The registered model's name.
    pub name: String,
    /// The version number (MLflow sends it as a string).
    pub version: u64,
    /// Where the version's files are, e.g. `mlflow-artifacts:/1/models/m-…/artifacts`.
    pub source: String,
    /// The run that produced it, if any.
    pub run_id: Option<String>,
    /// The logged model it was registered from, when the server reports it (MLflow 3.17.2's
    /// SQL store does not: it stays `None` even for versions created with a `model_id`).
    pub model_id: Option<String>,
    /// MLflow's status: `READY`, `PENDING_REGISTRATION` or `FAILED_REGISTRATION`.
    pub status: String,
    /// The aliases pointing at this version.
    pub aliases: Vec<String>,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
    /// Its description.
    pub description: String,
    /// Creation time, in milliseconds since the UNIX epoch.
    pub creation_timestamp_ms: Option<i64>,
}

/// A registered model of the model registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredModel {
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Alias → version number.
    pub aliases: BTreeMap<String, u64>,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
    /// Creation time, in milliseconds since the UNIX epoch.
    pub creation_timestamp_ms: Option<i64>,
}

/// One entry of an artifact listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactEntry {
    /// The entry's path relative to the artifact root that was listed (including the listed
    /// folder), e.g. `model/model.ctpkg`.
    pub path: String,
    /// Whether it is a folder.
    pub is_dir: bool,
    /// Its size in bytes (files only).
    pub file_size: Option<u64>,
}

// ---------------------------------------------------------------------------------------------
// MLflow's JSON. Empty and default fields are left out by the server, hence `default`
// everywhere; int64 fields may come as numbers or strings.

/// Accepts an integer as a JSON number or string (protobuf JSON writes int64 either way).
pub(crate) fn lenient_i64<'de, D: Deserializer<'de>>(de: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Number(i64),
        Text(String),
    }
    match Option::<Either>::deserialize(de)? {
        None => Ok(None),
        Some(Either::Number(n)) => Ok(Some(n)),
        Some(Either::Text(text)) => text
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("'{text}' is not an integer"))),
    }
}

/// Accepts a float as a JSON number or as `"NaN"`, `"Infinity"`, `"-Infinity"`.
fn lenient_f64<'de, D: Deserializer<'de>>(de: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Number(f64),
        Text(String),
    }
    match Either::deserialize(de)? {
        Either::Number(n) => Ok(n),
        Either::Text(text) => match text.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            _ => text
                .parse()
                .map_err(|_| serde::de::Error::custom(format!("'{text}' is not a number"))),
        },
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireMetric {
    pub key: String,
    #[serde(deserialize_with = "lenient_f64")]
    pub value: f64,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub timestamp: Option<i64>,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub step: Option<i64>,
}

impl From<WireMetric> for Metric {
    fn from(m: WireMetric) -> Self {
        Self {
            key: m.key,
            value: m.value,
            timestamp_ms: m.timestamp.unwrap_or(0),
            step: m.step.unwrap_or(0),
        }
    }
}

impl From<&Metric> for WireMetric {
    fn from(m: &Metric) -> Self {
        Self {
            key: m.key.clone(),
            value: m.value,
            timestamp: Some(m.timestamp_ms),
            step: Some(m.step),
        }
    }
}

/// A key/value pair as MLflow sends params and tags (a missing value is empty).
#[derive(Debug, Deserialize)]
pub(crate) struct WireKeyValue {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireRunInfo {
    #[serde(default)]
    pub run_id: String,
    #[serde(default)]
    pub run_uuid: String,
    #[serde(default)]
    pub experiment_id: String,
    #[serde(default)]
    pub run_name: String,
    #[serde(default)]
    pub status: String,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub start_time: Option<i64>,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub end_time: Option<i64>,
    #[serde(default)]
    pub artifact_uri: String,
    #[serde(default)]
    pub lifecycle_stage: String,
}

impl WireRunInfo {
    pub fn into_info(self) -> Result<RunInfo, String> {
        let run_id = if self.run_id.is_empty() {
            self.run_uuid
        } else {
            self.run_id
        };
        if run_id.is_empty() {
            return Err("the run has no run_id".to_owned());
        }
        let status = RunStatus::from_mlflow_str(&self.status)
            .ok_or_else(|| format!("unknown run status '{}'", self.status))?;
        Ok(RunInfo {
            run_id,
            experiment_id: self.experiment_id,
            run_name: self.run_name,
            status,
            artifact_uri: self.artifact_uri,
            start_time_ms: self.start_time,
            end_time_ms: self.end_time.filter(|&t| t != 0),
            lifecycle_stage: self.lifecycle_stage,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct WireRunData {
    #[serde(default)]
    pub metrics: Vec<WireMetric>,
    #[serde(default)]
    pub params: Vec<WireKeyValue>,
    #[serde(default)]
    pub tags: Vec<WireKeyValue>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct WireRunOutputs {
    #[serde(default)]
    pub model_outputs: Vec<WireModelOutput>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireModelOutput {
    pub model_id: String,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub step: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireRun {
    pub info: WireRunInfo,
    #[serde(default)]
    pub data: WireRunData,
    #[serde(default)]
    pub outputs: WireRunOutputs,
}

impl WireRun {
    pub fn into_run(self) -> Result<Run, String> {
        Ok(Run {
            info: self.info.into_info()?,
            data: RunData {
                metrics: self.data.metrics.into_iter().map(Metric::from).collect(),
                params: self.data.params.into_iter().map(param).collect(),
                tags: self.data.tags.into_iter().map(tag).collect(),
            },
            model_outputs: self
                .outputs
                .model_outputs
                .into_iter()
                .map(|o| ModelOutput {
                    model_id: o.model_id,
                    step: o.step.unwrap_or(0),
                })
                .collect(),
        })
    }
}

fn param(kv: WireKeyValue) -> Param {
    Param {
        key: kv.key,
        value: kv.value,
    }
}

fn tag(kv: WireKeyValue) -> Tag {
    Tag {
        key: kv.key,
        value: kv.value,
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireLoggedModel {
    pub info: WireLoggedModelInfo,
    #[serde(default)]
    pub data: WireLoggedModelData,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireLoggedModelInfo {
    pub model_id: String,
    #[serde(default)]
    pub experiment_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub artifact_uri: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub source_run_id: String,
    #[serde(default)]
    pub tags: Vec<WireKeyValue>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct WireLoggedModelData {
    #[serde(default)]
    pub params: Vec<WireKeyValue>,
}

impl WireLoggedModel {
    pub fn into_model(self) -> Result<LoggedModel, String> {
        let info = self.info;
        let status = LoggedModelStatus::from_mlflow_str(&info.status)
            .ok_or_else(|| format!("unknown logged model status '{}'", info.status))?;
        Ok(LoggedModel {
            model_id: info.model_id,
            experiment_id: info.experiment_id,
            name: info.name,
            artifact_location: info.artifact_uri,
            status,
            source_run_id: Some(info.source_run_id).filter(|s| !s.is_empty()),
            params: self.data.params.into_iter().map(param).collect(),
            tags: info.tags.into_iter().map(tag).collect(),
        })
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireModelVersion {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub run_id: String,
    #[serde(default)]
    pub model_id: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub tags: Vec<WireKeyValue>,
    #[serde(default)]
    pub description: String,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub creation_timestamp: Option<i64>,
}

impl WireModelVersion {
    pub fn into_version(self) -> Result<ModelVersion, String> {
        let version = self
            .version
            .parse()
            .map_err(|_| format!("model version '{}' is not a number", self.version))?;
        Ok(ModelVersion {
            name: self.name,
            version,
            source: self.source,
            run_id: Some(self.run_id).filter(|s| !s.is_empty()),
            model_id: Some(self.model_id).filter(|s| !s.is_empty()),
            status: self.status,
            aliases: self.aliases,
            tags: self.tags.into_iter().map(|t| (t.key, t.value)).collect(),
            description: self.description,
            creation_timestamp_ms: self.creation_timestamp,
        })
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireRegisteredModel {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub aliases: Vec<WireAlias>,
    #[serde(default)]
    pub tags: Vec<WireKeyValue>,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub creation_timestamp: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireAlias {
    pub alias: String,
    pub version: String,
}

impl WireRegisteredModel {
    pub fn into_model(self) -> Result<RegisteredModel, String> {
        let mut aliases = BTreeMap::new();
        for a in self.aliases {
            let version = a.version.parse().map_err(|_| {
                format!(
                    "alias '{}' points at version '{}', not a number",
                    a.alias, a.version
                )
            })?;
            aliases.insert(a.alias, version);
        }
        Ok(RegisteredModel {
            name: self.name,
            description: self.description,
            aliases,
            tags: self.tags.into_iter().map(|t| (t.key, t.value)).collect(),
            creation_timestamp_ms: self.creation_timestamp,
        })
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireFileInfo {
    pub path: String,
    #[serde(default)]
    pub is_dir: bool,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub file_size: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_serialize_with_snake_case_fields() {
        let metric = Metric::new("val_auc", 0.93, 1_700_000_000_000, 4);
        let json = serde_json::to_string(&metric).expect("serialize");
        assert_eq!(
            json,
            r#"{"key":"val_auc","value":0.93,"timestamp_ms":1700000000000,"step":4}"#
        );
        let back: Metric = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, metric);
        assert_eq!(
            serde_json::to_string(&RunStatus::Finished).expect("status"),
            r#""finished""#
        );
        assert_eq!(RunStatus::Killed.as_mlflow_str(), "KILLED");
        assert_eq!(
            RunStatus::from_mlflow_str("FAILED"),
            Some(RunStatus::Failed)
        );
    }

    #[test]
    fn wire_metrics_accept_strings_and_non_finite_values() {
        let m: WireMetric =
            serde_json::from_str(r#"{"key":"a","value":"NaN","timestamp":"17","step":"3"}"#)
                .expect("lenient");
        let m = Metric::from(m);
        assert!(m.value.is_nan());
        assert_eq!((m.timestamp_ms, m.step), (17, 3));
        let m: WireMetric = serde_json::from_str(r#"{"key":"a","value":1}"#).expect("defaults");
        assert_eq!(Metric::from(m).step, 0);
    }

    #[test]
    fn wire_model_version_parses_the_string_version() {
        let v: WireModelVersion = serde_json::from_str(
            r#"{"name":"covidct","version":"12","source":"mlflow-artifacts:/1/x",
                "status":"READY","aliases":["champion"],"tags":[{"key":"a","value":"b"}]}"#,
        )
        .expect("parse");
        let v = v.into_version().expect("convert");
        assert_eq!(v.version, 12);
        assert_eq!(v.run_id, None);
        assert_eq!(v.tags.get("a").map(String::as_str), Some("b"));
        let bad: WireModelVersion =
            serde_json::from_str(r#"{"name":"x","version":"one"}"#).expect("parse");
        assert!(bad.into_version().is_err());
    }
}
