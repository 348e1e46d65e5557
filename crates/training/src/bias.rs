//! Bias and shortcut checks of an evaluation: metrics per subgroup of image properties, the
//! metadata shortcut test, and how much of the Grad-CAM attribution lies inside the body.
//!
//! The shortcut test runs on the evaluated images and, when a manifest is given, on the whole
//! manifest (train + val + test): it needs only the files, labels and groups, and more data
//! makes its verdict firmer. The verdict tagged in MLflow is the one on the most data that
//! could be tested.

use std::path::{Path, PathBuf};

use covidct_data::Manifest;
use covidct_evaluation::{
    AttributionStats, AttributionSummary, BootstrapConfig, EvaluationReport, ImageMetadata,
    Interval, Property, ShortcutConfig, ShortcutReport, SubgroupAnalysis, SubgroupConfig,
    aspect_bucket, quartile_labels, resolution_bucket, shortcut_test, subgroup_metrics,
    summarize_attribution,
};
use covidct_imaging::{
    DecodeOptions, DecodedImage, SourceInfo, body_mask, decode_file, fit_input, image_features,
    probe_file,
};
use covidct_model::Predictor;
use serde_json::{Map, Value, json};

use crate::data::SplitSamples;
use crate::error::TrainError;
use crate::evaluation::SampleSource;

/// Reports (stage, done, total) while images are probed or explained.
pub type StageProgress<'a> = &'a mut dyn FnMut(&str, usize, usize);

/// Which images a shortcut test ran on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShortcutImages {
    /// The images that were evaluated.
    Evaluated,
    /// Every image of the manifest (train + val + test).
    WholeManifest,
}

impl ShortcutImages {
    /// How reports and the terminal name these images.
    pub fn label(self) -> &'static str {
        match self {
            Self::Evaluated => "evaluated images",
            Self::WholeManifest => "whole manifest",
        }
    }

    /// The prefix of the MLflow metrics of a test on these images.
    pub fn metric_prefix(self) -> &'static str {
        match self {
            Self::Evaluated => "shortcut",
            Self::WholeManifest => "shortcut_manifest",
        }
    }
}

/// The shortcut test on one set of images, or why it could not run.
#[derive(Debug)]
pub struct ShortcutScope {
    /// Which images.
    pub scope: ShortcutImages,
    /// The result.
    pub result: Result<ShortcutReport, String>,
}

/// Everything `--bias` found.
#[derive(Debug)]
pub struct BiasOutcome {
    /// Metrics per subgroup of image properties.
    pub subgroups: SubgroupAnalysis,
    /// The shortcut test, on the evaluated images and possibly the whole manifest.
    pub shortcut: Vec<ShortcutScope>,
    /// Grad-CAM attribution inside the body; `None` with `--attribution-max-images 0`.
    pub attribution: Option<AttributionSummary>,
}

/// What `--bias` needs of one evaluated image, taken from the decode that scored it.
#[derive(Clone, Copy, Debug)]
pub struct ImageProperties {
    /// Original size and pixel layout.
    pub source: SourceInfo,
    /// Mean intensity of the canonical grey image.
    pub mean_intensity: f64,
}

impl ImageProperties {
    /// The properties of a decoded image.
    pub fn of(decoded: &DecodedImage) -> Self {
        Self {
            source: decoded.source,
            mean_intensity: image_features(&decoded.image).mean,
        }
    }
}

/// The evaluated images: samples, their scored probabilities and properties, in one order.
#[derive(Clone, Copy, Debug)]
pub struct EvaluatedImages<'a> {
    /// The images, labels and groups.
    pub samples: &'a SplitSamples,
    /// Calibrated positive-class probability of each.
    pub probabilities: &'a [f64],
    /// What the scoring decode saw of each.
    pub properties: &'a [ImageProperties],
}

