//! Leakage-aware train/validation/test splits (`covidct data split`).
//!
//! Every strategy first decides which images belong together (a *group*: a patient, or a
//! pseudo-patient inferred from the data), then assigns whole groups to splits, stratified by
//! class. No group ever spans two splits.

use crate::analyze::{Analysis, ImageRecord};
use crate::error::DataError;
use crate::manifest::{Manifest, ManifestRow};
use crate::scan::{FolderLayout, SplitName};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// How images are grouped before splitting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitStrategy {
    /// Pseudo-patients from file-name number order, cut where neighbours stop looking alike.
    #[default]
    Blocks,
    /// Connected components of images linked by thumbnail similarity (no numbering needed).
    Similarity,
    /// Groups (and optionally splits) from a user CSV with a patient/group column.
    Manifest,
    /// The dataset's own `train/ val/ test/` folders.
    Folders,
    /// Image-level random split: leaks slices of one patient across splits; for comparison only.
    Random,
}

impl SplitStrategy {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            SplitStrategy::Blocks => "blocks",
            SplitStrategy::Similarity => "similarity",
            SplitStrategy::Manifest => "manifest",
            SplitStrategy::Folders => "folders",
            SplitStrategy::Random => "random",
        }
    }
}

/// Shares of train, validation and test, e.g. `70,15,15` (normalised to sum to one).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RatiosText", into = "String")]
pub struct Ratios(pub [f64; 3]);

#[derive(Deserialize)]
#[serde(untagged)]
enum RatiosText {
    Text(String),
    List(Vec<f64>),
}

impl TryFrom<RatiosText> for Ratios {
    type Error = String;
    fn try_from(value: RatiosText) -> Result<Self, String> {
        match value {
            RatiosText::Text(text) => text.parse(),
            RatiosText::List(list) => Ratios::from_parts(&list),
        }
    }
}

impl From<Ratios> for String {
    fn from(ratios: Ratios) -> String {
        let [a, b, c] = ratios.0;
        format!("{},{},{}", a * 100.0, b * 100.0, c * 100.0)
    }
}

impl Ratios {
    fn from_parts(parts: &[f64]) -> Result<Self, String> {
        let [train, val, test] = parts else {
            return Err(format!(
                "expected three numbers train,val,test, got {}",
                parts.len()
            ));
        };
        if parts.iter().any(|p| !p.is_finite() || *p < 0.0) {
            return Err("ratios must be non-negative numbers".into());
        }
        if *train <= 0.0 || *test <= 0.0 {
            return Err("train and test ratios must be above zero".into());
        }
        let sum = train + val + test;
        Ok(Ratios([train / sum, val / sum, test / sum]))
    }
}

impl std::str::FromStr for Ratios {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let parts: Result<Vec<f64>, _> = text
            .split([',', '/', ':'])
            .map(|p| p.trim().parse::<f64>())
            .collect();
        let parts = parts.map_err(|e| format!("`{text}`: {e} (expected e.g. 70,15,15)"))?;
        Ratios::from_parts(&parts).map_err(|e| format!("`{text}`: {e}"))
    }
}

impl Default for Ratios {
    fn default() -> Self {
        Ratios([0.70, 0.15, 0.15])
    }
}

/// Settings of `covidct data split`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SplitConfig {
    /// Grouping strategy.
    pub strategy: SplitStrategy,
    /// Train/val/test shares.
    pub ratios: Ratios,
    /// Seed of the group shuffle; the same inputs and seed give a byte-identical manifest.
    pub seed: u64,
    /// `blocks`: cut a new group where the mean absolute difference of two consecutively
    /// numbered images' 32×32 thumbnails exceeds this (intensity units, 0–255).
    pub block_threshold: f32,
    /// `similarity`: link two images whose thumbnail distance is at most this.
    pub similarity_threshold: f32,
    /// `manifest`: the user CSV with a `path` column and a group column.
    pub groups_csv: Option<PathBuf>,
    /// `manifest`: name of the group column (e.g. `patient_id`).
    pub group_column: String,
    /// Group K-fold cross-validation when at least 3: the groups of each class are dealt into
    /// this many folds of equal size; fold [`Self::fold`] is the test set, the next fold
    /// (cyclically) the validation set, the rest training. `0` uses [`Self::ratios`] instead.
    /// Folds replace the `split` column of a `manifest` CSV and cannot be combined with
    /// `folders`.
    pub folds: usize,
    /// The test fold, `0..folds`.
    pub fold: usize,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self {
            strategy: SplitStrategy::Blocks,
            ratios: Ratios::default(),
            seed: 42,
            block_threshold: 40.0,
            similarity_threshold: 16.0,
            groups_csv: None,
            group_column: "group".into(),
            folds: 0,
            fold: 0,
        }
    }
}

