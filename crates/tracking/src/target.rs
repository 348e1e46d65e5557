//! Which store runs go to, chosen from `MLFLOW_TRACKING_URI`: an MLflow server or a local file
//! store.

use std::path::PathBuf;

use crate::error::TrackingError;
use crate::file_store::FileStore;
use crate::sink::{ServerSink, Sink};
use crate::{MlflowClient, ServerConfig};

/// Where runs are recorded.
#[derive(Debug, Clone)]
pub enum TrackingTarget {
    /// An MLflow tracking server.
    Server(ServerConfig),
    /// A local MLflow file store (a `mlruns` folder).
    Local(PathBuf),
}

impl TrackingTarget {
    /// The target named by `MLFLOW_TRACKING_URI`: a server for `http(s)://`, a file store for
    /// `file:` URIs and plain paths, `./mlruns` when unset.
    pub fn from_env() -> Self {
        if let Some(server) = ServerConfig::from_env() {
            return Self::Server(server);
        }
        let uri = std::env::var("MLFLOW_TRACKING_URI").unwrap_or_default();
        Self::from_local_uri(&uri)
    }

    /// A target from a recorded URI, with credentials from the environment for servers.
    pub fn from_uri(uri: &str) -> Self {
        if uri.starts_with("http://") || uri.starts_with("https://") {
            let mut config = ServerConfig::from_env().unwrap_or_else(|| ServerConfig::new(uri));
            config.base_url = uri.trim_end_matches('/').to_owned();
            return Self::Server(config);
        }
        Self::from_local_uri(uri)
    }

    fn from_local_uri(uri: &str) -> Self {
        let path = uri
            .strip_prefix("file://")
            .or_else(|| uri.strip_prefix("file:"))
            .unwrap_or(uri);
        Self::Local(PathBuf::from(if path.is_empty() { "mlruns" } else { path }))
    }

    /// Opens the sink for this target.
    pub fn open(&self) -> Result<Box<dyn Sink>, TrackingError> {
        Ok(match self {
            Self::Server(config) => Box::new(ServerSink::new(config.clone())?),
            Self::Local(root) => Box::new(FileStore::open(root)?),
        })
    }

    /// The server client, for the registry commands that need one.
    pub fn server(&self) -> Result<MlflowClient, TrackingError> {
        match self {
            Self::Server(config) => MlflowClient::new(config.clone()),
            Self::Local(root) => Err(TrackingError::InvalidUri {
                uri: root.display().to_string(),
                reason: "the model registry needs an MLflow tracking server: set \
                         MLFLOW_TRACKING_URI=http://host:port"
                    .to_owned(),
            }),
        }
    }
}