/// The metadata the shortcut test reads of one file: original size and layout from `source`,
/// the file size from disk.
fn metadata_of(path: &Path, source: &SourceInfo) -> Result<ImageMetadata, TrainError> {
    let file_bytes = std::fs::metadata(path)
        .map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    Ok(ImageMetadata {
        width: source.width,
        height: source.height,
        file_bytes,
        layout: source.layout_label(),
    })
}

/// Probes the headers (no pixel decoding) of `paths`: original size, layout, file size.
pub fn probe_metadata(
    paths: &[PathBuf],
    decode: &DecodeOptions,
    progress: StageProgress<'_>,
) -> Result<Vec<ImageMetadata>, TrainError> {
    paths
        .iter()
        .enumerate()
        .map(|(done, path)| {
            progress("probing", done + 1, paths.len());
            let source = probe_file(path, decode).map_err(|e| TrainError::Request {
                what: path.display().to_string(),
                reason: e.to_string(),
            })?;
            metadata_of(path, &source)
        })
        .collect()
}

/// Images to explain: at most `max`, spread evenly over each class in proportion to its size
/// (each class present gets at least one while `max` allows), in sample order; deterministic.
pub fn attribution_sample(labels: &[bool], max: usize) -> Vec<usize> {
    if max >= labels.len() {
        return (0..labels.len()).collect();
    }
    let classes: Vec<Vec<usize>> = [true, false]
        .iter()
        .map(|&class| (0..labels.len()).filter(|&i| labels[i] == class).collect())
        .filter(|members: &Vec<usize>| !members.is_empty())
        .collect();
    let mut quotas: Vec<usize> = classes
        .iter()
        .map(|members| {
            let share = (max * members.len()) as f64 / labels.len() as f64;
            (share.round() as usize).clamp(usize::from(max > 1), members.len())
        })
        .collect();
    while quotas.iter().sum::<usize>() > max {
        if let Some(largest) = quotas.iter_mut().max() {
            *largest -= 1;
        }
    }
    let mut chosen: Vec<usize> = classes
        .iter()
        .zip(&quotas)
        .flat_map(|(members, &quota)| {
            (0..quota).map(move |j| members[((2 * j + 1) * members.len()) / (2 * quota)])
        })
        .collect();
    chosen.sort_unstable();
    chosen
}

/// Share of Grad-CAM attribution inside the body for each image of `indices`.
fn attribution_shares(
    predictor: &Predictor,
    paths: &[&Path],
    decode: &DecodeOptions,
    progress: StageProgress<'_>,
) -> Result<Vec<Option<f64>>, TrainError> {
    let pre = predictor.metadata().preprocess;
    let mut shares = Vec::with_capacity(paths.len());
    for (done, path) in paths.iter().enumerate() {
        let at_fault = |reason: String| TrainError::Request {
            what: format!("Grad-CAM of {}", path.display()),
            reason,
        };
        let image = decode_file(path, decode)
            .map_err(|e| at_fault(e.to_string()))?
            .image;
        let cam = predictor
            .explain(&image)
            .map_err(|e| at_fault(e.to_string()))?;
        // The map is aligned with the network input: find the body on that same image.
        let mask = body_mask(&fit_input(&image, &pre));
        shares.push(mask.share_inside(&cam.map, cam.width, cam.height));
        progress("grad-cam", done + 1, paths.len());
    }
    Ok(shares)
}

/// The shortcut test on every row of the manifest (all splits).
fn manifest_shortcut(
    manifest_path: &Path,
    data_dir: &Path,
    positive_class: &str,
    decode: &DecodeOptions,
    config: &ShortcutConfig,
    progress: StageProgress<'_>,
) -> Result<ShortcutReport, TrainError> {
    let manifest = Manifest::read(manifest_path)?;
    let paths: Vec<PathBuf> = manifest
        .rows
        .iter()
        .map(|r| data_dir.join(&r.path))
        .collect();
    let labels: Vec<bool> = manifest
        .rows
        .iter()
        .map(|r| r.label.eq_ignore_ascii_case(positive_class))
        .collect();
    let groups: Vec<&str> = manifest.rows.iter().map(|r| r.group.as_str()).collect();
    let metadata = probe_metadata(&paths, decode, progress)?;
    Ok(shortcut_test(&metadata, &labels, &groups, config)?)
}

