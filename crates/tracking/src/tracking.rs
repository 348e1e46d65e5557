//! Experiments, runs, metrics and MLflow 3 logged models.

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::types::{WireLoggedModel, WireMetric, WireRun};
use crate::{
    LoggedModel, Metric, MlflowClient, Param, Run, RunInfo, RunStatus, Tag, TrackingError,
};

/// Most metrics in one `runs/log-batch` request (MLflow's limit).
pub const MAX_METRICS_PER_BATCH: usize = 1000;
/// Most params in one `runs/log-batch` request (MLflow's limit).
pub const MAX_PARAMS_PER_BATCH: usize = 100;
/// Most tags in one `runs/log-batch` request (MLflow's limit).
pub const MAX_TAGS_PER_BATCH: usize = 100;
/// Most metrics, params and tags together in one `runs/log-batch` request (MLflow's limit).
pub const MAX_ENTRIES_PER_BATCH: usize = 1000;

#[derive(Deserialize)]
struct ExperimentAnswer {
    experiment: ExperimentBody,
}

#[derive(Deserialize)]
struct ExperimentBody {
    experiment_id: String,
    #[serde(default)]
    lifecycle_stage: String,
}

#[derive(Deserialize)]
struct CreatedExperiment {
    experiment_id: String,
}

#[derive(Deserialize)]
struct RunAnswer {
    run: WireRun,
}

#[derive(Deserialize)]
struct HistoryAnswer {
    #[serde(default)]
    metrics: Vec<WireMetric>,
    #[serde(default)]
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct LoggedModelAnswer {
    model: WireLoggedModel,
}

/// Discards a JSON answer (`{}`).
#[derive(Deserialize)]
struct Empty {}

/// One `runs/log-batch` request's share of the records.
#[derive(Debug, PartialEq)]
pub(crate) struct BatchChunk<'a> {
    pub metrics: &'a [Metric],
    pub params: &'a [Param],
    pub tags: &'a [Tag],
}

/// Splits the records into requests within MLflow's limits, params and tags first (so that a
/// run's parameters arrive with its first metrics).
pub(crate) fn batch_chunks<'a>(
    mut metrics: &'a [Metric],
    mut params: &'a [Param],
    mut tags: &'a [Tag],
) -> Vec<BatchChunk<'a>> {
    let mut chunks = Vec::new();
    while !(metrics.is_empty() && params.is_empty() && tags.is_empty()) {
        let (p, rest_p) = params.split_at(params.len().min(MAX_PARAMS_PER_BATCH));
        let (t, rest_t) = tags.split_at(tags.len().min(MAX_TAGS_PER_BATCH));
        let room = (MAX_ENTRIES_PER_BATCH - p.len() - t.len()).min(MAX_METRICS_PER_BATCH);
        let (m, rest_m) = metrics.split_at(metrics.len().min(room));
        chunks.push(BatchChunk {
            metrics: m,
            params: p,
            tags: t,
        });
        (metrics, params, tags) = (rest_m, rest_p, rest_t);
    }
    chunks
}

fn key_values<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Value {
    Value::Array(
        pairs
            .map(|(key, value)| json!({ "key": key, "value": value }))
            .collect(),
    )
}

fn tags_json(tags: &[Tag]) -> Value {
    key_values(tags.iter().map(|t| (t.key.as_str(), t.value.as_str())))
}

fn params_json(params: &[Param]) -> Value {
    key_values(params.iter().map(|p| (p.key.as_str(), p.value.as_str())))
}

fn decode<T>(endpoint: &str, result: Result<T, String>) -> Result<T, TrackingError> {
    result.map_err(|reason| TrackingError::Decode {
        endpoint: endpoint.to_owned(),
        reason,
    })
}

