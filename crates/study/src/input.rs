//! The slices of a study request: files, folders (walked recursively) and zip archives, read
//! into memory with the request's limits checked as early as possible — slice count and bytes
//! from the archive's directory before decompressing, pixels from the image headers before
//! decoding ([`check_pixels`]).

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use covidct_imaging::{DecodeOptions, format_hint_from_path, probe_bytes};

use crate::error::StudyError;
use crate::order::natural_order;

/// One slice before decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceFile {
    /// Its name: the path given, the path inside a folder or archive, or the upload's file name.
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

impl SliceFile {
    /// The format its name suggests (the content decides).
    pub fn hint(&self) -> Option<covidct_imaging::FileFormat> {
        format_hint_from_path(Path::new(&self.name))
    }
}

/// How much one study request may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StudyLimits {
    /// Most slices.
    pub max_slices: usize,
    /// Most bytes over every slice (archives: uncompressed).
    pub max_bytes: u64,
    /// Most pixels over every slice, read from the headers before decoding.
    pub max_pixels: u64,
}

impl Default for StudyLimits {
    /// 1,000 slices, 1 GiB, 1,000 slices of 1024×1024.
    fn default() -> Self {
        Self {
            max_slices: 1000,
            max_bytes: 1 << 30,
            max_pixels: 1000 * 1024 * 1024,
        }
    }
}

impl StudyLimits {
    /// What is left of these limits once `slices` slices of `bytes` bytes are taken (an
    /// archive's entries count against the rest of the request).
    pub fn remaining(&self, slices: usize, bytes: u64) -> StudyLimits {
        StudyLimits {
            max_slices: self.max_slices.saturating_sub(slices),
            max_bytes: self.max_bytes.saturating_sub(bytes),
            max_pixels: self.max_pixels,
        }
    }

    /// Refuses `count` slices when over the limit.
    pub fn check_count(&self, count: usize) -> Result<(), StudyError> {
        if count > self.max_slices {
            return Err(StudyError::TooManySlices {
                count,
                max: self.max_slices,
            });
        }
        Ok(())
    }

    /// Refuses `total` bytes when over the limit.
    pub fn check_bytes(&self, total: u64) -> Result<(), StudyError> {
        if total > self.max_bytes {
            return Err(StudyError::TooManyBytes {
                total,
                max: self.max_bytes,
            });
        }
        Ok(())
    }
}

/// Whether `bytes` start like a zip archive.
pub fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06")
}

/// Whether a file of a folder or archive is a slice candidate: not hidden, not a macOS
/// resource fork, not a DICOMDIR index and not an obvious text file. Anything else is tried,
/// since DICOM files often have no extension; what does not decode is reported unreadable.
fn is_candidate(name: &str) -> bool {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let lower = base.to_ascii_lowercase();
    !(base.is_empty()
        || base.starts_with('.')
        || name.starts_with("__MACOSX/")
        || lower == "dicomdir"
        || [".txt", ".json", ".xml", ".csv", ".md", ".html", ".pdf"]
            .iter()
            .any(|ext| lower.ends_with(ext)))
}

/// The slices of a zip archive (`origin` names it in errors), in natural name order.
pub fn read_zip(
    bytes: &[u8],
    origin: &str,
    limits: &StudyLimits,
) -> Result<Vec<SliceFile>, StudyError> {
    let invalid = |reason: String| StudyError::Input {
        path: origin.to_owned(),
        reason,
    };
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| invalid(format!("not a readable zip archive: {e}")))?;
    let mut entries = Vec::new();
    let mut declared = 0u64;
    for index in 0..archive.len() {
        let entry = archive
            .by_index_raw(index)
            .map_err(|e| invalid(format!("entry {index}: {e}")))?;
        let name = entry
            .name()
            .map_err(|e| invalid(format!("entry {index}: {e}")))?
            .into_owned();
        if entry.is_dir() || !is_candidate(&name) {
            continue;
        }
        declared = declared.saturating_add(entry.size());
        entries.push((index, name));
        limits.check_count(entries.len())?;
        limits.check_bytes(declared)?;
    }
    entries.sort_by(|a, b| natural_order(&a.1, &b.1));
    let mut slices = Vec::with_capacity(entries.len());
    let mut total = 0u64;
    for (index, name) in entries {
        let mut entry = archive
            .by_index(index)
            .map_err(|e| invalid(format!("{name}: {e}")))?;
        // The directory's sizes may lie: read at most one byte past what is left.
        let room = limits.max_bytes - total;
        let mut data = Vec::with_capacity(entry.size().min(room) as usize);
        (&mut entry)
            .take(room + 1)
            .read_to_end(&mut data)
            .map_err(|e| invalid(format!("{name}: {e}")))?;
        total += data.len() as u64;
        limits.check_bytes(total)?;
        slices.push(SliceFile { name, bytes: data });
    }
    Ok(slices)
}

