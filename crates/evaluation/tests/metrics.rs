//! Metrics against hand-computed fixtures (cross-checked with scikit-learn 1.x).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use covidct_evaluation::{
    BinaryMetrics, ConfusionMatrix, EvalError, Metric, average_precision, brier_score,
    expected_calibration_error, pr_curve, reliability_bins, roc_auc, roc_curve,
};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

/// Eight samples with tied scores in both classes, avoiding the ECE bin edges (k/15).
const SCORES: [f64; 8] = [0.95, 0.85, 0.7, 0.7, 0.55, 0.35, 0.35, 0.1];
const LABELS: [bool; 8] = [true, false, true, false, true, true, false, false];

#[test]
fn roc_auc_counts_ties_as_half() {
    // Pairs (positive, negative): 0.8 beats both 0.5 and 0.2; 0.5 ties 0.5 (½) and beats 0.2.
    // (2 + 1.5) / 4 = 0.875.
    let auc = roc_auc(&[0.8, 0.5, 0.5, 0.2], &[true, true, false, false]).unwrap();
    assert!(close(auc, 0.875), "{auc}");
    // Positives 0.95, 0.7, 0.55, 0.35 against negatives 0.85, 0.7, 0.35, 0.1:
    // 4 + (2 + ½) + 2 + (1 + ½) = 10 of 16 pairs.
    let auc = roc_auc(&SCORES, &LABELS).unwrap();
    assert!(close(auc, 10.0 / 16.0), "{auc}");
}

#[test]
fn average_precision_is_sklearn_step_sum() {
    // Distinct thresholds, highest first (P = 4):
    //   0.95: tp 1 fp 0 → R .25, P 1     → .25 · 1   = .25
    //   0.85: tp 1 fp 1 → R .25          → ΔR 0
    //   0.70: tp 2 fp 2 → R .50, P .5    → .25 · .5  = .125
    //   0.55: tp 3 fp 2 → R .75, P .6    → .25 · .6  = .15
    //   0.35: tp 4 fp 3 → R 1,   P 4/7   → .25 · 4/7 = 1/7
    //   0.10: tp 4 fp 4 → R 1            → ΔR 0
    // AP = .525 + 1/7 = 0.667857142857… (sklearn: 0.6678571428571428)
    let ap = average_precision(&SCORES, &LABELS).unwrap();
    assert!(close(ap, 0.525 + 1.0 / 7.0), "{ap}");
}

#[test]
fn all_metrics_at_a_threshold() {
    let m = BinaryMetrics::compute(&SCORES, &LABELS, 0.55).unwrap();
    // p >= 0.55 is positive: 0.95 (+), 0.85 (−), 0.7 (+), 0.7 (−), 0.55 (+) → TP 3, FP 2;
    // the rest 0.35 (+), 0.35 (−), 0.1 (−) → FN 1, TN 2.
    assert_eq!(
        m.confusion,
        ConfusionMatrix {
            tp: 3,
            fp: 2,
            tn: 2,
            fn_: 1
        }
    );
    assert_eq!((m.n, m.positives, m.negatives), (8, 4, 4));
    assert!(close(m.accuracy, 5.0 / 8.0));
    assert!(close(m.sensitivity, 0.75));
    assert!(close(m.specificity, 0.5));
    assert!(close(m.precision.unwrap(), 0.6));
    assert!(close(m.npv.unwrap(), 2.0 / 3.0));
    assert!(close(m.f1, 6.0 / 9.0));
    assert!(close(m.roc_auc, 0.625));
    assert!(close(m.pr_auc, 0.525 + 1.0 / 7.0));
    // Brier: (.05² + .85² + .3² + .7² + .45² + .65² + .35² + .1²) / 8 = 2.0625 / 8.
    assert!(close(m.brier, 0.2578125), "{}", m.brier);
    // ECE bins (width 1/15): {.95|1} gap .05; {.85|0} .85; {.7,.7|1,0} .2 (×2);
    // {.55|1} .45; {.35,.35|1,0} .15 (×2); {.1|0} .1 → (.05+.85+.4+.45+.3+.1)/8 = 0.26875.
    assert!(close(m.ece, 0.26875), "{}", m.ece);
    assert_eq!(m.get(Metric::Ece), Some(m.ece));
    assert!(close(brier_score(&SCORES, &LABELS).unwrap(), 0.2578125));
    assert!(close(
        expected_calibration_error(&SCORES, &LABELS).unwrap(),
        0.26875
    ));
}