impl SplitConfig {
    /// Checks the fold settings.
    pub fn validate(&self) -> Result<(), DataError> {
        let fold_error = |field, reason: String| Err(DataError::Config { field, reason });
        match self.folds {
            0 => Ok(()),
            1 | 2 => fold_error(
                "folds",
                format!(
                    "{} folds cannot hold separate training, validation and test sets: use 3 or \
                     more, or 0 for a single split by --ratios",
                    self.folds
                ),
            ),
            folds if self.fold >= folds => fold_error(
                "fold",
                format!("fold {} does not exist: folds are 0..{folds}", self.fold),
            ),
            _ if self.strategy == SplitStrategy::Folders => fold_error(
                "folds",
                "strategy `folders` keeps the dataset's own splits; folds need a grouping \
                 strategy such as `blocks`"
                    .into(),
            ),
            _ => Ok(()),
        }
    }

    /// Target shares of the bins groups are dealt into: train/val/test, or one per fold.
    fn bin_shares(&self) -> Vec<f64> {
        if self.folds == 0 {
            self.ratios.0.to_vec()
        } else {
            vec![1.0 / self.folds as f64; self.folds]
        }
    }

    /// The split of the groups dealt into `bin` (see [`Self::bin_shares`]).
    fn split_of_bin(&self, bin: usize) -> SplitName {
        if self.folds == 0 {
            SplitName::ALL[bin]
        } else if bin == self.fold {
            SplitName::Test
        } else if bin == (self.fold + 1) % self.folds {
            SplitName::Val
        } else {
            SplitName::Train
        }
    }
}

/// Builds the manifest for `analysis` with the configured strategy.
pub fn split_dataset(analysis: &Analysis, config: &SplitConfig) -> Result<Manifest, DataError> {
    config.validate()?;
    let records = &analysis.records;
    let origin = Path::new("<split>");
    let (groups, fixed_splits) = match config.strategy {
        SplitStrategy::Blocks => (block_groups(records, config.block_threshold), None),
        SplitStrategy::Similarity => (
            similarity_groups(records, config.similarity_threshold),
            None,
        ),
        SplitStrategy::Random => (
            records.iter().map(|r| r.file.relative.clone()).collect(),
            None,
        ),
        SplitStrategy::Folders => {
            if analysis.scan.layout != FolderLayout::SplitFolders {
                return Err(DataError::Layout {
                    path: analysis.scan.root.clone(),
                    reason: "strategy `folders` needs train/ val/ test/ folders at the top \
                             level; use `blocks` for a flat class-folder dataset"
                        .into(),
                });
            }
            let splits = records.iter().map(|r| r.file.folder_split).collect();
            (
                records.iter().map(|r| r.file.relative.clone()).collect(),
                Some(splits),
            )
        }
        SplitStrategy::Manifest => {
            let csv_path = config.groups_csv.as_deref().ok_or(DataError::Config {
                field: "groups_csv",
                reason: "strategy `manifest` needs --groups-csv FILE with a path column and a \
                         group column"
                    .into(),
            })?;
            let (groups, splits) = user_groups(records, csv_path, &config.group_column)?;
            (groups, splits)
        }
    };
    warn_on_giant_group(&groups, config.strategy);
    if config.strategy == SplitStrategy::Random {
        tracing::warn!(
            "strategy `random` splits single images, not patients: slices of one patient land in \
             both train and test and inflate every score; use it only to compare with the \
             literature"
        );
    }
    let splits: Vec<SplitName> = match fixed_splits {
        Some(splits) if config.folds == 0 && splits.iter().all(Option::is_some) => {
            splits.into_iter().flatten().collect()
        }
        _ => assign_groups(records, &groups, &config.bin_shares(), config.seed)
            .into_iter()
            .map(|bin| config.split_of_bin(bin))
            .collect(),
    };
    let rows = records
        .iter()
        .zip(groups)
        .zip(splits)
        .map(|((record, group), split)| ManifestRow {
            path: record.file.relative.clone(),
            label: record.file.class.clone(),
            group,
            split,
        })
        .collect();
    Manifest::new(rows, config.groups_csv.as_deref().unwrap_or(origin))
}

