//! Resumable HTTP download of a Kaggle dataset archive, with SHA-256 and a progress bar.

use std::fs::{self, OpenOptions};
use std::io::{BufWriter, IsTerminal, Read, Write};
use std::path::Path;
use std::time::Duration;

use covidct_common::{Sha256Stream, http_client};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::blocking::{Client, Response};
use reqwest::header::{CONTENT_RANGE, LOCATION, RANGE};
use reqwest::{StatusCode, Url};

use crate::credentials::KaggleCredentials;
use crate::dataset::parse_dataset;
use crate::error::FetchError;

/// Most redirects followed for one request.
const MAX_REDIRECTS: usize = 10;

/// Settings of one download.
pub(crate) struct DownloadSettings<'a> {
    /// The dataset as `owner/name`, for error messages.
    pub dataset: &'a str,
    /// Whether to draw a progress bar (only when stderr is a terminal).
    pub show_progress: bool,
    /// Connect timeout and per-read timeout, in seconds.
    pub timeout_secs: u64,
}

/// What one download did.
pub(crate) struct DownloadOutcome {
    /// SHA-256 of the whole `.part` file, lowercase hex.
    pub sha256: String,
    /// Bytes received by this run.
    pub bytes_downloaded: u64,
    /// The offset a previous `.part` was continued from.
    pub resumed_from: Option<u64>,
}

/// `{api_base}/datasets/download/{owner}/{name}`, after checking both inputs.
pub(crate) fn dataset_url(api_base: &str, dataset: &str) -> Result<Url, FetchError> {
    let invalid = |reason: &str| FetchError::InvalidApiBase {
        api_base: api_base.to_owned(),
        reason: reason.to_owned(),
    };
    let (owner, name) = parse_dataset(dataset)?;
    let mut url = Url::parse(api_base).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(invalid("it must be an http:// or https:// URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("it must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "it must not contain credentials (they come from kaggle.json)",
        ));
    }
    let path = format!(
        "{}/datasets/download/{owner}/{name}",
        url.path().trim_end_matches('/')
    );
    url.set_path(&path);
    Ok(url)
}

/// Downloads `url` into `part`, continuing an existing `part` with a `Range` request.
///
/// The server may answer 206 (append), 200 (it ignored the range: start from zero) or 416
/// (the range is unusable: start from zero). On a network error the bytes received so far stay
/// in `part` for the next run.
pub(crate) fn download(
    url: &Url,
    credentials: &KaggleCredentials,
    part: &Path,
    settings: &DownloadSettings<'_>,
) -> Result<DownloadOutcome, FetchError> {
    let timeout = Duration::from_secs(settings.timeout_secs.max(1));
    let client = http_client(
        url,
        timeout,
        concat!("covidct-fetch/", env!("CARGO_PKG_VERSION")),
    )
    .build()
    .map_err(|source| FetchError::HttpClient { source })?;

    let mut offset = existing_part_len(part)?;
    // At most two tries: with the range, then from zero if the server cannot honour it.
    for _ in 0..2 {
        if offset > 0 {
            tracing::info!(part = %part.display(), offset, "resuming partial download");
        } else {
            tracing::info!(url = %url, "downloading archive");
        }
        let response = get_following_redirects(&client, url, credentials, offset)?;
        let status = response.status();
        if status == StatusCode::PARTIAL_CONTENT {
            let start = response
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(content_range_start);
            if start == Some(offset) {
                return receive(response, part, offset, settings);
            }
            tracing::warn!(url = %redacted(response.url()), expected = offset, content_range = ?start, "the server resumed at the wrong offset; restarting the download from zero");
            remove_part(part)?;
            offset = 0;
        } else if status == StatusCode::OK {
            if offset > 0 {
                tracing::warn!(url = %redacted(response.url()), offset, "the server ignored the Range request; restarting the download from zero");
            }
            return receive(response, part, 0, settings);
        } else if status == StatusCode::RANGE_NOT_SATISFIABLE && offset > 0 {
            tracing::warn!(url = %redacted(response.url()), offset, "the server cannot resume from this offset (HTTP 416); restarting the download from zero");
            remove_part(part)?;
            offset = 0;
        } else {
            return Err(status_error(
                status,
                response.url(),
                url,
                settings.dataset,
                credentials,
            ));
        }
    }
    Err(FetchError::HttpStatus {
        url: redacted(url),
        status: StatusCode::PARTIAL_CONTENT.as_u16(),
        hint:
            "the server kept answering with an unusable range; delete the .part file and run again"
                .to_owned(),
    })
}

