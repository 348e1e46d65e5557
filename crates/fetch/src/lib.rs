//! Dataset download from Kaggle's public API.
//!
//! [`fetch_kaggle`] downloads a Kaggle dataset archive with the user's [`KaggleCredentials`],
//! resumes an interrupted download from its `.part` file, computes (and optionally verifies)
//! the archive's SHA-256, and extracts it with [`extract_zip_safely`], which refuses entries
//! that would escape the target folder, symlinks, and archives over the [`ExtractLimits`].
//!
//! Layout under [`KaggleFetchOptions::out_dir`] for the dataset `owner/name`:
//!
//! ```text
//! {out_dir}/name.zip        the downloaded archive (renamed into place once complete)
//! {out_dir}/name.zip.part   an unfinished download, resumed by the next run
//! {out_dir}/name.zip.rejected  an archive whose SHA-256 did not match, kept for inspection
//! {out_dir}/name/           the extracted dataset (renamed into place once complete)
//! ```
//!
//! Tracing: `info` when a fetch starts, a download resumes or finishes, and extraction ends;
//! `warn` when a resume has to restart from zero.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod credentials;
mod dataset;
mod download;
mod error;
mod extract;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use credentials::{CredentialSources, KaggleCredentials};
pub use dataset::parse_dataset;
pub use error::FetchError;
pub use extract::{
    ExistingDir, ExtractLimits, ExtractReport, extract_zip_safely, extract_zip_with,
};

/// The dataset this project trains on: the SARS-CoV-2 CT-scan dataset on Kaggle.
pub const DEFAULT_DATASET: &str = "plameneduardo/sarscov2-ctscan-dataset";

/// Kaggle's public API root.
pub const DEFAULT_API_BASE: &str = "https://www.kaggle.com/api/v1";

/// Options of one Kaggle download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KaggleFetchOptions {
    /// The dataset as `owner/name`, e.g. `plameneduardo/sarscov2-ctscan-dataset`.
    pub dataset: String,
    /// Folder that receives `name.zip` and the extracted `name/` folder (created if missing).
    pub out_dir: PathBuf,
    /// Kaggle API root, without the trailing `/datasets/...` (default [`DEFAULT_API_BASE`]).
    pub api_base: String,
    /// Expected SHA-256 of the archive as 64 hex digits; `None` only computes and reports it.
    pub expected_sha256: Option<String>,
    /// Limits that extraction enforces against zip bombs.
    pub limits: ExtractLimits,
    /// Draw a progress bar on stderr (it is hidden anyway when stderr is not a terminal).
    pub show_progress: bool,
    /// Replace a non-empty `{out_dir}/{name}/` folder (atomically); without it the fetch refuses.
    pub overwrite: bool,
    /// Download again even when `{out_dir}/{name}.zip` already exists (default: reuse it).
    pub redownload: bool,
    /// Network timeout, in seconds, for connecting and for each read of the response.
    pub timeout_secs: u64,
}

impl Default for KaggleFetchOptions {
    fn default() -> Self {
        Self {
            dataset: DEFAULT_DATASET.to_owned(),
            out_dir: PathBuf::from("data"),
            api_base: DEFAULT_API_BASE.to_owned(),
            expected_sha256: None,
            limits: ExtractLimits::default(),
            show_progress: true,
            overwrite: false,
            redownload: false,
            timeout_secs: 60,
        }
    }
}

/// What [`fetch_kaggle`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchReport {
    /// The dataset as `owner/name`.
    pub dataset: String,
    /// The API URL the archive was requested from.
    pub url: String,
    /// Where the archive is kept.
    pub archive_path: PathBuf,
    /// Size of the archive in bytes.
    pub archive_bytes: u64,
    /// Bytes received over the network by this run (0 when an existing archive was reused).
    pub bytes_downloaded: u64,
    /// Offset the download resumed from, when a `.part` file was continued.
    pub resumed_from: Option<u64>,
    /// Whether an archive already in place was reused instead of downloaded.
    pub reused_archive: bool,
    /// SHA-256 of the archive, lowercase hex.
    pub sha256: String,
    /// Whether the SHA-256 was checked against an expected value (and matched).
    pub sha256_verified: bool,
    /// Folder holding the extracted dataset.
    pub dataset_dir: PathBuf,
    /// Regular files extracted.
    pub files_extracted: u64,
    /// Bytes written by extraction.
    pub bytes_extracted: u64,
    /// Whether a previous dataset folder was replaced.
    pub replaced_existing: bool,
}

impl fmt::Display for FetchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = if self.reused_archive {
            "reused existing archive".to_owned()
        } else if let Some(offset) = self.resumed_from {
            format!(
                "downloaded {} bytes, resumed from byte {offset}",
                self.bytes_downloaded
            )
        } else {
            format!("downloaded {} bytes", self.bytes_downloaded)
        };
        writeln!(f, "dataset   {} ({origin})", self.dataset)?;
        writeln!(
            f,
            "archive   {} ({} bytes)",
            self.archive_path.display(),
            self.archive_bytes
        )?;
        let check = if self.sha256_verified {
            "verified"
        } else {
            "not verified"
        };
        writeln!(f, "sha256    {} ({check})", self.sha256)?;
        write!(
            f,
            "extracted {} files, {} bytes into {}{}",
            self.files_extracted,
            self.bytes_extracted,
            self.dataset_dir.display(),
            if self.replaced_existing {
                " (replaced previous contents)"
            } else {
                ""
            }
        )
    }
}