/// Runs the bias analyses on the evaluated images and adds them to `report` as sections; the
/// shortcut test also runs on the whole manifest of `source` when it has one, and Grad-CAM
/// explains at most `attribution_max_images` images (none with 0).
pub fn analyse_bias(
    report: &mut EvaluationReport,
    predictor: &Predictor,
    evaluated: EvaluatedImages<'_>,
    source: &SampleSource,
    attribution_max_images: usize,
    bootstrap: &BootstrapConfig,
    progress: StageProgress<'_>,
) -> Result<BiasOutcome, TrainError> {
    let meta = predictor.metadata();
    let decode = predictor.decode_options();
    let EvaluatedImages {
        samples,
        probabilities,
        properties,
    } = evaluated;
    let labels = samples.positives(meta.positive_class);
    if properties.len() != samples.len() {
        return Err(TrainError::Request {
            what: "bias analysis".into(),
            reason: format!(
                "{} image properties for {} samples",
                properties.len(),
                samples.len()
            ),
        });
    }
    let metadata = samples
        .samples
        .iter()
        .zip(properties)
        .map(|(sample, p)| metadata_of(&sample.path, &p.source))
        .collect::<Result<Vec<_>, _>>()?;
    let intensity: Vec<f64> = properties.iter().map(|p| p.mean_intensity).collect();

    let property = |name: &str, values: Vec<String>| Property {
        name: name.to_owned(),
        values,
    };
    let properties = [
        property(
            "resolution (short side, px)",
            metadata
                .iter()
                .map(|m| resolution_bucket(m.width, m.height).to_owned())
                .collect(),
        ),
        property(
            "aspect",
            metadata
                .iter()
                .map(|m| aspect_bucket(m.width, m.height).to_owned())
                .collect(),
        ),
        property("mean intensity", quartile_labels(&intensity)),
        property(
            "original layout",
            metadata.iter().map(|m| m.layout.clone()).collect(),
        ),
    ];
    let subgroups = subgroup_metrics(
        probabilities,
        &labels,
        &samples.groups,
        meta.threshold,
        &properties,
        &SubgroupConfig::default(),
        bootstrap,
    )?;

    let config = ShortcutConfig {
        seed: bootstrap.seed,
        ..ShortcutConfig::default()
    };
    let mut shortcut = vec![ShortcutScope {
        scope: ShortcutImages::Evaluated,
        result: shortcut_test(&metadata, &labels, &samples.groups, &config)
            .map_err(|e| e.to_string()),
    }];
    if let Some(manifest) = &source.manifest {
        shortcut.push(ShortcutScope {
            scope: ShortcutImages::WholeManifest,
            result: manifest_shortcut(
                manifest,
                &source.data_dir,
                meta.positive_class_name(),
                &decode,
                &config,
                progress,
            )
            .map_err(|e| e.to_string()),
        });
    }

    let attribution = if attribution_max_images > 0 {
        let chosen = attribution_sample(&labels, attribution_max_images);
        let paths: Vec<&Path> = chosen
            .iter()
            .map(|&i| samples.samples[i].path.as_path())
            .collect();
        let shares = attribution_shares(predictor, &paths, &decode, progress)?;
        let chosen_labels: Vec<bool> = chosen.iter().map(|&i| labels[i]).collect();
        Some(summarize_attribution(&shares, &chosen_labels)?)
    } else {
        None
    };

    let outcome = BiasOutcome {
        subgroups,
        shortcut,
        attribution,
    };
    outcome.add_sections(report, samples.len());
    Ok(outcome)
}

