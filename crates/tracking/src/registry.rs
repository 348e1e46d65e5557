//! The model registry: registered models, versions, aliases and tags.

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use crate::types::{WireModelVersion, WireRegisteredModel};
use crate::uri::{check_alias, check_model_name};
use crate::{
    MlflowClient, ModelSelector, ModelUri, ModelVersion, RegisteredModel, Tag, TrackingError,
};

/// Versions asked for per `model-versions/search` page.
const SEARCH_PAGE_SIZE: &str = "1000";

#[derive(Deserialize)]
struct RegisteredModelAnswer {
    registered_model: WireRegisteredModel,
}

#[derive(Deserialize)]
struct ModelVersionAnswer {
    model_version: WireModelVersion,
}

#[derive(Deserialize)]
struct SearchAnswer {
    #[serde(default)]
    model_versions: Vec<WireModelVersion>,
    #[serde(default)]
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct Empty {}

fn decode<T>(endpoint: &str, result: Result<T, String>) -> Result<T, TrackingError> {
    result.map_err(|reason| TrackingError::Decode {
        endpoint: endpoint.to_owned(),
        reason,
    })
}

fn checked_name(name: &str) -> Result<(), TrackingError> {
    check_model_name(name).map_err(|reason| TrackingError::InvalidArgument {
        argument: format!("registered model name '{name}'"),
        reason,
    })
}

fn checked_alias(alias: &str) -> Result<(), TrackingError> {
    check_alias(alias).map_err(|reason| TrackingError::InvalidArgument {
        argument: format!("alias '{alias}'"),
        reason,
    })
}

fn model_what(name: &str) -> String {
    format!("registered model '{name}'")
}

fn version_what(name: &str, version: u64) -> String {
    format!("version {version} of registered model '{name}'")
}

/// `name = '<name>'` in MLflow's filter syntax (double quotes when the name has a `'`).
fn name_filter(name: &str) -> Result<String, TrackingError> {
    match (name.contains('\''), name.contains('"')) {
        (false, _) => Ok(format!("name = '{name}'")),
        (true, false) => Ok(format!("name = \"{name}\"")),
        (true, true) => Err(TrackingError::InvalidArgument {
            argument: format!("registered model name '{name}'"),
            reason: "a name with both ' and \" cannot be written in an MLflow search filter"
                .to_owned(),
        }),
    }
}

impl MlflowClient {
    /// Creates registered model `name`; [`TrackingError::AlreadyExists`] when it exists.
    pub fn create_registered_model(&self, name: &str) -> Result<RegisteredModel, TrackingError> {
        checked_name(name)?;
        let answer: RegisteredModelAnswer = self.call(
            Method::POST,
            "registered-models/create",
            &[],
            Some(&json!({ "name": name })),
            &model_what(name),
        )?;
        tracing::info!(name, "created MLflow registered model");
        decode(
            "POST /api/2.0/mlflow/registered-models/create",
            answer.registered_model.into_model(),
        )
    }

    /// Registered model `name` with its aliases and tags.
    pub fn get_registered_model(&self, name: &str) -> Result<RegisteredModel, TrackingError> {
        checked_name(name)?;
        let answer: RegisteredModelAnswer = self.call(
            Method::GET,
            "registered-models/get",
            &[("name", name)],
            None,
            &model_what(name),
        )?;
        decode(
            "GET /api/2.0/mlflow/registered-models/get",
            answer.registered_model.into_model(),
        )
    }

    /// Registered model `name`, created when missing (tolerating a concurrent creation).
    pub fn get_or_create_registered_model(
        &self,
        name: &str,
    ) -> Result<RegisteredModel, TrackingError> {
        match self.get_registered_model(name) {
            Err(TrackingError::NotFound { .. }) => {}
            other => return other,
        }
        match self.create_registered_model(name) {
            Err(TrackingError::AlreadyExists { .. }) => self.get_registered_model(name),
            other => other,
        }
    }

    /// Registers a new version of model `name` from `source`, the full location of the files,
    /// e.g. the logged model's `mlflow-artifacts:/…` artifact location.
    ///
    /// MLflow 3.17.2 checks the source: an `mlflow-artifacts:` source must lie under the
    /// artifact location of `model_id` when one is given, else under the artifact URI of
    /// `run_id`'s run (400 `INVALID_PARAMETER_VALUE` otherwise) — so register a logged model's
    /// location with its `model_id`. A `runs:/<run_id>/…` source registers, but downloading the
    /// version's files through `/model-versions/get-artifact` then fails with HTTP 500: use the
    /// full location.
    pub fn create_model_version(
        &self,
        name: &str,
        source: &str,
        run_id: Option<&str>,
        model_id: Option<&str>,
        tags: &[Tag],
    ) -> Result<ModelVersion, TrackingError> {
        checked_name(name)?;
        if source.trim().is_empty() {
            return Err(TrackingError::InvalidArgument {
                argument: "model version source".to_owned(),
                reason: "it is empty: give the model's mlflow-artifacts:/… location".to_owned(),
            });
        }
        if source.starts_with("runs:/") {
            tracing::warn!(
                source,
                "registering a runs:/ source: MLflow 3.17.2 cannot serve such a version's files \
                 (model-versions/get-artifact answers 500); prefer the mlflow-artifacts:/ location"
            );
        }
        let mut body = json!({
            "name": name,
            "source": source,
            "tags": tags.iter().map(|t| json!({"key": t.key, "value": t.value})).collect::<Vec<_>>(),
        });
        if let Some(run_id) = run_id {
            body["run_id"] = json!(run_id);
        }
        if let Some(model_id) = model_id {
            body["model_id"] = json!(model_id);
        }
        let answer: ModelVersionAnswer = self.call(
            Method::POST,
            "model-versions/create",
            &[],
            Some(&body),
            &model_what(name),
        )?;
        let version = decode(
            "POST /api/2.0/mlflow/model-versions/create",
            answer.model_version.into_version(),
        )?;
        tracing::info!(
            name,
            version = version.version,
            source,
            "registered MLflow model version"
        );
        Ok(version)
    }