/// GETs `start`, following redirects by hand so that the `Authorization` header only goes to
/// the API's own origin (scheme, host and port), never to the storage host it redirects to.
fn get_following_redirects(
    client: &Client,
    start: &Url,
    credentials: &KaggleCredentials,
    offset: u64,
) -> Result<Response, FetchError> {
    let api_origin = start.origin();
    let mut url = start.clone();
    for _ in 0..=MAX_REDIRECTS {
        let mut request = client.get(url.clone());
        if url.origin() == api_origin {
            request = request.basic_auth(&credentials.username, Some(&credentials.key));
        }
        if offset > 0 {
            request = request.header(RANGE, format!("bytes={offset}-"));
        }
        let response = request.send().map_err(|source| FetchError::Network {
            url: redacted(&url),
            source,
        })?;
        let status = response.status();
        if !status.is_redirection() || status == StatusCode::NOT_MODIFIED {
            return Ok(response);
        }
        let bad = |reason: &str| FetchError::BadRedirect {
            url: redacted(&url),
            reason: reason.to_owned(),
        };
        let location = response
            .headers()
            .get(LOCATION)
            .ok_or_else(|| bad("the answer has no Location header"))?
            .to_str()
            .map_err(|_| bad("the Location header is not valid text"))?;
        let next = url
            .join(location)
            .map_err(|e| bad(&format!("invalid Location: {e}")))?;
        if !matches!(next.scheme(), "http" | "https") {
            return Err(bad("the Location is not an http(s) URL"));
        }
        if url.scheme() == "https" && next.scheme() != "https" {
            return Err(bad("refusing to downgrade from https to http"));
        }
        tracing::debug!(from = %redacted(&url), to = %redacted(&next), status = status.as_u16(), "following redirect");
        url = next;
    }
    Err(FetchError::BadRedirect {
        url: redacted(start),
        reason: format!("more than {MAX_REDIRECTS} redirects"),
    })
}

/// Streams the body into `part` (appending after `offset` bytes, or from zero), hashing it.
fn receive(
    mut response: Response,
    part: &Path,
    offset: u64,
    settings: &DownloadSettings<'_>,
) -> Result<DownloadOutcome, FetchError> {
    let url = redacted(response.url());
    let mut hasher = Sha256Stream::new();
    let file = if offset > 0 {
        hasher.update_from_file(part)?;
        OpenOptions::new().append(true).open(part)
    } else {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(part)
    }
    .map_err(|e| FetchError::io("open the partial download", part, e))?;
    let mut writer = BufWriter::with_capacity(256 * 1024, file);

    let remaining = response.content_length();
    let progress = progress_bar(settings, remaining.map(|r| offset + r), offset);
    let mut received: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match response.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                progress.abandon();
                writer
                    .flush()
                    .map_err(|e| FetchError::io("write", part, e))?;
                return Err(FetchError::DownloadInterrupted {
                    url,
                    part: part.to_path_buf(),
                    received: offset + received,
                    source,
                });
            }
        };
        hasher.update(&buf[..n]);
        writer
            .write_all(&buf[..n])
            .map_err(|e| FetchError::io("write", part, e))?;
        received += n as u64;
        progress.inc(n as u64);
    }
    let file = writer
        .into_inner()
        .map_err(|e| FetchError::io("write", part, e.into_error()))?;
    file.sync_all()
        .map_err(|e| FetchError::io("flush to disk", part, e))?;
    match remaining {
        Some(expected) if received < expected => {
            progress.abandon();
            return Err(FetchError::DownloadIncomplete {
                url,
                part: part.to_path_buf(),
                received: offset + received,
                expected: offset + expected,
            });
        }
        _ => {}
    }
    progress.finish_and_clear();
    tracing::info!(url = %url, bytes = received, total = offset + received, "download finished");
    Ok(DownloadOutcome {
        sha256: hasher.finish_hex(),
        bytes_downloaded: received,
        resumed_from: (offset > 0).then_some(offset),
    })
}

