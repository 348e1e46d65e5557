//! Finding the images of a dataset laid out as one folder per class, optionally nested under
//! `train/ val/ test/` folders.

use crate::error::DataError;
use crate::problem::Problem;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// File extensions read as images (compared case-insensitively).
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "tif", "tiff", "dcm", "dicom"];

/// One of the three parts of a split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitName {
    /// Fitting the model.
    Train,
    /// Model selection, early stopping, threshold and calibration.
    Val,
    /// Final, untouched evaluation.
    Test,
}

impl SplitName {
    /// All three, in order.
    pub const ALL: [SplitName; 3] = [SplitName::Train, SplitName::Val, SplitName::Test];

    /// The lowercase name used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            SplitName::Train => "train",
            SplitName::Val => "val",
            SplitName::Test => "test",
        }
    }

    /// Recognises a folder or manifest name (`train`, `val`/`valid`/`validation`, `test`).
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "train" | "training" => Some(SplitName::Train),
            "val" | "valid" | "validation" => Some(SplitName::Val),
            "test" | "testing" => Some(SplitName::Test),
            _ => None,
        }
    }
}

impl std::fmt::Display for SplitName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the dataset folder is organised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FolderLayout {
    /// `ROOT/<class>/…`.
    ClassFolders,
    /// `ROOT/{train,val,test}/<class>/…`.
    SplitFolders,
}

/// One candidate image found by a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetFile {
    /// Full path on disk.
    pub path: PathBuf,
    /// Path relative to the dataset root with `/` separators: the manifest's key.
    pub relative: String,
    /// Class name (the class folder's name).
    pub class: String,
    /// The split folder it sits in, for [`FolderLayout::SplitFolders`].
    pub folder_split: Option<SplitName>,
    /// File size in bytes.
    pub size_bytes: u64,
}

/// What a scan found.
#[derive(Clone, Debug)]
pub struct Scan {
    /// The dataset root.
    pub root: PathBuf,
    /// How the root is organised.
    pub layout: FolderLayout,
    /// Class names, sorted.
    pub classes: Vec<String>,
    /// Candidate image files, sorted by relative path.
    pub files: Vec<DatasetFile>,
    /// Files and folders passed over, with the reason (non-image files, unreadable entries,
    /// symlink loops, names that are not UTF-8, empty class folders under `skip_invalid`).
    pub problems: Vec<Problem>,
}

impl Scan {
    /// The files as loader samples, labelled by their class's index in [`Scan::classes`].
    pub fn samples(&self) -> Vec<crate::Sample> {
        self.files
            .iter()
            .map(|file| crate::Sample {
                path: file.path.clone(),
                label: self
                    .classes
                    .iter()
                    .position(|c| *c == file.class)
                    .unwrap_or(0),
            })
            .collect()
    }
}