/// Warns when one group holds over a quarter of the images: the split can then no longer
/// follow the ratios, and the grouping threshold is likely too loose for this dataset.
fn warn_on_giant_group(groups: &[String], strategy: SplitStrategy) {
    let mut sizes: HashMap<&str, usize> = HashMap::new();
    for group in groups {
        *sizes.entry(group).or_default() += 1;
    }
    let largest = sizes.values().copied().max().unwrap_or(0);
    if largest * 4 > groups.len() && groups.len() >= 20 {
        tracing::warn!(
            largest,
            images = groups.len(),
            "strategy `{}`: one group holds {:.0}% of the images; lower the threshold \
             (--block-threshold / --similarity-threshold) for this dataset",
            strategy.as_str(),
            100.0 * largest as f64 / groups.len() as f64
        );
    }
}

/// The number in a file name that orders slices: the last run of digits in the stem.
fn slice_number(relative: &str) -> Option<u64> {
    let stem = relative.rsplit('/').next().unwrap_or(relative);
    let stem = stem.rsplit_once('.').map_or(stem, |(s, _)| s);
    let end = stem.rfind(|c: char| c.is_ascii_digit())? + 1;
    let start = stem[..end]
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    stem[start..end].parse().ok()
}

fn parent_folder(relative: &str) -> &str {
    relative.rsplit_once('/').map_or("", |(folder, _)| folder)
}

/// Pseudo-patient groups: within each class folder, images in file-name number order; a new
/// group starts where the thumbnail distance between neighbours exceeds `threshold`. Exact
/// duplicates are then merged into one group wherever they are.
fn block_groups(records: &[ImageRecord], threshold: f32) -> Vec<String> {
    let mut order: Vec<usize> = (0..records.len()).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (&records[a].file.relative, &records[b].file.relative);
        (
            parent_folder(ra),
            slice_number(ra).is_none(),
            slice_number(ra),
            ra,
        )
            .cmp(&(
                parent_folder(rb),
                slice_number(rb).is_none(),
                slice_number(rb),
                rb,
            ))
    });
    let mut union = UnionFind::new(records.len());
    for pair in order.windows(2) {
        let (a, b) = (&records[pair[0]], &records[pair[1]]);
        let same_folder = parent_folder(&a.file.relative) == parent_folder(&b.file.relative);
        let numbered =
            slice_number(&a.file.relative).is_some() && slice_number(&b.file.relative).is_some();
        if same_folder && numbered && a.thumbnail.distance(&b.thumbnail) <= threshold {
            union.join(pair[0], pair[1]);
        }
    }
    join_exact_duplicates(records, &mut union);
    name_groups(records, &mut union, &order, "block")
}

/// Connected components of the graph linking images with thumbnail distance ≤ `threshold`.
fn similarity_groups(records: &[ImageRecord], threshold: f32) -> Vec<String> {
    use rayon::prelude::*;
    let links: Vec<(usize, usize)> = (0..records.len())
        .into_par_iter()
        .flat_map_iter(|i| {
            (i + 1..records.len())
                .filter(move |&j| records[i].thumbnail.distance(&records[j].thumbnail) <= threshold)
                .map(move |j| (i, j))
        })
        .collect();
    let mut union = UnionFind::new(records.len());
    for (a, b) in links {
        union.join(a, b);
    }
    join_exact_duplicates(records, &mut union);
    let order: Vec<usize> = (0..records.len()).collect();
    name_groups(records, &mut union, &order, "similar")
}

fn join_exact_duplicates(records: &[ImageRecord], union: &mut UnionFind) {
    let mut first_with_hash = HashMap::new();
    for (index, record) in records.iter().enumerate() {
        if let Some(&first) = first_with_hash.get(&record.content_hash) {
            union.join(first, index);
        } else {
            first_with_hash.insert(record.content_hash, index);
        }
    }
}

