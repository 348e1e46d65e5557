//! Safe zip extraction: no path escapes, no symlinks, bounded sizes, all-or-nothing placement.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use zip::ZipArchive;
use zip::result::ZipError;

use crate::FetchError;

/// Unix file-type bits and the symbolic-link type, as stored in a zip entry's unix mode.
const S_IFMT: u32 = 0o170_000;
const S_IFLNK: u32 = 0o120_000;

/// Limits extraction enforces, against zip bombs and runaway archives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtractLimits {
    /// Most entries (files and folders) the archive may hold.
    pub max_entries: u64,
    /// Most bytes one entry may declare and decompress to.
    pub max_entry_bytes: u64,
    /// Most bytes all entries together may declare and decompress to.
    pub max_total_bytes: u64,
}

impl Default for ExtractLimits {
    /// Generous for the ~250 MB CT-scan dataset: 100 000 entries, 512 MiB per entry, 4 GiB total.
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_entry_bytes: 512 << 20,
            max_total_bytes: 4 << 30,
        }
    }
}

/// What to do when the destination folder already exists and is not empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExistingDir {
    /// Refuse with [`FetchError::DestinationNotEmpty`]; nothing is touched.
    Refuse,
    /// Replace it once the new content is fully extracted (the old folder is moved away, the
    /// new one renamed in, then the old one deleted).
    Replace,
}

/// What an extraction wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtractReport {
    /// The folder holding the extracted entries.
    pub dest: PathBuf,
    /// Regular files written.
    pub files: u64,
    /// Folder entries in the archive.
    pub directories: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Whether a previous non-empty destination was replaced.
    pub replaced_existing: bool,
}

/// Extracts `archive` into the folder `dest`, which must be missing or empty.
///
/// Same as [`extract_zip_with`] with [`ExistingDir::Refuse`].
pub fn extract_zip_safely(
    archive: &Path,
    dest: &Path,
    limits: &ExtractLimits,
) -> Result<ExtractReport, FetchError> {
    extract_zip_with(archive, dest, limits, ExistingDir::Refuse)
}

/// Extracts `archive` into the folder `dest`, all or nothing.
///
/// Every entry is checked before anything is written: its path must stay inside `dest` (no
/// `..`, absolute paths, backslashes, drive letters or `:`), it must not be a symbolic link, no
/// two entries may map to the same path, and the entry count and declared sizes must be within
/// `limits`. The entries are then decompressed into a temporary folder next to `dest`, with the
/// limits enforced on the bytes actually produced (declared sizes can lie), and that folder is
/// renamed to `dest`. On any error the temporary folder is removed and `dest` is untouched.
/// Permissions and timestamps stored in the archive are ignored.
pub fn extract_zip_with(
    archive: &Path,
    dest: &Path,
    limits: &ExtractLimits,
    existing: ExistingDir,
) -> Result<ExtractReport, FetchError> {
    let dest_name = dest.file_name().ok_or_else(|| {
        FetchError::io(
            "extract into",
            dest,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the path has no folder name",
            ),
        )
    })?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if existing == ExistingDir::Refuse && !is_missing_or_empty(dest)? {
        return Err(FetchError::DestinationNotEmpty {
            path: dest.to_path_buf(),
        });
    }

    let file = File::open(archive).map_err(|e| FetchError::io("open the archive", archive, e))?;
    let mut zip = ZipArchive::new(BufReader::new(file)).map_err(|e| zip_error(archive, None, e))?;
    let plan = plan_entries(&zip, archive, limits)?;

    fs::create_dir_all(parent).map_err(|e| FetchError::io("create the folder", parent, e))?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{}.extracting-", dest_name.to_string_lossy()))
        .tempdir_in(parent)
        .map_err(|e| FetchError::io("create a temporary folder in", parent, e))?;
    tracing::info!(archive = %archive.display(), dest = %dest.display(), entries = plan.len(), "extracting archive");

    let mut report = ExtractReport {
        dest: dest.to_path_buf(),
        files: 0,
        directories: 0,
        bytes: 0,
        replaced_existing: false,
    };
    for entry in &plan {
        let target = staging.path().join(&entry.relative);
        if entry.is_dir {
            fs::create_dir_all(&target)
                .map_err(|e| FetchError::io("create the folder", &target, e))?;
            report.directories += 1;
            continue;
        }
        if let Some(dir) = target.parent() {
            fs::create_dir_all(dir).map_err(|e| FetchError::io("create the folder", dir, e))?;
        }
        let written = extract_file(&mut zip, entry, &target, archive, limits, report.bytes)?;
        report.bytes += written;
        report.files += 1;
    }
    make_world_readable(staging.path())?;

    report.replaced_existing = place(staging, dest, parent, existing)?;
    tracing::info!(dest = %dest.display(), files = report.files, bytes = report.bytes, "extraction finished");
    Ok(report)
}