/// Inserts `interval` as `name`, `name_ci_lower`, `name_ci_upper`, leaving undefined values out.
fn put_interval(row: &mut Map<String, Value>, name: &str, interval: &Interval) {
    for (suffix, value) in [
        ("", interval.value),
        ("_ci_lower", interval.lower),
        ("_ci_upper", interval.upper),
    ] {
        if let Some(value) = value {
            row.insert(format!("{name}{suffix}"), json!(value));
        }
    }
}

/// One table row of a shortcut result.
fn shortcut_row(scope: &ShortcutScope) -> Value {
    match &scope.result {
        Ok(report) => {
            let mut row = Map::new();
            row.insert("scope".into(), json!(scope.scope.label()));
            row.insert("verdict".into(), json!(report.verdict.as_str()));
            row.insert("cv_roc_auc".into(), json!(report.cv_roc_auc));
            row.insert("cv_accuracy".into(), json!(report.cv_accuracy));
            row.insert("majority_baseline".into(), json!(report.majority_baseline));
            row.insert("images".into(), json!(report.n));
            row.insert("groups".into(), json!(report.groups));
            row.insert("folds".into(), json!(report.folds));
            for feature in &report.features {
                row.insert(
                    format!("{} alone", feature.feature),
                    json!(feature.cv_roc_auc),
                );
            }
            let layouts: Vec<String> = report
                .layouts
                .iter()
                .map(|l| format!("{}: {}+ / {}−", l.layout, l.positives, l.negatives))
                .collect();
            row.insert(
                "layouts (positive / negative)".into(),
                json!(layouts.join("; ")),
            );
            row.insert("summary".into(), json!(report.summary()));
            Value::Object(row)
        }
        Err(reason) => {
            json!({"scope": scope.scope.label(), "verdict": "not run", "summary": reason})
        }
    }
}

/// One table row of attribution statistics.
fn attribution_row(who: &str, stats: &AttributionStats) -> Value {
    json!({
        "images": who,
        "explained": stats.images,
        "undefined": stats.undefined,
        "mean_inside": stats.mean,
        "median_inside": stats.median,
        "p10_inside": stats.p10,
        "share_below_half": stats.mostly_outside,
    })
}

impl BiasOutcome {
    /// The shortcut result on the most data that could be tested.
    pub fn widest_shortcut(&self) -> Option<&ShortcutReport> {
        self.shortcut
            .iter()
            .rev()
            .find_map(|s| s.result.as_ref().ok())
    }

    /// Adds the subgroup table, the shortcut test and the attribution summary to `report`.
    fn add_sections(&self, report: &mut EvaluationReport, evaluated: usize) {
        let rows: Vec<Value> = self
            .subgroups
            .rows
            .iter()
            .map(|r| {
                let mut row = Map::new();
                row.insert("property".into(), json!(r.property));
                row.insert("value".into(), json!(r.value));
                row.insert("n".into(), json!(r.n));
                row.insert("positives".into(), json!(r.positives));
                row.insert("groups".into(), json!(r.groups));
                put_interval(&mut row, "accuracy", &r.accuracy);
                put_interval(&mut row, "sensitivity", &r.sensitivity);
                put_interval(&mut row, "specificity", &r.specificity);
                put_interval(&mut row, "roc_auc", &r.roc_auc);
                row.insert("status".into(), json!(r.status));
                row.insert("reasons".into(), json!(r.reasons.join("; ")));
                Value::Object(row)
            })
            .collect();
        let config = &self.subgroups.config;
        report.add_section(
            format!(
                "Bias: metrics per subgroup (whole: accuracy {:.4}, ROC-AUC {}; flagged when an \
                 interval lies below the whole or a value is ≥ {:.0} points below it; fewer than \
                 {} images: too small)",
                self.subgroups.overall_accuracy,
                self.subgroups
                    .overall_roc_auc
                    .map_or("n/a".to_owned(), |v| format!("{v:.4}")),
                config.max_gap * 100.0,
                config.min_samples
            ),
            Value::Array(rows),
        );
        report.add_section(
            "Bias: shortcut test (metadata-only logistic regression: size, aspect, file size, \
             bytes per pixel, original layout; cross-validated by group)",
            Value::Array(self.shortcut.iter().map(shortcut_row).collect()),
        );
        if let Some(a) = &self.attribution {
            let rows = json!([
                attribution_row("all", &a.all),
                attribution_row(&report.positive_class, &a.positive),
                attribution_row(&report.negative_label(), &a.negative),
            ]);
            report.add_section(
                format!(
                    "Bias: Grad-CAM attribution inside the body ({} of {evaluated} images; body = \
                     largest bright region at Otsu's threshold, holes filled)",
                    a.all.images
                ),
                rows,
            );
        }
    }

