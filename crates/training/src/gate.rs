//! Fitting a release's out-of-distribution gate ([`OodGate`]): image checks and the feature
//! density on the training split, the score threshold on validation.

use std::path::PathBuf;

use covidct_imaging::{SliceStats, decode_file};
use covidct_model::{FeatureDensity, GateValidation, OodGate, Predictor};
use rayon::prelude::*;

use crate::data::{SplitSamples, TrainingData};
use crate::error::TrainError;
use crate::trainer::SplitFeatures;

/// Images per forward pass when computing features.
const FEATURE_BATCH: usize = 32;

/// What the gate is fitted on: the released network's pooled features of the training and
/// validation images (`features.test` unused) and the images' statistics.
#[derive(Debug, Clone)]
pub struct GateInputs {
    /// Pooled features, row after row.
    pub features: SplitFeatures,
    /// [`SliceStats`] of the training images.
    pub train_stats: Vec<SliceStats>,
    /// [`SliceStats`] of the validation images.
    pub val_stats: Vec<SliceStats>,
}

/// The [`SliceStats`] of every image of `split`, decoded in parallel as the predictor decodes.
pub fn split_stats(
    predictor: &Predictor,
    split: &SplitSamples,
) -> Result<Vec<SliceStats>, TrainError> {
    let options = predictor.decode_options();
    split
        .samples
        .par_iter()
        .map(|sample| {
            let decoded = decode_file(&sample.path, &options)
                .map_err(|e| covidct_model::ModelError::Input(e.to_string()))?;
            Ok(SliceStats::of(&decoded))
        })
        .collect()
}

/// Pooled features (row after row, and their dimension) and statistics of every image of
/// `split`, from one decode of each through the predictor's network.
fn split_features(
    predictor: &Predictor,
    split: &SplitSamples,
    progress: &mut dyn FnMut(usize),
) -> Result<(Vec<f32>, usize, Vec<SliceStats>), TrainError> {
    let paths: Vec<PathBuf> = split.samples.iter().map(|s| s.path.clone()).collect();
    let options = predictor.decode_options();
    let rows = predictor.feature_rows(paths.len(), FEATURE_BATCH, progress, &|i| {
        let decoded = decode_file(&paths[i], &options)
            .map_err(|e| covidct_model::ModelError::Input(e.to_string()))?;
        let stats = SliceStats::of(&decoded);
        Ok((decoded.image, stats))
    })?;
    let dim = rows.first().map_or(0, |(row, _)| row.len());
    let (features, stats): (Vec<Vec<f32>>, Vec<SliceStats>) = rows.into_iter().unzip();
    Ok((features.concat(), dim, stats))
}

/// The gate's inputs for the released network: with a frozen backbone's cached features the
/// images are decoded only for their statistics; otherwise `predictor` computes both from one
/// decode.
pub fn gate_inputs(
    predictor: &Predictor,
    data: &TrainingData,
    cached: Option<&SplitFeatures>,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<GateInputs, TrainError> {
    if let Some(cached) = cached {
        return Ok(GateInputs {
            features: cached.clone(),
            train_stats: split_stats(predictor, &data.train)?,
            val_stats: split_stats(predictor, &data.val)?,
        });
    }
    let (train, dim, train_stats) = split_features(predictor, &data.train, &mut |done| {
        progress("gate: training features", done, data.train.len())
    })?;
    let (val, _, val_stats) = split_features(predictor, &data.val, &mut |done| {
        progress("gate: validation features", done, data.val.len())
    })?;
    Ok(GateInputs {
        features: SplitFeatures {
            dim,
            train,
            val,
            test: Vec::new(),
        },
        train_stats,
        val_stats,
    })
}

/// Fits the gate of a release from its [`gate_inputs`].
pub fn fit_gate(data: &TrainingData, inputs: &GateInputs) -> Result<OodGate, TrainError> {
    let features = &inputs.features;
    let labels: Vec<usize> = data.train.samples.iter().map(|s| s.label).collect();
    let density = FeatureDensity::fit(&features.train, features.dim, &labels)?;
    let scores: Vec<f64> = features
        .val
        .chunks(features.dim.max(1))
        .map(|row| density.score(row))
        .collect();
    Ok(OodGate::fit(
        &inputs.train_stats,
        density,
        GateValidation {
            scores: &scores,
            stats: &inputs.val_stats,
        },
    )?)
}
