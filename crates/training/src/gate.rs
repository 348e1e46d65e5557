//! Fitting a release's out-of-distribution gate ([`OodGate`]): image checks and the feature
//! density on the training split and the score threshold on validation, or all three cross-fitted
//! on training + validation.

use std::path::PathBuf;

use covidct_imaging::{ImageChecks, SliceStats, decode_file};
use covidct_model::{FeatureDensity, GateValidation, OodGate, Predictor};
use rayon::prelude::*;

use crate::data::{SplitSamples, TrainingData, gather_rows, split_by_fold};
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

/// Fits the gate of a release from its [`gate_inputs`]. Without `folds`: image checks and
/// density on the training split, the threshold on validation. With `folds` (one per training +
/// validation image, [`TrainingData::calibration_folds`], for a release calibrated on
/// out-of-fold scores): each fold's images are judged by checks and a density fitted on the
/// other folds, the threshold is chosen on those out-of-fold judgements of every image, and the
/// checks and density are refitted on training + validation, as the probe's head is.
pub fn fit_gate(
    data: &TrainingData,
    inputs: &GateInputs,
    folds: Option<&[usize]>,
) -> Result<OodGate, TrainError> {
    let features = &inputs.features;
    let dim = features.dim.max(1);
    let labels =
        |split: &SplitSamples| -> Vec<usize> { split.samples.iter().map(|s| s.label).collect() };
    let Some(fold_of) = folds else {
        let fitted = Images {
            rows: &features.train,
            stats: &inputs.train_stats,
            labels: &labels(&data.train),
        };
        let (image, density, judged) =
            fitted.fit_and_judge(dim, &features.val, &inputs.val_stats)?;
        return Ok(OodGate::fit(
            image,
            density,
            judged.validation("validation"),
        )?);
    };
    let rows = [&features.train[..], &features.val].concat();
    let stats = [&inputs.train_stats[..], &inputs.val_stats].concat();
    let labels = [labels(&data.train), labels(&data.val)].concat();
    let n = labels.len();
    if fold_of.len() != n || rows.len() != n * dim || stats.len() != n {
        return Err(TrainError::Config {
            field: "probe_folds",
            reason: format!(
                "the gate's folds cover {} images, its features {} and statistics {} of the {n} \
                 training + validation images",
                fold_of.len(),
                rows.len() / dim,
                stats.len()
            ),
        });
    }
    let mut out_of_fold = Judged {
        scores: vec![f64::NAN; n],
        image_refused: vec![false; n],
    };
    let pick_stats =
        |indices: &[usize]| -> Vec<SliceStats> { indices.iter().map(|&i| stats[i]).collect() };
    let folds = fold_of.iter().copied().max().map_or(0, |f| f + 1);
    for fold in 0..folds {
        let (inside, outside) = split_by_fold(fold_of, fold);
        let fitted = Images {
            rows: &gather_rows(&rows, dim, &outside),
            stats: &pick_stats(&outside),
            labels: &outside.iter().map(|&i| labels[i]).collect::<Vec<_>>(),
        };
        let (_, _, judged) =
            fitted.fit_and_judge(dim, &gather_rows(&rows, dim, &inside), &pick_stats(&inside))?;
        for ((&i, score), refused) in inside.iter().zip(judged.scores).zip(judged.image_refused) {
            out_of_fold.scores[i] = score;
            out_of_fold.image_refused[i] = refused;
        }
    }
    let all = Images {
        rows: &rows,
        stats: &stats,
        labels: &labels,
    };
    let (image, density) = all.fit(dim)?;
    Ok(OodGate::fit(
        image,
        density,
        out_of_fold.validation("out-of-fold training + validation"),
    )?)
}

/// Images a gate is fitted on: pooled features (row after row), statistics and class labels.
struct Images<'a> {
    rows: &'a [f32],
    stats: &'a [SliceStats],
    labels: &'a [usize],
}

/// Held-out images as a gate fitted without them judges them.
struct Judged {
    /// Feature score of each.
    scores: Vec<f64>,
    /// Whether the image checks refuse each.
    image_refused: Vec<bool>,
}

impl Judged {
    /// The judgements as [`OodGate::fit`] takes them, naming what the images are.
    fn validation<'a>(&'a self, held_out: &'a str) -> GateValidation<'a> {
        GateValidation {
            scores: &self.scores,
            image_refused: &self.image_refused,
            held_out,
        }
    }
}