/// Lists the images of a dataset.
///
/// Structural faults (missing root, fewer than two classes, an empty class folder) are errors;
/// with `skip_invalid`, empty class folders are reported as problems and left out instead.
pub fn scan_dataset(root: &Path, skip_invalid: bool) -> Result<Scan, DataError> {
    let metadata = std::fs::metadata(root).map_err(|e| DataError::Root {
        path: root.to_path_buf(),
        reason: e.to_string(),
    })?;
    if !metadata.is_dir() {
        return Err(DataError::Root {
            path: root.to_path_buf(),
            reason: "is not a folder".into(),
        });
    }
    let top = subfolders(root)?;
    let split_folders: Vec<(SplitName, PathBuf)> = top
        .iter()
        .filter_map(|(name, path)| SplitName::parse(name).map(|s| (s, path.clone())))
        .collect();
    let layout = if !split_folders.is_empty() && split_folders.len() == top.len() {
        FolderLayout::SplitFolders
    } else {
        FolderLayout::ClassFolders
    };
    let mut class_folders: Vec<(Option<SplitName>, String, PathBuf)> = Vec::new();
    match layout {
        FolderLayout::ClassFolders => {
            for (name, path) in top {
                class_folders.push((None, name, path));
            }
        }
        FolderLayout::SplitFolders => {
            for (split, path) in split_folders {
                for (name, class_path) in subfolders(&path)? {
                    class_folders.push((Some(split), name, class_path));
                }
            }
        }
    }

    let mut files = Vec::new();
    let mut problems = Vec::new();
    let mut images_per_class: BTreeMap<String, usize> = BTreeMap::new();
    for (split, class, folder) in &class_folders {
        let before = files.len();
        collect_images(root, folder, class, *split, &mut files, &mut problems);
        let found = files.len() - before;
        if found == 0 {
            let problem = Problem::new(folder, "class folder contains no images");
            if skip_invalid {
                problems.push(problem);
            } else {
                return Err(DataError::Layout {
                    path: folder.clone(),
                    reason: "class folder contains no images (remove it, or pass --skip-invalid)"
                        .into(),
                });
            }
        }
        *images_per_class.entry(class.clone()).or_default() += found;
    }
    let classes: Vec<String> = images_per_class
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .map(|(class, _)| class)
        .collect();
    if classes.len() < 2 {
        return Err(DataError::Layout {
            path: root.to_path_buf(),
            reason: format!(
                "found {} class folder(s) with images ({}); a classifier needs at least two, \
                 laid out as ROOT/<class>/<image> or ROOT/<train|val|test>/<class>/<image>",
                classes.len(),
                if classes.is_empty() {
                    "none".to_string()
                } else {
                    classes.join(", ")
                }
            ),
        });
    }
    files.sort_by(|a, b| a.relative.cmp(&b.relative));
    Ok(Scan {
        root: root.to_path_buf(),
        layout,
        classes,
        files,
        problems,
    })
}

/// Visible subfolders of `folder` with UTF-8 names, sorted by name.
fn subfolders(folder: &Path) -> Result<Vec<(String, PathBuf)>, DataError> {
    let entries = std::fs::read_dir(folder).map_err(|source| DataError::Io {
        path: folder.to_path_buf(),
        source,
    })?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| DataError::Io {
            path: folder.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        // Follows symlinks, so a linked class folder counts.
        if !path.is_dir() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(DataError::Layout {
                path,
                reason: "folder name is not valid UTF-8; rename it".into(),
            });
        };
        if !name.starts_with('.') {
            found.push((name, path));
        }
    }
    found.sort();
    Ok(found)
}

/// Walks a class folder (recursively, following links, detecting loops) and records images.
fn collect_images(
    root: &Path,
    folder: &Path,
    class: &str,
    split: Option<SplitName>,
    files: &mut Vec<DatasetFile>,
    problems: &mut Vec<Problem>,
) {
    let walker = walkdir::WalkDir::new(folder)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walker {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                let path = error.path().unwrap_or(folder).to_path_buf();
                let reason = if error.loop_ancestor().is_some() {
                    "symbolic link loop; skipped".to_string()
                } else {
                    match error.io_error() {
                        Some(io) => format!("cannot read: {io}"),
                        None => error.to_string(),
                    }
                };
                problems.push(Problem::new(&path, reason));
                continue;
            }
        };
        if entry.file_type().is_dir() {
            continue;
        }
        let path = entry.path();
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        if !extension
            .as_deref()
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e))
        {
            problems.push(Problem::new(
                path,
                format!(
                    "not an image file (extension {}); skipped",
                    extension.map_or("none".into(), |e| format!(".{e}"))
                ),
            ));
            continue;
        }
        let Some(relative) = relative_utf8(root, path) else {
            problems.push(Problem::new(
                path,
                "file name is not valid UTF-8 and cannot be written to a manifest; rename it",
            ));
            continue;
        };
        let size_bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
        files.push(DatasetFile {
            path: path.to_path_buf(),
            relative,
            class: class.to_owned(),
            folder_split: split,
            size_bytes,
        });
    }
}