/// One entry that passed the checks.
struct PlannedEntry {
    index: usize,
    name: String,
    relative: PathBuf,
    is_dir: bool,
}

/// Checks names, kinds, duplicates, entry count and declared sizes before anything is written.
fn plan_entries<R: Read + std::io::Seek>(
    zip: &ZipArchive<R>,
    archive: &Path,
    limits: &ExtractLimits,
) -> Result<Vec<PlannedEntry>, FetchError> {
    let count = zip.len() as u64;
    if count > limits.max_entries {
        return Err(FetchError::TooManyEntries {
            archive: archive.to_path_buf(),
            count,
            limit: limits.max_entries,
        });
    }
    let mut plan = Vec::with_capacity(zip.len());
    let mut files: HashSet<PathBuf> = HashSet::new();
    let mut dirs: HashSet<PathBuf> = HashSet::new();
    let mut declared_total: u64 = 0;
    for index in 0..zip.len() {
        let entry = zip
            .by_index_data(index)
            .map_err(|e| zip_error(archive, None, e))?;
        let name = entry
            .name()
            .map_err(|e| zip_error(archive, None, e))?
            .into_owned();
        let is_symlink =
            entry.is_symlink() || entry.unix_mode().is_some_and(|m| m & S_IFMT == S_IFLNK);
        if is_symlink {
            return Err(FetchError::SymlinkEntry {
                archive: archive.to_path_buf(),
                entry: name,
            });
        }
        let relative = safe_relative_path(&name).map_err(|reason| FetchError::UnsafeEntryPath {
            archive: archive.to_path_buf(),
            entry: name.clone(),
            reason: reason.to_owned(),
        })?;
        let is_dir = entry.is_dir();
        let duplicate = || FetchError::DuplicateEntry {
            archive: archive.to_path_buf(),
            entry: name.clone(),
        };
        // Every ancestor of an entry is a folder: it must not also be a file.
        for ancestor in relative
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty())
        {
            if files.contains(ancestor) {
                return Err(duplicate());
            }
            dirs.insert(ancestor.to_path_buf());
        }
        if is_dir {
            if files.contains(&relative) {
                return Err(duplicate());
            }
            dirs.insert(relative.clone());
        } else {
            if dirs.contains(&relative) || !files.insert(relative.clone()) {
                return Err(duplicate());
            }
            let declared = entry.size();
            if declared > limits.max_entry_bytes {
                return Err(FetchError::DeclaredSizeTooLarge {
                    archive: archive.to_path_buf(),
                    entry: name,
                    declared,
                    limit: limits.max_entry_bytes,
                });
            }
            declared_total = declared_total.saturating_add(declared);
            if declared_total > limits.max_total_bytes {
                return Err(FetchError::TotalTooLarge {
                    archive: archive.to_path_buf(),
                    entry: name,
                    limit: limits.max_total_bytes,
                });
            }
        }
        plan.push(PlannedEntry {
            index,
            name,
            relative,
            is_dir,
        });
    }
    Ok(plan)
}

/// Turns an entry name into a relative path that cannot leave the extraction folder.
///
/// Refuses (rather than rewrites) anything suspicious: empty names, NUL or control characters,
/// backslashes, absolute paths, `..`, and `:` (Windows drive letters and alternate streams).
/// `.` and empty components (`a//b`, a trailing `/`) are dropped.
fn safe_relative_path(name: &str) -> Result<PathBuf, &'static str> {
    if name.is_empty() {
        return Err("the name is empty");
    }
    if name.chars().any(char::is_control) {
        return Err("the name contains a NUL or control character");
    }
    if name.contains('\\') {
        return Err("the name contains a backslash (a Windows path separator)");
    }
    if name.starts_with('/') {
        return Err("the name is an absolute path");
    }
    let mut relative = PathBuf::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("the name contains a '..' component"),
            _ if part.contains(':') => {
                return Err("the name contains ':' (a Windows drive letter or alternate stream)");
            }
            _ => relative.push(part),
        }
    }
    if relative.as_os_str().is_empty() {
        return Err("the name designates no file");
    }
    // Belt and braces: whatever the platform's path rules, only plain components remain.
    if !relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err("the name is not a plain relative path on this platform");
    }
    Ok(relative)
}

