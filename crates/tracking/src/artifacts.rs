//! Artifact upload, download and listing through the tracking server's artifact proxy
//! (`/api/2.0/mlflow-artifacts/artifacts/<path>`), streamed in both directions.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use reqwest::blocking::Body;
use reqwest::{Method, Url};
use serde::Deserialize;

use crate::client::transport_error;
use crate::types::WireFileInfo;
use crate::{ArtifactEntry, ArtifactUri, MlflowClient, TrackingError};

/// Size of the buffer a download is copied through.
const COPY_BUFFER: usize = 256 * 1024;

#[derive(Deserialize)]
struct ListAnswer {
    #[serde(default)]
    files: Vec<WireFileInfo>,
}

/// A read error of a response body: a timeout or a broken connection.
fn body_error(error: std::io::Error, url: &Url, timeout: Duration) -> TrackingError {
    let is_timeout = error.kind() == std::io::ErrorKind::TimedOut
        || error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<reqwest::Error>())
            .is_some_and(reqwest::Error::is_timeout);
    if is_timeout {
        TrackingError::Timeout {
            url: url.to_string(),
            timeout,
            source: Box::new(error),
        }
    } else {
        TrackingError::Network {
            url: url.to_string(),
            source: Box::new(error),
        }
    }
}

impl MlflowClient {
    /// Parses `artifact_root` and checks it designates this client's server.
    fn artifact_root(&self, artifact_root: &str) -> Result<ArtifactUri, TrackingError> {
        let root = ArtifactUri::parse(artifact_root)?;
        if let Some(authority) = root.authority() {
            let base = Url::parse(self.base_url()).ok();
            let theirs = Url::parse(&format!(
                "{}://{authority}/",
                base.as_ref().map_or("http", |b| b.scheme())
            ))
            .ok();
            let same = match (&base, &theirs) {
                (Some(base), Some(theirs)) => {
                    base.host_str()
                        .zip(theirs.host_str())
                        .is_some_and(|(a, b)| a.eq_ignore_ascii_case(b))
                        && base.port_or_known_default() == theirs.port_or_known_default()
                }
                _ => false,
            };
            if !same {
                return Err(TrackingError::InvalidUri {
                    uri: artifact_root.to_owned(),
                    reason: format!(
                        "it points at the server {authority}, but this client talks to {}: use a \
                         client of that server",
                        self.base_url()
                    ),
                });
            }
        }
        Ok(root)
    }

    /// The proxy URL of `path` (segments percent-encoded).
    fn proxy_url(&self, path: &str) -> Url {
        let mut segments = vec!["api", "2.0", "mlflow-artifacts", "artifacts"];
        segments.extend(path.split('/').filter(|s| !s.is_empty()));
        self.url(&segments)
    }

    /// Uploads `local_file` to `relative_path` under `artifact_root` (an `mlflow-artifacts:/…`
    /// location such as a run's artifact URI or a logged model's artifact location), streaming
    /// the file as the request body. An existing artifact of that path is replaced.
    ///
    /// The request may take the client's timeout plus one second per MiB of the file.
    pub fn upload_artifact(
        &self,
        artifact_root: &str,
        relative_path: &str,
        local_file: &Path,
    ) -> Result<(), TrackingError> {
        let root = self.artifact_root(artifact_root)?;
        if relative_path.trim_matches('/').is_empty() {
            return Err(TrackingError::InvalidUri {
                uri: format!("{root}/{relative_path}"),
                reason: "the artifact path of an upload must name a file".to_owned(),
            });
        }
        let path = root.join(relative_path)?;
        let metadata =
            std::fs::metadata(local_file).map_err(|e| TrackingError::io(local_file, e))?;
        if !metadata.is_file() {
            return Err(TrackingError::io(
                local_file,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
            ));
        }
        let size = metadata.len();
        let timeout = self.timeout() + Duration::from_secs(size / (1024 * 1024));
        let url = self.proxy_url(&path);
        let label = format!("PUT {}", url.path());
        let what = format!("artifact location '{root}'");
        self.with_retry(&label, || {
            // Opened again for each try: a body stream cannot be rewound.
            let file = File::open(local_file).map_err(|e| TrackingError::io(local_file, e))?;
            let request = self
                .request(Method::PUT, url.clone())
                .timeout(timeout)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(Body::from(file));
            let response = self.send(request, &url)?;
            let response = self.check(response, &label, &what)?;
            // Drain the (tiny) answer so the connection can be reused.
            let _ = response.bytes();
            Ok(())
        })?;
        tracing::info!(artifact = %format!("{root}/{relative_path}"), bytes = size, "uploaded artifact");
        Ok(())
    }