    /// Version `version` of model `name`.
    pub fn get_model_version(
        &self,
        name: &str,
        version: u64,
    ) -> Result<ModelVersion, TrackingError> {
        checked_name(name)?;
        let number = version.to_string();
        let answer: ModelVersionAnswer = self.call(
            Method::GET,
            "model-versions/get",
            &[("name", name), ("version", &number)],
            None,
            &version_what(name, version),
        )?;
        decode(
            "GET /api/2.0/mlflow/model-versions/get",
            answer.model_version.into_version(),
        )
    }

    /// The version that alias `alias` of model `name` points at.
    pub fn model_version_by_alias(
        &self,
        name: &str,
        alias: &str,
    ) -> Result<ModelVersion, TrackingError> {
        checked_name(name)?;
        checked_alias(alias)?;
        let what = format!("alias '{alias}' of registered model '{name}'");
        let answer: Result<ModelVersionAnswer, _> = self.call(
            Method::GET,
            "registered-models/alias",
            &[("name", name), ("alias", alias)],
            None,
            &what,
        );
        match answer {
            Ok(answer) => decode(
                "GET /api/2.0/mlflow/registered-models/alias",
                answer.model_version.into_version(),
            ),
            // MLflow 3.17.2 answers 400 INVALID_PARAMETER_VALUE "Registered model alias … not
            // found." for a missing alias of an existing model.
            Err(TrackingError::Api {
                status: 400,
                error_code,
                message,
                ..
            }) if error_code == "INVALID_PARAMETER_VALUE" && message.contains("not found") => {
                Err(TrackingError::NotFound { what, message })
            }
            Err(other) => Err(other),
        }
    }

    /// Every version of model `name` (all pages), as the server orders them.
    pub fn search_model_versions(&self, name: &str) -> Result<Vec<ModelVersion>, TrackingError> {
        checked_name(name)?;
        let filter = name_filter(name)?;
        let what = model_what(name);
        let mut versions = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("filter", filter.as_str()),
                ("max_results", SEARCH_PAGE_SIZE),
            ];
            if let Some(token) = token.as_deref() {
                query.push(("page_token", token));
            }
            let answer: SearchAnswer =
                self.call(Method::GET, "model-versions/search", &query, None, &what)?;
            for wire in answer.model_versions {
                versions.push(decode(
                    "GET /api/2.0/mlflow/model-versions/search",
                    wire.into_version(),
                )?);
            }
            match answer.next_page_token.filter(|t| !t.is_empty()) {
                Some(next) if Some(&next) != token.as_ref() => token = Some(next),
                _ => return Ok(versions),
            }
        }
    }

    /// Points alias `alias` of model `name` at `version` (moving it if it pointed elsewhere).
    pub fn set_alias(&self, name: &str, alias: &str, version: u64) -> Result<(), TrackingError> {
        checked_name(name)?;
        checked_alias(alias)?;
        let body = json!({ "name": name, "alias": alias, "version": version.to_string() });
        let _: Empty = self.call(
            Method::POST,
            "registered-models/alias",
            &[],
            Some(&body),
            &version_what(name, version),
        )?;
        tracing::info!(name, alias, version, "set MLflow model alias");
        Ok(())
    }

    /// Removes alias `alias` of model `name`.
    pub fn delete_alias(&self, name: &str, alias: &str) -> Result<(), TrackingError> {
        checked_name(name)?;
        checked_alias(alias)?;
        let body = json!({ "name": name, "alias": alias });
        let _: Empty = self.call(
            Method::DELETE,
            "registered-models/alias",
            &[],
            Some(&body),
            &format!("alias '{alias}' of registered model '{name}'"),
        )?;
        Ok(())
    }

    /// Sets tag `key` = `value` on version `version` of model `name`.
    pub fn set_model_version_tag(
        &self,
        name: &str,
        version: u64,
        key: &str,
        value: &str,
    ) -> Result<(), TrackingError> {
        checked_name(name)?;
        let body = json!({
            "name": name,
            "version": version.to_string(),
            "key": key,
            "value": value,
        });
        let _: Empty = self.call(
            Method::POST,
            "model-versions/set-tag",
            &[],
            Some(&body),
            &version_what(name, version),
        )?;
        Ok(())
    }

    /// The version a `models:/name@alias` or `models:/name/3` URI designates.
    pub fn resolve_model_uri(&self, uri: &ModelUri) -> Result<ModelVersion, TrackingError> {
        match &uri.selector {
            ModelSelector::Alias(alias) => self.model_version_by_alias(&uri.name, alias),
            ModelSelector::Version(version) => self.get_model_version(&uri.name, *version),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_quote_names() {
        assert_eq!(
            name_filter("covidct").ok().as_deref(),
            Some("name = 'covidct'")
        );
        assert_eq!(
            name_filter("o'brien").ok().as_deref(),
            Some("name = \"o'brien\"")
        );
        assert!(name_filter("a'b\"c").is_err());
    }
}