/// Decompresses one entry into `target`, enforcing the limits on the bytes actually produced.
/// Returns the bytes written.
fn extract_file<R: Read + std::io::Seek>(
    zip: &mut ZipArchive<R>,
    entry: &PlannedEntry,
    target: &Path,
    archive: &Path,
    limits: &ExtractLimits,
    total_before: u64,
) -> Result<u64, FetchError> {
    let mut reader = zip
        .by_index(entry.index)
        .map_err(|e| zip_error(archive, Some(&entry.name), e))?;
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                FetchError::DuplicateEntry {
                    archive: archive.to_path_buf(),
                    entry: entry.name.clone(),
                }
            } else {
                FetchError::io("create the file", target, e)
            }
        })?;
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    let written = copy_limited(
        &mut reader,
        &mut out,
        limits,
        total_before,
        archive,
        &entry.name,
    )
    .map_err(|e| match e {
        CopyError::Read(e) => zip_error(archive, Some(&entry.name), ZipError::Io(e)),
        CopyError::Write(e) => FetchError::io("write", target, e),
        CopyError::Limit(e) => e,
    })?;
    out.flush()
        .map_err(|e| FetchError::io("write", target, e))?;
    Ok(written)
}

/// Why [`copy_limited`] stopped.
enum CopyError {
    Read(std::io::Error),
    Write(std::io::Error),
    Limit(FetchError),
}

/// Copies `reader` to `out`, counting the bytes actually produced: fails as soon as the entry
/// exceeds `max_entry_bytes` or the running total exceeds `max_total_bytes`, whatever the
/// archive declared. Returns the bytes copied.
fn copy_limited(
    reader: &mut impl Read,
    out: &mut impl Write,
    limits: &ExtractLimits,
    total_before: u64,
    archive: &Path,
    entry: &str,
) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut written: u64 = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(written),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        written += n as u64;
        if written > limits.max_entry_bytes {
            return Err(CopyError::Limit(FetchError::EntryTooLarge {
                archive: archive.to_path_buf(),
                entry: entry.to_owned(),
                limit: limits.max_entry_bytes,
            }));
        }
        if total_before.saturating_add(written) > limits.max_total_bytes {
            return Err(CopyError::Limit(FetchError::TotalTooLarge {
                archive: archive.to_path_buf(),
                entry: entry.to_owned(),
                limit: limits.max_total_bytes,
            }));
        }
        out.write_all(&buf[..n]).map_err(CopyError::Write)?;
    }
}

/// Moves the fully extracted `staging` folder to `dest`. Returns whether a non-empty `dest`
/// was replaced.
fn place(
    staging: tempfile::TempDir,
    dest: &Path,
    parent: &Path,
    existing: ExistingDir,
) -> Result<bool, FetchError> {
    let rename = |from: &Path, to: &Path| {
        fs::rename(from, to).map_err(|source| FetchError::Rename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            source,
        })
    };
    let empty_or_missing = is_missing_or_empty(dest)?;
    if empty_or_missing {
        if dest.exists() {
            fs::remove_dir(dest).map_err(|e| FetchError::io("remove the empty folder", dest, e))?;
        }
        rename(staging.path(), dest)?;
        let _ = staging.keep();
        return Ok(false);
    }
    if existing == ExistingDir::Refuse {
        return Err(FetchError::DestinationNotEmpty {
            path: dest.to_path_buf(),
        });
    }
    // Move the old content aside (same filesystem), move the new one in, then delete the old.
    let graveyard = tempfile::Builder::new()
        .prefix(".replaced-")
        .tempdir_in(parent)
        .map_err(|e| FetchError::io("create a temporary folder in", parent, e))?;
    let old = graveyard.path().join("old");
    rename(dest, &old)?;
    if let Err(err) = rename(staging.path(), dest) {
        // Put the old content back; if even that fails, say where it is.
        if let Err(restore) = fs::rename(&old, dest) {
            let kept = graveyard.keep();
            tracing::error!(old = %kept.display(), dest = %dest.display(), error = %restore, "could not restore the previous dataset folder; it is kept at the old path");
        }
        return Err(err);
    }
    let _ = staging.keep();
    let graveyard_path = graveyard.path().to_path_buf();
    if let Err(e) = graveyard.close() {
        tracing::warn!(path = %graveyard_path.display(), error = %e, "could not delete the replaced dataset folder; delete it by hand");
    }
    Ok(true)
}