/// Names each component `{prefix}-{class of first member}-{n}`, numbered in `order`.
fn name_groups(
    records: &[ImageRecord],
    union: &mut UnionFind,
    order: &[usize],
    prefix: &str,
) -> Vec<String> {
    let mut names: HashMap<usize, String> = HashMap::new();
    let mut counters: BTreeMap<&str, usize> = BTreeMap::new();
    for &index in order {
        let root = union.find(index);
        names.entry(root).or_insert_with(|| {
            let class = records[index].file.class.as_str();
            let counter = counters.entry(class).or_default();
            *counter += 1;
            format!("{prefix}-{class}-{:04}", *counter)
        });
    }
    (0..records.len())
        .map(|i| names[&union.find(i)].clone())
        .collect()
}

/// Splits given by the data itself (one per record; `None` where unknown).
type FixedSplits = Vec<Option<SplitName>>;

/// Groups (and splits, when the CSV has a `split` column) from a user CSV keyed by path.
fn user_groups(
    records: &[ImageRecord],
    csv_path: &Path,
    group_column: &str,
) -> Result<(Vec<String>, Option<FixedSplits>), DataError> {
    let fail = |reason: String| DataError::Manifest {
        path: csv_path.to_path_buf(),
        reason,
    };
    let mut reader = csv::Reader::from_path(csv_path).map_err(|e| fail(e.to_string()))?;
    let headers = reader.headers().map_err(|e| fail(e.to_string()))?.clone();
    let column = |name: &str| headers.iter().position(|h| h == name);
    let path_at = column("path").ok_or_else(|| fail("no `path` column".into()))?;
    let group_at = column(group_column).ok_or_else(|| {
        fail(format!(
            "no `{group_column}` column (columns: {}); set --group-column",
            headers.iter().collect::<Vec<_>>().join(", ")
        ))
    })?;
    let split_at = column("split");
    let mut by_path: HashMap<String, (String, Option<SplitName>)> = HashMap::new();
    for (index, row) in reader.records().enumerate() {
        let line = index + 2;
        let row = row.map_err(|e| fail(format!("row {line}: {e}")))?;
        let field = |at: usize| row.get(at).map(str::trim).unwrap_or_default().to_owned();
        let (path, group) = (field(path_at), field(group_at));
        if group.is_empty() {
            return Err(fail(format!(
                "row {line}: empty `{group_column}` for `{path}`"
            )));
        }
        let split = match split_at.map(field) {
            Some(text) => Some(SplitName::parse(&text).ok_or_else(|| {
                fail(format!(
                    "row {line}: split `{text}` is not train, val or test"
                ))
            })?),
            None => None,
        };
        if by_path.insert(path.clone(), (group, split)).is_some() {
            return Err(fail(format!(
                "row {line}: path `{path}` appears more than once"
            )));
        }
    }
    let mut groups = Vec::with_capacity(records.len());
    let mut splits = Vec::with_capacity(records.len());
    let mut missing = Vec::new();
    for record in records {
        match by_path.get(&record.file.relative) {
            Some((group, split)) => {
                groups.push(group.clone());
                splits.push(*split);
            }
            None => missing.push(record.file.relative.as_str()),
        }
    }
    if !missing.is_empty() {
        return Err(fail(format!(
            "{} image(s) of the dataset have no row, e.g. `{}`; every image needs a group",
            missing.len(),
            missing[..missing.len().min(3)].join("`, `")
        )));
    }
    Ok((groups, split_at.map(|_| splits)))
}

