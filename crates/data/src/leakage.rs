//! How much a split leaks: how close each test image is to its nearest training image.
//! Slices of one patient in both train and test show up as small nearest-neighbour distances.

use crate::analyze::Analysis;
use crate::manifest::Manifest;
use crate::scan::SplitName;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashMap;

/// Thumbnail distance at or under which a test image counts as having a near copy in train.
pub const NEAR_COPY_DISTANCE: f32 = 10.0;

/// Leakage figures of one split manifest.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LeakageSummary {
    /// Strategy or manifest name.
    pub strategy: String,
    /// Distinct groups.
    pub groups: usize,
    /// Images in train, val and test.
    pub counts: [usize; 3],
    /// Median over test images of the distance to the nearest training image (mean absolute
    /// difference of 32×32 thumbnails, 0–255): larger means less leakage.
    pub median_nearest_train_distance: f32,
    /// Share of test images with a training image within [`NEAR_COPY_DISTANCE`].
    pub near_copy_share: f32,
}

/// Measures leakage of `manifest` over the thumbnails of `analysis`.
pub fn measure_leakage(strategy: &str, analysis: &Analysis, manifest: &Manifest) -> LeakageSummary {
    let by_path: HashMap<&str, usize> = analysis
        .records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.file.relative.as_str(), i))
        .collect();
    let indices = |split| -> Vec<usize> {
        manifest
            .split(split)
            .filter_map(|row| by_path.get(row.path.as_str()).copied())
            .collect()
    };
    let (train, test) = (indices(SplitName::Train), indices(SplitName::Test));
    let mut nearest: Vec<f32> = test
        .par_iter()
        .map(|&t| {
            let thumb = &analysis.records[t].thumbnail;
            train
                .iter()
                .map(|&r| thumb.distance(&analysis.records[r].thumbnail))
                .fold(f32::INFINITY, f32::min)
        })
        .collect();
    nearest.sort_by(f32::total_cmp);
    let median = match nearest.len() {
        0 => f32::NAN,
        n if n % 2 == 1 => nearest[n / 2],
        n => (nearest[n / 2 - 1] + nearest[n / 2]) / 2.0,
    };
    let near = nearest.iter().filter(|d| **d <= NEAR_COPY_DISTANCE).count();
    LeakageSummary {
        strategy: strategy.to_owned(),
        groups: manifest.group_count(),
        counts: SplitName::ALL.map(|s| manifest.split(s).count()),
        median_nearest_train_distance: median,
        near_copy_share: near as f32 / nearest.len().max(1) as f32,
    }
}

/// Renders summaries as a table.
pub fn leakage_table(summaries: &[LeakageSummary]) -> String {
    let mut text = format!(
        "{:<11} {:>7} {:>6} {:>5} {:>5}  {:>22}  {:>18}\n",
        "strategy", "groups", "train", "val", "test", "median NN test→train", "test with near copy"
    );
    for s in summaries {
        text.push_str(&format!(
            "{:<11} {:>7} {:>6} {:>5} {:>5}  {:>22.1}  {:>17.1}%\n",
            s.strategy,
            s.groups,
            s.counts[0],
            s.counts[1],
            s.counts[2],
            s.median_nearest_train_distance,
            s.near_copy_share * 100.0
        ));
    }
    text.push_str(&format!(
        "NN distance: mean absolute difference of 32×32 thumbnails (0–255); near copy: ≤ {NEAR_COPY_DISTANCE}.\n\
         Larger distances and fewer near copies mean less patient leakage between train and test.\n"
    ));
    text
}
