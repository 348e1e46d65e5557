//! `covidct bench data`.

use crate::cli::BenchDataArgs;
use crate::config::ConfigFile;
use anyhow::Result;
use covidct_data::{DataBenchOptions, LoaderConfig, bench_data, scan_dataset};
use covidct_imaging::{DecodeOptions, PreprocessConfig};

/// Times decode+preprocess from files and augmented batches from the warm cache.
pub fn data(config: &ConfigFile, args: &BenchDataArgs) -> Result<()> {
    let decode: DecodeOptions = config.resolve("decode", &args.dataset.decode)?;
    let scan = scan_dataset(&args.dataset.dir, args.dataset.skip_invalid)?;
    let mut samples = scan.samples();
    if args.limit > 0 {
        samples.truncate(args.limit);
    }
    let loader = LoaderConfig {
        preprocess: PreprocessConfig {
            size: args.size,
            ..Default::default()
        },
        decode,
        batch_size: args.batch_size,
        ..Default::default()
    };
    tracing::info!(
        images = samples.len(),
        size = args.size,
        "benchmarking the data pipeline"
    );
    let report = bench_data(
        &samples,
        &loader,
        &DataBenchOptions {
            epochs: args.epochs,
            max_batches_per_epoch: None,
        },
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}
