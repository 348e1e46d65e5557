//! Inference from a [`ModelPackage`]: the one path from a decoded image to a calibrated
//! probability, shared by `covidct predict`, `covidct evaluate` and the service.

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use std::path::PathBuf;

use covidct_imaging::{
    DecodeOptions, DecodedImage, GreyImage, SliceStats, decode_file, fit_input, normalize_into,
};
use rayon::prelude::*;

use crate::error::ModelError;
use crate::gradcam::{GradCam, grad_cam};
use crate::network::Network;
use crate::ood::OodAssessment;
use crate::package::{ModelPackage, PackageMetadata};
use crate::tensor::tensor_to_vec;

/// One image's prediction.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Prediction {
    /// The predicted class name (positive when its probability reaches the threshold).
    pub label: String,
    /// Calibrated probability of the positive class.
    pub probability: f64,
    /// The operating threshold applied.
    pub threshold: f64,
    /// Calibrated probabilities of every class, in class order.
    pub class_probabilities: Vec<f64>,
    /// Raw logits (before temperature), in class order.
    pub logits: Vec<f64>,
    /// The out-of-distribution gate's verdict; `None` when the package has no gate or the
    /// caller did not ask (see [`Predictor::judge`]).
    pub ood: Option<OodAssessment>,
}

impl Prediction {
    /// The prediction as `covidct predict --json` shows it: the gate's score and threshold,
    /// then the label, probability and threshold, or, for a refused image, the failed checks.
    pub fn to_json(&self) -> serde_json::Value {
        let ood = self.ood.as_ref();
        let mut line = serde_json::json!({
            "in_distribution": self.in_distribution(),
            "ood_score": ood.map(|o| o.score),
            "ood_threshold": ood.map(|o| o.threshold),
        });
        if self.in_distribution() {
            line["label"] = self.label.clone().into();
            line["probability"] = self.probability.into();
            line["threshold"] = self.threshold.into();
        } else if let Some(ood) = ood {
            line["refusals"] = serde_json::to_value(&ood.refusals).unwrap_or_default();
        }
        line
    }

    /// Whether the model may judge the input: false only when the gate refused it.
    pub fn in_distribution(&self) -> bool {
        self.ood.as_ref().is_none_or(|o| o.in_distribution)
    }
}

/// One input through the network: its logits and, when the package has an out-of-distribution
/// gate, the feature score of the same forward pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Raw logits in class order.
    pub logits: Vec<f64>,
    /// [`crate::FeatureDensity::score`] of the pooled features; `None` without a gate.
    pub ood_score: Option<f64>,
}

/// A loaded, inference-mode model with its preprocessing and calibration; its BatchNorms are
/// folded into the convolutions ([`Network::fold_batch_norm`]).
#[derive(Debug)]
pub struct Predictor {
    network: Network,
    metadata: PackageMetadata,
    device: Device,
}

/// Resizes and normalises a decoded image into the network's input plane (`size²` values), as
/// the package's preprocessing says; the same transformation the training loader applies.
pub fn prepare_input(image: &GreyImage, metadata: &PackageMetadata, out: &mut [f32]) {
    let pre = &metadata.preprocess;
    let resized = fit_input(image, pre);
    normalize_into(&resized.pixels, pre.mean, pre.std, out);
}

impl Predictor {
    /// Builds the package's network on `device` in inference mode.
    pub fn new(package: &ModelPackage, device: &Device) -> Result<Self, ModelError> {
        let network = package.network(device)?;
        Self::from_parts(network, package.metadata.clone(), device)
    }

    /// A predictor from a network in memory and the metadata that describes it (e.g. right after
    /// training, before the package is written).
    pub fn from_parts(
        network: Network,
        metadata: PackageMetadata,
        device: &Device,
    ) -> Result<Self, ModelError> {
        metadata.validate()?;
        if network.architecture() != metadata.architecture {
            return Err(ModelError::Config {
                field: "architecture",
                value: metadata.architecture.to_string(),
                reason: "does not match the network",
            });
        }
        Ok(Self {
            network: network.valid().fold_batch_norm()?,
            metadata,
            device: device.clone(),
        })
    }

    /// Replaces the calibration and operating point (e.g. once fitted on validation).
    pub fn set_calibration(&mut self, temperature: f64, threshold: f64) -> Result<(), ModelError> {
        let mut metadata = self.metadata.clone();
        metadata.temperature = temperature;
        metadata.threshold = threshold;
        metadata.validate()?;
        self.metadata = metadata;
        Ok(())
    }

    /// The decoding settings of this model (its DICOM window), shared by every file path.
    pub fn decode_options(&self) -> DecodeOptions {
        DecodeOptions {
            dicom_window: self.metadata.dicom_window,
            ..DecodeOptions::default()
        }
    }

