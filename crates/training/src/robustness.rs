//! Robustness of a predictor to graded image perturbations: every image is decoded once, then
//! scored clean and under each severity of each [`Perturbation`], the perturbation applied to
//! the decoded image at its native resolution before the model's own preprocessing — what a
//! change of scanner or export pipeline would hand the model.

use std::collections::BTreeMap;

use covidct_evaluation::{
    DEFAULT_MAX_ACCURACY_DROP, LevelScores, PerturbationScores, RobustnessAnalysis,
    robustness_analysis,
};
use covidct_imaging::{GreyImage, Perturbation, decode_file, sample_rng};
use covidct_model::{ModelError, Predictor};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::data::SplitSamples;
use crate::error::TrainError;
use crate::finalize::positive_probabilities;

/// Which perturbations at which severities, and how to score them.
#[derive(Debug, Clone, PartialEq)]
pub struct RobustnessPlan {
    /// Each perturbation with its severities, mildest first.
    pub perturbations: Vec<(Perturbation, Vec<f64>)>,
    /// Seed of the noise: each image has its own noise pattern, the same at every severity
    /// (scaled), so the severities differ only in strength.
    pub seed: u64,
    /// Images per forward pass.
    pub batch_size: usize,
}

impl RobustnessPlan {
    /// `kinds` (every kind when empty), each at `severities` of its default severities (all
    /// when `None`; see [`Perturbation::severities`]), in the order of [`Perturbation::ALL`].
    pub fn new(kinds: &[Perturbation], severities: Option<usize>, seed: u64) -> Self {
        let perturbations = Perturbation::ALL
            .into_iter()
            .filter(|kind| kinds.is_empty() || kinds.contains(kind))
            .map(|kind| {
                let count = severities.unwrap_or(kind.default_severities().len());
                (kind, kind.severities(count))
            })
            .collect();
        Self {
            perturbations,
            seed,
            batch_size: 32,
        }
    }

    /// Passes over the images: the clean one plus one per severity.
    pub fn passes(&self) -> usize {
        1 + self
            .perturbations
            .iter()
            .map(|(_, severities)| severities.len())
            .sum::<usize>()
    }

    /// Checks that there is something to do and every severity is valid for its kind.
    pub fn validate(&self) -> Result<(), TrainError> {
        let invalid = |reason: String| TrainError::Config {
            field: "robustness",
            reason,
        };
        if self.perturbations.is_empty() {
            return Err(invalid("no perturbation to apply".to_owned()));
        }
        for (kind, severities) in &self.perturbations {
            if severities.is_empty() {
                return Err(invalid(format!("`{kind}` has no severities")));
            }
            for &severity in severities {
                kind.validate(severity)
                    .map_err(|e| invalid(e.to_string()))?;
            }
        }
        Ok(())
    }
}