impl MlflowClient {
    /// The id of experiment `name`, creating it when it does not exist (another client creating
    /// it at the same moment is tolerated). A deleted experiment of that name is an error
    /// ([`TrackingError::DeletedExperiment`]): MLflow keeps its name reserved.
    pub fn get_or_create_experiment(&self, name: &str) -> Result<String, TrackingError> {
        if name.trim().is_empty() {
            return Err(TrackingError::InvalidArgument {
                argument: "experiment name".to_owned(),
                reason: "it is empty".to_owned(),
            });
        }
        let what = format!("experiment '{name}'");
        match self.experiment_by_name(name, &what) {
            Err(TrackingError::NotFound { .. }) => {}
            other => return other,
        }
        let created: Result<CreatedExperiment, _> = self.call(
            Method::POST,
            "experiments/create",
            &[],
            Some(&json!({ "name": name })),
            &what,
        );
        match created {
            Ok(created) => {
                tracing::info!(experiment = name, id = %created.experiment_id, "created MLflow experiment");
                Ok(created.experiment_id)
            }
            // Someone else created it between our two requests.
            Err(TrackingError::AlreadyExists { .. }) => self.experiment_by_name(name, &what),
            Err(other) => Err(other),
        }
    }

    fn experiment_by_name(&self, name: &str, what: &str) -> Result<String, TrackingError> {
        let answer: ExperimentAnswer = self.call(
            Method::GET,
            "experiments/get-by-name",
            &[("experiment_name", name)],
            None,
            what,
        )?;
        if answer.experiment.lifecycle_stage == "deleted" {
            return Err(TrackingError::DeletedExperiment {
                name: name.to_owned(),
                experiment_id: answer.experiment.experiment_id,
            });
        }
        Ok(answer.experiment.experiment_id)
    }

    /// Starts a run named `run_name` in `experiment_id` at `start_time_ms` (milliseconds since
    /// the UNIX epoch) with `tags`. The run is `RUNNING` until [`MlflowClient::update_run`].
    ///
    /// Like every call, a transient failure is retried; if the server created the run but its
    /// answer was lost (a timeout), the retry creates a second run.
    pub fn create_run(
        &self,
        experiment_id: &str,
        run_name: &str,
        start_time_ms: i64,
        tags: &[Tag],
    ) -> Result<RunInfo, TrackingError> {
        let body = json!({
            "experiment_id": experiment_id,
            "run_name": run_name,
            "start_time": start_time_ms,
            "tags": tags_json(tags),
        });
        let answer: RunAnswer = self.call(
            Method::POST,
            "runs/create",
            &[],
            Some(&body),
            &format!("experiment '{experiment_id}'"),
        )?;
        let info = decode(
            "POST /api/2.0/mlflow/runs/create",
            answer.run.info.into_info(),
        )?;
        tracing::info!(run_id = %info.run_id, experiment_id, run_name, "created MLflow run");
        Ok(info)
    }

    /// The run `run_id`: metadata, parameters, latest metrics, tags and model outputs.
    pub fn get_run(&self, run_id: &str) -> Result<Run, TrackingError> {
        let answer: RunAnswer = self.call(
            Method::GET,
            "runs/get",
            &[("run_id", run_id)],
            None,
            &format!("run '{run_id}'"),
        )?;
        decode("GET /api/2.0/mlflow/runs/get", answer.run.into_run())
    }

