//! The dataset audit behind `covidct data inspect`: counts, sizes, original pixel layouts,
//! shortcut warnings, exact and near duplicates, and unusable files.

use crate::analyze::{Analysis, ImageRecord};
use crate::problem::Problem;
use crate::scan::FolderLayout;

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// Settings of the audit.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct InspectConfig {
    /// Largest perceptual-hash Hamming distance (of 256 bits) at which two images count as
    /// near-duplicates.
    pub near_duplicate_distance: u32,
    /// Side of the square width/height buckets used by the size-shortcut test, in pixels.
    pub size_bucket_pixels: u32,
    /// A feature is a shortcut when it predicts the class (leave-one-out) this many points
    /// (0–1) better than always answering the majority class.
    pub shortcut_margin: f64,
}

impl Default for InspectConfig {
    fn default() -> Self {
        Self {
            near_duplicate_distance: 32,
            size_bucket_pixels: 64,
            shortcut_margin: 0.10,
        }
    }
}

/// Five-number summary of a distribution.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Distribution {
    /// Smallest value.
    pub min: u32,
    /// 25th percentile.
    pub p25: u32,
    /// Median.
    pub median: u32,
    /// 75th percentile.
    pub p75: u32,
    /// Largest value.
    pub max: u32,
}

impl Distribution {
    fn of(mut values: Vec<u32>) -> Option<Self> {
        values.sort_unstable();
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
        (!values.is_empty()).then(|| Distribution {
            min: at(0.0),
            p25: at(0.25),
            median: at(0.5),
            p75: at(0.75),
            max: at(1.0),
        })
    }
}

/// Per-class summary.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassSummary {
    /// Class name.
    pub name: String,
    /// Readable images.
    pub images: usize,
    /// Width distribution in pixels.
    pub width: Option<Distribution>,
    /// Height distribution in pixels.
    pub height: Option<Distribution>,
    /// Original pixel layouts (e.g. `PNG RGBA 8-bit`) and how many images have each.
    pub layouts: BTreeMap<String, usize>,
}

/// How well one image property alone predicts the class.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ShortcutCheck {
    /// The property (`pixel layout`, `size bucket`).
    pub feature: String,
    /// Distinct values seen.
    pub distinct_values: usize,
    /// Leave-one-out accuracy of predicting each image's class from the majority class of the
    /// other images that share its value.
    pub accuracy: f64,
    /// Accuracy of always answering the majority class.
    pub baseline: f64,
    /// Whether `accuracy` beats `baseline` by at least the configured margin.
    pub is_shortcut: bool,
    /// Values (with at least 10 images) of which at least 95% belong to one class.
    pub telling_values: Vec<TellingValue>,
}

/// A property value that almost always means one class.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TellingValue {
    /// The value, e.g. `PNG RGB 8-bit`.
    pub value: String,
    /// The class it points to.
    pub class: String,
    /// Images with this value.
    pub images: usize,
    /// Share of them in `class`.
    pub purity: f64,
}

/// Images with identical canonical pixels.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DuplicateGroup {
    /// Relative paths, sorted.
    pub paths: Vec<String>,
    /// Whether the copies carry different labels.
    pub cross_class: bool,
}

/// Two images whose perceptual hashes are within the configured distance.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NearDuplicatePair {
    /// First image (relative path).
    pub a: String,
    /// Second image (relative path).
    pub b: String,
    /// Hamming distance of the perceptual hashes (0–256).
    pub distance: u32,
    /// Whether the two carry different labels.
    pub cross_class: bool,
}

/// The whole audit.
#[derive(Clone, Debug, Serialize)]
pub struct InspectReport {
    /// Dataset root.
    pub root: String,
    /// How the root is organised.
    pub layout: FolderLayout,
    /// Fingerprint of paths, labels and pixels.
    pub fingerprint: String,
    /// Readable images in all classes.
    pub total_images: usize,
    /// Per-class summaries.
    pub classes: Vec<ClassSummary>,
    /// Shortcut checks per property.
    pub shortcuts: Vec<ShortcutCheck>,
    /// Exact duplicate groups.
    pub exact_duplicates: Vec<DuplicateGroup>,
    /// Near-duplicate threshold used (Hamming distance of 256-bit perceptual hashes).
    pub near_duplicate_distance: u32,
    /// Near-duplicate pairs that are not exact duplicates.
    pub near_duplicates: Vec<NearDuplicatePair>,
    /// Image files that could not be decoded.
    pub invalid_files: Vec<Problem>,
    /// Other files and folders passed over.
    pub skipped: Vec<Problem>,
}