/// Whether `path` does not exist or is an empty folder (a file or symlink counts as non-empty).
pub(crate) fn is_missing_or_empty(path: &Path) -> Result<bool, FetchError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(FetchError::io("inspect", path, e)),
        Ok(meta) if meta.is_dir() => {
            let mut entries =
                fs::read_dir(path).map_err(|e| FetchError::io("list the folder", path, e))?;
            Ok(entries.next().is_none())
        }
        Ok(_) => Ok(false),
    }
}

/// Temporary folders are created private (0700); the dataset folder should not be.
#[cfg(unix)]
fn make_world_readable(path: &Path) -> Result<(), FetchError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .map_err(|e| FetchError::io("set permissions on", path, e))
}

#[cfg(not(unix))]
fn make_world_readable(_path: &Path) -> Result<(), FetchError> {
    Ok(())
}

fn zip_error(archive: &Path, entry: Option<&str>, source: ZipError) -> FetchError {
    FetchError::Zip {
        archive: archive.to_path_buf(),
        entry: entry.map(str::to_owned),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Copies like extraction does, from a reader that produces `len` bytes whatever any header
    /// said; returns the bytes written to the output, or the error.
    fn copy(len: u64, limits: ExtractLimits, total_before: u64) -> (u64, Result<u64, FetchError>) {
        let mut reader = std::io::repeat(0).take(len);
        let mut out = Vec::new();
        let result = copy_limited(
            &mut reader,
            &mut out,
            &limits,
            total_before,
            Path::new("a.zip"),
            "e",
        )
        .map_err(|e| match e {
            CopyError::Limit(e) => e,
            CopyError::Read(e) | CopyError::Write(e) => FetchError::io("copy", Path::new("e"), e),
        });
        (out.len() as u64, result)
    }

    #[test]
    fn actual_bytes_are_limited_per_entry() {
        let limits = ExtractLimits {
            max_entry_bytes: 100_000,
            ..ExtractLimits::default()
        };
        let (written, result) = copy(100_000, limits, 0);
        assert_eq!((written, result.ok()), (100_000, Some(100_000)));
        let (written, result) = copy(10 << 20, limits, 0);
        assert!(
            matches!(
                result,
                Err(FetchError::EntryTooLarge { limit: 100_000, .. })
            ),
            "{result:?}"
        );
        assert!(written <= 100_000, "wrote {written} bytes past the limit");
    }

    #[test]
    fn actual_bytes_are_limited_in_total() {
        let limits = ExtractLimits {
            max_total_bytes: 150_000,
            ..ExtractLimits::default()
        };
        let (_, result) = copy(50_000, limits, 100_000);
        assert_eq!(result.ok(), Some(50_000));
        let (written, result) = copy(50_001, limits, 100_000);
        assert!(
            matches!(
                result,
                Err(FetchError::TotalTooLarge { limit: 150_000, .. })
            ),
            "{result:?}"
        );
        assert!(written <= 50_000);
    }

    #[test]
    fn plain_names_are_kept() {
        assert_eq!(
            safe_relative_path("COVID/a.png"),
            Ok(PathBuf::from("COVID").join("a.png"))
        );
        assert_eq!(
            safe_relative_path("./dir//b.png"),
            Ok(PathBuf::from("dir").join("b.png"))
        );
        assert_eq!(safe_relative_path("dir/"), Ok(PathBuf::from("dir")));
        assert_eq!(
            safe_relative_path("a..b/c...png"),
            Ok(PathBuf::from("a..b").join("c...png"))
        );
    }

    #[test]
    fn escaping_names_are_refused() {
        for name in [
            "",
            "/",
            ".",
            "./",
            "../evil.txt",
            "a/../../evil.txt",
            "a/..",
            "/abs/evil.txt",
            "//server/share/x",
            "C:\\evil.txt",
            "C:evil.txt",
            "c:/evil.txt",
            "..\\evil.txt",
            "a\\..\\..\\evil.txt",
            "file.txt:stream",
            "nul\0byte",
            "line\nbreak",
        ] {
            assert!(safe_relative_path(name).is_err(), "{name:?} was accepted");
        }
    }
}