    /// Metric values for MLflow.
    pub fn metric_values(&self) -> Vec<(String, f64)> {
        let mut values = vec![(
            "bias_flagged_subgroups".to_owned(),
            self.subgroups.flagged().count() as f64,
        )];
        for scope in &self.shortcut {
            if let Ok(report) = &scope.result {
                let prefix = scope.scope.metric_prefix();
                values.push((format!("{prefix}_cv_roc_auc"), report.cv_roc_auc));
                values.push((format!("{prefix}_cv_accuracy"), report.cv_accuracy));
            }
        }
        if let Some(a) = &self.attribution {
            for (name, value) in [
                ("attribution_in_body_mean", a.all.mean),
                ("attribution_in_body_median", a.all.median),
                ("attribution_in_body_p10", a.all.p10),
                ("attribution_mostly_outside_share", a.all.mostly_outside),
            ] {
                if let Some(value) = value {
                    values.push((name.to_owned(), value));
                }
            }
        }
        values
    }
}

/// A few lines for the terminal.
impl std::fmt::Display for BiasOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "Bias and shortcuts:")?;
        let flagged: Vec<_> = self.subgroups.flagged().collect();
        writeln!(
            f,
            "  subgroups: {} flagged of {}",
            flagged.len(),
            self.subgroups.rows.len()
        )?;
        for row in flagged {
            writeln!(
                f,
                "    {} = {} ({} images): {}",
                row.property,
                row.value,
                row.n,
                row.reasons.join("; ")
            )?;
        }
        for scope in &self.shortcut {
            match &scope.result {
                Ok(report) => writeln!(
                    f,
                    "  shortcut test on the {} ({} images, {} groups): {}",
                    scope.scope.label(),
                    report.n,
                    report.groups,
                    report.summary()
                )?,
                Err(reason) => writeln!(
                    f,
                    "  shortcut test on the {}: not run: {reason}",
                    scope.scope.label()
                )?,
            }
        }
        if let Some(a) = &self.attribution {
            let show = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.3}"));
            writeln!(
                f,
                "  Grad-CAM inside the body ({} images): mean {}, median {}, p10 {}; below 50% \
                 for a share of {}",
                a.all.images,
                show(a.all.mean),
                show(a.all.median),
                show(a.all.p10),
                show(a.all.mostly_outside)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribution_sample_is_stratified_even_and_bounded() {
        // 30 positives then 70 negatives.
        let labels: Vec<bool> = (0..100).map(|i| i < 30).collect();
        let chosen = attribution_sample(&labels, 10);
        assert_eq!(chosen.len(), 10);
        assert_eq!(chosen.iter().filter(|&&i| labels[i]).count(), 3);
        assert_eq!(chosen[..3], [5, 15, 25]);
        assert!(chosen.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(attribution_sample(&labels, 10), chosen, "deterministic");
        assert_eq!(attribution_sample(&labels, 500).len(), 100);
        // A rare class still gets one image.
        let rare: Vec<bool> = (0..100).map(|i| i == 42).collect();
        assert!(attribution_sample(&rare, 5).contains(&42));
        assert_eq!(attribution_sample(&rare, 5).len(), 5);
        assert!(attribution_sample(&labels, 0).is_empty());
    }
}
