//! The labelled images of a run: class names, the positive class and the three splits, read from
//! a split manifest.

use std::path::{Path, PathBuf};

use covidct_data::{Manifest, Sample, SplitName};
use serde::Serialize;

use crate::error::TrainError;

/// One split's images with their groups (pseudo-patients), in manifest order.
#[derive(Debug, Clone, Default)]
pub struct SplitSamples {
    /// Image paths and label indices.
    pub samples: Vec<Sample>,
    /// The group of each sample.
    pub groups: Vec<String>,
}

impl SplitSamples {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether the split is empty.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Images per class index.
    pub fn class_counts(&self, classes: usize) -> Vec<usize> {
        let mut counts = vec![0; classes];
        for sample in &self.samples {
            if let Some(c) = counts.get_mut(sample.label) {
                *c += 1;
            }
        }
        counts
    }

    /// Whether each sample belongs to the positive class.
    pub fn positives(&self, positive: usize) -> Vec<bool> {
        self.samples.iter().map(|s| s.label == positive).collect()
    }
}

/// The labelled data of a training run.
#[derive(Debug, Clone)]
pub struct TrainingData {
    /// Dataset root the manifest paths are relative to.
    pub root: PathBuf,
    /// Class names, sorted; a sample's label indexes this list.
    pub class_names: Vec<String>,
    /// Index of the positive class.
    pub positive_class: usize,
    /// Fitting split.
    pub train: SplitSamples,
    /// Model-selection split (early stopping, threshold, temperature).
    pub val: SplitSamples,
    /// Held-out split.
    pub test: SplitSamples,
    /// Fingerprint of the manifest content (which image in which split, with which label).
    pub split_fingerprint: String,
}

/// Counts of a split, for logs and reports.
#[derive(Debug, Clone, Serialize)]
pub struct SplitSummary {
    /// Images.
    pub images: usize,
    /// Distinct groups.
    pub groups: usize,
    /// Images of the positive class.
    pub positives: usize,
}

impl TrainingData {
    /// The splits of `manifest` (images under `root`), with `positive_class` matched
    /// case-insensitively against the labels. `origin` names the manifest in errors.
    pub fn from_manifest(
        manifest: &Manifest,
        root: &Path,
        positive_class: &str,
        origin: &Path,
    ) -> Result<Self, TrainError> {
        let fail = |reason: String| TrainError::Manifest {
            path: origin.to_path_buf(),
            reason,
        };
        let mut class_names: Vec<String> = manifest.rows.iter().map(|r| r.label.clone()).collect();
        class_names.sort();
        class_names.dedup();
        if class_names.len() < 2 {
            return Err(fail(format!(
                "needs at least two classes, found {class_names:?}"
            )));
        }
        let positive = class_names
            .iter()
            .position(|c| c.eq_ignore_ascii_case(positive_class))
            .ok_or_else(|| {
                fail(format!(
                    "the positive class `{positive_class}` is not among the labels \
                     {class_names:?} (set --positive-class)"
                ))
            })?;
        let mut splits = [
            SplitSamples::default(),
            SplitSamples::default(),
            SplitSamples::default(),
        ];
        for row in &manifest.rows {
            let label = class_names
                .iter()
                .position(|c| *c == row.label)
                .unwrap_or_default();
            let index = match row.split {
                SplitName::Train => 0,
                SplitName::Val => 1,
                SplitName::Test => 2,
            };
            splits[index].samples.push(Sample {
                path: root.join(&row.path),
                label,
            });
            splits[index].groups.push(row.group.clone());
        }
        let [train, val, test] = splits;
        for (name, split) in [("train", &train), ("val", &val), ("test", &test)] {
            let counts = split.class_counts(class_names.len());
            if counts.contains(&0) {
                return Err(fail(format!(
                    "the {name} split lacks a class: counts {counts:?} for {class_names:?}"
                )));
            }
        }
        let csv = manifest.to_csv()?;
        Ok(Self {
            root: root.to_path_buf(),
            class_names,
            positive_class: positive,
            train,
            val,
            test,
            split_fingerprint: hex::encode(&blake3::hash(&csv).as_bytes()[..16]),
        })
    }

    /// The samples of one split.
    pub fn split(&self, split: SplitName) -> &SplitSamples {
        match split {
            SplitName::Train => &self.train,
            SplitName::Val => &self.val,
            SplitName::Test => &self.test,
        }
    }

    /// The inner fold (`0..k`) of every training + validation image (training first), by
    /// patient group and stratified by class: the folds a cross-fitted release is calibrated
    /// on ([`crate::TrainConfig::probe_folds`]), the probe's and the gate's alike.
    pub fn calibration_folds(&self, k: usize, seed: u64) -> Vec<usize> {
        let positive = [
            self.train.positives(self.positive_class),
            self.val.positives(self.positive_class),
        ]
        .concat();
        let groups = [&self.train.groups[..], &self.val.groups].concat();
        covidct_evaluation::group_folds(&positive, &groups, k, seed)
    }

    /// Image, group and positive counts of one split.
    pub fn summary(&self, split: SplitName) -> SplitSummary {
        let s = self.split(split);
        let mut groups: Vec<&String> = s.groups.iter().collect();
        groups.sort();
        groups.dedup();
        SplitSummary {
            images: s.len(),
            groups: groups.len(),
            positives: s
                .positives(self.positive_class)
                .iter()
                .filter(|p| **p)
                .count(),
        }
    }
}

/// The rows `indices` of a row-major matrix of `dim` columns, in that order.
pub(crate) fn gather_rows(values: &[f32], dim: usize, indices: &[usize]) -> Vec<f32> {
    indices
        .iter()
        .flat_map(|&i| &values[i * dim..(i + 1) * dim])
        .copied()
        .collect()
}

/// The indices `0..fold_of.len()` in fold `fold` and those outside it.
pub(crate) fn split_by_fold(fold_of: &[usize], fold: usize) -> (Vec<usize>, Vec<usize>) {
    (0..fold_of.len()).partition(|&i| fold_of[i] == fold)
}
