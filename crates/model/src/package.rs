//! The model package: one self-describing, checksummed file holding everything needed to
//! reproduce a prediction — weights, architecture, preprocessing, class names, operating
//! threshold, temperature, data fingerprints, evaluation summary and model card.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! "COVIDCT-PKG\0"            12-byte magic
//! u32                        format version (PACKAGE_FORMAT_VERSION)
//! u64 + bytes                metadata, JSON (PackageMetadata)
//! u64 + bytes                model card, Markdown
//! u64 + bytes                weights, safetensors in the architecture's PyTorch names
//! [u8; 32]                   SHA-256 of everything above
//! ```
//!
//! Reading checks, in order: magic, version, section lengths against the file size, the trailing
//! checksum (any flipped byte is refused), the metadata's own consistency, the weights' SHA-256
//! recorded in the metadata, and finally that the weights fit the declared architecture name by
//! name and shape.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use covidct_common::{sha256, sha256_hex};
use covidct_imaging::{HuWindow, PreprocessConfig};
use covidct_weights::Checkpoint;
use serde::{Deserialize, Serialize};

use crate::architecture::Architecture;
use crate::error::ModelError;
use crate::import::StateDict;
use crate::network::Network;

/// Magic bytes that open every package.
const MAGIC: &[u8; 12] = b"COVIDCT-PKG\0";
/// The package format this build writes and reads.
pub const PACKAGE_FORMAT_VERSION: u32 = 1;
/// Conventional file extension of a package.
pub const PACKAGE_EXTENSION: &str = "ctpkg";

/// Everything about a trained model except its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageMetadata {
    /// Model name (the registered model name, `covidct` by default).
    pub name: String,
    /// Version of covidct that wrote the package.
    pub covidct_version: String,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
    /// The network architecture.
    pub architecture: Architecture,
    /// Input channels (1: grey CT).
    pub in_channels: usize,
    /// Class names, in logit order.
    pub class_names: Vec<String>,
    /// Index of the positive class (whose probability is reported and thresholded).
    pub positive_class: usize,
    /// Resize and normalisation applied to every input.
    pub preprocess: PreprocessConfig,
    /// Window applied to DICOM input (Hounsfield units → grey).
    pub dicom_window: HuWindow,
    /// Operating threshold on the calibrated positive probability (`p >= threshold` ⇒ positive).
    pub threshold: f64,
    /// How the threshold was chosen (e.g. `sensitivity >= 0.95 on validation`).
    pub threshold_rule: String,
    /// Temperature dividing the logits before the softmax (fitted on validation, or on the
    /// out-of-fold scores of a cross-fitted probe).
    pub temperature: f64,
    /// Fingerprint of the dataset's labelled pixels.
    pub dataset_fingerprint: String,
    /// Fingerprint of the split manifest (which image is in which split).
    pub split_fingerprint: String,
    /// Training configuration and provenance (free-form, written by the trainer).
    pub training: serde_json::Value,
    /// Evaluation summary (free-form, written by the evaluator).
    pub evaluation: serde_json::Value,
    /// SHA-256 (hex) of the weights section.
    pub weights_sha256: String,
    /// How slice probabilities become a patient (group, study) probability and decision;
    /// absent in packages trained without validation groups of both classes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<covidct_evaluation::GroupCalibration>,
    /// The out-of-distribution gate (image checks, feature density, threshold); absent in
    /// packages written before it existed, which then judge every input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ood: Option<crate::ood::OodGate>,
}

impl PackageMetadata {
    /// Checks the values that loading relies on.
    pub fn validate(&self) -> Result<(), ModelError> {
        let invalid = |field: &'static str, value: String, reason: &'static str| {
            Err(ModelError::Config {
                field,
                value,
                reason,
            })
        };
        if self.class_names.len() < 2 {
            return invalid(
                "class_names",
                format!("{:?}", self.class_names),
                "a classifier needs at least two classes",
            );
        }
        if self.positive_class >= self.class_names.len() {
            return invalid(
                "positive_class",
                self.positive_class.to_string(),
                "must index class_names",
            );
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return invalid("threshold", self.threshold.to_string(), "must be in [0, 1]");
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return invalid(
                "temperature",
                self.temperature.to_string(),
                "must be a positive number",
            );
        }
        if self.in_channels != 1 && self.in_channels != 3 {
            return invalid(
                "in_channels",
                self.in_channels.to_string(),
                "must be 1 or 3",
            );
        }
        if let Some(gate) = &self.ood {
            gate.validate()?;
        }
        if self.preprocess.size == 0 || self.preprocess.std.is_nan() || self.preprocess.std <= 0.0 {
            return invalid(
                "preprocess",
                format!("{:?}", self.preprocess),
                "size and std must be positive",
            );
        }
        Ok(())
    }

