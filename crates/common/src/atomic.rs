//! Writing a file so that readers see the old contents or the new, never half of them.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::CommonError;

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a
/// crash or error never leaves a half-written file where a good one was. The folder is created
/// if missing; the file gets the usual permissions of a new file (as the process's umask
/// allows).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CommonError> {
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    write_atomically_from(path, &folder, &mut &*bytes)
}

/// Like [`write_atomically`], with the contents read from `source` to its end and the
/// temporary file in `staging_dir`, which must be on the same filesystem as `path` (a folder
/// of its own keeps a crash's leftover out of folders that others list).
pub fn write_atomically_from(
    path: &Path,
    staging_dir: &Path,
    source: &mut dyn Read,
) -> Result<(), CommonError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    for folder in [staging_dir].into_iter().chain(path.parent()) {
        if !folder.as_os_str().is_empty() {
            fs::create_dir_all(folder).map_err(|e| CommonError::io_at(folder, e))?;
        }
    }
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let temp_path = staging_dir.join(format!(
        ".{}.tmp-{}-{}",
        file_name.unwrap_or_else(|| "output".into()),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp_path)?;
        std::io::copy(source, &mut file)?;
        file.flush()?;
        file.sync_all()?;
        fs::rename(&temp_path, path)
    })();
    if result.is_err() {
        // Best effort: the temporary file may not exist, and the write's error is the one to
        // report.
        let _ = fs::remove_file(&temp_path);
    }
    result.map_err(|e| CommonError::io_at(path, e))
}

#[cfg(test)]
mod tests {
    use super::{write_atomically, write_atomically_from};

    #[test]
    fn writes_replace_the_file_and_leave_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/out.json");
        write_atomically(&path, b"first").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        let staging = dir.path().join("staging");
        write_atomically_from(&path, &staging, &mut &b"second"[..]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["out.json"]);
    }

    #[test]
    fn a_failed_write_names_the_path_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        // A folder where the file should go: the rename fails.
        let path = dir.path().join("taken");
        std::fs::create_dir(path.join("")).unwrap();
        std::fs::write(path.join("inside"), b"x").unwrap();
        let err = write_atomically(&path, b"data").unwrap_err();
        assert!(
            err.to_string().starts_with(&path.display().to_string()),
            "{err}"
        );
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "only the folder remains");
    }
}