/// Downloads `options.dataset` from Kaggle into `options.out_dir` and extracts it safely.
///
/// Steps: validate the dataset name and options; refuse early if the dataset folder is not
/// empty and `overwrite` is off; download `{name}.zip` (resuming `{name}.zip.part` if present,
/// or reusing a finished `{name}.zip` unless `redownload`); check its SHA-256; extract it into
/// `{out_dir}/{name}/` through a temporary folder that is renamed into place.
pub fn fetch_kaggle(
    options: &KaggleFetchOptions,
    credentials: &KaggleCredentials,
) -> Result<FetchReport, FetchError> {
    let (_owner, name) = parse_dataset(&options.dataset)?;
    let expected = options
        .expected_sha256
        .as_deref()
        .map(normalize_sha256)
        .transpose()?;
    let url = download::dataset_url(&options.api_base, &options.dataset)?;

    create_dir_all(&options.out_dir)?;
    let dataset_dir = options.out_dir.join(name);
    if !options.overwrite && !extract::is_missing_or_empty(&dataset_dir)? {
        return Err(FetchError::DestinationNotEmpty { path: dataset_dir });
    }
    let archive_path = options.out_dir.join(format!("{name}.zip"));
    let part_path = options.out_dir.join(format!("{name}.zip.part"));

    tracing::info!(dataset = %options.dataset, url = %url, out_dir = %options.out_dir.display(), "fetching Kaggle dataset");

    let reuse = !options.redownload && archive_path.is_file();
    let (sha256, bytes_downloaded, resumed_from) = if reuse {
        tracing::info!(archive = %archive_path.display(), "reusing the archive already downloaded (set redownload to fetch it again)");
        (covidct_common::sha256_file(&archive_path)?, 0, None)
    } else {
        let outcome = download::download(
            &url,
            credentials,
            &part_path,
            &download::DownloadSettings {
                dataset: &options.dataset,
                show_progress: options.show_progress,
                timeout_secs: options.timeout_secs,
            },
        )?;
        (
            outcome.sha256,
            outcome.bytes_downloaded,
            outcome.resumed_from,
        )
    };
    let downloaded_path = if reuse { &archive_path } else { &part_path };

    match &expected {
        Some(expected) if *expected != sha256 => {
            let rejected = options.out_dir.join(format!("{name}.zip.rejected"));
            rename(downloaded_path, &rejected)?;
            return Err(FetchError::ChecksumMismatch {
                path: rejected,
                expected: expected.clone(),
                actual: sha256,
            });
        }
        _ => {}
    }
    if !reuse {
        rename(&part_path, &archive_path)?;
    }
    let archive_bytes = std::fs::metadata(&archive_path)
        .map_err(|source| FetchError::io("read the size of", &archive_path, source))?
        .len();
    tracing::info!(archive = %archive_path.display(), bytes = archive_bytes, sha256 = %sha256, verified = expected.is_some(), "archive ready");

    let existing = if options.overwrite {
        ExistingDir::Replace
    } else {
        ExistingDir::Refuse
    };
    let extracted = extract_zip_with(&archive_path, &dataset_dir, &options.limits, existing)?;

    let report = FetchReport {
        dataset: options.dataset.clone(),
        url: url.to_string(),
        archive_path,
        archive_bytes,
        bytes_downloaded,
        resumed_from,
        reused_archive: reuse,
        sha256,
        sha256_verified: expected.is_some(),
        dataset_dir,
        files_extracted: extracted.files,
        bytes_extracted: extracted.bytes,
        replaced_existing: extracted.replaced_existing,
    };
    tracing::info!(dataset = %report.dataset, files = report.files_extracted, bytes = report.bytes_extracted, dir = %report.dataset_dir.display(), "dataset fetched");
    Ok(report)
}

/// Checks a SHA-256 given by the user (64 hex digits, any case) and returns it lowercase.
fn normalize_sha256(value: &str) -> Result<String, FetchError> {
    let trimmed = value.trim();
    if trimmed.len() == 64 && trimmed.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(trimmed.to_ascii_lowercase())
    } else {
        Err(FetchError::InvalidExpectedChecksum {
            value: value.to_owned(),
        })
    }
}

fn create_dir_all(path: &Path) -> Result<(), FetchError> {
    std::fs::create_dir_all(path)
        .map_err(|source| FetchError::io("create the folder", path, source))
}

fn rename(from: &Path, to: &Path) -> Result<(), FetchError> {
    std::fs::rename(from, to).map_err(|source| FetchError::Rename {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_names_are_validated() {
        assert_eq!(
            parse_dataset("plameneduardo/sarscov2-ctscan-dataset").ok(),
            Some(("plameneduardo", "sarscov2-ctscan-dataset"))
        );
        for bad in [
            "",
            "a",
            "/b",
            "a/",
            "a/b/c",
            "../b",
            "a/..",
            "a/.hidden",
            "a b/c",
            "a/b?x=1",
            "a/b#f",
            "a\\b/c",
            "a/%2e%2e",
        ] {
            assert!(
                matches!(parse_dataset(bad), Err(FetchError::InvalidDataset { .. })),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn expected_checksums_are_normalized() {
        let upper = "AB".repeat(32);
        assert_eq!(normalize_sha256(&upper).ok(), Some("ab".repeat(32)));
        assert!(normalize_sha256("abc").is_err());
        assert!(normalize_sha256(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn options_round_trip_through_serde_and_have_defaults() {
        let options = KaggleFetchOptions::default();
        let json = serde_json::to_string(&options).expect("serialize");
        let back: KaggleFetchOptions = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, options);
        let partial: KaggleFetchOptions =
            serde_json::from_str(r#"{"dataset":"a/b","overwrite":true}"#).expect("partial");
        assert_eq!(partial.dataset, "a/b");
        assert!(partial.overwrite);
        assert_eq!(partial.api_base, DEFAULT_API_BASE);
    }
}