/// Length of an existing `.part` file, 0 when there is none.
fn existing_part_len(part: &Path) -> Result<u64, FetchError> {
    match fs::symlink_metadata(part) {
        Ok(meta) if meta.is_file() => Ok(meta.len()),
        Ok(_) => Err(FetchError::io(
            "resume into",
            part,
            std::io::Error::other("it is not a regular file; move it away and run again"),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(FetchError::io("inspect", part, e)),
    }
}

fn remove_part(part: &Path) -> Result<(), FetchError> {
    match fs::remove_file(part) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(FetchError::io("delete the partial download", part, e))
        }
        _ => Ok(()),
    }
}

/// The first byte of `Content-Range: bytes START-END/TOTAL`.
fn content_range_start(value: &str) -> Option<u64> {
    let range = value.trim().strip_prefix("bytes")?.trim_start();
    let (start, _) = range.split_once('-')?;
    start.trim().parse().ok()
}

/// Maps a final non-success status to an error that says what to do.
fn status_error(
    status: StatusCode,
    answered: &Url,
    requested: &Url,
    dataset: &str,
    credentials: &KaggleCredentials,
) -> FetchError {
    let from_api = answered.origin() == requested.origin();
    let url = redacted(answered);
    let code = status.as_u16();
    let hint = match code {
        401 | 403 if from_api => {
            return FetchError::CredentialsRefused {
                username: credentials.username.clone(),
                url,
                status: code,
            };
        }
        404 if from_api => {
            return FetchError::DatasetNotFound {
                dataset: dataset.to_owned(),
                url,
            };
        }
        401 | 403 | 404 => {
            "the storage link Kaggle redirected to was refused or has expired; run again to get a fresh one"
        }
        429 => "Kaggle is limiting the request rate; wait a few minutes and run again",
        _ if status.is_server_error() => {
            "the server failed; try again later (a partial download is kept and resumed)"
        }
        _ => "unexpected answer from the server",
    };
    FetchError::HttpStatus {
        url,
        status: code,
        hint: hint.to_owned(),
    }
}

/// The URL without its query: storage links carry signatures that do not belong in logs.
fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.query().is_some() {
        shown.set_query(Some("..."));
    }
    shown.set_fragment(None);
    shown.to_string()
}

fn progress_bar(settings: &DownloadSettings<'_>, total: Option<u64>, position: u64) -> ProgressBar {
    if !settings.show_progress || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match total {
        Some(total) => (
            ProgressBar::new(total),
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{msg} {spinner} {bytes} {bytes_per_sec}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(settings.dataset.to_owned());
    bar.set_position(position);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_is_built_under_the_api_base() {
        let url = dataset_url("https://www.kaggle.com/api/v1/", "owner/some-data").expect("url");
        assert_eq!(
            url.as_str(),
            "https://www.kaggle.com/api/v1/datasets/download/owner/some-data"
        );
        let url = dataset_url("http://127.0.0.1:8080", "o/n").expect("url");
        assert_eq!(url.as_str(), "http://127.0.0.1:8080/datasets/download/o/n");
    }

    #[test]
    fn bad_api_bases_are_refused() {
        for base in [
            "ftp://x/api",
            "not a url",
            "https://u:p@x/api",
            "https://x/api?q=1",
            "file:///tmp",
        ] {
            assert!(
                matches!(
                    dataset_url(base, "o/n"),
                    Err(FetchError::InvalidApiBase { .. })
                ),
                "{base} was accepted"
            );
        }
        assert!(matches!(
            dataset_url("https://x", "o/../n"),
            Err(FetchError::InvalidDataset { .. })
        ));
    }

    #[test]
    fn content_range_is_parsed() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes  7-9/*"), Some(7));
        assert_eq!(content_range_start("bytes */200"), None);
        assert_eq!(content_range_start("items 1-2/3"), None);
    }

    #[test]
    fn signed_queries_are_not_shown() {
        let url = Url::parse("https://storage.example/f.zip?X-Goog-Signature=secret").expect("url");
        assert_eq!(redacted(&url), "https://storage.example/f.zip?...");
    }
}
