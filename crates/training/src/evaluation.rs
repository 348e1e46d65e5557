//! A model package evaluated on labelled images: the typed request that `covidct evaluate`,
//! `covidct models promote` and `covidct monitor export-reference` share, the images it names,
//! and the report.

use std::path::{Path, PathBuf};

use covidct_data::{Manifest, Sample, SplitName, scan_dataset};
use covidct_evaluation::{BootstrapConfig, EvaluationReport, write_report};
use covidct_model::{ModelPackage, Predictor, select_device};

use crate::data::SplitSamples;
use crate::error::TrainError;
use crate::finalize::{EvaluationTarget, evaluate_predictor};

/// Which labelled images to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleSource {
    /// The dataset root.
    pub data_dir: PathBuf,
    /// A split manifest whose rows (with their groups) to take; `None` takes every image of the
    /// class-folder dataset, each its own group.
    pub manifest: Option<PathBuf>,
    /// The manifest's split: `train`, `val` or `test`.
    pub split: String,
}

/// What to evaluate on, and how to draw the intervals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvaluationRequest {
    /// The images.
    pub samples: SampleSource,
    /// Group-bootstrap resamples of the intervals.
    pub bootstrap: usize,
    /// Seed of the bootstrap.
    pub seed: u64,
}

impl EvaluationRequest {
    /// The bootstrap settings of the request.
    pub fn bootstrap_config(&self) -> BootstrapConfig {
        BootstrapConfig {
            resamples: self.bootstrap,
            seed: self.seed,
            ..BootstrapConfig::default()
        }
    }
}

/// The labelled images `source` names, labels as indices into `class_names`, and the name of
/// the split (`all` without a manifest).
pub fn target_samples(
    source: &SampleSource,
    class_names: &[String],
) -> Result<(SplitSamples, String), TrainError> {
    let label_index = |label: &str, file: &Path| {
        class_names
            .iter()
            .position(|c| c == label)
            .ok_or_else(|| TrainError::Request {
                what: file.display().to_string(),
                reason: format!("label `{label}` is not a class of the model {class_names:?}"),
            })
    };
    let mut samples = SplitSamples::default();
    let split = match &source.manifest {
        Some(path) => {
            let split = SplitName::parse(&source.split).ok_or_else(|| TrainError::Request {
                what: format!("--split `{}`", source.split),
                reason: "expected train, val or test".into(),
            })?;
            let manifest = Manifest::read(path)?;
            for row in manifest.split(split) {
                samples.samples.push(Sample {
                    path: source.data_dir.join(&row.path),
                    label: label_index(&row.label, path)?,
                });
                samples.groups.push(row.group.clone());
            }
            source.split.clone()
        }
        None => {
            let scan = scan_dataset(&source.data_dir, false)?;
            for file in &scan.files {
                samples.samples.push(Sample {
                    path: file.path.clone(),
                    label: label_index(&file.class, &file.path)?,
                });
                samples.groups.push(file.relative.clone());
            }
            "all".to_owned()
        }
    };
    if samples.is_empty() {
        return Err(TrainError::Request {
            what: source.data_dir.display().to_string(),
            reason: format!("no images of split `{split}` to evaluate"),
        });
    }
    Ok((samples, split))
}

/// Loads and verifies a package file and builds its predictor on `device`.
pub fn load_predictor(path: &Path, device: &str) -> Result<Predictor, TrainError> {
    let package = ModelPackage::load(path)?;
    Ok(Predictor::new(&package, &select_device(device)?)?)
}

/// A model ready to predict, and where it came from.
pub struct LoadedModel {
    /// The predictor.
    pub predictor: Predictor,
    /// The package file.
    pub path: PathBuf,
    /// The registry version, for a `models:/` source.
    pub version: Option<covidct_tracking::ModelVersion>,
}

/// Resolves a model source (a package path or a `models:/` URI, pulled through `cache_dir`
/// from the registry at `tracking_uri`), verifies the package and builds its predictor.
pub fn load_model(
    source: &str,
    device: &str,
    tracking_uri: &str,
    cache_dir: &Path,
) -> Result<LoadedModel, TrainError> {
    let (path, version) = covidct_tracking::resolve_source(source, tracking_uri, cache_dir)?;
    Ok(LoadedModel {
        predictor: load_predictor(&path, device)?,
        path,
        version,
    })
}

/// The dataset's folder name.
pub fn dataset_name(dir: &Path) -> String {
    dir.canonicalize()
        .unwrap_or_else(|_| dir.to_path_buf())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset".to_owned())
}

/// The report target of `samples` under `request`.
pub fn evaluation_target<'a>(
    request: &EvaluationRequest,
    samples: &'a SplitSamples,
    split: String,
) -> EvaluationTarget<'a> {
    EvaluationTarget {
        dataset_name: dataset_name(&request.samples.data_dir),
        split,
        samples,
        bootstrap: request.bootstrap_config(),
    }
}

/// Evaluates the package at `path` on the images of `request` and writes the report into
/// `out`; `progress` receives (done, total) while scoring.
pub fn evaluate_package(
    path: &Path,
    device: &str,
    request: &EvaluationRequest,
    out: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvaluationReport, TrainError> {
    let predictor = load_predictor(path, device)?;
    let (samples, split) = target_samples(&request.samples, &predictor.metadata().class_names)?;
    let target = evaluation_target(request, &samples, split);
    let report = evaluate_predictor(&predictor, &target, progress)?;
    write_report(out, &report)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_split_name_is_named() {
        let source = SampleSource {
            data_dir: PathBuf::from("data"),
            manifest: Some(PathBuf::from("split.csv")),
            split: "tset".into(),
        };
        let error = target_samples(&source, &["COVID".into()]).unwrap_err();
        assert!(error.to_string().contains("--split `tset`"), "{error}");
    }

    #[test]
    fn dataset_name_is_the_folder_name() {
        assert_eq!(
            dataset_name(Path::new("/no/such/sarscov2-ct")),
            "sarscov2-ct"
        );
    }
}
