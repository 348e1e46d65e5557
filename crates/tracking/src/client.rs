//! Server configuration and the HTTP core of [`MlflowClient`]: URLs, credentials, retries and
//! the mapping of MLflow's answers to [`TrackingError`].

use std::fmt;
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::LOCATION;
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::TrackingError;

/// Default timeout of one request (connect, and each wait for the server).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How to authenticate to the tracking server.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Auth {
    /// No credentials (a server without authentication).
    #[default]
    None,
    /// `Authorization: Bearer <token>` (MLFLOW_TRACKING_TOKEN).
    Bearer(String),
    /// HTTP basic authentication (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD), as the
    /// `mlflow server --app-name basic-auth` server expects.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
}

impl fmt::Debug for Auth {
    /// Never prints secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Self::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

/// How often and how patiently transient failures ([`TrackingError::is_transient`]) are
/// retried: `attempts` tries in all, waiting `initial_backoff`, then twice as long each time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (0 counts as 1).
    pub attempts: u32,
    /// The wait before the second try; it doubles before each further try.
    pub initial_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 4 tries, waiting 0.5 s, 1 s and 2 s between them.
    fn default() -> Self {
        Self {
            attempts: 4,
            initial_backoff: Duration::from_millis(500),
        }
    }
}

impl RetryPolicy {
    /// A single try, no retry.
    pub fn none() -> Self {
        Self {
            attempts: 1,
            initial_backoff: Duration::ZERO,
        }
    }

    /// The wait after failed try number `attempt` (1-based): `initial_backoff · 2^(attempt-1)`,
    /// at most 60 s.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
        self.initial_backoff
            .saturating_mul(factor)
            .min(Duration::from_secs(60))
    }
}

/// Where the tracking server is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The server's root URL, e.g. `http://127.0.0.1:5000` (a path prefix such as
    /// `https://host/mlflow` is kept, for servers started with `--static-prefix`).
    pub base_url: String,
    /// Credentials.
    pub auth: Auth,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Timeout of one request: connecting, and each wait for the server's answer or the next
    /// chunk of a download. Uploads get this plus one second per MiB of the file.
    pub timeout: Duration,
}

impl ServerConfig {
    /// A configuration for `base_url` without credentials, with the default retries and
    /// timeout.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            auth: Auth::None,
            retry: RetryPolicy::default(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The configuration MLflow's own clients take from the environment, or `None` when
    /// `MLFLOW_TRACKING_URI` does not name an http(s) server (unset, empty, `file:`, a plain
    /// path, `sqlite:`, `databricks`…: tracking is then off for this crate).
    ///
    /// - `MLFLOW_TRACKING_URI`: the server's root URL.
    /// - `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD`: basic authentication, used
    ///   when both are set (MLflow gives them precedence over the token).
    /// - `MLFLOW_TRACKING_TOKEN`: a bearer token otherwise.
    /// - `MLFLOW_HTTP_REQUEST_TIMEOUT`: the timeout in seconds (default 30 s here).
    pub fn from_env() -> Option<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`ServerConfig::from_env`] over any source of variables (for tests and config layers).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let non_empty = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let uri = non_empty("MLFLOW_TRACKING_URI")?;
        let uri = uri.trim();
        let scheme = uri.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        if !matches!(scheme.as_deref(), Some("http" | "https")) {
            return None;
        }
        let auth = match (
            non_empty("MLFLOW_TRACKING_USERNAME"),
            non_empty("MLFLOW_TRACKING_PASSWORD"),
            non_empty("MLFLOW_TRACKING_TOKEN"),
        ) {
            (Some(username), Some(password), _) => Auth::Basic { username, password },
            (_, _, Some(token)) => Auth::Bearer(token.trim().to_owned()),
            _ => Auth::None,
        };
        let timeout = non_empty("MLFLOW_HTTP_REQUEST_TIMEOUT")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&s| s > 0)
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
        Some(Self {
            base_url: uri.to_owned(),
            auth,
            retry: RetryPolicy::default(),
            timeout,
        })
    }
}

/// A blocking client of one MLflow 3 tracking server's REST API.
///
/// Requests that fail transiently ([`TrackingError::is_transient`]) are retried per the
/// configuration's [`RetryPolicy`]; everything else fails at once with an error naming the
/// endpoint or resource. Cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct MlflowClient {
    http: Client,
    base: Url,
    base_str: String,
    auth: Auth,
    retry: RetryPolicy,
    timeout: Duration,
}