impl Images<'_> {
    /// Image checks and the feature density fitted on these images.
    fn fit(&self, dim: usize) -> Result<(ImageChecks, FeatureDensity), TrainError> {
        let image = ImageChecks::fit(self.stats).ok_or_else(|| TrainError::Config {
            field: "ood",
            reason: "the image checks need training slices".into(),
        })?;
        Ok((image, FeatureDensity::fit(self.rows, dim, self.labels)?))
    }

    /// [`Images::fit`], and its judgement of the held-out images of `rows` and `stats`.
    fn fit_and_judge(
        &self,
        dim: usize,
        rows: &[f32],
        stats: &[SliceStats],
    ) -> Result<(ImageChecks, FeatureDensity, Judged), TrainError> {
        let (image, density) = self.fit(dim)?;
        let judged = Judged {
            scores: rows.chunks(dim).map(|row| density.score(row)).collect(),
            image_refused: stats.iter().map(|s| refuses(&image, s)).collect(),
        };
        Ok((image, density, judged))
    }
}

/// Whether the image checks refuse a slice of these statistics.
fn refuses(image: &ImageChecks, stats: &SliceStats) -> bool {
    !image.failures(stats).is_empty()
}

#[cfg(test)]
mod tests {
    use covidct_data::Sample;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    const DIM: usize = 12;

    /// `n` images of two classes in groups of four, with Gaussian features and plausible
    /// statistics.
    fn split(
        n: usize,
        prefix: &str,
        rng: &mut ChaCha8Rng,
    ) -> (SplitSamples, Vec<f32>, Vec<SliceStats>) {
        let samples = (0..n)
            .map(|i| Sample {
                path: PathBuf::from(format!("{prefix}{i}.png")),
                label: (i / 4) % 2,
            })
            .collect();
        let groups = (0..n).map(|i| format!("{prefix}{}", i / 4)).collect();
        let features = (0..n * DIM).map(|_| rng.random::<f32>() - 0.5).collect();
        let stats = (0..n)
            .map(|_| SliceStats {
                width: 512,
                height: 512,
                colour_share: 0.0,
                mean: 80.0 + 20.0 * rng.random::<f64>(),
                std: 50.0 + 10.0 * rng.random::<f64>(),
                entropy: 6.0 + rng.random::<f64>(),
                body_share: 0.4 + 0.2 * rng.random::<f64>(),
            })
            .collect();
        (SplitSamples { samples, groups }, features, stats)
    }

    fn fixture() -> (TrainingData, GateInputs) {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (train, train_rows, train_stats) = split(160, "t", &mut rng);
        let (val, val_rows, val_stats) = split(40, "v", &mut rng);
        let data = TrainingData {
            root: PathBuf::new(),
            class_names: vec!["covid".into(), "normal".into()],
            positive_class: 0,
            train,
            val,
            test: SplitSamples::default(),
            split_fingerprint: String::new(),
        };
        let inputs = GateInputs {
            features: SplitFeatures {
                dim: DIM,
                train: train_rows,
                val: val_rows,
                test: Vec::new(),
            },
            train_stats,
            val_stats,
        };
        (data, inputs)
    }

    #[test]
    fn cross_fitted_gate_chooses_its_threshold_on_every_image_out_of_fold() {
        let (data, inputs) = fixture();
        let validation_only = fit_gate(&data, &inputs, None).expect("validation gate");
        assert_eq!(validation_only.validation_slices, 40);
        assert_eq!(validation_only.image.fitted_on, 160);
        assert!(
            validation_only
                .threshold_rule
                .contains("40 validation slices")
        );

        let folds = data.calibration_folds(5, 42);
        let cross = fit_gate(&data, &inputs, Some(&folds)).expect("cross-fitted gate");
        assert_eq!(cross.validation_slices, 200);
        assert_eq!(
            cross.image.fitted_on, 200,
            "checks refitted on training + validation"
        );
        assert!(
            cross
                .threshold_rule
                .contains("200 out-of-fold training + validation slices")
        );
        assert!(cross.validation_refused <= covidct_model::MAX_VALIDATION_REFUSED);
        // Scored by densities fitted without them, the images look farther than they do to a
        // density fitted on them: the threshold lies above most in-sample scores.
        let rows = [&inputs.features.train[..], &inputs.features.val].concat();
        let in_sample_above = rows
            .chunks(DIM)
            .filter(|row| cross.features.score(row) > cross.threshold)
            .count();
        assert!(
            in_sample_above <= 2,
            "{in_sample_above} of 200 in-sample rows above"
        );
    }

    #[test]
    fn folds_that_do_not_cover_the_images_are_refused() {
        let (data, inputs) = fixture();
        let error = fit_gate(&data, &inputs, Some(&[0, 1, 2])).expect_err("three folds for 200");
        assert!(error.to_string().contains("probe_folds"), "{error}");
    }
}
