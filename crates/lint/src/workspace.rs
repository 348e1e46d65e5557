//! The workspace on disk: every crate under `crates/`, with the text of each `src/**/*.rs`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// One workspace crate's sources.
#[derive(Debug)]
pub struct CrateSources {
    /// The crate's folder name under `crates/` (`model`, `cli`).
    pub name: String,
    /// Its folder, relative to the workspace root (`crates/model`).
    pub dir: PathBuf,
    /// Every `.rs` file under its `src/`, by path relative to the workspace root.
    pub files: BTreeMap<PathBuf, String>,
}

impl CrateSources {
    /// The crate roots present: `src/lib.rs` and `src/main.rs`, each its own module tree.
    pub fn roots(&self) -> Vec<PathBuf> {
        ["lib.rs", "main.rs"]
            .into_iter()
            .map(|root| self.dir.join("src").join(root))
            .filter(|root| self.files.contains_key(root))
            .collect()
    }
}

/// Reads every crate under `root/crates/`, in name order.
pub fn read_crates(root: &Path) -> io::Result<Vec<CrateSources>> {
    let mut crates = Vec::new();
    for entry in sorted_entries(&root.join("crates"))? {
        let src = entry.join("src");
        if !src.is_dir() {
            continue;
        }
        let dir = relative(root, &entry);
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut files = BTreeMap::new();
        read_rust_files(root, &src, &mut files)?;
        crates.push(CrateSources { name, dir, files });
    }
    Ok(crates)
}

fn read_rust_files(
    root: &Path,
    dir: &Path,
    files: &mut BTreeMap<PathBuf, String>,
) -> io::Result<()> {
    for path in sorted_entries(dir)? {
        if path.is_dir() {
            read_rust_files(root, &path, files)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.insert(relative(root, &path), fs::read_to_string(&path)?);
        }
    }
    Ok(())
}

fn sorted_entries(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut entries = fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<io::Result<Vec<_>>>()?;
    entries.sort();
    Ok(entries)
}

fn relative(root: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(root).unwrap_or(path).to_path_buf()
}