/// MLflow's error body: `{"error_code": "...", "message": "..."}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl MlflowClient {
    /// A client of the server in `config`, after checking its URL (absolute http(s), no query,
    /// fragment or credentials). Nothing is sent until the first call.
    pub fn new(config: ServerConfig) -> Result<Self, TrackingError> {
        let invalid = |reason: &str| TrackingError::InvalidUri {
            uri: redact_userinfo(&config.base_url),
            reason: reason.to_owned(),
        };
        let trimmed = config.base_url.trim();
        let mut base = Url::parse(trimmed).map_err(|e| {
            invalid(&format!(
                "{e}; the tracking URI must be the server's root URL, e.g. http://127.0.0.1:5000"
            ))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(invalid(
                "the tracking server URL must start with http:// or https://",
            ));
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(invalid("the tracking server URL has no host"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid(
                "the tracking server URL must not have a query or fragment",
            ));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(invalid(
                "the tracking server URL must not contain credentials: set \
                 MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) \
                 instead",
            ));
        }
        let path = base.path().trim_end_matches('/').to_owned();
        base.set_path(&path);
        let base_str = base.as_str().trim_end_matches('/').to_owned();

        let timeout = if config.timeout.is_zero() {
            DEFAULT_TIMEOUT
        } else {
            config.timeout
        };
        let http = covidct_common::http_client(
            &base,
            timeout,
            concat!("covidct-tracking/", env!("CARGO_PKG_VERSION")),
        )
        .build()
        .map_err(|source| TrackingError::HttpClient { source })?;
        Ok(Self {
            http,
            base,
            base_str,
            auth: config.auth,
            retry: config.retry,
            timeout,
        })
    }

    /// The server's root URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base_str
    }

    /// The timeout of one request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The URL of `{base}/{path}` where `segments` are percent-encoded one by one.
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut parts) = url.path_segments_mut() {
            parts.pop_if_empty();
            for segment in segments {
                parts.push(segment);
            }
        }
        url
    }

    /// The URL of MLflow REST endpoint `endpoint` (e.g. `runs/get`).
    pub(crate) fn api_url(&self, endpoint: &str) -> Url {
        let mut segments = vec!["api", "2.0", "mlflow"];
        segments.extend(endpoint.split('/'));
        self.url(&segments)
    }

    /// A request with the credentials attached.
    pub(crate) fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let request = self.http.request(method, url);
        match &self.auth {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::Basic { username, password } => request.basic_auth(username, Some(password)),
        }
    }

    /// Calls a JSON endpoint of the REST API with retries and decodes the answer.
    ///
    /// `query` goes into the URL (GET), `body` is sent as JSON (other methods); `what` names the
    /// resource for [`TrackingError::NotFound`] and [`TrackingError::AlreadyExists`].
    pub(crate) fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        endpoint: &str,
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
        what: &str,
    ) -> Result<T, TrackingError> {
        let mut url = self.api_url(endpoint);
        let label = format!("{method} {}", url.path());
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let bytes = self.with_retry(&label, || {
            let mut request = self.request(method.clone(), url.clone());
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = self.send(request, &url)?;
            let response = self.check(response, &label, what)?;
            response
                .bytes()
                .map_err(|e| transport_error(e, &url, self.timeout))
        })?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(bytes).map_err(|e| TrackingError::Decode {
            endpoint: label,
            reason: format!("{e} in {}", snippet(bytes)),
        })
    }

    /// Runs `attempt` until it succeeds, fails with a non-transient error, or the retry policy
    /// is spent (the last error is returned).
    pub(crate) fn with_retry<R>(
        &self,
        label: &str,
        mut attempt: impl FnMut() -> Result<R, TrackingError>,
    ) -> Result<R, TrackingError> {
        let attempts = self.retry.attempts.max(1);
        let mut tried = 0;
        loop {
            tried += 1;
            match attempt() {
                Ok(value) => return Ok(value),
                Err(error) if error.is_transient() && tried < attempts => {
                    let wait = self.retry.backoff(tried);
                    tracing::warn!(request = label, attempt = tried, of = attempts, wait_ms = wait.as_millis() as u64, %error, "MLflow request failed; retrying");
                    std::thread::sleep(wait);
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Sends `request`, mapping transport failures.
    pub(crate) fn send(
        &self,
        request: RequestBuilder,
        url: &Url,
    ) -> Result<Response, TrackingError> {
        tracing::debug!(url = %url, "MLflow request");
        request
            .send()
            .map_err(|e| transport_error(e, url, self.timeout))
    }

    /// Passes a 2xx answer through and turns any other into the matching error.
    pub(crate) fn check(
        &self,
        response: Response,
        label: &str,
        what: &str,
    ) -> Result<Response, TrackingError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let url = response.url().clone();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // The body of an error is small; if it cannot be read the status alone decides.
        let body = response.bytes().map(|b| b.to_vec()).unwrap_or_default();
        Err(answer_error(
            status,
            &url,
            label,
            &body,
            what,
            location.as_deref(),
        ))
    }
}

/// Maps a reqwest transport error: no connection → Unreachable, timeout → Timeout, else Network.
pub(crate) fn transport_error(
    error: reqwest::Error,
    url: &Url,
    timeout: Duration,
) -> TrackingError {
    let url = url.to_string();
    if error.is_connect() {
        TrackingError::Unreachable { url, source: error }
    } else if error.is_timeout() {
        TrackingError::Timeout {
            url,
            timeout,
            source: Box::new(error),
        }
    } else {
        TrackingError::Network {
            url,
            source: Box::new(error),
        }
    }
}

/// The error for a non-2xx answer.
fn answer_error(
    status: StatusCode,
    url: &Url,
    label: &str,
    body: &[u8],
    what: &str,
    location: Option<&str>,
) -> TrackingError {
    let code = status.as_u16();
    if code == 401 || code == 403 {
        return TrackingError::Unauthorized {
            url: url.to_string(),
            status: code,
        };
    }
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let (error_code, message) = match parsed {
        Some(ErrorBody {
            error_code,
            message,
        }) if error_code.is_some() || message.is_some() => {
            (error_code, message.unwrap_or_default())
        }
        _ => (None, snippet(body)),
    };
    match error_code.as_deref() {
        Some("RESOURCE_ALREADY_EXISTS") => {
            return TrackingError::AlreadyExists {
                what: what.to_owned(),
                message,
            };
        }
        Some("RESOURCE_DOES_NOT_EXIST") => {
            return TrackingError::NotFound {
                what: what.to_owned(),
                message,
            };
        }
        Some(_) if code == 404 => {
            return TrackingError::NotFound {
                what: what.to_owned(),
                message,
            };
        }
        _ => {}
    }
    let message = if status.is_redirection() {
        format!(
            "the server redirected to {}: set MLFLOW_TRACKING_URI to the server's final root URL",
            location.unwrap_or("(no Location header)")
        )
    } else if code == 404 {
        format!(
            "{url} is not an MLflow endpoint ({message}): check that MLFLOW_TRACKING_URI is the \
             root URL of an MLflow 3 tracking server"
        )
    } else {
        message
    };
    TrackingError::Api {
        endpoint: label.to_owned(),
        status: code,
        error_code: error_code.unwrap_or_default(),
        message,
    }
}

/// At most 300 characters of a body, for messages.
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    let mut cut: String = text.chars().take(300).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    cut
}

/// The URL with any `user:password@` replaced, for error messages.
fn redact_userinfo(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://<redacted>@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn from_env_needs_an_http_uri() {
        assert_eq!(ServerConfig::from_lookup(env(&[])), None);
        for uri in [
            "",
            "  ",
            "file:///tmp/mlruns",
            "./mlruns",
            "/abs/mlruns",
            "sqlite:///mlflow.db",
            "databricks",
        ] {
            assert_eq!(
                ServerConfig::from_lookup(env(&[("MLFLOW_TRACKING_URI", uri)])),
                None,
                "{uri}"
            );
        }
        let config = ServerConfig::from_lookup(env(&[("MLFLOW_TRACKING_URI", "HTTP://h:5000/")]))
            .expect("http");
        assert_eq!(config.base_url, "HTTP://h:5000/");
        assert_eq!(config.auth, Auth::None);
        assert_eq!(config.timeout, DEFAULT_TIMEOUT);
        assert_eq!(config.retry, RetryPolicy::default());
    }

    #[test]
    fn from_env_reads_credentials_like_mlflow() {
        let uri = ("MLFLOW_TRACKING_URI", "https://mlflow.example");
        let token = ServerConfig::from_lookup(env(&[uri, ("MLFLOW_TRACKING_TOKEN", "t0k")]))
            .expect("token");
        assert_eq!(token.auth, Auth::Bearer("t0k".to_owned()));
        let basic = ServerConfig::from_lookup(env(&[
            uri,
            ("MLFLOW_TRACKING_TOKEN", "t0k"),
            ("MLFLOW_TRACKING_USERNAME", "ana"),
            ("MLFLOW_TRACKING_PASSWORD", "pw"),
            ("MLFLOW_HTTP_REQUEST_TIMEOUT", "5"),
        ]))
        .expect("basic");
        assert_eq!(
            basic.auth,
            Auth::Basic {
                username: "ana".to_owned(),
                password: "pw".to_owned()
            }
        );
        assert_eq!(basic.timeout, Duration::from_secs(5));
        // A username alone is not enough for basic auth.
        let half = ServerConfig::from_lookup(env(&[uri, ("MLFLOW_TRACKING_USERNAME", "ana")]))
            .expect("half");
        assert_eq!(half.auth, Auth::None);
        assert!(!format!("{basic:?}").contains("pw\""));
        assert!(!format!("{token:?}").contains("t0k"));
    }

    #[test]
    fn backoff_doubles() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.backoff(1), Duration::from_millis(500));
        assert_eq!(policy.backoff(2), Duration::from_millis(1000));
        assert_eq!(policy.backoff(3), Duration::from_millis(2000));
        assert_eq!(policy.backoff(40), Duration::from_secs(60));
    }

    #[test]
    fn bad_base_urls_are_refused() {
        for (bad, expected) in [
            ("ftp://h", "http:// or https://"),
            ("not a url", "root URL"),
            ("http://h/?x=1", "query"),
            ("http://ana:secret@h:5000", "must not contain credentials"),
        ] {
            let err = MlflowClient::new(ServerConfig::new(bad)).expect_err(bad);
            let text = err.to_string();
            assert!(text.contains(expected), "{bad}: {text}");
            assert!(!text.contains("secret"), "{text}");
        }
    }

    #[test]
    fn urls_keep_a_prefix_and_encode_segments() {
        let client = MlflowClient::new(ServerConfig::new("https://h/mlflow/")).expect("client");
        assert_eq!(client.base_url(), "https://h/mlflow");
        assert_eq!(
            client.api_url("runs/get").as_str(),
            "https://h/mlflow/api/2.0/mlflow/runs/get"
        );
        assert_eq!(
            client.url(&["x", "a b#c"]).as_str(),
            "https://h/mlflow/x/a%20b%23c"
        );
    }

    #[test]
    fn answers_map_to_errors() {
        let url = Url::parse("http://h/api/2.0/mlflow/runs/get").expect("url");
        let label = "GET /api/2.0/mlflow/runs/get";
        let not_found = answer_error(
            StatusCode::NOT_FOUND,
            &url,
            label,
            br#"{"error_code":"RESOURCE_DOES_NOT_EXIST","message":"Run with id=x not found"}"#,
            "run 'x'",
            None,
        );
        assert_eq!(
            not_found.to_string(),
            "run 'x' does not exist on the MLflow tracking server: Run with id=x not found"
        );
        let exists = answer_error(
            StatusCode::BAD_REQUEST,
            &url,
            label,
            br#"{"error_code":"RESOURCE_ALREADY_EXISTS","message":"dup"}"#,
            "registered model 'm'",
            None,
        );
        assert!(matches!(exists, TrackingError::AlreadyExists { .. }));
        let html = answer_error(
            StatusCode::BAD_GATEWAY,
            &url,
            label,
            b"<html>bad gateway</html>",
            "run 'x'",
            None,
        );
        assert!(html.is_transient());
        assert!(html.to_string().contains("<html>bad gateway</html>"));
        let plain_404 = answer_error(StatusCode::NOT_FOUND, &url, label, b"", "run 'x'", None);
        assert!(
            plain_404.to_string().contains("not an MLflow endpoint"),
            "{plain_404}"
        );
        let redirect = answer_error(
            StatusCode::MOVED_PERMANENTLY,
            &url,
            label,
            b"",
            "run 'x'",
            Some("https://h/"),
        );
        assert!(redirect.to_string().contains("redirected to https://h/"));
        let forbidden = answer_error(StatusCode::FORBIDDEN, &url, label, b"{}", "run 'x'", None);
        assert!(matches!(
            forbidden,
            TrackingError::Unauthorized { status: 403, .. }
        ));
    }
}