    /// Logs metrics, parameters and tags to a run through `runs/log-batch`, in as many requests
    /// as MLflow's limits need (1000 metrics, 100 params, 100 tags, 1000 entries per request).
    ///
    /// Every metric is checked to be finite before anything is sent. Sending the same records
    /// again is harmless: MLflow 3 stores a metric point once per (key, value, timestamp, step)
    /// and accepts a parameter logged again with the same value (a different value is refused).
    pub fn log_batch(
        &self,
        run_id: &str,
        metrics: &[Metric],
        params: &[Param],
        tags: &[Tag],
    ) -> Result<(), TrackingError> {
        if let Some(bad) = metrics.iter().find(|m| !m.value.is_finite()) {
            return Err(TrackingError::NonFiniteMetric {
                key: bad.key.clone(),
                value: bad.value,
            });
        }
        let what = format!("run '{run_id}'");
        for chunk in batch_chunks(metrics, params, tags) {
            let wire: Vec<WireMetric> = chunk.metrics.iter().map(WireMetric::from).collect();
            let body = json!({
                "run_id": run_id,
                "metrics": wire,
                "params": params_json(chunk.params),
                "tags": tags_json(chunk.tags),
            });
            let _: Empty = self.call(Method::POST, "runs/log-batch", &[], Some(&body), &what)?;
        }
        Ok(())
    }

    /// Sets a run's status, and its end time when given (for a finished, failed or killed run).
    pub fn update_run(
        &self,
        run_id: &str,
        status: RunStatus,
        end_time_ms: Option<i64>,
    ) -> Result<(), TrackingError> {
        let mut body = json!({ "run_id": run_id, "status": status.as_mlflow_str() });
        if let Some(end) = end_time_ms {
            body["end_time"] = json!(end);
        }
        let _: Empty = self.call(
            Method::POST,
            "runs/update",
            &[],
            Some(&body),
            &format!("run '{run_id}'"),
        )?;
        Ok(())
    }

    /// Every point of metric `key` of a run, in the server's order (by step, then timestamp).
    pub fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<Metric>, TrackingError> {
        let what = format!("run '{run_id}'");
        let mut points = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("run_id", run_id), ("metric_key", key)];
            if let Some(token) = token.as_deref() {
                query.push(("page_token", token));
            }
            let answer: HistoryAnswer =
                self.call(Method::GET, "metrics/get-history", &query, None, &what)?;
            points.extend(answer.metrics.into_iter().map(Metric::from));
            match answer.next_page_token.filter(|t| !t.is_empty()) {
                Some(next) if Some(&next) != token.as_ref() => token = Some(next),
                _ => return Ok(points),
            }
        }
    }

    /// Creates an MLflow 3 logged model in `experiment_id` (status `PENDING`), optionally
    /// produced by run `source_run_id`. Upload its files under
    /// [`LoggedModel::artifact_location`], then call [`MlflowClient::finalize_logged_model`].
    pub fn create_logged_model(
        &self,
        experiment_id: &str,
        name: &str,
        source_run_id: Option<&str>,
        params: &[Param],
        tags: &[Tag],
    ) -> Result<LoggedModel, TrackingError> {
        let mut body = json!({
            "experiment_id": experiment_id,
            "name": name,
            "params": params_json(params),
            "tags": tags_json(tags),
        });
        if let Some(run_id) = source_run_id {
            body["source_run_id"] = json!(run_id);
        }
        let answer: LoggedModelAnswer = self.call(
            Method::POST,
            "logged-models",
            &[],
            Some(&body),
            &format!(
                "experiment '{experiment_id}' or run '{}'",
                source_run_id.unwrap_or("-")
            ),
        )?;
        let model = decode(
            "POST /api/2.0/mlflow/logged-models",
            answer.model.into_model(),
        )?;
        tracing::info!(model_id = %model.model_id, name, "created MLflow logged model");
        Ok(model)
    }

    /// The logged model `model_id`.
    pub fn get_logged_model(&self, model_id: &str) -> Result<LoggedModel, TrackingError> {
        let answer: LoggedModelAnswer = self.call(
            Method::GET,
            &format!("logged-models/{}", path_segment(model_id)?),
            &[],
            None,
            &format!("logged model '{model_id}'"),
        )?;
        decode(
            "GET /api/2.0/mlflow/logged-models",
            answer.model.into_model(),
        )
    }

    /// Marks a logged model `READY`: its files are complete.
    pub fn finalize_logged_model(&self, model_id: &str) -> Result<(), TrackingError> {
        let body = json!({ "model_id": model_id, "status": "LOGGED_MODEL_READY" });
        let _: LoggedModelAnswer = self.call(
            Method::PATCH,
            &format!("logged-models/{}", path_segment(model_id)?),
            &[],
            Some(&body),
            &format!("logged model '{model_id}'"),
        )?;
        Ok(())
    }

    /// Records logged model `model_id` as an output of run `run_id` at `step` (`runs/outputs`),
    /// so that the run's page lists the model.
    pub fn log_model_output(
        &self,
        run_id: &str,
        model_id: &str,
        step: i64,
    ) -> Result<(), TrackingError> {
        let body = json!({
            "run_id": run_id,
            "models": [{ "model_id": model_id, "step": step }],
        });
        let _: Empty = self.call(
            Method::POST,
            "runs/outputs",
            &[],
            Some(&body),
            &format!("run '{run_id}' or logged model '{model_id}'"),
        )?;
        Ok(())
    }
}

