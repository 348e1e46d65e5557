//! Checks on the real SARS-CoV-2 CT-scan dataset in `../shared/data/sarscov2-ct` (or
//! `COVIDCT_DATASET_DIR`): `#[ignore]`d, so that a plain `cargo test` lists them as ignored where
//! the dataset is absent; `scripts/test.sh rust` runs them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use covidct_data::{
    Analysis, InspectConfig, InspectReport, SplitConfig, SplitStrategy, measure_leakage,
    scan_dataset, split_dataset,
};
use covidct_imaging::DecodeOptions;
use covidct_testkit::inputs::shared_dataset;
use std::sync::OnceLock;

/// The dataset decoded once for all tests of this file.
fn analysis() -> &'static Analysis {
    static ANALYSIS: OnceLock<Analysis> = OnceLock::new();
    ANALYSIS.get_or_init(|| {
        let scan = scan_dataset(&shared_dataset(), false).expect("scan the shared dataset");
        Analysis::run(scan, &DecodeOptions::default(), &|| {})
    })
}

#[test]
#[ignore = "needs the shared dataset (../shared/data/sarscov2-ct); scripts/test.sh runs it"]
fn counts_and_exact_duplicates_match_the_dataset_readme() {
    let analysis = analysis();
    assert!(analysis.invalid.is_empty(), "{:?}", analysis.invalid);
    let report = InspectReport::build(analysis, &InspectConfig::default());
    let counts: Vec<(&str, usize)> = report
        .classes
        .iter()
        .map(|c| (c.name.as_str(), c.images))
        .collect();
    assert_eq!(counts, vec![("COVID", 1252), ("non-COVID", 1229)]);
    let duplicates: Vec<Vec<String>> = report
        .exact_duplicates
        .iter()
        .map(|d| d.paths.clone())
        .collect();
    assert_eq!(
        duplicates,
        vec![
            vec![
                "COVID/Covid (128).png".to_string(),
                "COVID/Covid (129).png".to_string()
            ],
            vec![
                "COVID/Covid (134).png".to_string(),
                "COVID/Covid (135).png".to_string()
            ],
        ]
    );
    // This copy is all 8-bit grey: no layout shortcut.
    assert!(
        !report.shortcuts[0].is_shortcut,
        "{:?}",
        report.shortcuts[0]
    );
}

#[test]
#[ignore = "needs the shared dataset (../shared/data/sarscov2-ct); scripts/test.sh runs it"]
fn every_strategy_keeps_groups_in_one_split_and_blocks_leak_less_than_random() {
    let analysis = analysis();
    let blocks = split_dataset(analysis, &SplitConfig::default()).expect("blocks split");
    blocks
        .validate("blocks".as_ref())
        .expect("no group spans splits");
    assert_eq!(blocks.rows.len(), 2481);
    // Exact duplicates share a group.
    let group_of = |path: &str| {
        blocks
            .rows
            .iter()
            .find(|r| r.path == path)
            .map(|r| r.group.clone())
            .expect("row")
    };
    assert_eq!(
        group_of("COVID/Covid (128).png"),
        group_of("COVID/Covid (129).png")
    );
    assert_eq!(
        group_of("COVID/Covid (134).png"),
        group_of("COVID/Covid (135).png")
    );
    // Ratios hold roughly per class.
    for (split, share) in [("train", 0.70), ("val", 0.15), ("test", 0.15)] {
        for (class, total) in [("COVID", 1252.0), ("non-COVID", 1229.0)] {
            let n = blocks
                .rows
                .iter()
                .filter(|r| r.split.as_str() == split && r.label == class)
                .count() as f64;
            assert!((n / total - share).abs() < 0.05, "{split} {class}: {n}");
        }
    }
    let random = split_dataset(
        analysis,
        &SplitConfig {
            strategy: SplitStrategy::Random,
            ..Default::default()
        },
    )
    .expect("random split");
    let similarity = split_dataset(
        analysis,
        &SplitConfig {
            strategy: SplitStrategy::Similarity,
            ..Default::default()
        },
    )
    .expect("similarity split");
    similarity
        .validate("similarity".as_ref())
        .expect("no group spans splits");
    let blocks_leak = measure_leakage("blocks", analysis, &blocks);
    let random_leak = measure_leakage("random", analysis, &random);
    eprintln!("{blocks_leak:?}\n{random_leak:?}");
    // Measured: blocks ≈ 20 vs random ≈ 15 (thumbnail units), near copies ≈ 2% vs 13%.
    assert!(
        blocks_leak.median_nearest_train_distance > random_leak.median_nearest_train_distance + 2.0,
        "blocks should leak measurably less: {blocks_leak:?} vs {random_leak:?}"
    );
    assert!(
        blocks_leak.near_copy_share < 0.5 * random_leak.near_copy_share,
        "{blocks_leak:?} vs {random_leak:?}"
    );
}

#[test]
#[ignore = "needs the shared dataset (../shared/data/sarscov2-ct); scripts/test.sh runs it"]
fn the_same_seed_gives_the_same_manifest_bytes() {
    let analysis = analysis();
    let a = split_dataset(analysis, &SplitConfig::default()).expect("split");
    let b = split_dataset(analysis, &SplitConfig::default()).expect("split");
    assert_eq!(a.to_csv().expect("csv"), b.to_csv().expect("csv"));
}
