//! Group bootstrap: determinism, coverage of the point estimate, use of the groups.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use covidct_evaluation::{BootstrapConfig, Metric, bootstrap_metrics};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `groups` groups of `per_group` samples; when `clustered`, a group shares its label and a
/// group-level score shift, so groups are far less informative than independent samples.
fn synthetic(
    groups: usize,
    per_group: usize,
    clustered: bool,
) -> (Vec<f64>, Vec<bool>, Vec<String>) {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (mut probabilities, mut labels, mut names) = (Vec::new(), Vec::new(), Vec::new());
    for g in 0..groups {
        let group_label = g % 2 == 0;
        let shift: f64 = rng.random_range(-0.3..0.3);
        for _ in 0..per_group {
            let label = if clustered {
                group_label
            } else {
                rng.random_bool(0.5)
            };
            let centre = if label { 0.62 } else { 0.38 } + if clustered { shift } else { 0.0 };
            let p: f64 = (centre + rng.random_range(-0.25..0.25)).clamp(0.0, 1.0);
            probabilities.push(p);
            labels.push(label);
            names.push(format!("patient-{g}"));
        }
    }
    (probabilities, labels, names)
}

fn width(result: &covidct_evaluation::MetricsWithCi, metric: Metric) -> f64 {
    let i = result.intervals[&metric];
    i.upper.unwrap() - i.lower.unwrap()
}

#[test]
fn deterministic_under_a_seed_and_covers_the_point_estimate() {
    let (p, l, g) = synthetic(40, 10, false);
    let config = BootstrapConfig::default();
    let a = bootstrap_metrics(&p, &l, &g, 0.5, &config).unwrap();
    let b = bootstrap_metrics(&p, &l, &g, 0.5, &config).unwrap();
    assert_eq!(a, b);
    let other = BootstrapConfig {
        seed: 43,
        ..config.clone()
    };
    let c = bootstrap_metrics(&p, &l, &g, 0.5, &other).unwrap();
    assert_ne!(a.intervals, c.intervals);
    assert_eq!(a.bootstrap.resamples, 1000);
    assert_eq!(a.bootstrap.groups, 40);
    for metric in Metric::ALL {
        let i = a.intervals[&metric];
        let (value, lower, upper) = (i.value.unwrap(), i.lower.unwrap(), i.upper.unwrap());
        assert!(
            lower <= value && value <= upper,
            "{metric:?}: {value} not in [{lower}, {upper}]"
        );
        assert!(lower < upper, "{metric:?} has an empty interval");
        assert_eq!(i.resamples + a.bootstrap.skipped, 1000, "{metric:?}");
    }
}

#[test]
fn resampling_is_by_group() {
    let (p, l, patients) = synthetic(40, 10, true);
    let config = BootstrapConfig::default();
    // One giant group: every resample is the whole data, so the interval collapses.
    let one_group = vec!["everyone".to_string(); p.len()];
    let giant = bootstrap_metrics(&p, &l, &one_group, 0.5, &config).unwrap();
    let images: Vec<String> = (0..p.len()).map(|i| i.to_string()).collect();
    let image_level = bootstrap_metrics(&p, &l, &images, 0.5, &config).unwrap();
    for metric in [Metric::Accuracy, Metric::RocAuc, Metric::Brier] {
        assert_eq!(width(&giant, metric), 0.0, "{metric:?}");
        assert!(width(&image_level, metric) > 0.0, "{metric:?}");
    }
    // Clustered data: resampling the 40 patients gives wider intervals than resampling the
    // 400 images as if they were independent.
    let grouped = bootstrap_metrics(&p, &l, &patients, 0.5, &config).unwrap();
    for metric in [Metric::Accuracy, Metric::RocAuc, Metric::Sensitivity] {
        assert!(
            width(&grouped, metric) > 1.5 * width(&image_level, metric),
            "{metric:?}: grouped {} vs image-level {}",
            width(&grouped, metric),
            width(&image_level, metric)
        );
    }
}

#[test]
fn single_class_resamples_are_skipped_and_counted() {
    // Two groups, one per class: a resample holds both classes only when it draws both
    // (probability ½).
    let p = [0.9, 0.8, 0.3, 0.2];
    let l = [true, true, false, false];
    let g = ["a", "a", "b", "b"];
    let result = bootstrap_metrics(&p, &l, &g, 0.5, &BootstrapConfig::default()).unwrap();
    let skipped = result.bootstrap.skipped;
    assert!((350..650).contains(&skipped), "skipped {skipped}");
    assert_eq!(result.intervals[&Metric::RocAuc].resamples, 1000 - skipped);
}

#[test]
fn invalid_settings_and_inputs() {
    let (p, l, g) = synthetic(4, 5, false);
    let zero = BootstrapConfig {
        resamples: 0,
        ..BootstrapConfig::default()
    };
    assert!(bootstrap_metrics(&p, &l, &g, 0.5, &zero).is_err());
    let full = BootstrapConfig {
        confidence: 1.0,
        ..BootstrapConfig::default()
    };
    assert!(bootstrap_metrics(&p, &l, &g, 0.5, &full).is_err());
    assert!(bootstrap_metrics(&p, &l, &g[1..], 0.5, &BootstrapConfig::default()).is_err());
}
