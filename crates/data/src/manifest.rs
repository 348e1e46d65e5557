//! The split manifest (`path,label,group,split`) that training and evaluation read.

use covidct_common::write_atomically;

use crate::error::DataError;
use crate::scan::SplitName;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// One image of a manifest.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ManifestRow {
    /// Path relative to the dataset root, `/`-separated.
    pub path: String,
    /// Class name.
    pub label: String,
    /// Patient or pseudo-patient group; a group never spans two splits.
    pub group: String,
    /// Which split the image belongs to.
    pub split: SplitName,
}

/// A validated split manifest, rows sorted by path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    /// The rows, sorted by path.
    pub rows: Vec<ManifestRow>,
}

impl Manifest {
    /// Sorts the rows and checks the invariants: no path twice, no group in two splits.
    /// `origin` names the source in errors.
    pub fn new(mut rows: Vec<ManifestRow>, origin: &Path) -> Result<Self, DataError> {
        rows.sort();
        let manifest = Self { rows };
        manifest.validate(origin)?;
        Ok(manifest)
    }

    /// Checks that no path appears twice and that no group appears in two splits.
    pub fn validate(&self, origin: &Path) -> Result<(), DataError> {
        let fail = |reason: String| DataError::Manifest {
            path: origin.to_path_buf(),
            reason,
        };
        let mut group_split: HashMap<&str, (SplitName, &str)> = HashMap::new();
        for (index, row) in self.rows.iter().enumerate() {
            if index > 0 && self.rows[index - 1].path == row.path {
                return Err(fail(format!("path `{}` appears more than once", row.path)));
            }
            match group_split.get(row.group.as_str()) {
                Some((split, first_path)) if *split != row.split => {
                    return Err(fail(format!(
                        "group `{}` appears in two splits: `{}` is in {} but `{}` is in {}; \
                         a patient's images must all be in one split",
                        row.group, first_path, split, row.path, row.split
                    )));
                }
                Some(_) => {}
                None => {
                    group_split.insert(&row.group, (row.split, &row.path));
                }
            }
        }
        Ok(())
    }

    /// The CSV text, with header `path,label,group,split`.
    pub fn to_csv(&self) -> Result<Vec<u8>, DataError> {
        let mut writer = csv::Writer::from_writer(Vec::new());
        for row in &self.rows {
            writer.serialize(row).map_err(|e| DataError::Manifest {
                path: "<manifest>".into(),
                reason: e.to_string(),
            })?;
        }
        writer.into_inner().map_err(|e| DataError::Manifest {
            path: "<manifest>".into(),
            reason: e.to_string(),
        })
    }

    /// Writes the manifest atomically (temporary file, then rename).
    pub fn write(&self, path: &Path) -> Result<(), DataError> {
        Ok(write_atomically(path, &self.to_csv()?)?)
    }

    /// Reads and validates a manifest written by [`Manifest::write`] (or by hand).
    pub fn read(path: &Path) -> Result<Self, DataError> {
        let mut reader = csv::Reader::from_path(path).map_err(|e| DataError::Manifest {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut rows = Vec::new();
        for (index, row) in reader.deserialize::<ManifestRow>().enumerate() {
            rows.push(row.map_err(|e| DataError::Manifest {
                path: path.to_path_buf(),
                reason: format!(
                    "row {}: {e} (expected columns path,label,group,split with split one of \
                     train, val, test)",
                    index + 2
                ),
            })?);
        }
        Self::new(rows, path)
    }

    /// Rows of one split.
    pub fn split(&self, split: SplitName) -> impl Iterator<Item = &ManifestRow> {
        self.rows.iter().filter(move |r| r.split == split)
    }

    /// Image counts by split and label.
    pub fn counts(&self) -> BTreeMap<SplitName, BTreeMap<String, usize>> {
        let mut counts: BTreeMap<SplitName, BTreeMap<String, usize>> = BTreeMap::new();
        for row in &self.rows {
            *counts
                .entry(row.split)
                .or_default()
                .entry(row.label.clone())
                .or_default() += 1;
        }
        counts
    }

    /// Number of distinct groups.
    pub fn group_count(&self) -> usize {
        let mut groups: Vec<&str> = self.rows.iter().map(|r| r.group.as_str()).collect();
        groups.sort_unstable();
        groups.dedup();
        groups.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &str, group: &str, split: SplitName) -> ManifestRow {
        ManifestRow {
            path: path.into(),
            label: "a".into(),
            group: group.into(),
            split,
        }
    }

    #[test]
    fn round_trips_through_csv() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("split.csv");
        let manifest = Manifest::new(
            vec![
                row("b.png", "g2", SplitName::Test),
                row("a, with comma.png", "g1", SplitName::Train),
            ],
            &path,
        )
        .expect("valid");
        manifest.write(&path).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("path,label,group,split\n"), "{text}");
        assert_eq!(Manifest::read(&path).expect("read back"), manifest);
    }

    #[test]
    fn group_in_two_splits_is_refused_with_names() {
        let error = Manifest::new(
            vec![
                row("a.png", "patient-7", SplitName::Train),
                row("b.png", "patient-7", SplitName::Test),
            ],
            Path::new("user.csv"),
        )
        .expect_err("leak");
        let text = error.to_string();
        assert!(
            text.contains("user.csv") && text.contains("patient-7"),
            "{text}"
        );
        assert!(text.contains("a.png") && text.contains("b.png"), "{text}");
    }

    #[test]
    fn bad_split_value_names_the_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.csv");
        std::fs::write(
            &path,
            "path,label,group,split\na.png,x,g,train\nb.png,x,h,holdout\n",
        )
        .expect("write");
        let text = Manifest::read(&path).expect_err("bad split").to_string();
        assert!(text.contains("bad.csv") && text.contains("row 3"), "{text}");
    }

    #[test]
    fn duplicate_path_is_refused() {
        let error = Manifest::new(
            vec![
                row("a.png", "g", SplitName::Train),
                row("a.png", "g", SplitName::Train),
            ],
            Path::new("m.csv"),
        )
        .expect_err("duplicate");
        assert!(error.to_string().contains("more than once"));
    }
}
