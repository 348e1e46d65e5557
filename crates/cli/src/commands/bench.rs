//! `covidct bench data | train`.

use crate::cli::{BenchDataArgs, BenchTrainArgs};
use crate::config::ConfigFile;
use anyhow::Result;
use covidct_data::{DataBenchOptions, LoaderConfig, bench_data, scan_dataset};
use covidct_imaging::{DecodeOptions, PreprocessConfig};
use covidct_training::bench::{TrainBenchOptions, bench_train};

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

/// `covidct bench train`: forward + backward + update images/s per architecture and size.
pub fn train(args: &BenchTrainArgs) -> Result<()> {
    let options = TrainBenchOptions {
        architectures: args.architectures.clone(),
        sizes: args.sizes.clone(),
        batch_size: args.batch_size,
        warmup_steps: args.warmup_steps,
        steps: args.steps,
        in_channels: args.in_channels,
        device: args.device.clone(),
    };
    if !args.json {
        println!("architecture        size  batch  steps  images/s  s/step");
    }
    let results = bench_train(&options, &mut |r| {
        if !args.json {
            println!(
                "{:<18} {:>5} {:>6} {:>6} {:>9.2} {:>7.3}",
                r.architecture.name(),
                r.size,
                r.batch_size,
                r.steps,
                r.images_per_second,
                r.seconds_per_step
            );
        }
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    Ok(())
}
