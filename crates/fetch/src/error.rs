//! The error type of this crate.

use std::path::{Path, PathBuf};

/// Everything that can go wrong while fetching and extracting a dataset.
///
/// Each message names the file, archive entry or URL at fault and says what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// No Kaggle credentials were found in the environment or in `kaggle.json`.
    #[error(
        "no Kaggle credentials found ({missing}): set the KAGGLE_USERNAME and KAGGLE_KEY \
         environment variables, or put kaggle.json ({{\"username\":...,\"key\":...}}, from \
         https://www.kaggle.com/settings > API > Create New Token) at {} \
         (its folder can be changed with KAGGLE_CONFIG_DIR)",
        config_path.display()
    )]
    MissingCredentials {
        /// Where `kaggle.json` was looked for.
        config_path: PathBuf,
        /// Which values were missing.
        missing: String,
    },

    /// `kaggle.json` exists but cannot be read or parsed.
    #[error(
        "cannot use the Kaggle credentials file {}: {reason}; it must be JSON like \
         {{\"username\":\"you\",\"key\":\"...\"}} (download a fresh one from \
         https://www.kaggle.com/settings > API > Create New Token)",
        path.display()
    )]
    InvalidCredentialsFile {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Kaggle answered 401 or 403 to the download request.
    #[error(
        "Kaggle refused the credentials of user '{username}' (HTTP {status}) for {url}: check the \
         username and key in KAGGLE_USERNAME/KAGGLE_KEY or kaggle.json (create a new token at \
         https://www.kaggle.com/settings if the key was revoked), and accept the dataset's rules \
         on its Kaggle page if it has any"
    )]
    CredentialsRefused {
        /// The username that was sent.
        username: String,
        /// The URL that refused it.
        url: String,
        /// 401 or 403.
        status: u16,
    },

    /// Kaggle answered 404: no such dataset (or it is private to someone else).
    #[error(
        "Kaggle dataset '{dataset}' not found (HTTP 404 from {url}): check the owner/name as it \
         appears in the dataset's URL https://www.kaggle.com/datasets/{dataset}"
    )]
    DatasetNotFound {
        /// The dataset asked for.
        dataset: String,
        /// The URL that answered 404.
        url: String,
    },

    /// The dataset argument is not a safe `owner/name`.
    #[error(
        "invalid Kaggle dataset '{dataset}': {reason} (write it as owner/name, e.g. \
         plameneduardo/sarscov2-ctscan-dataset)"
    )]
    InvalidDataset {
        /// The value given.
        dataset: String,
        /// Why it was refused.
        reason: String,
    },

    /// The API base is not an absolute http(s) URL.
    #[error(
        "invalid Kaggle API base URL '{api_base}': {reason} (the default is https://www.kaggle.com/api/v1)"
    )]
    InvalidApiBase {
        /// The value given.
        api_base: String,
        /// Why it was refused.
        reason: String,
    },

    /// The expected checksum is not 64 hex digits.
    #[error(
        "invalid expected SHA-256 '{value}': give the 64 hexadecimal digits of the archive's SHA-256"
    )]
    InvalidExpectedChecksum {
        /// The value given.
        value: String,
    },

    /// The server answered with an unexpected HTTP status.
    #[error("HTTP {status} from {url}: {hint}")]
    HttpStatus {
        /// The URL that answered.
        url: String,
        /// The status code.
        status: u16,
        /// What the status probably means and what to do.
        hint: String,
    },

    /// A redirect could not be followed.
    #[error("cannot follow the redirect from {url}: {reason}")]
    BadRedirect {
        /// The URL that redirected.
        url: String,
        /// Why it was not followed.
        reason: String,
    },

    /// A shared helper failed (reading a file to hash it).
    #[error(transparent)]
    Common(#[from] covidct_common::CommonError),

    /// The HTTP client could not be built (TLS setup).
    #[error("cannot set up the HTTP client: {source}")]
    HttpClient {
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },

    /// The request could not be sent or its response headers could not be read.
    #[error(
        "network error requesting {url}: {source} (check your connection and proxy settings, then run again)"
    )]
    Network {
        /// The URL requested.
        url: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },

    /// The connection broke while the archive was being received.
    #[error(
        "download of {url} interrupted after {received} bytes: {source}; the partial download \
         is kept in {} and the next run resumes it",
        part.display()
    )]
    DownloadInterrupted {
        /// The URL being downloaded.
        url: String,
        /// The `.part` file holding what was received.
        part: PathBuf,
        /// Bytes in the `.part` file.
        received: u64,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The response ended before the announced length.
    #[error(
        "download of {url} ended after {received} of {expected} bytes; the partial download is \
         kept in {} and the next run resumes it",
        part.display()
    )]
    DownloadIncomplete {
        /// The URL being downloaded.
        url: String,
        /// The `.part` file holding what was received.
        part: PathBuf,
        /// Bytes in the `.part` file.
        received: u64,
        /// Bytes announced by the server.
        expected: u64,
    },

    /// The archive's SHA-256 differs from the expected value.
    #[error(
        "SHA-256 mismatch for {}: expected {expected}, got {actual}; the file was kept there for \
         inspection and will not be extracted (delete it and run again, or update the expected \
         checksum if the dataset changed on Kaggle)",
        path.display()
    )]
    ChecksumMismatch {
        /// Where the rejected archive was kept.
        path: PathBuf,
        /// The expected checksum.
        expected: String,
        /// The checksum of the file.
        actual: String,
    },

    /// The target dataset folder exists and is not empty.
    #[error(
        "{} already exists and is not empty: remove it or use the overwrite option to replace it",
        path.display()
    )]
    DestinationNotEmpty {
        /// The folder at fault.
        path: PathBuf,
    },

    /// The archive is not a readable zip file, or an entry cannot be decompressed.
    #[error("cannot read zip archive {}{}: {source} (delete it and download it again)", archive.display(), entry.as_deref().map(|e| format!(", entry '{e}'")).unwrap_or_default())]
    Zip {
        /// The archive at fault.
        archive: PathBuf,
        /// The entry at fault, if any.
        entry: Option<String>,
        /// The underlying error.
        #[source]
        source: zip::result::ZipError,
    },

    /// An entry's name would place it outside the target folder (or is otherwise unsafe).
    #[error("refusing to extract {}: entry '{entry}' has an unsafe path ({reason}); nothing was extracted", archive.display())]
    UnsafeEntryPath {
        /// The archive at fault.
        archive: PathBuf,
        /// The entry's name as stored.
        entry: String,
        /// Why it is unsafe.
        reason: String,
    },

    /// An entry is a symbolic link.
    #[error("refusing to extract {}: entry '{entry}' is a symbolic link; nothing was extracted", archive.display())]
    SymlinkEntry {
        /// The archive at fault.
        archive: PathBuf,
        /// The entry's name as stored.
        entry: String,
    },

    /// Two entries map to the same path.
    #[error("refusing to extract {}: entry '{entry}' appears twice or clashes with another entry; nothing was extracted", archive.display())]
    DuplicateEntry {
        /// The archive at fault.
        archive: PathBuf,
        /// The entry's name as stored.
        entry: String,
    },

    /// The archive has more entries than allowed.
    #[error("refusing to extract {}: {count} entries exceed the limit of {limit} (raise max_entries if the archive is trusted)", archive.display())]
    TooManyEntries {
        /// The archive at fault.
        archive: PathBuf,
        /// Entries in the archive.
        count: u64,
        /// The limit.
        limit: u64,
    },

    /// An entry declares a size above the per-entry limit.
    #[error("refusing to extract {}: entry '{entry}' declares {declared} bytes, above the per-entry limit of {limit} (raise max_entry_bytes if the archive is trusted); nothing was extracted", archive.display())]
    DeclaredSizeTooLarge {
        /// The archive at fault.
        archive: PathBuf,
        /// The entry's name as stored.
        entry: String,
        /// The declared uncompressed size.
        declared: u64,
        /// The limit.
        limit: u64,
    },

    /// An entry decompressed to more bytes than the per-entry limit (whatever it declared).
    #[error("refusing to extract {}: entry '{entry}' decompresses to more than the per-entry limit of {limit} bytes (its declared size was false or too large); nothing was extracted", archive.display())]
    EntryTooLarge {
        /// The archive at fault.
        archive: PathBuf,
        /// The entry's name as stored.
        entry: String,
        /// The limit.
        limit: u64,
    },

    /// The entries together (declared or actual) exceed the total limit.
    #[error("refusing to extract {}: the entries total more than {limit} bytes (at entry '{entry}'; raise max_total_bytes if the archive is trusted); nothing was extracted", archive.display())]
    TotalTooLarge {
        /// The archive at fault.
        archive: PathBuf,
        /// The entry at which the limit was crossed.
        entry: String,
        /// The limit.
        limit: u64,
    },

    /// A file operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or folder at fault.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A rename failed.
    #[error("cannot rename {} to {}: {source}", from.display(), to.display())]
    Rename {
        /// The source path.
        from: PathBuf,
        /// The target path.
        to: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl FetchError {
    /// Builds an [`FetchError::Io`].
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}