/// Deals whole groups into bins (splits or folds) with target `shares`, per class (a group's
/// class is its members' majority), in seeded random order, each to the bin furthest below
/// its target share; of [`ASSIGNMENT_ATTEMPTS`] seeded orders, the one closest to the target
/// sizes wins. Returns each record's bin.
fn assign_groups(
    records: &[ImageRecord],
    groups: &[String],
    shares: &[f64],
    seed: u64,
) -> Vec<usize> {
    // Group → (member indices); group → majority class.
    let mut members: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, group) in groups.iter().enumerate() {
        members.entry(group).or_default().push(index);
    }
    let mut by_class: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (group, indices) in &members {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for &i in indices {
            *votes.entry(records[i].file.class.as_str()).or_default() += 1;
        }
        let class = votes
            .iter()
            .max_by_key(|(class, n)| (**n, std::cmp::Reverse(**class)))
            .map(|(c, _)| *c)
            .unwrap_or_default();
        by_class.entry(class).or_default().push(group);
    }
    let mut assignment: HashMap<&str, usize> = HashMap::new();
    for (class, class_groups) in by_class {
        let sizes: Vec<usize> = class_groups.iter().map(|g| members[g].len()).collect();
        let total: usize = sizes.iter().sum();
        let targets: Vec<f64> = shares.iter().map(|r| r * total as f64).collect();
        // Several seeded shuffles; keep the one whose bin sizes come closest to the targets
        // (large groups make a single greedy pass overshoot).
        let mut best: Option<(f64, Vec<usize>)> = None;
        for attempt in 0..ASSIGNMENT_ATTEMPTS {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ stable_hash(class));
            rng.set_stream(attempt);
            let mut order: Vec<usize> = (0..class_groups.len()).collect();
            order.shuffle(&mut rng);
            let mut filled = vec![0usize; shares.len()];
            let mut chosen = vec![0usize; class_groups.len()];
            for index in order {
                // Relative shortfall of each bin; ties go to the earlier bin.
                let (bin, _) = (0..shares.len())
                    .filter(|&b| targets[b] > 0.0)
                    .map(|b| (b, (targets[b] - filled[b] as f64) / targets[b]))
                    .fold((0, f64::NEG_INFINITY), |best, candidate| {
                        if candidate.1 > best.1 {
                            candidate
                        } else {
                            best
                        }
                    });
                filled[bin] += sizes[index];
                chosen[index] = bin;
            }
            let error: f64 = filled
                .iter()
                .zip(&targets)
                .map(|(&filled, target)| (filled as f64 - target).abs())
                .sum();
            if best
                .as_ref()
                .is_none_or(|(best_error, _)| error < *best_error)
            {
                best = Some((error, chosen));
            }
        }
        if let Some((_, chosen)) = best {
            for (group, bin) in class_groups.iter().zip(chosen) {
                assignment.insert(group, bin);
            }
        }
    }
    groups.iter().map(|g| assignment[g.as_str()]).collect()
}

/// Seeded shuffles tried per class by [`assign_groups`].
const ASSIGNMENT_ATTEMPTS: u64 = 64;

/// FNV-1a: a hash that is the same on every platform and release, unlike `DefaultHasher`.
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

struct UnionFind {
    parent: Vec<usize>,
}

impl UnionFind {
    fn new(size: usize) -> Self {
        Self {
            parent: (0..size).collect(),
        }
    }

    fn find(&mut self, mut node: usize) -> usize {
        while self.parent[node] != node {
            self.parent[node] = self.parent[self.parent[node]];
            node = self.parent[node];
        }
        node
    }