/// Checks an id that goes into a URL path as one segment.
fn path_segment(id: &str) -> Result<&str, TrackingError> {
    if id.is_empty() || id.contains(['/', '?', '#', '%']) || id.chars().any(char::is_control) {
        return Err(TrackingError::InvalidArgument {
            argument: format!("id '{id}'"),
            reason: "an MLflow id is non-empty and has no '/', '?', '#', '%' or control characters"
                .to_owned(),
        });
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(n: usize) -> Vec<Metric> {
        (0..n)
            .map(|i| Metric::new("loss", i as f64, 1, i as i64))
            .collect()
    }

    fn params(n: usize) -> Vec<Param> {
        (0..n).map(|i| Param::new(format!("p{i}"), "v")).collect()
    }

    fn tags(n: usize) -> Vec<Tag> {
        (0..n).map(|i| Tag::new(format!("t{i}"), "v")).collect()
    }

    #[test]
    fn batches_respect_mlflow_limits_and_keep_everything() {
        for (m, p, t) in [
            (0, 0, 0),
            (1, 0, 0),
            (1000, 0, 0),
            (1001, 0, 0),
            (2500, 250, 130),
            (950, 100, 100),
            (0, 201, 0),
            (10, 0, 301),
        ] {
            let (metrics, params, tags) = (metrics(m), params(p), tags(t));
            let chunks = batch_chunks(&metrics, &params, &tags);
            for chunk in &chunks {
                assert!(chunk.metrics.len() <= MAX_METRICS_PER_BATCH);
                assert!(chunk.params.len() <= MAX_PARAMS_PER_BATCH);
                assert!(chunk.tags.len() <= MAX_TAGS_PER_BATCH);
                let total = chunk.metrics.len() + chunk.params.len() + chunk.tags.len();
                assert!(total <= MAX_ENTRIES_PER_BATCH);
                assert!(total > 0);
            }
            let sent_m: Vec<&Metric> = chunks.iter().flat_map(|c| c.metrics).collect();
            let sent_p: usize = chunks.iter().map(|c| c.params.len()).sum();
            let sent_t: usize = chunks.iter().map(|c| c.tags.len()).sum();
            assert_eq!(sent_m.len(), m);
            assert!(
                sent_m.iter().zip(&metrics).all(|(a, b)| *a == b),
                "order kept"
            );
            assert_eq!((sent_p, sent_t), (p, t));
        }
        let (metrics, params, tags) = (metrics(2500), params(250), tags(130));
        // 100p+100t+800m, 100p+30t+870m, 50p+830m.
        assert_eq!(batch_chunks(&metrics, &params, &tags).len(), 3);
    }

    #[test]
    fn ids_in_paths_are_checked() {
        assert!(path_segment("m-0123abcd").is_ok());
        for bad in ["", "a/b", "a?b", "a%2F", "a\nb"] {
            assert!(path_segment(bad).is_err(), "{bad:?}");
        }
    }
}