    /// Downloads artifact `relative_path` under `artifact_root` to `dest`: streamed into a
    /// temporary file in `dest`'s folder (created if missing), synced, then renamed over
    /// `dest`, so `dest` is never left half-written.
    pub fn download_artifact(
        &self,
        artifact_root: &str,
        relative_path: &str,
        dest: &Path,
    ) -> Result<(), TrackingError> {
        let root = self.artifact_root(artifact_root)?;
        if relative_path.trim_matches('/').is_empty() {
            return Err(TrackingError::InvalidUri {
                uri: format!("{root}/{relative_path}"),
                reason: "the artifact path of a download must name a file".to_owned(),
            });
        }
        let path = root.join(relative_path)?;
        let url = self.proxy_url(&path);
        let what = format!("artifact '{root}/{}'", relative_path.trim_matches('/'));
        self.download_to(url, &what, dest)
    }

    /// Downloads file `path` of version `version` of registered model `name` to `dest` through
    /// the server's `/model-versions/get-artifact` route (what `mlflow models serve` uses), with
    /// the same temporary-file-and-rename safety as [`MlflowClient::download_artifact`].
    pub fn download_model_version_artifact(
        &self,
        name: &str,
        version: u64,
        path: &str,
        dest: &Path,
    ) -> Result<(), TrackingError> {
        crate::uri::check_relative_path(path).map_err(|reason| TrackingError::InvalidUri {
            uri: path.to_owned(),
            reason: format!("bad artifact path: {reason}"),
        })?;
        let mut url = self.url(&["model-versions", "get-artifact"]);
        url.query_pairs_mut()
            .append_pair("name", name)
            .append_pair("version", &version.to_string())
            .append_pair("path", path);
        let what = format!("file '{path}' of version {version} of registered model '{name}'");
        self.download_to(url, &what, dest)
    }

    fn download_to(&self, url: Url, what: &str, dest: &Path) -> Result<(), TrackingError> {
        let folder = match dest.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        std::fs::create_dir_all(folder).map_err(|e| TrackingError::io(folder, e))?;
        let label = format!("GET {}", url.path());
        let bytes = self.with_retry(&label, || {
            let response = self.send(self.request(Method::GET, url.clone()), &url)?;
            let mut response = self.check(response, &label, what)?;
            let mut temp = tempfile::Builder::new()
                .prefix(".download-")
                .suffix(".part")
                .tempfile_in(folder)
                .map_err(|e| TrackingError::io(folder, e))?;
            let mut buffer = vec![0u8; COPY_BUFFER];
            let mut total: u64 = 0;
            loop {
                let n = match response.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(body_error(e, &url, self.timeout())),
                };
                temp.write_all(&buffer[..n])
                    .map_err(|e| TrackingError::io(temp.path(), e))?;
                total += n as u64;
            }
            temp.as_file()
                .sync_all()
                .map_err(|e| TrackingError::io(temp.path(), e))?;
            temp.persist(dest)
                .map_err(|e| TrackingError::io(dest, e.error))?;
            Ok(total)
        })?;
        tracing::info!(dest = %dest.display(), bytes, "downloaded artifact");
        Ok(())
    }

    /// The entries directly in folder `relative_dir` under `artifact_root` (`""` for the root
    /// itself); an empty list when the folder does not exist. Entry paths include
    /// `relative_dir`, so they can be passed to [`MlflowClient::download_artifact`].
    pub fn list_artifacts(
        &self,
        artifact_root: &str,
        relative_dir: &str,
    ) -> Result<Vec<ArtifactEntry>, TrackingError> {
        let root = self.artifact_root(artifact_root)?;
        let relative_dir = relative_dir.trim_matches('/');
        let path = root.join(relative_dir)?;
        let mut url = self.proxy_url("");
        let label = format!("GET {}", url.path());
        if !path.is_empty() {
            url.query_pairs_mut().append_pair("path", &path);
        }
        let what = format!("artifact folder '{root}/{relative_dir}'");
        let answer: ListAnswer = self.with_retry(&label, || {
            let response = self.send(self.request(Method::GET, url.clone()), &url)?;
            let response = self.check(response, &label, &what)?;
            let bytes = response
                .bytes()
                .map_err(|e| transport_error(e, &url, self.timeout()))?;
            serde_json::from_slice(&bytes).map_err(|e| TrackingError::Decode {
                endpoint: label.clone(),
                reason: format!("{e} in {}", crate::client::snippet(&bytes)),
            })
        })?;
        Ok(answer
            .files
            .into_iter()
            .map(|f| {
                let name = f.path.rsplit('/').next().unwrap_or(&f.path).to_owned();
                ArtifactEntry {
                    path: if relative_dir.is_empty() {
                        name
                    } else {
                        format!("{relative_dir}/{name}")
                    },
                    is_dir: f.is_dir,
                    file_size: if f.is_dir {
                        None
                    } else {
                        f.file_size.and_then(|s| u64::try_from(s).ok())
                    },
                }
            })
            .collect())
    }
}