#[test]
fn undefined_ratios_are_none_not_nan() {
    // Threshold 1: nothing is called positive, so precision is undefined.
    let m = BinaryMetrics::compute(&SCORES, &LABELS, 1.0).unwrap();
    assert_eq!(m.precision, None);
    assert_eq!(m.f1, 0.0);
    assert!(close(m.npv.unwrap(), 0.5));
    // Threshold 0: everything is positive, so NPV is undefined.
    let m = BinaryMetrics::compute(&SCORES, &LABELS, 0.0).unwrap();
    assert_eq!(m.npv, None);
    let json = serde_json::to_value(&m).unwrap();
    assert!(json["npv"].is_null());
    assert_eq!(json["confusion"]["fn"], 0);
}

#[test]
fn curves_match_sklearn() {
    let roc = roc_curve(&SCORES, &LABELS).unwrap();
    let fpr: Vec<f64> = roc.iter().map(|p| p.fpr).collect();
    let tpr: Vec<f64> = roc.iter().map(|p| p.tpr).collect();
    assert_eq!(fpr, [0.0, 0.0, 0.25, 0.5, 0.5, 0.75, 1.0]);
    assert_eq!(tpr, [0.0, 0.25, 0.25, 0.5, 0.75, 1.0, 1.0]);
    assert_eq!(roc[0].threshold, None);
    assert_eq!(roc[1].threshold, Some(0.95));
    let pr = pr_curve(&SCORES, &LABELS).unwrap();
    let recall: Vec<f64> = pr.iter().map(|p| p.recall).collect();
    assert_eq!(recall, [0.25, 0.25, 0.5, 0.75, 1.0, 1.0]);
    assert!(close(pr[4].precision, 4.0 / 7.0));
    assert_eq!(pr[5].threshold, 0.1);
}

#[test]
fn reliability_bins_cover_the_unit_interval() {
    let bins = reliability_bins(&[0.0, 1.0, 0.5], &[false, true, true]).unwrap();
    assert_eq!(bins.len(), 15);
    assert_eq!(bins[0].count, 1);
    assert_eq!(bins[14].count, 1, "1.0 belongs to the last bin");
    assert_eq!(bins[7].count, 1);
    assert_eq!(bins[3].mean_probability, None);
    assert_eq!(bins[14].fraction_positive, Some(1.0));
    assert!(close(bins[14].upper, 1.0));
}

#[test]
fn single_class_is_a_clear_error() {
    let labels = [true, true, true];
    let scores = [0.2, 0.5, 0.9];
    for result in [
        roc_auc(&scores, &labels),
        average_precision(&scores, &labels),
        BinaryMetrics::compute(&scores, &labels, 0.5).map(|m| m.roc_auc),
    ] {
        match result {
            Err(
                ref e @ EvalError::SingleClass {
                    positives: 3,
                    negatives: 0,
                    ..
                },
            ) => {
                let text = e.to_string();
                assert!(text.contains("3 positive(s) and 0 negative(s)"), "{text}");
            }
            other => panic!("expected SingleClass, got {other:?}"),
        }
    }
    assert!(roc_curve(&scores, &[false; 3]).is_err());
    // Metrics that do not need both classes still work.
    assert!(brier_score(&scores, &labels).is_ok());
    assert_eq!(
        ConfusionMatrix::compute(&scores, &labels, 0.5).unwrap().tp,
        2
    );
}

#[test]
fn bad_inputs_are_named() {
    let error = roc_auc(&[0.1, 0.2], &[true]).unwrap_err();
    assert!(matches!(
        error,
        EvalError::LengthMismatch {
            left_len: 2,
            right_len: 1,
            ..
        }
    ));
    assert!(error.to_string().contains("`probabilities` has 2 values"));
    assert!(matches!(
        roc_auc(&[], &[]).unwrap_err(),
        EvalError::Empty { .. }
    ));
    for bad in [1.5, -0.1, f64::NAN, f64::INFINITY] {
        let error = roc_auc(&[0.5, bad], &[true, false]).unwrap_err();
        assert!(
            matches!(error, EvalError::InvalidProbability { index: 1, .. }),
            "{bad}: {error}"
        );
    }
    assert!(matches!(
        BinaryMetrics::compute(&SCORES, &LABELS, 1.5).unwrap_err(),
        EvalError::InvalidSetting {
            field: "threshold",
            ..
        }
    ));
}

#[test]
fn metric_keys_parse_back_and_know_their_direction() {
    for metric in Metric::ALL {
        assert_eq!(metric.key().parse::<Metric>(), Ok(metric));
    }
    assert!(Metric::RocAuc.higher_is_better());
    assert!(!Metric::Ece.higher_is_better());
    let err = "auc".parse::<Metric>().unwrap_err();
    assert!(err.contains("roc_auc"), "{err}");
}
