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

/// Pooled features of every image of `split` through the predictor's network, row after row.
pub fn split_features(
    predictor: &Predictor,
    split: &SplitSamples,
    progress: &mut dyn FnMut(usize),
) -> Result<(Vec<f32>, usize), TrainError> {
    let paths: Vec<PathBuf> = split.samples.iter().map(|s| s.path.clone()).collect();
    let options = predictor.decode_options();
    let rows = predictor.feature_rows(paths.len(), FEATURE_BATCH, progress, &|i| {
        let decoded = decode_file(&paths[i], &options)
            .map_err(|e| covidct_model::ModelError::Input(e.to_string()))?;
        Ok((decoded.image, ()))
    })?;
    let dim = rows.first().map_or(0, |(row, ())| row.len());
    Ok((rows.into_iter().flat_map(|(row, ())| row).collect(), dim))
}

/// The training and validation features of the released network: the cached ones of a frozen
/// backbone when given, else computed through `predictor`.
pub fn release_features(
    predictor: &Predictor,
    data: &TrainingData,
    cached: Option<&SplitFeatures>,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<SplitFeatures, TrainError> {
    if let Some(cached) = cached {
        return Ok(cached.clone());
    }
    let (train, dim) = split_features(predictor, &data.train, &mut |done| {
        progress("gate: training features", done, data.train.len())
    })?;
    let (val, _) = split_features(predictor, &data.val, &mut |done| {
        progress("gate: validation features", done, data.val.len())
    })?;
    Ok(SplitFeatures {
        dim,
        train,
        val,
        test: Vec::new(),
    })
}

/// Fits the gate of a release from its training and validation features.
pub fn fit_gate(
    predictor: &Predictor,
    data: &TrainingData,
    features: &SplitFeatures,
) -> Result<OodGate, TrainError> {
    let labels: Vec<usize> = data.train.samples.iter().map(|s| s.label).collect();
    let density = FeatureDensity::fit(&features.train, features.dim, &labels)?;
    let scores: Vec<f64> = features
        .val
        .chunks(features.dim.max(1))
        .map(|row| density.score(row))
        .collect();
    let train_stats = split_stats(predictor, &data.train)?;
    let val_stats = split_stats(predictor, &data.val)?;
    Ok(OodGate::fit(
        &train_stats,
        density,
        GateValidation {
            scores: &scores,
            stats: &val_stats,
        },
    )?)
}
