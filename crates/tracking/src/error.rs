//! The error type of this crate.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while talking to an MLflow tracking server.
///
/// Each message names the server, endpoint, resource or file at fault and says what to do.
/// [`TrackingError::is_transient`] tells failures worth retrying later (server down, timeouts,
/// 5xx, 429) from those that will fail again the same way.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrackingError {
    /// No connection could be made to the server.
    #[error(
        "the MLflow tracking server at {url} cannot be reached ({source}): check that \
         MLFLOW_TRACKING_URI points at it and that the server runs (`mlflow server ...`)"
    )]
    Unreachable {
        /// The URL that was requested.
        url: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },

    /// The server did not answer within the configured timeout.
    #[error(
        "the MLflow tracking server did not answer {url} within {} s: it may be overloaded or \
         the network slow; the request can be retried later",
        timeout.as_secs_f64()
    )]
    Timeout {
        /// The URL that was requested.
        url: String,
        /// The timeout that elapsed.
        timeout: Duration,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The connection broke after it was made (reset, closed mid-answer).
    #[error(
        "the connection to the MLflow tracking server broke while requesting {url}: {source}; \
         the request can be retried later"
    )]
    Network {
        /// The URL that was requested.
        url: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The server answered 401 or 403.
    #[error(
        "the MLflow tracking server rejected the credentials (HTTP {status}) for {url}: set \
         MLFLOW_TRACKING_TOKEN (bearer token) or MLFLOW_TRACKING_USERNAME and \
         MLFLOW_TRACKING_PASSWORD (basic auth) to an account the server accepts{}",
        if *status == 403 { " and that may use this resource" } else { "" }
    )]
    Unauthorized {
        /// The URL that was refused.
        url: String,
        /// 401 or 403.
        status: u16,
    },

    /// The server answered `RESOURCE_ALREADY_EXISTS`.
    #[error("{what} already exists: {message}")]
    AlreadyExists {
        /// The resource, e.g. `registered model 'covidct'`.
        what: String,
        /// The server's message.
        message: String,
    },

    /// The server answered `RESOURCE_DOES_NOT_EXIST` or HTTP 404.
    #[error("{what} does not exist on the MLflow tracking server: {message}")]
    NotFound {
        /// The resource, e.g. `run 'f479…'`.
        what: String,
        /// The server's message.
        message: String,
    },

    /// An experiment of that name exists but is deleted, so it can neither be used nor created.
    #[error(
        "experiment '{name}' (id {experiment_id}) is deleted: restore it with `mlflow \
         experiments restore --experiment-id {experiment_id}`, or choose another experiment name"
    )]
    DeletedExperiment {
        /// The experiment's name.
        name: String,
        /// Its id.
        experiment_id: String,
    },

    /// Any other non-2xx answer.
    #[error(
        "MLflow request {endpoint} failed with HTTP {status}{}: {message}{}",
        if error_code.is_empty() { String::new() } else { format!(" ({error_code})") },
        if *status >= 500 || *status == 429 { " (a server-side failure; it may succeed later)" } else { "" }
    )]
    Api {
        /// The endpoint, e.g. `POST /api/2.0/mlflow/runs/log-batch`.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// MLflow's `error_code` (e.g. `INVALID_PARAMETER_VALUE`); empty when the body did not
        /// carry one (a proxy's HTML page, say).
        error_code: String,
        /// MLflow's `message`, or the start of the body when it was not MLflow's JSON.
        message: String,
    },

    /// A local file could not be read or written.
    #[error("cannot read or write {}: {source}", path.display())]
    Io {
        /// The file or folder at fault.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A tracking, artifact or model URI (or an artifact path) is malformed or unsupported.
    #[error("invalid URI '{uri}': {reason}")]
    InvalidUri {
        /// The value given.
        uri: String,
        /// Why it was refused, and what is expected.
        reason: String,
    },

    /// An argument cannot be sent to MLflow as it is.
    #[error("invalid {argument}: {reason}")]
    InvalidArgument {
        /// The argument at fault, e.g. `registered model name "a'b\""`.
        argument: String,
        /// Why it was refused.
        reason: String,
    },

    /// A metric value is NaN or infinite, which JSON (and so the REST API) cannot carry.
    #[error(
        "metric '{key}' has the non-finite value {value}: the MLflow REST API only carries \
         finite numbers; log a finite value (or leave the point out)"
    )]
    NonFiniteMetric {
        /// The metric's key.
        key: String,
        /// The value refused.
        value: f64,
    },

    /// The server's answer could not be understood.
    #[error(
        "cannot understand the answer to {endpoint}: {reason} (is the server MLflow 3.x and \
         MLFLOW_TRACKING_URI its root URL?)"
    )]
    Decode {
        /// The endpoint, e.g. `GET /api/2.0/mlflow/runs/get`.
        endpoint: String,
        /// What was wrong.
        reason: String,
    },

    /// A local file exists but does not hold what it should.
    #[error("{}: {reason}", path.display())]
    InvalidFile {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A downloaded file's SHA-256 differs from the one the registry recorded.
    #[error(
        "{what}: the downloaded package has SHA-256 {actual}, the registry recorded {expected}; \
         refusing it"
    )]
    PackageMismatch {
        /// The model version, e.g. `models:/covidct@champion (version 3)`.
        what: String,
        /// The SHA-256 of the file received.
        actual: String,
        /// The SHA-256 recorded at registration.
        expected: String,
    },

    /// A shared helper failed (an atomic write).
    #[error(transparent)]
    Common(#[from] covidct_common::CommonError),

    /// The HTTP client could not be built (TLS setup).
    #[error("cannot set up the HTTP client: {source}")]
    HttpClient {
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
}

impl TrackingError {
    /// An I/O error on `path`.
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether the same request may succeed later: the server could not be reached, timed out,
    /// the connection broke, or it answered 5xx or 429. Callers buffer such records for later
    /// delivery; other errors would fail again the same way.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Timeout { .. } | Self::Network { .. } => true,
            Self::Api { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    /// The HTTP status the server answered, for errors that come from an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Unauthorized { status, .. } | Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> TrackingError {
        TrackingError::Api {
            endpoint: "POST /api/2.0/mlflow/runs/log-batch".to_owned(),
            status,
            error_code: "INTERNAL_ERROR".to_owned(),
            message: "boom".to_owned(),
        }
    }

    #[test]
    fn transient_errors_are_5xx_and_429_only() {
        assert!(api(500).is_transient());
        assert!(api(503).is_transient());
        assert!(api(429).is_transient());
        assert!(!api(400).is_transient());
        assert!(!api(409).is_transient());
        let not_found = TrackingError::NotFound {
            what: "run 'x'".to_owned(),
            message: "Run with id=x not found".to_owned(),
        };
        assert!(!not_found.is_transient());
        let unauthorized = TrackingError::Unauthorized {
            url: "http://h/".to_owned(),
            status: 401,
        };
        assert!(!unauthorized.is_transient());
        assert_eq!(unauthorized.status(), Some(401));
    }

    #[test]
    fn api_message_names_endpoint_code_and_message() {
        let text = api(503).to_string();
        assert!(
            text.contains("POST /api/2.0/mlflow/runs/log-batch"),
            "{text}"
        );
        assert!(text.contains("HTTP 503"), "{text}");
        assert!(text.contains("INTERNAL_ERROR"), "{text}");
        assert!(text.contains("boom"), "{text}");
        assert!(text.contains("may succeed later"), "{text}");
    }
}