impl InspectReport {
    /// Builds the audit from a completed analysis.
    pub fn build(analysis: &Analysis, config: &InspectConfig) -> Self {
        let records = &analysis.records;
        let classes = analysis
            .scan
            .classes
            .iter()
            .map(|name| summarize_class(name, records))
            .collect();
        let layout_values: Vec<(String, &str)> = records
            .iter()
            .map(|r| (r.source.layout_label(), r.file.class.as_str()))
            .collect();
        let bucket = config.size_bucket_pixels.max(1);
        let size_values: Vec<(String, &str)> = records
            .iter()
            .map(|r| {
                let (w, h) = (
                    r.source.width / bucket * bucket,
                    r.source.height / bucket * bucket,
                );
                (
                    format!("{w}–{}×{h}–{}", w + bucket - 1, h + bucket - 1),
                    r.file.class.as_str(),
                )
            })
            .collect();
        let shortcuts = vec![
            shortcut_check("pixel layout", &layout_values, config.shortcut_margin),
            shortcut_check("size bucket", &size_values, config.shortcut_margin),
        ];
        let exact_duplicates = exact_duplicate_groups(records);
        let near_duplicates = near_duplicate_pairs(records, config.near_duplicate_distance);
        InspectReport {
            root: analysis.scan.root.display().to_string(),
            layout: analysis.scan.layout,
            fingerprint: analysis.fingerprint(),
            total_images: records.len(),
            classes,
            shortcuts,
            exact_duplicates,
            near_duplicate_distance: config.near_duplicate_distance,
            near_duplicates,
            invalid_files: analysis.invalid.clone(),
            skipped: analysis.scan.problems.clone(),
        }
    }

    /// Whether any warning deserves the user's attention (shortcut or cross-class duplicate).
    pub fn has_warnings(&self) -> bool {
        self.shortcuts.iter().any(|s| s.is_shortcut)
            || self.exact_duplicates.iter().any(|d| d.cross_class)
            || self.near_duplicates.iter().any(|d| d.cross_class)
    }
}

fn summarize_class(name: &str, records: &[ImageRecord]) -> ClassSummary {
    let mine: Vec<&ImageRecord> = records.iter().filter(|r| r.file.class == name).collect();
    let mut layouts = BTreeMap::new();
    for record in &mine {
        *layouts.entry(record.source.layout_label()).or_insert(0) += 1;
    }
    ClassSummary {
        name: name.to_owned(),
        images: mine.len(),
        width: Distribution::of(mine.iter().map(|r| r.source.width).collect()),
        height: Distribution::of(mine.iter().map(|r| r.source.height).collect()),
        layouts,
    }
}

/// Leave-one-out accuracy of predicting the class from one categorical property.
fn shortcut_check(feature: &str, values: &[(String, &str)], margin: f64) -> ShortcutCheck {
    let mut class_totals: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_value: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for (value, class) in values {
        *class_totals.entry(class).or_default() += 1;
        *by_value.entry(value).or_default().entry(class).or_default() += 1;
    }
    let total = values.len().max(1) as f64;
    let (majority, majority_count) = class_totals
        .iter()
        .max_by_key(|(class, count)| (**count, std::cmp::Reverse(**class)))
        .map(|(c, n)| (*c, *n))
        .unwrap_or(("", 0));
    let mut correct = 0usize;
    for (value, class) in values {
        let counts = &by_value[value.as_str()];
        // The other images sharing this value vote; ties and empty votes fall back to the
        // majority class.
        let mut best: Option<(&str, usize)> = None;
        let mut tied = false;
        for (&candidate, &count) in counts {
            let votes = if candidate == *class {
                count - 1
            } else {
                count
            };
            match best {
                Some((_, best_votes)) if votes < best_votes => {}
                Some((_, best_votes)) if votes == best_votes => tied = true,
                _ => {
                    best = Some((candidate, votes));
                    tied = false;
                }
            }
        }
        let predicted = match best {
            Some((candidate, votes)) if votes > 0 && !tied => candidate,
            _ => majority,
        };
        correct += usize::from(predicted == *class);
    }
    let telling_values = by_value
        .iter()
        .filter_map(|(value, counts)| {
            let images: usize = counts.values().sum();
            let (class, top) = counts.iter().max_by_key(|(_, n)| **n)?;
            let purity = *top as f64 / images as f64;
            let overall_share = class_totals[class] as f64 / total;
            (images >= 10 && purity >= 0.95 && overall_share < 0.9).then(|| TellingValue {
                value: value.to_string(),
                class: class.to_string(),
                images,
                purity,
            })
        })
        .collect();
    let accuracy = correct as f64 / total;
    let baseline = majority_count as f64 / total;
    ShortcutCheck {
        feature: feature.to_owned(),
        distinct_values: by_value.len(),
        accuracy,
        baseline,
        is_shortcut: by_value.len() > 1 && accuracy >= baseline + margin,
        telling_values,
    }
}