/// `path` relative to `root`, `/`-separated, when every component is UTF-8.
fn relative_utf8(root: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(root).ok()?;
    let parts: Option<Vec<&str>> = relative.iter().map(|c| c.to_str()).collect();
    Some(parts?.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
        std::fs::write(path, b"x").expect("write");
    }

    #[test]
    fn finds_class_folders_and_skips_non_images() {
        let dir = tempfile::tempdir().expect("tempdir");
        touch(&dir.path().join("COVID/Covid (1).png"));
        touch(&dir.path().join("COVID/sub/Covid (2).PNG"));
        touch(&dir.path().join("non-COVID/a.jpg"));
        touch(&dir.path().join("non-COVID/notes.txt"));
        touch(&dir.path().join("non-COVID/.hidden.png"));
        touch(&dir.path().join("README.md"));
        let scan = scan_dataset(dir.path(), false).expect("scan");
        assert_eq!(scan.layout, FolderLayout::ClassFolders);
        assert_eq!(scan.classes, vec!["COVID", "non-COVID"]);
        let relative: Vec<&str> = scan.files.iter().map(|f| f.relative.as_str()).collect();
        assert_eq!(
            relative,
            vec![
                "COVID/Covid (1).png",
                "COVID/sub/Covid (2).PNG",
                "non-COVID/a.jpg"
            ]
        );
        assert_eq!(scan.problems.len(), 1);
        assert!(scan.problems[0].path.ends_with("notes.txt"));
        assert!(scan.problems[0].reason.contains("not an image"));
    }

    #[test]
    fn recognises_split_folders() {
        let dir = tempfile::tempdir().expect("tempdir");
        for split in ["train", "val", "test"] {
            touch(&dir.path().join(format!("{split}/cat/1.png")));
            touch(&dir.path().join(format!("{split}/dog/1.png")));
        }
        let scan = scan_dataset(dir.path(), false).expect("scan");
        assert_eq!(scan.layout, FolderLayout::SplitFolders);
        assert_eq!(scan.classes, vec!["cat", "dog"]);
        assert_eq!(scan.files.len(), 6);
        assert!(scan.files.iter().all(|f| f.folder_split.is_some()));
    }

    #[test]
    fn single_class_and_empty_class_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        touch(&dir.path().join("only/1.png"));
        let error = scan_dataset(dir.path(), false).expect_err("one class");
        assert!(error.to_string().contains("at least two"), "{error}");

        std::fs::create_dir_all(dir.path().join("empty")).expect("mkdir");
        let error = scan_dataset(dir.path(), false).expect_err("empty class");
        assert!(error.to_string().contains("empty"), "{error}");
        assert!(error.to_string().contains("no images"), "{error}");
        // Skipping the empty class still leaves one class: still an error.
        assert!(scan_dataset(dir.path(), true).is_err());
        touch(&dir.path().join("other/2.png"));
        let scan = scan_dataset(dir.path(), true).expect("skip empty class");
        assert_eq!(scan.classes, vec!["only", "other"]);
        assert!(scan.problems.iter().any(|p| p.path.ends_with("empty")));
    }

    #[test]
    fn missing_root_names_the_folder() {
        let error = scan_dataset(Path::new("/no/such/dataset"), false).expect_err("missing");
        assert!(error.to_string().contains("/no/such/dataset"), "{error}");
    }

    #[cfg(unix)]
    #[test]
    fn symlink_loops_and_non_utf8_names_are_reported_not_fatal() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().expect("tempdir");
        touch(&dir.path().join("a/1.png"));
        touch(&dir.path().join("b/1.png"));
        std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("a/loop"))
            .expect("symlink");
        let bad_name = std::ffi::OsStr::from_bytes(b"bad\xff.png");
        touch(&dir.path().join("b").join(bad_name));
        let scan = scan_dataset(dir.path(), false).expect("scan");
        assert_eq!(scan.files.len(), 2);
        assert!(
            scan.problems.iter().any(|p| p.reason.contains("loop")),
            "{:?}",
            scan.problems
        );
        assert!(
            scan.problems.iter().any(|p| p.reason.contains("UTF-8")),
            "{:?}",
            scan.problems
        );
    }
}
