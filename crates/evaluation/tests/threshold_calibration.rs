//! Threshold rules and temperature scaling.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use covidct_evaluation::{
    EvalError, ThresholdRule, apply_temperature, choose_threshold, fit_temperature,
    negative_log_likelihood, sigmoid,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SCORES: [f64; 8] = [0.95, 0.85, 0.7, 0.7, 0.55, 0.35, 0.35, 0.1];
const LABELS: [bool; 8] = [true, false, true, false, true, true, false, false];

#[test]
fn sensitivity_rule_takes_the_highest_threshold_keeping_min() {
    // Sensitivity by threshold (4 positives): .95 → .25, .85 → .25, .7 → .5, .55 → .75,
    // .35 → 1, .1 → 1.
    let rule = |min| ThresholdRule::Sensitivity { min };
    assert_eq!(choose_threshold(&SCORES, &LABELS, rule(0.5)).unwrap(), 0.7);
    assert_eq!(
        choose_threshold(&SCORES, &LABELS, rule(0.75)).unwrap(),
        0.55
    );
    assert_eq!(
        choose_threshold(&SCORES, &LABELS, rule(0.95)).unwrap(),
        0.35
    );
    assert_eq!(choose_threshold(&SCORES, &LABELS, rule(1.0)).unwrap(), 0.35);
    assert_eq!(choose_threshold(&SCORES, &LABELS, rule(0.2)).unwrap(), 0.95);
    assert_eq!(
        ThresholdRule::default(),
        ThresholdRule::Sensitivity { min: 0.95 }
    );
}

#[test]
fn youden_rule_maximises_j() {
    // J by threshold: .95 → .25, .85 → 0, .7 → 0, .55 → .25, .35 → .25, .1 → 0; ties go to
    // the highest threshold.
    assert_eq!(
        choose_threshold(&SCORES, &LABELS, ThresholdRule::Youden).unwrap(),
        0.95
    );
    // A unique maximum: J(.8) = 2/3 − 0.
    let scores = [0.9, 0.8, 0.4, 0.3, 0.1];
    let labels = [true, true, false, true, false];
    assert_eq!(
        choose_threshold(&scores, &labels, ThresholdRule::Youden).unwrap(),
        0.8
    );
}

#[test]
fn fixed_rule_and_invalid_rules() {
    assert_eq!(
        choose_threshold(&SCORES, &LABELS, ThresholdRule::Fixed(0.42)).unwrap(),
        0.42
    );
    assert!(choose_threshold(&SCORES, &LABELS, ThresholdRule::Fixed(1.2)).is_err());
    assert!(choose_threshold(&SCORES, &LABELS, ThresholdRule::Sensitivity { min: 0.0 }).is_err());
    assert!(matches!(
        choose_threshold(&SCORES, &[false; 8], ThresholdRule::default()),
        Err(EvalError::SingleClass { positives: 0, .. })
    ));
    assert!(matches!(
        choose_threshold(&SCORES, &[true; 8], ThresholdRule::Youden),
        Err(EvalError::SingleClass { negatives: 0, .. })
    ));
}

#[test]
fn rules_serialise_in_kebab_case_and_parse_from_text() {
    let json = serde_json::to_string(&ThresholdRule::Sensitivity { min: 0.9 }).unwrap();
    assert_eq!(json, r#"{"sensitivity":{"min":0.9}}"#);
    assert_eq!(
        serde_json::to_string(&ThresholdRule::Youden).unwrap(),
        r#""youden""#
    );
    assert_eq!(
        serde_json::to_string(&ThresholdRule::Fixed(0.5)).unwrap(),
        r#"{"fixed":0.5}"#
    );
    let defaulted: ThresholdRule = serde_json::from_str(r#"{"sensitivity":{}}"#).unwrap();
    assert_eq!(defaulted, ThresholdRule::Sensitivity { min: 0.95 });
    for rule in [
        ThresholdRule::Sensitivity { min: 0.9 },
        ThresholdRule::Youden,
        ThresholdRule::Fixed(0.5),
    ] {
        assert_eq!(rule.to_string().parse::<ThresholdRule>().unwrap(), rule);
    }
    assert_eq!(
        "sensitivity".parse::<ThresholdRule>().unwrap(),
        ThresholdRule::default()
    );
    assert!("median".parse::<ThresholdRule>().is_err());
    assert!("fixed:abc".parse::<ThresholdRule>().is_err());
    assert!("sensitivity:1.5".parse::<ThresholdRule>().is_err());
}

#[test]
fn temperature_scaling_recovers_a_known_temperature() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let n = 20_000;
    let logits: Vec<f64> = (0..n).map(|_| rng.random_range(-8.0..8.0)).collect();
    let labels: Vec<bool> = logits
        .iter()
        .map(|&z| rng.random::<f64>() < sigmoid(z / 2.0))
        .collect();
    let t = fit_temperature(&logits, &labels).unwrap();
    assert!((t - 2.0).abs() < 0.1, "fitted {t}");
    // The fit is the minimum of the NLL.
    let at = |t| negative_log_likelihood(&logits, &labels, t).unwrap();
    assert!(at(t) <= at(t * 1.05) && at(t) <= at(t / 1.05));
    let probabilities = apply_temperature(&logits, t).unwrap();
    assert_eq!(probabilities.len(), n);
    assert!(probabilities.iter().all(|p| (0.0..=1.0).contains(p)));
}

#[test]
fn temperature_edge_cases() {
    // Perfectly separated data wants T → 0: the bound is returned.
    let logits = [3.0, 2.0, -2.0, -3.0];
    let labels = [true, true, false, false];
    assert_eq!(fit_temperature(&logits, &labels).unwrap(), 0.05);
    // Logits pointing the wrong way half the time want a hot temperature.
    let t = fit_temperature(&[5.0, -5.0, 5.0, -5.0], &[true, true, false, false]).unwrap();
    assert_eq!(t, 20.0);
    assert_eq!(fit_temperature(&[0.0, 0.0], &[true, false]).unwrap(), 1.0);
    assert!(matches!(
        fit_temperature(&[1.0, 2.0], &[true, true]),
        Err(EvalError::SingleClass { .. })
    ));
    assert!(matches!(
        fit_temperature(&[1.0, f64::NAN], &[true, false]),
        Err(EvalError::NonFiniteLogit { index: 1, .. })
    ));
    assert!(apply_temperature(&[1.0], 0.0).is_err());
    assert!(apply_temperature(&[], 1.0).is_err());
    assert!((sigmoid(-800.0)).abs() < 1e-300 && sigmoid(800.0) == 1.0);
}