    /// Raw logits of image files, decoded in parallel and run in batches of `batch_size`;
    /// `progress` receives the number of files done. The first file that cannot be decoded
    /// fails the call, naming the file.
    pub fn score_files(
        &self,
        paths: &[PathBuf],
        batch_size: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<Vec<f64>>, ModelError> {
        Ok(self
            .score_files_inspecting(paths, batch_size, progress, &|_| ())?
            .into_iter()
            .map(|(scored, ())| scored.logits)
            .collect())
    }

    /// [`Predictor::score_files`] that also returns what `inspect` computes from each decoded
    /// image (e.g. its monitoring features or original layout), in file order, so nothing has to
    /// decode the files a second time.
    pub fn score_files_inspecting<T: Send>(
        &self,
        paths: &[PathBuf],
        batch_size: usize,
        progress: &mut dyn FnMut(usize),
        inspect: &(dyn Fn(&DecodedImage) -> T + Sync),
    ) -> Result<Vec<(Scored, T)>, ModelError> {
        let options = self.decode_options();
        self.score_images(paths.len(), batch_size, progress, &|i| {
            let decoded =
                decode_file(&paths[i], &options).map_err(|e| ModelError::Input(e.to_string()))?;
            let inspected = inspect(&decoded);
            Ok((decoded.image, inspected))
        })
    }

    /// The `count` images made by `load(i)` for `i` in `0..count` (with a value of the
    /// caller's) through the network, in batches of `batch_size`; the images of a batch are
    /// loaded and prepared in parallel. `progress` receives the number of images done; the
    /// first error of `load` fails the call.
    pub fn score_images<T: Send>(
        &self,
        count: usize,
        batch_size: usize,
        progress: &mut dyn FnMut(usize),
        load: &(dyn Fn(usize) -> Result<(GreyImage, T), ModelError> + Sync),
    ) -> Result<Vec<(Scored, T)>, ModelError> {
        self.batched(count, batch_size, progress, load, &|inputs, n| {
            self.score(inputs, n)
        })
    }

    /// Pooled features (`dim` values per image) of the images `load(i)` makes, as
    /// [`Predictor::score_images`] runs them: what the out-of-distribution gate is fitted on.
    pub fn feature_rows<T: Send>(
        &self,
        count: usize,
        batch_size: usize,
        progress: &mut dyn FnMut(usize),
        load: &(dyn Fn(usize) -> Result<(GreyImage, T), ModelError> + Sync),
    ) -> Result<Vec<(Vec<f32>, T)>, ModelError> {
        self.batched(count, batch_size, progress, load, &|inputs, n| {
            let x = self.input_tensor(inputs, n)?;
            let values = tensor_to_vec("features", self.network.features(x))?;
            let dim = values.len() / n.max(1);
            Ok(values.chunks(dim.max(1)).map(<[f32]>::to_vec).collect())
        })
    }

    /// Runs `forward` over the images `load` makes, in batches prepared in parallel.
    fn batched<R, T: Send>(
        &self,
        count: usize,
        batch_size: usize,
        progress: &mut dyn FnMut(usize),
        load: &(dyn Fn(usize) -> Result<(GreyImage, T), ModelError> + Sync),
        forward: &dyn Fn(Vec<f32>, usize) -> Result<Vec<R>, ModelError>,
    ) -> Result<Vec<(R, T)>, ModelError> {
        let side = self.metadata.preprocess.size as usize;
        let plane = side * side;
        let batch_size = batch_size.max(1);
        let mut scored = Vec::with_capacity(count);
        for start in (0..count).step_by(batch_size) {
            let end = (start + batch_size).min(count);
            let mut inputs = vec![0f32; (end - start) * plane];
            let loaded = inputs
                .par_chunks_mut(plane)
                .zip(start..end)
                .map(|(out, i)| {
                    let (image, value) = load(i)?;
                    prepare_input(&image, &self.metadata, out);
                    Ok::<_, ModelError>(value)
                })
                .collect::<Result<Vec<T>, ModelError>>()?;
            let batch = forward(inputs, end - start)?;
            scored.extend(batch.into_iter().zip(loaded));
            progress(scored.len());
        }
        Ok(scored)
    }

    /// The package metadata.
    pub fn metadata(&self) -> &PackageMetadata {
        &self.metadata
    }

    /// The network (inference mode, BatchNorm folded).
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// Grad-CAM of the positive class for a decoded image (any size; resized here).
    pub fn explain(&self, image: &GreyImage) -> Result<GradCam, ModelError> {
        let side = self.metadata.preprocess.size as usize;
        let mut input = vec![0f32; side * side];
        prepare_input(image, &self.metadata, &mut input);
        let data = TensorData::new(input, [1, self.metadata.in_channels, side, side]);
        let x = Tensor::<4>::from_data(data, &self.device);
        grad_cam(&self.network, x, self.metadata.positive_class)
    }

    /// Raw logits `[n, classes]` for already-prepared inputs (`n × size²` values).
    pub fn logits(&self, inputs: Vec<f32>, n: usize) -> Result<Vec<Vec<f64>>, ModelError> {
        Ok(self
            .score(inputs, n)?
            .into_iter()
            .map(|scored| scored.logits)
            .collect())
    }

    /// Logits and out-of-distribution feature scores for already-prepared inputs
    /// (`n × size²` values), from one forward pass.
    pub fn score(&self, inputs: Vec<f32>, n: usize) -> Result<Vec<Scored>, ModelError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let classes = self.metadata.class_names.len();
        let x = self.input_tensor(inputs, n)?;
        let features = self.network.features(x);
        let scores: Vec<Option<f64>> = match &self.metadata.ood {
            Some(gate) => {
                let values = tensor_to_vec("features", features.clone())?;
                let dim = values.len() / n;
                values
                    .chunks(dim.max(1))
                    .map(|row| Some(gate.features.score(row)))
                    .collect()
            }
            None => vec![None; n],
        };
        let values = tensor_to_vec("logits", self.network.classify(features))?;
        Ok(values
            .chunks(classes)
            .zip(scores)
            .map(|(row, ood_score)| Scored {
                logits: row.iter().map(|&v| f64::from(v)).collect(),
                ood_score,
            })
            .collect())
    }