fn exact_duplicate_groups(records: &[ImageRecord]) -> Vec<DuplicateGroup> {
    let mut by_hash: BTreeMap<_, Vec<&ImageRecord>> = BTreeMap::new();
    for record in records {
        by_hash.entry(record.content_hash).or_default().push(record);
    }
    let mut groups: Vec<DuplicateGroup> = by_hash
        .into_values()
        .filter(|members| members.len() > 1)
        .map(|members| {
            let mut paths: Vec<String> = members.iter().map(|r| r.file.relative.clone()).collect();
            paths.sort();
            DuplicateGroup {
                cross_class: members
                    .iter()
                    .any(|r| r.file.class != members[0].file.class),
                paths,
            }
        })
        .collect();
    groups.sort_by(|a, b| a.paths.cmp(&b.paths));
    groups
}

fn near_duplicate_pairs(records: &[ImageRecord], max_distance: u32) -> Vec<NearDuplicatePair> {
    use rayon::prelude::*;
    let mut pairs: Vec<NearDuplicatePair> = (0..records.len())
        .into_par_iter()
        .flat_map_iter(|i| {
            let a = &records[i];
            records[i + 1..].iter().filter_map(move |b| {
                let distance = a.perceptual_hash.distance(&b.perceptual_hash);
                (distance <= max_distance && a.content_hash != b.content_hash).then(|| {
                    NearDuplicatePair {
                        a: a.file.relative.clone(),
                        b: b.file.relative.clone(),
                        distance,
                        cross_class: a.file.class != b.file.class,
                    }
                })
            })
        })
        .collect();
    pairs.sort_by(|x, y| (x.distance, &x.a, &x.b).cmp(&(y.distance, &y.a, &y.b)));
    pairs
}

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Dataset {} ({:?}), fingerprint {}",
            self.root, self.layout, self.fingerprint
        )?;
        writeln!(
            f,
            "{} readable images in {} classes",
            self.total_images,
            self.classes.len()
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<20} {:>7}  {:<26} {:<26} layouts",
            "class", "images", "width min/p25/med/p75/max", "height min/p25/med/p75/max"
        )?;
        let show = |d: &Option<Distribution>| {
            d.as_ref().map_or("-".to_string(), |d| {
                format!("{}/{}/{}/{}/{}", d.min, d.p25, d.median, d.p75, d.max)
            })
        };
        for class in &self.classes {
            let layouts: Vec<String> = class
                .layouts
                .iter()
                .map(|(l, n)| format!("{l}: {n}"))
                .collect();
            writeln!(
                f,
                "{:<20} {:>7}  {:<26} {:<26} {}",
                class.name,
                class.images,
                show(&class.width),
                show(&class.height),
                layouts.join(", ")
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "Shortcut checks (leave-one-out accuracy of the property alone):"
        )?;
        for check in &self.shortcuts {
            writeln!(
                f,
                "  {:<13} {:>3} values  accuracy {:.3} vs majority baseline {:.3}{}",
                check.feature,
                check.distinct_values,
                check.accuracy,
                check.baseline,
                if check.is_shortcut {
                    "  WARNING: predicts the class"
                } else {
                    ""
                }
            )?;
            if check.is_shortcut {
                for value in check.telling_values.iter().take(10) {
                    writeln!(
                        f,
                        "      {:<28} {:>5} images, {:.0}% {}",
                        value.value,
                        value.images,
                        value.purity * 100.0,
                        value.class
                    )?;
                }
            }
        }
        if self.shortcuts.iter().any(|s| s.is_shortcut) {
            writeln!(
                f,
                "  A model can learn these properties instead of the lungs: every image is reduced \
                 to one grey layout before training, but check sizes and sources."
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "Exact duplicates (identical decoded pixels): {} group(s)",
            self.exact_duplicates.len()
        )?;
        for group in &self.exact_duplicates {
            writeln!(
                f,
                "  {}{}",
                group.paths.join(" = "),
                if group.cross_class {
                    "  CROSS-CLASS: same image, different labels!"
                } else {
                    ""
                }
            )?;
        }
        let cross: Vec<&NearDuplicatePair> = self
            .near_duplicates
            .iter()
            .filter(|p| p.cross_class)
            .collect();
        writeln!(
            f,
            "Near duplicates (perceptual hash distance ≤ {} of 256): {} pair(s), {} cross-class",
            self.near_duplicate_distance,
            self.near_duplicates.len(),
            cross.len()
        )?;
        for pair in cross.iter().take(20) {
            writeln!(
                f,
                "  CROSS-CLASS: {} ~ {} (distance {})",
                pair.a, pair.b, pair.distance
            )?;
        }
        if cross.len() > 20 {
            writeln!(
                f,
                "  … {} more cross-class pairs (see --json)",
                cross.len() - 20
            )?;
        }
        writeln!(f)?;
        writeln!(f, "Invalid image files: {}", self.invalid_files.len())?;
        for problem in &self.invalid_files {
            writeln!(f, "  {}: {}", problem.path, problem.reason)?;
        }
        writeln!(f, "Other files skipped: {}", self.skipped.len())?;
        for problem in self.skipped.iter().take(20) {
            writeln!(f, "  {}: {}", problem.path, problem.reason)?;
        }
        if self.skipped.len() > 20 {
            writeln!(f, "  … {} more (see --json)", self.skipped.len() - 20)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<'a>(pairs: &'a [(&'a str, &'a str)]) -> Vec<(String, &'a str)> {
        pairs.iter().map(|(v, c)| (v.to_string(), *c)).collect()
    }

    #[test]
    fn layout_that_separates_classes_is_a_shortcut() {
        let mut pairs = vec![("RGB", "COVID"); 40];
        pairs.extend(vec![("RGBA", "COVID"); 60]);
        pairs.extend(vec![("RGBA", "non-COVID"); 100]);
        let check = shortcut_check("pixel layout", &values(&pairs), 0.1);
        // RGB → COVID always right (40), RGBA → non-COVID right for 100: 140/200.
        assert!((check.accuracy - 0.7).abs() < 1e-9, "{check:?}");
        assert!((check.baseline - 0.5).abs() < 1e-9);
        assert!(check.is_shortcut);
        assert_eq!(check.telling_values.len(), 1);
        assert_eq!(check.telling_values[0].value, "RGB");
        assert_eq!(check.telling_values[0].class, "COVID");
    }

    #[test]
    fn uninformative_property_is_not_a_shortcut() {
        let mut pairs = vec![("grey", "COVID"); 50];
        pairs.extend(vec![("grey", "non-COVID"); 50]);
        let check = shortcut_check("pixel layout", &values(&pairs), 0.1);
        assert!(!check.is_shortcut);
        assert!(check.accuracy <= check.baseline + 1e-9);
    }

    #[test]
    fn leave_one_out_does_not_reward_unique_values() {
        // Every image has its own value: no other image votes, so accuracy falls back to the
        // majority class and never looks like a shortcut.
        let pairs: Vec<(String, &str)> = (0..100)
            .map(|i| (format!("v{i}"), if i % 2 == 0 { "a" } else { "b" }))
            .collect();
        let check = shortcut_check("size bucket", &pairs, 0.1);
        assert!((check.accuracy - 0.5).abs() < 1e-9, "{check:?}");
        assert!(!check.is_shortcut);
    }

    #[test]
    fn distribution_quartiles() {
        let d = Distribution::of(vec![5, 1, 3, 2, 4]).expect("non-empty");
        assert_eq!((d.min, d.p25, d.median, d.p75, d.max), (1, 2, 3, 4, 5));
        assert!(Distribution::of(vec![]).is_none());
    }
}
