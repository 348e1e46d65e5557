//! Study diagnosis end to end on a small random network: slices from a folder, natural order,
//! unreadable files left out, the package's rule applied; and the verdict's rules.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use covidct_model::{PackageMetadata, Predictor};
use covidct_study::{
    SliceScore, StudyError, StudyLimits, StudyOptions, StudyRules, collect_paths, diagnose,
    study_verdict,
};
use covidct_testkit::images::grey_png;
use covidct_testkit::package;

/// The kit's metadata, with the mean study rule when `study_rule`.
fn metadata(study_rule: bool) -> PackageMetadata {
    PackageMetadata {
        group: study_rule.then(package::mean_study_rule),
        ..package::metadata()
    }
}

fn png(seed: u32) -> Vec<u8> {
    grey_png(24, 24, |x, y| {
        ((x * (3 + seed) + y * 5 + seed * 30) % 256) as u8
    })
}

fn predictor() -> Predictor {
    package::random_predictor(metadata(true), 3)
}

#[test]
fn a_folder_is_one_study_in_natural_order_with_the_package_rule() {
    let dir = tempfile::tempdir().expect("dir");
    for (name, seed) in [("s10.png", 1), ("s2.png", 2), ("s1.png", 3), ("s3.png", 4)] {
        std::fs::write(dir.path().join(name), png(seed)).expect("write");
    }
    std::fs::write(dir.path().join("s4.png"), b"\x89PNG\r\n\x1a\nbroken").expect("write");
    let files = collect_paths(&[dir.path().to_path_buf()], &StudyLimits::default()).expect("files");
    let predictor = predictor();
    let mut done = 0;
    let diagnosis = diagnose(&predictor, files, &StudyOptions::default(), 3, &mut |n| {
        done = n
    })
    .expect("diagnosis");
    assert_eq!((diagnosis.slices, done), (5, 4));
    assert_eq!(diagnosis.unreadable.len(), 1);
    assert!(diagnosis.unreadable[0].name.ends_with("s4.png"));
    let study = &diagnosis.studies[0];
    let names: Vec<&str> = study
        .slices
        .iter()
        .map(|s| s.name.rsplit('/').next().unwrap_or_default())
        .collect();
    assert_eq!(names, ["s1.png", "s2.png", "s3.png", "s10.png"]);
    let mean = study
        .slices
        .iter()
        .map(|s| s.prediction.probability)
        .sum::<f64>()
        / 4.0;
    let probability = study.verdict.probability.expect("verdict");
    assert!((probability - mean).abs() < 1e-9, "{probability} vs {mean}");
    assert_eq!(study.verdict.used, 4);

    // The same slices scored one by one give the same probabilities (batching changes nothing).
    let single = diagnose(
        &predictor,
        collect_paths(&[dir.path().join("s1.png")], &StudyLimits::default()).expect("one"),
        &StudyOptions {
            rules: StudyRules {
                min_slices: 1,
                ..StudyRules::default()
            },
            ..StudyOptions::default()
        },
        1,
        &mut |_| {},
    )
    .expect("one slice");
    let alone = single.studies[0].slices[0].prediction.probability;
    assert!((alone - study.slices[0].prediction.probability).abs() < 1e-5);
}

#[test]
fn nothing_decodable_and_over_the_limits_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("a.png"), b"not an image").expect("write");
    let files = collect_paths(&[dir.path().to_path_buf()], &StudyLimits::default()).expect("files");
    let error = diagnose(
        &predictor(),
        files,
        &StudyOptions::default(),
        4,
        &mut |_| {},
    )
    .expect_err("nothing decodable");
    assert!(matches!(error, StudyError::Empty(_)), "{error}");
    assert!(error.to_string().contains("a.png"), "{error}");
    let few = StudyLimits {
        max_slices: 1,
        ..StudyLimits::default()
    };
    std::fs::write(dir.path().join("b.png"), png(1)).expect("write");
    let error = collect_paths(&[dir.path().to_path_buf()], &few).expect_err("too many");
    assert!(matches!(error, StudyError::TooManySlices { .. }), "{error}");
}

#[test]
fn refused_slices_are_left_out_and_a_mostly_refused_study_gets_no_verdict() {
    let score = |probability, in_distribution| SliceScore {
        probability,
        in_distribution,
    };
    let rules = StudyRules::default();
    let with_rule = metadata(true);
    let slices = [
        score(0.9, true),
        score(0.05, false),
        score(0.8, true),
        score(0.7, true),
    ];
    let verdict = study_verdict(&with_rule, &slices, &rules);
    assert_eq!((verdict.used, verdict.refused), (3, 1));
    assert!((verdict.probability.expect("verdict") - 0.8).abs() < 1e-9);
    assert_eq!(verdict.label.as_deref(), Some("COVID"));
    assert_eq!(verdict.drivers, [0, 2, 3]);

    let negative = [score(0.1, true), score(0.3, true), score(0.2, true)];
    let verdict = study_verdict(&with_rule, &negative, &rules);
    assert_eq!(verdict.label.as_deref(), Some("non-COVID"));
    assert_eq!(verdict.drivers, [0, 2, 1], "least positive first");

    let mostly_refused = [
        score(0.9, true),
        score(0.9, true),
        score(0.9, true),
        score(0.5, false),
        score(0.5, false),
        score(0.5, false),
        score(0.5, false),
    ];
    let verdict = study_verdict(&with_rule, &mostly_refused, &rules);
    assert!(verdict.label.is_none() && verdict.probability.is_none());
    let reason = verdict.reason.expect("reason");
    assert!(
        reason.contains("4 refused") && reason.contains("at least 4"),
        "{reason}"
    );

    let verdict = study_verdict(&metadata(false), &negative, &rules);
    assert!(verdict.label.is_none());
    assert!(verdict.reason.expect("reason").contains("no study rule"));
}