    /// The input tensor of `n` prepared images, after checking their length.
    fn input_tensor(&self, inputs: Vec<f32>, n: usize) -> Result<Tensor<4>, ModelError> {
        let side = self.metadata.preprocess.size as usize;
        let expected = n * side * side * self.metadata.in_channels;
        if inputs.len() != expected {
            return Err(ModelError::Config {
                field: "inputs",
                value: inputs.len().to_string(),
                reason: "must hold n × channels × size × size values",
            });
        }
        let data = TensorData::new(inputs, [n, self.metadata.in_channels, side, side]);
        Ok(Tensor::<4>::from_data(data, &self.device))
    }

    /// The prediction for one scored input with the gate's verdict: `stats` are the image's
    /// [`SliceStats`]. Without a gate in the package the verdict is `None` (judged as before).
    pub fn judge(&self, scored: Scored, stats: &SliceStats) -> Prediction {
        let ood = match (&self.metadata.ood, scored.ood_score) {
            (Some(gate), Some(score)) => Some(gate.assess(stats, score)),
            _ => None,
        };
        Prediction {
            ood,
            ..self.interpret(scored.logits)
        }
    }

    /// Whether this model refuses inputs it cannot judge (its package has a gate).
    pub fn has_gate(&self) -> bool {
        self.metadata.ood.is_some()
    }

    /// Predictions for decoded images (any size; resized here), with the gate's verdict.
    pub fn predict(&self, images: &[DecodedImage]) -> Result<Vec<Prediction>, ModelError> {
        let side = self.metadata.preprocess.size as usize;
        let plane = side * side;
        let mut inputs = vec![0f32; images.len() * plane];
        for (decoded, out) in images.iter().zip(inputs.chunks_mut(plane)) {
            prepare_input(&decoded.image, &self.metadata, out);
        }
        let scored = self.score(inputs, images.len())?;
        Ok(scored
            .into_iter()
            .zip(images)
            .map(|(scored, decoded)| self.judge(scored, &SliceStats::of(decoded)))
            .collect())
    }

    /// Applies temperature, softmax and threshold to one row of raw logits.
    pub fn interpret(&self, logits: Vec<f64>) -> Prediction {
        let meta = &self.metadata;
        let class_probabilities = calibrated_probabilities(&logits, meta.temperature);
        let probability = class_probabilities
            .get(meta.positive_class)
            .copied()
            .unwrap_or(0.0);
        let label_index = if probability >= meta.threshold {
            meta.positive_class
        } else {
            // The most probable of the other classes.
            class_probabilities
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != meta.positive_class)
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i)
                .unwrap_or(0)
        };
        Prediction {
            label: meta
                .class_names
                .get(label_index)
                .cloned()
                .unwrap_or_default(),
            probability,
            threshold: meta.threshold,
            class_probabilities,
            logits,
            ood: None,
        }
    }
}

/// Softmax of `logits / temperature`, computed stably in f64.
pub fn calibrated_probabilities(logits: &[f64], temperature: f64) -> Vec<f64> {
    let scaled: Vec<f64> = logits.iter().map(|l| l / temperature).collect();
    let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = scaled.iter().map(|s| (s - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}
