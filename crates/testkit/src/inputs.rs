//! Inputs from outside the repository: the registry-shipped weights and sample images
//! (`scripts/fetch-weights.sh` exports their paths) and the shared CT dataset. The tests that
//! need them are `#[ignore]`d with the reason, so that a plain `cargo test` lists them as
//! ignored instead of counting them as passed; `scripts/test.sh rust` runs them with
//! `--ignored`, where a missing input fails the test with this message.

use std::path::PathBuf;

/// The path in environment variable `variable`; panics naming the variable when it is unset.
pub fn env_path(variable: &str) -> PathBuf {
    match std::env::var_os(variable) {
        Some(value) if !value.is_empty() => PathBuf::from(value),
        _ => panic!(
            "{variable} is not set: `export $(bash scripts/fetch-weights.sh)` sets it \
             (scripts/test.sh does)"
        ),
    }
}

/// The SARS-CoV-2 CT-scan dataset: `COVIDCT_DATASET_DIR`, else `../shared/data/sarscov2-ct`
/// beside the repository; panics naming the folder when it is absent.
pub fn shared_dataset() -> PathBuf {
    let dir = std::env::var_os("COVIDCT_DATASET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/sarscov2-ct")
        });
    assert!(
        dir.is_dir(),
        "the dataset folder {} is absent: set COVIDCT_DATASET_DIR or put the dataset there",
        dir.display()
    );
    dir
}
