//! Throughput of the data pipeline: decoding into the cache, and batch assembly from it.

use crate::loader::{BatchLoader, ImageCache, LoaderConfig, LoaderError, Sample};
use covidct_imaging::AugmentConfig;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::hint::black_box;
use std::time::Instant;

/// How much work [`bench_data`] measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DataBenchOptions {
    /// Epochs of batches assembled from the warm cache, for each of the augmented and plain runs.
    pub epochs: u64,
    /// Stop each epoch after this many batches (`None`: whole epochs).
    pub max_batches_per_epoch: Option<usize>,
}

impl Default for DataBenchOptions {
    fn default() -> Self {
        Self {
            epochs: 3,
            max_batches_per_epoch: None,
        }
    }
}

/// Throughput of one measured stage.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageThroughput {
    /// Images processed.
    pub images: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// `images / seconds` (0 when nothing was measured).
    pub images_per_second: f64,
}

impl StageThroughput {
    fn new(images: usize, seconds: f64) -> Self {
        let images_per_second = if seconds > 0.0 {
            images as f64 / seconds
        } else {
            0.0
        };
        Self {
            images,
            seconds,
            images_per_second,
        }
    }
}

impl fmt::Display for StageThroughput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} images in {:.2} s = {:.0} images/s",
            self.images, self.seconds, self.images_per_second
        )
    }
}

/// Result of [`bench_data`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataBenchReport {
    /// Number of samples (files).
    pub samples: usize,
    /// Side of the square network input.
    pub size: u32,
    /// Images per batch.
    pub batch_size: usize,
    /// Threads of the rayon pool the benchmark ran on.
    pub threads: usize,
    /// Decoding plus resizing every file into an empty cache. The files may already be in the
    /// operating system's page cache, so this measures decoding rather than disk reads.
    pub decode: StageThroughput,
    /// Augmented, normalised training batches assembled from the warm cache.
    pub augmented: StageThroughput,
    /// Unaugmented, normalised evaluation batches assembled from the warm cache.
    pub plain: StageThroughput,
    /// Files decoded during the batch runs (0 when the cache works).
    pub decodes_after_warm_up: usize,
    /// Bytes of resized pixels held by the cache.
    pub cache_bytes: usize,
    /// The augmentation measured (the configured one, or the default when none is).
    pub augment: AugmentConfig,
}

impl fmt::Display for DataBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "data pipeline: {} files at {}x{}, batches of {}, {} threads",
            self.samples, self.size, self.size, self.batch_size, self.threads
        )?;
        writeln!(f, "  decode + resize (cold cache):     {}", self.decode)?;
        writeln!(f, "  augmented batches (warm cache):   {}", self.augmented)?;
        writeln!(f, "  plain batches (warm cache):       {}", self.plain)?;
        write!(
            f,
            "  cache: {:.1} MiB; files decoded after warm-up: {}",
            self.cache_bytes as f64 / (1024.0 * 1024.0),
            self.decodes_after_warm_up
        )
    }
}

/// Measures the data pipeline on `samples` with `config`, on the current rayon pool (wrap the
/// call in `ThreadPool::install` to choose the thread count).
///
/// Three stages are timed: filling an empty [`ImageCache`] (decode + resize, in parallel), then
/// `options.epochs` epochs of augmented training batches and as many of plain evaluation
/// batches, both from the warm cache. When `config.augment` is `None` the default augmentation
/// is measured. Fails on the first file that cannot be decoded.
pub fn bench_data(
    samples: &[Sample],
    config: &LoaderConfig,
    options: &DataBenchOptions,
) -> Result<DataBenchReport, LoaderError> {
    let cache = ImageCache::from_config(samples.to_vec(), config);

    let start = Instant::now();
    cache.warm(|_| {})?;
    let decode = StageThroughput::new(cache.len(), start.elapsed().as_secs_f64());
    let decodes_before = cache.decode_count();

    let augment = config.augment.clone().unwrap_or_default();
    let train_config = LoaderConfig {
        augment: Some(augment.clone()),
        ..config.clone()
    };
    let training = BatchLoader::training(&cache, &train_config);
    let augmented = time_batches(&training, options)?;
    let evaluation = BatchLoader::evaluation(&cache, config);
    let plain = time_batches(&evaluation, options)?;

    Ok(DataBenchReport {
        samples: cache.len(),
        size: config.preprocess.size,
        batch_size: training.batch_size(),
        threads: rayon::current_num_threads(),
        decode,
        augmented,
        plain,
        decodes_after_warm_up: cache.decode_count() - decodes_before,
        cache_bytes: cache.cached_bytes(),
        augment,
    })
}

/// Assembles `options.epochs` epochs of batches and times them.
fn time_batches(
    loader: &BatchLoader<'_>,
    options: &DataBenchOptions,
) -> Result<StageThroughput, LoaderError> {
    let limit = options.max_batches_per_epoch.unwrap_or(usize::MAX);
    let mut images = 0;
    let start = Instant::now();
    for epoch in 0..options.epochs {
        for batch in loader.batches(epoch).take(limit) {
            let batch = black_box(batch?);
            images += batch.len();
        }
    }
    Ok(StageThroughput::new(images, start.elapsed().as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use covidct_imaging::PreprocessConfig;

    #[test]
    fn report_counts_images_and_displays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let samples: Vec<Sample> = (0..6)
            .map(|i| {
                let path = dir.path().join(format!("{i}.png"));
                image::GrayImage::from_fn(50, 40, |x, y| image::Luma([(x + y + i) as u8]))
                    .save(&path)
                    .expect("write");
                Sample { path, label: 0 }
            })
            .collect();
        let config = LoaderConfig {
            preprocess: PreprocessConfig {
                size: 32,
                ..PreprocessConfig::default()
            },
            augment: None,
            batch_size: 4,
            ..LoaderConfig::default()
        };
        let options = DataBenchOptions {
            epochs: 2,
            max_batches_per_epoch: Some(1),
        };
        let report = bench_data(&samples, &config, &options).expect("bench");
        assert_eq!(report.samples, 6);
        assert_eq!(report.decode.images, 6);
        assert_eq!(report.augmented.images, 8);
        assert_eq!(report.plain.images, 8);
        assert_eq!(report.decodes_after_warm_up, 0);
        assert_eq!(report.cache_bytes, 6 * 32 * 32);
        assert_eq!(report.augment, AugmentConfig::default());
        assert!(report.threads >= 1);
        let text = report.to_string();
        assert!(
            text.contains("images/s") && text.contains("32x32"),
            "{text}"
        );
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["decode"]["images"], 6);
    }
}