fn read_file(path: &Path) -> Result<Vec<u8>, StudyError> {
    std::fs::read(path).map_err(|e| StudyError::Input {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The slices of the `paths` a user names: each folder walked recursively (natural order),
/// each zip archive unpacked, each other file taken as one slice, in the order given.
pub fn collect_paths(
    paths: &[PathBuf],
    limits: &StudyLimits,
) -> Result<Vec<SliceFile>, StudyError> {
    let mut slices: Vec<SliceFile> = Vec::new();
    let mut total = 0u64;
    let push = |slice: SliceFile, slices: &mut Vec<SliceFile>, total: &mut u64| {
        *total += slice.bytes.len() as u64;
        slices.push(slice);
        limits.check_count(slices.len())?;
        limits.check_bytes(*total)
    };
    for path in paths {
        if path.is_dir() {
            let mut files = Vec::new();
            for entry in walkdir::WalkDir::new(path).follow_links(true) {
                let entry = entry.map_err(|e| StudyError::Input {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                let relative = entry.path().strip_prefix(path).unwrap_or(entry.path());
                let name = relative.to_string_lossy().replace('\\', "/");
                if entry.file_type().is_file() && is_candidate(&name) {
                    files.push((name, entry.into_path()));
                }
            }
            files.sort_by(|a, b| natural_order(&a.0, &b.0));
            limits.check_count(slices.len() + files.len())?;
            for (_, file) in files {
                let bytes = read_file(&file)?;
                push(
                    SliceFile {
                        name: file.display().to_string(),
                        bytes,
                    },
                    &mut slices,
                    &mut total,
                )?;
            }
        } else {
            let bytes = read_file(path)?;
            let name = path.display().to_string();
            if is_zip(&bytes) {
                for slice in read_zip(&bytes, &name, &limits.remaining(slices.len(), total))? {
                    push(
                        SliceFile {
                            name: format!("{name}:{}", slice.name),
                            bytes: slice.bytes,
                        },
                        &mut slices,
                        &mut total,
                    )?;
                }
            } else {
                push(SliceFile { name, bytes }, &mut slices, &mut total)?;
            }
        }
    }
    Ok(slices)
}

/// Refuses slices whose headers add up to more than `limits.max_pixels`, before any pixel is
/// decoded. Headers that cannot be read are skipped here: decoding reports them.
pub fn check_pixels(
    slices: &[SliceFile],
    options: &DecodeOptions,
    limits: &StudyLimits,
) -> Result<(), StudyError> {
    let mut total = 0u64;
    for slice in slices {
        if let Ok(info) = probe_bytes(&slice.bytes, slice.hint(), options) {
            total += u64::from(info.width) * u64::from(info.height);
            if total > limits.max_pixels {
                return Err(StudyError::TooManyPixels {
                    total,
                    max: limits.max_pixels,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use covidct_testkit::archive::zip_of;

    #[test]
    fn numbered_names_sort_as_numbers() {
        let mut names = vec!["s10.png", "s2.png", "s1.png", "s02.png", "a.png"];
        names.sort_by(|a, b| natural_order(a, b));
        assert_eq!(names, ["a.png", "s1.png", "s02.png", "s2.png", "s10.png"]);
    }

    #[test]
    fn archives_skip_indexes_and_hidden_files_and_keep_natural_order() {
        let bytes = zip_of(&[
            ("scan/IM10", b"ten"),
            ("scan/IM9", b"nine"),
            ("scan/DICOMDIR", b"index"),
            ("__MACOSX/scan/._IM9", b"fork"),
            ("scan/.DS_Store", b"junk"),
            ("scan/notes.txt", b"text"),
        ]);
        assert!(is_zip(&bytes));
        let slices = read_zip(&bytes, "study.zip", &StudyLimits::default()).expect("reads");
        let names: Vec<_> = slices.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["scan/IM9", "scan/IM10"]);
        assert_eq!(slices[1].bytes, b"ten");
    }

    #[test]
    fn archive_limits_are_checked_before_decompressing_and_named() {
        let bytes = zip_of(&[("a", &[0u8; 100]), ("b", &[0u8; 100]), ("c", &[0u8; 100])]);
        let few = StudyLimits {
            max_slices: 2,
            ..StudyLimits::default()
        };
        let error = read_zip(&bytes, "s.zip", &few).expect_err("too many");
        assert!(
            matches!(error, StudyError::TooManySlices { count: 3, max: 2 }),
            "{error}"
        );
        let small = StudyLimits {
            max_bytes: 250,
            ..StudyLimits::default()
        };
        let error = read_zip(&bytes, "s.zip", &small).expect_err("too big");
        assert!(
            matches!(error, StudyError::TooManyBytes { max: 250, .. }),
            "{error}"
        );
        let error = read_zip(b"PK\x03\x04garbage", "bad.zip", &StudyLimits::default())
            .expect_err("corrupt");
        assert!(error.to_string().starts_with("bad.zip: "), "{error}");
    }

    #[test]
    fn folders_are_walked_in_natural_order_and_archives_unpacked() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::create_dir(dir.path().join("series")).expect("mkdir");
        for name in ["s10.png", "s2.png", ".hidden"] {
            std::fs::write(dir.path().join("series").join(name), name).expect("write");
        }
        let archive = dir.path().join("more.zip");
        std::fs::write(&archive, zip_of(&[("x1.png", b"x")])).expect("zip");
        let slices = collect_paths(
            &[dir.path().join("series"), archive.clone()],
            &StudyLimits::default(),
        )
        .expect("collects");
        let names: Vec<_> = slices
            .iter()
            .map(|s| s.name.rsplit('/').next().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(names, ["s2.png", "s10.png", "more.zip:x1.png"]);
        let missing = collect_paths(&[dir.path().join("absent.png")], &StudyLimits::default())
            .expect_err("missing");
        assert!(missing.to_string().contains("absent.png"), "{missing}");
    }
}