    /// The positive class's name.
    pub fn positive_class_name(&self) -> &str {
        self.class_names
            .get(self.positive_class)
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// A model package in memory.
#[derive(Debug, Clone)]
pub struct ModelPackage {
    /// Metadata (architecture, preprocessing, threshold, provenance…).
    pub metadata: PackageMetadata,
    /// The model card, Markdown.
    pub model_card: String,
    /// The weights, in the architecture's PyTorch names.
    pub weights: Checkpoint,
}

impl ModelPackage {
    /// Packages `network` with its metadata and card; fills in `weights_sha256`.
    pub fn new(
        network: &Network,
        mut metadata: PackageMetadata,
        model_card: String,
    ) -> Result<Self, ModelError> {
        if network.architecture() != metadata.architecture {
            return Err(ModelError::Package {
                path: PathBuf::new(),
                reason: format!(
                    "the network is {} but the metadata says {}",
                    network.architecture(),
                    metadata.architecture
                ),
            });
        }
        let weights = network.export()?;
        metadata.weights_sha256 = sha256_hex(&weights_bytes(&weights)?);
        metadata.validate()?;
        Ok(Self {
            metadata,
            model_card,
            weights,
        })
    }

    /// The package as bytes (see the module documentation for the layout).
    pub fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        let weights = weights_bytes(&self.weights)?;
        let mut metadata = self.metadata.clone();
        metadata.weights_sha256 = sha256_hex(&weights);
        let json = serde_json::to_vec_pretty(&metadata).map_err(|e| ModelError::Package {
            path: PathBuf::new(),
            reason: format!("cannot encode the metadata: {e}"),
        })?;
        let mut out = Vec::with_capacity(weights.len() + json.len() + self.model_card.len() + 80);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&PACKAGE_FORMAT_VERSION.to_le_bytes());
        for section in [&json[..], self.model_card.as_bytes(), &weights[..]] {
            out.extend_from_slice(&(section.len() as u64).to_le_bytes());
            out.extend_from_slice(section);
        }
        let digest = sha256(&out);
        out.extend_from_slice(&digest);
        Ok(out)
    }

    /// Writes the package to `path` atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let bytes = self.to_bytes()?;
        covidct_common::write_atomically(path, &bytes).map_err(|e| ModelError::Package {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Reads and fully verifies the package at `path`.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::Package {
            path: path.to_path_buf(),
            reason: format!("cannot read: {e}"),
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses and verifies package bytes; `origin` names them in errors.
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<Self, ModelError> {
        let fail = |reason: String| ModelError::Package {
            path: origin.to_path_buf(),
            reason,
        };
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(fail(
                "not a covidct model package (wrong magic bytes)".to_owned(),
            ));
        }
        let mut reader = SectionReader {
            bytes,
            at: MAGIC.len(),
        };
        let version = reader
            .take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| fail("truncated: the file ends inside the header".to_owned()))?;
        if version != PACKAGE_FORMAT_VERSION {
            return Err(fail(format!(
                "package format version {version} is not supported: this covidct reads version \
                 {PACKAGE_FORMAT_VERSION} (a newer covidct wrote it?)"
            )));
        }
        let mut sections = Vec::with_capacity(3);
        for name in ["metadata", "model card", "weights"] {
            let section = reader
                .section()
                .ok_or_else(|| fail(format!("truncated: the file ends inside the {name}")))?;
            sections.push(section);
        }
        let body_end = reader.at;
        let stored_digest = reader
            .take(32)
            .ok_or_else(|| fail("truncated: the checksum is missing".to_owned()))?;
        if reader.at != bytes.len() {
            return Err(fail(format!(
                "{} unexpected bytes after the checksum",
                bytes.len() - reader.at
            )));
        }
        if sha256(&bytes[..body_end]).as_slice() != stored_digest {
            return Err(fail(
                "checksum mismatch: the file is corrupted or was modified".to_owned(),
            ));
        }
        let metadata: PackageMetadata = serde_json::from_slice(sections[0])
            .map_err(|e| fail(format!("invalid metadata: {e}")))?;
        metadata
            .validate()
            .map_err(|e| fail(format!("invalid metadata: {e}")))?;
        let model_card = String::from_utf8(sections[1].to_vec())
            .map_err(|_| fail("the model card is not UTF-8".to_owned()))?;
        if sha256_hex(sections[2]) != metadata.weights_sha256 {
            return Err(fail(
                "the weights do not match the SHA-256 in the metadata".to_owned(),
            ));
        }
        let weights = covidct_weights::load_checkpoint_bytes(sections[2], origin)
            .map_err(|e| fail(format!("invalid weights: {e}")))?;
        Ok(Self {
            metadata,
            model_card,
            weights,
        })
    }

    /// Builds the network the package describes on `device` (in inference mode) and loads its
    /// weights; refuses weights that do not fit the declared architecture and classes.
    pub fn network(&self, device: &Device) -> Result<Network, ModelError> {
        let meta = &self.metadata;
        let network = Network::new(
            meta.architecture,
            meta.in_channels,
            meta.class_names.len(),
            device,
        )?;
        network.load_pretrained(&self.weights)
    }
}

/// The weights as safetensors bytes.
fn weights_bytes(weights: &Checkpoint) -> Result<Vec<u8>, ModelError> {
    covidct_weights::safetensors_bytes(weights).map_err(|e| ModelError::Package {
        path: PathBuf::new(),
        reason: format!("cannot encode the weights: {e}"),
    })
}

/// Reads length-prefixed sections from package bytes.
struct SectionReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> SectionReader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(len)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }

    fn section(&mut self) -> Option<&'a [u8]> {
        let len = u64::from_le_bytes(self.take(8)?.try_into().ok()?);
        self.take(usize::try_from(len).ok()?)
    }
}