    fn join(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[ra.max(rb)] = ra.min(rb);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_numbers_come_from_the_last_digit_run() {
        assert_eq!(slice_number("COVID/Covid (1252).png"), Some(1252));
        assert_eq!(slice_number("x/scan2_slice017.dcm"), Some(17));
        assert_eq!(slice_number("x/no-number.png"), None);
        assert_eq!(slice_number("x/7"), Some(7));
    }

    #[test]
    fn ratios_parse_and_normalise() {
        let r: Ratios = "70,15,15".parse().expect("valid");
        assert!((r.0[0] - 0.7).abs() < 1e-12 && (r.0[2] - 0.15).abs() < 1e-12);
        let r: Ratios = "0.8/0/0.2".parse().expect("valid");
        assert_eq!(r.0[1], 0.0);
        assert!("70,30".parse::<Ratios>().is_err());
        assert!("70,-1,31".parse::<Ratios>().is_err());
        assert!("100,0,0".parse::<Ratios>().is_err());
        assert!("a,b,c".parse::<Ratios>().is_err());
    }

    use crate::scan::{DatasetFile, Scan};
    use covidct_imaging::{FileFormat, PixelLayout, SourceInfo, THUMBNAIL_SIDE, Thumbnail};

    /// A record whose thumbnail is one constant intensity (distances are then differences of
    /// intensities) and whose content hash is derived from `content`.
    fn record(relative: &str, intensity: u8, content: u16) -> ImageRecord {
        let class = relative.split('/').next().unwrap_or_default().to_owned();
        ImageRecord {
            file: DatasetFile {
                path: relative.into(),
                relative: relative.into(),
                class,
                folder_split: None,
                size_bytes: 1,
            },
            source: SourceInfo {
                format: FileFormat::Png,
                layout: PixelLayout::Grey,
                bit_depth: 8,
                width: 10,
                height: 10,
            },
            content_hash: {
                let mut hash = [0u8; 32];
                hash[..2].copy_from_slice(&content.to_le_bytes());
                hash
            },
            thumbnail: Thumbnail(vec![intensity; (THUMBNAIL_SIDE * THUMBNAIL_SIDE) as usize]),
            perceptual_hash: covidct_imaging::PerceptualHash([0; 4]),
        }
    }

    fn analysis(records: Vec<ImageRecord>) -> Analysis {
        Analysis {
            scan: Scan {
                root: "root".into(),
                layout: FolderLayout::ClassFolders,
                classes: vec!["A".into(), "B".into()],
                files: records.iter().map(|r| r.file.clone()).collect(),
                problems: vec![],
            },
            records,
            invalid: vec![],
        }
    }

    /// Two classes, each with `patients` runs of `slices` consecutive, similar slices; patients
    /// differ strongly from their neighbours.
    fn synthetic(patients: usize, slices: usize) -> Analysis {
        let mut records = Vec::new();
        let mut content = 0u16;
        for class in ["A", "B"] {
            for patient in 0..patients {
                for slice in 0..slices {
                    let number = patient * slices + slice + 1;
                    let intensity = if patient % 2 == 0 { 40 } else { 200 } + slice as u8;
                    content += 1;
                    records.push(record(
                        &format!("{class}/img ({number}).png"),
                        intensity,
                        content,
                    ));
                }
            }
        }
        analysis(records)
    }

    #[test]
    fn blocks_cut_where_neighbours_stop_looking_alike() {
        // Numbers 1..3 similar, 4..5 different from 3: two groups; file order is by number,
        // not by name (10 sorts after 9).
        let records = vec![
            record("A/s (1).png", 50, 1),
            record("A/s (2).png", 55, 2),
            record("A/s (3).png", 52, 3),
            record("A/s (4).png", 150, 4),
            record("A/s (10).png", 149, 5),
        ];
        let groups = block_groups(&records, 30.0);
        assert_eq!(groups[0], groups[1]);
        assert_eq!(groups[1], groups[2]);
        assert_ne!(groups[2], groups[3]);
        assert_eq!(groups[3], groups[4]);
    }

    #[test]
    fn exact_duplicates_always_share_a_group() {
        let records = vec![
            record("A/s (1).png", 10, 7),
            record("A/s (2).png", 200, 2),
            record("A/s (3).png", 10, 7),
        ];
        let groups = block_groups(&records, 30.0);
        assert_eq!(groups[0], groups[2]);
        assert_ne!(groups[0], groups[1]);
        let groups = similarity_groups(&records, 0.5);
        assert_eq!(groups[0], groups[2]);
    }

    #[test]
    fn similarity_groups_are_connected_components() {
        let records = vec![
            record("A/x.png", 10, 1),
            record("A/y.png", 20, 2),
            record("A/z.png", 30, 3),
            record("A/w.png", 100, 4),
        ];
        let groups = similarity_groups(&records, 10.0);
        assert_eq!(groups[0], groups[2], "chained through y");
        assert_ne!(groups[0], groups[3]);
    }

    #[test]
    fn group_split_is_stratified_leak_free_and_reproducible() {
        let data = synthetic(20, 10);
        let config = SplitConfig::default();
        let manifest = split_dataset(&data, &config).expect("split");
        // 20 patients of 10 slices per class are found as 20 groups per class.
        assert_eq!(manifest.group_count(), 40);
        manifest
            .validate(Path::new("x"))
            .expect("no group in two splits");
        for (split, target) in [
            (SplitName::Train, 140),
            (SplitName::Val, 30),
            (SplitName::Test, 30),
        ] {
            for class in ["A", "B"] {
                let count = manifest.split(split).filter(|r| r.label == class).count();
                assert!(count.abs_diff(target) <= 10, "{split} {class}: {count}");
            }
        }
        let again = split_dataset(&data, &config).expect("split");
        assert_eq!(
            manifest.to_csv().expect("csv"),
            again.to_csv().expect("csv")
        );
        let other_seed = SplitConfig { seed: 7, ..config };
        assert_ne!(manifest, split_dataset(&data, &other_seed).expect("split"));
    }

    #[test]
    fn group_folds_test_every_group_once_and_validate_on_the_next_fold() {
        let data = synthetic(10, 4);
        let folds = 5;
        let fold_config = |fold| SplitConfig {
            folds,
            fold,
            ..SplitConfig::default()
        };
        let manifests: Vec<Manifest> = (0..folds)
            .map(|fold| split_dataset(&data, &fold_config(fold)).expect("fold split"))
            .collect();
        let groups_in = |manifest: &Manifest, split| {
            manifest
                .split(split)
                .map(|row| row.group.clone())
                .collect::<std::collections::BTreeSet<_>>()
        };
        let mut tested = std::collections::BTreeSet::new();
        for (fold, manifest) in manifests.iter().enumerate() {
            manifest
                .validate(Path::new("x"))
                .expect("no group in two splits");
            let test = groups_in(manifest, SplitName::Test);
            // 10 groups per class in 5 folds: two of each class in every test fold.
            for class in ["A", "B"] {
                let count = manifest
                    .split(SplitName::Test)
                    .filter(|r| r.label == class)
                    .count();
                assert_eq!(count, 8, "fold {fold} {class}");
            }
            assert!(test.is_disjoint(&tested), "fold {fold} retests a group");
            tested.extend(test);
            let next = &manifests[(fold + 1) % folds];
            assert_eq!(
                groups_in(manifest, SplitName::Val),
                groups_in(next, SplitName::Test),
                "fold {fold} validates on the next fold"
            );
        }
        assert_eq!(tested.len(), 20, "every group is tested exactly once");
        for (fold, reason) in [(5, "fold 5 does not exist"), (0, "cannot hold")] {
            let config = SplitConfig {
                folds: if reason == "cannot hold" { 2 } else { folds },
                fold,
                ..SplitConfig::default()
            };
            let error = split_dataset(&data, &config).expect_err("bad folds");
            assert!(error.to_string().contains(reason), "{error}");
        }
    }

    #[test]
    fn random_split_uses_one_group_per_image() {
        let data = synthetic(4, 5);
        let config = SplitConfig {
            strategy: SplitStrategy::Random,
            ..Default::default()
        };
        let manifest = split_dataset(&data, &config).expect("split");
        assert_eq!(manifest.group_count(), data.records.len());
    }

    #[test]
    fn folders_strategy_needs_split_folders() {
        let data = synthetic(2, 2);
        let config = SplitConfig {
            strategy: SplitStrategy::Folders,
            ..Default::default()
        };
        let error = split_dataset(&data, &config).expect_err("flat layout");
        assert!(error.to_string().contains("train/ val/ test/"), "{error}");
    }

    #[test]
    fn user_manifest_groups_and_splits_are_checked() {
        let data = synthetic(1, 2);
        let dir = tempfile::tempdir().expect("tempdir");
        let csv = dir.path().join("patients.csv");
        let config = SplitConfig {
            strategy: SplitStrategy::Manifest,
            groups_csv: Some(csv.clone()),
            group_column: "patient_id".into(),
            ..Default::default()
        };
        std::fs::write(
            &csv,
            "path,patient_id,split\nA/img (1).png,p1,train\nA/img (2).png,p1,test\n\
             B/img (1).png,p2,train\nB/img (2).png,p3,test\n",
        )
        .expect("write");
        let error = split_dataset(&data, &config).expect_err("p1 in two splits");
        assert!(error.to_string().contains("p1") && error.to_string().contains("patients.csv"));

        std::fs::write(
            &csv,
            "path,patient_id,split\nA/img (1).png,p1,train\nA/img (2).png,p1,train\n\
             B/img (1).png,p2,train\nB/img (2).png,p3,test\n",
        )
        .expect("write");
        let manifest = split_dataset(&data, &config).expect("valid user split");
        assert_eq!(manifest.split(SplitName::Test).count(), 1);

        std::fs::write(&csv, "path,patient_id\nA/img (1).png,p1\n").expect("write");
        let error = split_dataset(&data, &config).expect_err("rows missing");
        assert!(error.to_string().contains("have no row"), "{error}");

        std::fs::write(&csv, "path,subject\nA/img (1).png,p1\n").expect("write");
        let error = split_dataset(&data, &config).expect_err("no column");
        assert!(error.to_string().contains("patient_id"), "{error}");
    }

    #[test]
    fn stable_hash_is_fixed() {
        assert_eq!(stable_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(stable_hash("COVID"), stable_hash("non-COVID"));
    }
}