/// At most `max` of the samples, drawn per class in proportion to the class sizes (largest
/// remainders; every class keeps at least one sample when `max` allows), deterministically from
/// `seed`, in their original order. All of them when `max` is at least their number.
pub fn stratified_subset(samples: &SplitSamples, max: usize, seed: u64) -> SplitSamples {
    let n = samples.len();
    if max >= n {
        return samples.clone();
    }
    let mut classes: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, sample) in samples.samples.iter().enumerate() {
        classes.entry(sample.label).or_default().push(i);
    }
    // Largest-remainder quotas, then at least one per class while others can give.
    let exact: Vec<f64> = classes
        .values()
        .map(|m| max as f64 * m.len() as f64 / n as f64)
        .collect();
    let mut quotas: Vec<usize> = exact.iter().map(|q| q.floor() as usize).collect();
    let mut by_remainder: Vec<usize> = (0..quotas.len()).collect();
    by_remainder
        .sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())));
    let short = max - quotas.iter().sum::<usize>();
    for &k in by_remainder.iter().take(short) {
        quotas[k] += 1;
    }
    for k in 0..quotas.len() {
        if quotas[k] == 0 {
            let donor = (0..quotas.len()).max_by_key(|&j| quotas[j]).unwrap_or(k);
            if quotas[donor] > 1 {
                quotas[donor] -= 1;
                quotas[k] = 1;
            }
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut chosen: Vec<usize> = Vec::with_capacity(max);
    for (members, quota) in classes.into_values().zip(quotas) {
        let mut members = members;
        members.shuffle(&mut rng);
        chosen.extend_from_slice(&members[..quota.min(members.len())]);
    }
    chosen.sort_unstable();
    SplitSamples {
        samples: chosen.iter().map(|&i| samples.samples[i].clone()).collect(),
        groups: chosen
            .iter()
            .filter_map(|&i| samples.groups.get(i).cloned())
            .collect(),
    }
}

/// Scores `samples` clean and under every severity of `plan`, and computes accuracy (at the
/// predictor's threshold) and ROC-AUC with their drops against clean
/// ([`robustness_analysis`], 5-point rule).
///
/// The images are decoded once, in parallel; `progress` receives `(done, total)` over the
/// `samples × plan.passes()` images scored. Fails on an invalid plan, a file that cannot be
/// decoded (named), or samples of one class.
pub fn robustness_of(
    predictor: &Predictor,
    samples: &SplitSamples,
    plan: &RobustnessPlan,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<RobustnessAnalysis, TrainError> {
    plan.validate()?;
    let meta = predictor.metadata();
    let options = predictor.decode_options();
    let images: Vec<GreyImage> = samples
        .samples
        .par_iter()
        .map(|s| {
            decode_file(&s.path, &options)
                .map(|d| d.image)
                .map_err(|e| ModelError::Input(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let noise_seeds: Vec<u64> = (0..images.len() as u64)
        .map(|i| sample_rng(plan.seed, 0, i).random())
        .collect();
    let total = images.len() * plan.passes();
    let mut done = 0;
    let mut score = |perturb: &(dyn Fn(usize) -> Result<GreyImage, ModelError> + Sync)| {
        let offset = done;
        let logits = predictor.score_images(
            images.len(),
            plan.batch_size,
            &mut |n| progress(offset + n, total),
            &|i| Ok((perturb(i)?, ())),
        )?;
        done += images.len();
        let logits: Vec<Vec<f64>> = logits
            .into_iter()
            .map(|(scored, ())| scored.logits)
            .collect();
        Ok::<_, TrainError>(positive_probabilities(
            &logits,
            meta.positive_class,
            meta.temperature,
        ))
    };
    let clean = score(&|i| Ok(images[i].clone()))?;
    let mut scores = Vec::with_capacity(plan.perturbations.len());
    for (kind, severities) in &plan.perturbations {
        let mut levels = Vec::with_capacity(severities.len());
        for &severity in severities {
            let probabilities = score(&|i| {
                kind.apply(&images[i], severity, noise_seeds[i])
                    .map_err(|e| {
                        let path = samples.samples[i].path.display();
                        ModelError::Input(format!("{path}: {e}"))
                    })
            })?;
            levels.push(LevelScores {
                severity,
                probabilities,
            });
        }
        scores.push(PerturbationScores {
            perturbation: kind.name().to_owned(),
            unit: kind.unit().to_owned(),
            levels,
        });
    }
    Ok(robustness_analysis(
        &clean,
        &samples.positives(meta.positive_class),
        meta.threshold,
        &scores,
        DEFAULT_MAX_ACCURACY_DROP,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use covidct_data::Sample;

    fn samples(positives: usize, negatives: usize) -> SplitSamples {
        let labels = (0..positives).map(|_| 0).chain((0..negatives).map(|_| 1));
        let samples: Vec<Sample> = labels
            .enumerate()
            .map(|(i, label)| Sample {
                path: format!("{i}.png").into(),
                label,
            })
            .collect();
        SplitSamples {
            groups: (0..samples.len()).map(|i| format!("g{}", i / 3)).collect(),
            samples,
        }
    }

    fn counts(s: &SplitSamples) -> (usize, usize) {
        let positives = s.samples.iter().filter(|x| x.label == 0).count();
        (positives, s.len() - positives)
    }

    #[test]
    fn subsets_keep_the_class_shares_and_are_deterministic() {
        let all = samples(30, 70);
        let subset = stratified_subset(&all, 20, 7);
        assert_eq!(counts(&subset), (6, 14));
        assert_eq!(subset.groups.len(), 20);
        assert_eq!(subset.samples, stratified_subset(&all, 20, 7).samples);
        assert_ne!(subset.samples, stratified_subset(&all, 20, 8).samples);
        // In the original order, each sample with its own group.
        let positions: Vec<usize> = subset
            .samples
            .iter()
            .map(|s| {
                s.path
                    .to_string_lossy()
                    .trim_end_matches(".png")
                    .parse()
                    .unwrap()
            })
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]));
        for (sample, group) in subset.samples.iter().zip(&subset.groups) {
            let i: usize = sample
                .path
                .to_string_lossy()
                .trim_end_matches(".png")
                .parse()
                .unwrap();
            assert_eq!(group, &all.groups[i]);
        }
        assert_eq!(stratified_subset(&all, 500, 7).samples, all.samples);
    }

    #[test]
    fn a_rare_class_keeps_one_sample() {
        let all = samples(2, 98);
        assert_eq!(counts(&stratified_subset(&all, 10, 1)), (1, 9));
        assert_eq!(counts(&stratified_subset(&all, 2, 1)), (1, 1));
        assert_eq!(stratified_subset(&all, 0, 1).len(), 0);
    }

    /// A random-weight ResNet-18 at 32 px with threshold 0.5 (its scores are arbitrary but
    /// deterministic).
    fn predictor() -> Predictor {
        covidct_testkit::package::random_predictor(covidct_testkit::package::metadata(), 0)
    }

    /// Eight 40×30 PNGs, half of each class, under `dir`.
    fn image_files(dir: &std::path::Path) -> SplitSamples {
        let mut split = samples(4, 4);
        for (i, sample) in split.samples.iter_mut().enumerate() {
            let path = dir.join(format!("{i}.png"));
            image::GrayImage::from_fn(40, 30, |x, y| {
                image::Luma([((x * 5 + y * 3 + i as u32 * 40) % 256) as u8])
            })
            .save(&path)
            .expect("PNG written");
            sample.path = path;
        }
        split
    }

    #[test]
    fn every_severity_is_scored_on_the_same_images_deterministically() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let split = image_files(dir.path());
        let predictor = predictor();
        let plan = RobustnessPlan {
            batch_size: 3,
            ..RobustnessPlan::new(&[Perturbation::Noise, Perturbation::Rotation], Some(2), 5)
        };
        let mut seen = Vec::new();
        let analysis = robustness_of(&predictor, &split, &plan, &mut |done, total| {
            seen.push((done, total))
        })
        .expect("scored");
        assert_eq!(seen.last(), Some(&(8 * 5, 8 * 5)));
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!((analysis.n, analysis.positives), (8, 4));
        let names: Vec<&str> = analysis
            .curves
            .iter()
            .map(|c| c.perturbation.as_str())
            .collect();
        assert_eq!(names, vec!["noise", "rotation"]);
        let severities: Vec<f64> = analysis.curves[0]
            .levels
            .iter()
            .map(|l| l.severity)
            .collect();
        assert_eq!(severities, vec![8.0, 32.0]);
        // The clean baseline is what the ordinary file path gives.
        let paths: Vec<_> = split.samples.iter().map(|s| s.path.clone()).collect();
        let logits = predictor
            .score_files(&paths, 4, &mut |_| {})
            .expect("scored");
        let clean = positive_probabilities(&logits, 0, 1.0);
        let truth = split.positives(0);
        let accuracy = clean
            .iter()
            .zip(&truth)
            .filter(|(p, t)| (**p >= 0.5) == **t)
            .count() as f64
            / 8.0;
        assert_eq!(analysis.clean_accuracy, accuracy);
        let again = robustness_of(&predictor, &split, &plan, &mut |_, _| {}).expect("scored");
        assert_eq!(again, analysis);
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let mut split = image_files(dir.path());
        split.samples[5].path = dir.path().join("gone.png");
        let plan = RobustnessPlan::new(&[Perturbation::Blur], Some(1), 0);
        let error =
            robustness_of(&predictor(), &split, &plan, &mut |_, _| {}).expect_err("missing file");
        assert!(error.to_string().contains("gone.png"), "{error}");
    }

    #[test]
    fn plans_pick_kinds_and_severities_and_refuse_bad_ones() {
        let all = RobustnessPlan::new(&[], None, 1);
        assert_eq!(all.perturbations.len(), Perturbation::ALL.len());
        assert_eq!(all.passes(), 1 + 9 * 4);
        all.validate().expect("defaults are valid");
        let two = RobustnessPlan::new(&[Perturbation::Jpeg, Perturbation::Noise], Some(2), 1);
        let kinds: Vec<Perturbation> = two.perturbations.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, vec![Perturbation::Noise, Perturbation::Jpeg]);
        assert_eq!(two.perturbations[1].1, vec![50.0, 10.0]);
        assert_eq!(two.passes(), 5);
        let mut bad = two.clone();
        bad.perturbations[1].1.push(0.5);
        let error = bad.validate().expect_err("JPEG quality 0.5");
        assert!(error.to_string().contains("`jpeg`"), "{error}");
        bad.perturbations.clear();
        assert!(bad.validate().is_err());
    }
}
