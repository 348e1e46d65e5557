//! Decoded-image cache and parallel batch assembly, as plain `f32` buffers.
//!
//! [`ImageCache`] decodes each file once, resizes it to the network's square input and keeps the
//! 8-bit result (`size²` bytes per image: about 125 MB for 2,500 images at 224). A
//! [`BatchLoader`] then assembles batches from the cache in parallel: per sample, the cached
//! image is augmented with a generator derived from `(seed, epoch, sample index)` and
//! normalised straight into its slot of the batch buffer. Batches therefore depend only on the
//! seed, the epoch and the batch index, never on the number of threads or their scheduling.

use covidct_imaging::{
    AugmentConfig, DecodeError, DecodeOptions, GreyImage, PreprocessConfig, augment, decode_file,
    fit_input, normalize_into, sample_rng,
};
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// One labelled image file.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sample {
    /// Path of the image file.
    pub path: PathBuf,
    /// Class index.
    pub label: usize,
}

/// A batch of single-channel images in NCHW layout, with their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `N × 1 × S × S` normalised intensities, image after image, row-major.
    pub images: Vec<f32>,
    /// Class index of each image.
    pub labels: Vec<usize>,
    /// Index of each image in the sample list the cache was built from.
    pub indices: Vec<usize>,
    /// `[N, 1, S, S]`.
    pub shape: [usize; 4],
}

impl Batch {
    /// Number of images in the batch.
    pub fn len(&self) -> usize {
        self.shape[0]
    }

    /// `true` when the batch holds no image.
    pub fn is_empty(&self) -> bool {
        self.shape[0] == 0
    }
}

/// How batches are built: preprocessing, augmentation, decoding limits, batch size and seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoaderConfig {
    /// Resizing and normalisation, identical for training, evaluation and serving.
    pub preprocess: PreprocessConfig,
    /// Augmentation for training batches (default: [`AugmentConfig::default`]); `None` trains
    /// on unaugmented images.
    pub augment: Option<AugmentConfig>,
    /// Decoding limits.
    pub decode: DecodeOptions,
    /// Images per batch (the last batch of an epoch may be smaller; 0 counts as 1).
    pub batch_size: usize,
    /// Seed for shuffling and augmentation.
    pub seed: u64,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            preprocess: PreprocessConfig::default(),
            augment: Some(AugmentConfig::default()),
            decode: DecodeOptions::default(),
            batch_size: 32,
            seed: 0,
        }
    }
}

/// Why a sample or batch could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// A file could not be decoded; the message names the file.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A sample index beyond the sample list.
    #[error("sample {index} does not exist ({len} samples)")]
    NoSuchSample {
        /// The index asked for.
        index: usize,
        /// Number of samples.
        len: usize,
    },
    /// A batch index beyond the epoch.
    #[error("batch {index} does not exist ({count} batches per epoch)")]
    NoSuchBatch {
        /// The index asked for.
        index: usize,
        /// Number of batches per epoch.
        count: usize,
    },
}

/// Decoded, resized 8-bit images, filled lazily (or in parallel by [`ImageCache::warm`]) and
/// kept for the cache's lifetime, so each file is decoded at most once.
///
/// The cache is `Sync`: batch assembly reads and fills it from many threads. A file that fails
/// to decode is not cached; asking for it again retries (and fails again, naming the file).
#[derive(Debug)]
pub struct ImageCache {
    samples: Vec<Sample>,
    preprocess: PreprocessConfig,
    decode: DecodeOptions,
    slots: Vec<OnceLock<Arc<GreyImage>>>,
    decodes: AtomicUsize,
}

impl ImageCache {
    /// An empty cache over `samples`; images are resized with `preprocess` (size and mode).
    pub fn new(samples: Vec<Sample>, preprocess: PreprocessConfig, decode: DecodeOptions) -> Self {
        let slots = samples.iter().map(|_| OnceLock::new()).collect();
        Self {
            samples,
            preprocess,
            decode,
            slots,
            decodes: AtomicUsize::new(0),
        }
    }

    /// An empty cache using the preprocessing and decoding settings of a loader configuration.
    pub fn from_config(samples: Vec<Sample>, config: &LoaderConfig) -> Self {
        Self::new(samples, config.preprocess, config.decode)
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// `true` when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The samples, in the order their indices refer to.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// The preprocessing the cached images went through (and batches are normalised with).
    pub fn preprocess(&self) -> &PreprocessConfig {
        &self.preprocess
    }

    /// Number of images held.
    pub fn cached(&self) -> usize {
        self.slots
            .iter()
            .filter(|slot| slot.get().is_some())
            .count()
    }

    /// Number of file decodes attempted so far, failed ones included.
    pub fn decode_count(&self) -> usize {
        self.decodes.load(Ordering::Relaxed)
    }

    /// Bytes of pixel data held.
    pub fn cached_bytes(&self) -> usize {
        self.slots
            .iter()
            .filter_map(|slot| slot.get().map(|image| image.pixels.len()))
            .sum()
    }

    /// The resized image of sample `index`, decoding the file on first use.
    pub fn get(&self, index: usize) -> Result<Arc<GreyImage>, LoaderError> {
        let slot = self.slots.get(index).ok_or(LoaderError::NoSuchSample {
            index,
            len: self.samples.len(),
        })?;
        if let Some(image) = slot.get() {
            return Ok(Arc::clone(image));
        }
        let sample = &self.samples[index];
        self.decodes.fetch_add(1, Ordering::Relaxed);
        let decoded = decode_file(&sample.path, &self.decode)?;
        let resized = fit_input(&decoded.image, &self.preprocess);
        // If another thread won a race for this slot, keep its (identical) image.
        Ok(Arc::clone(slot.get_or_init(|| Arc::new(resized))))
    }

    /// Decodes every missing image in parallel (on the current rayon pool).
    ///
    /// `progress` is called after each image with the number of images processed so far (in
    /// this call). Every file is attempted; on failure the error of the lowest failing index
    /// is returned and the images that did decode stay cached.
    pub fn warm(&self, progress: impl Fn(usize) + Sync) -> Result<(), LoaderError> {
        let done = AtomicUsize::new(0);
        let failure = (0..self.len())
            .into_par_iter()
            .filter_map(|index| {
                let result = self.get(index);
                progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                result.err().map(|error| (index, error))
            })
            .min_by_key(|(index, _)| *index);
        failure.map_or(Ok(()), |(_, error)| Err(error))
    }
}

/// Assembles batches from an [`ImageCache`].
///
/// Training loaders shuffle each epoch with a seeded permutation and augment every sample;
/// evaluation loaders keep the sample order and never augment. Image size and normalisation
/// always follow the cache's [`PreprocessConfig`] (`config.preprocess` is only used to build
/// the cache, see [`ImageCache::from_config`]).
#[derive(Clone, Debug)]
pub struct BatchLoader<'a> {
    cache: &'a ImageCache,
    augment: Option<AugmentConfig>,
    batch_size: usize,
    seed: u64,
    shuffle: bool,
}

/// Salt separating the shuffle's random stream from the per-sample augmentation streams.
const SHUFFLE_SALT: u64 = 0x5348_5546_464C_4521;

impl<'a> BatchLoader<'a> {
    /// A training loader: shuffled epochs, augmentation from `config.augment` (if any).
    pub fn training(cache: &'a ImageCache, config: &LoaderConfig) -> Self {
        Self {
            cache,
            augment: config.augment.clone(),
            batch_size: config.batch_size.max(1),
            seed: config.seed,
            shuffle: true,
        }
    }

    /// An evaluation loader: samples in order, no augmentation.
    pub fn evaluation(cache: &'a ImageCache, config: &LoaderConfig) -> Self {
        Self {
            cache,
            augment: None,
            batch_size: config.batch_size.max(1),
            seed: config.seed,
            shuffle: false,
        }
    }

    /// The cache batches are read from.
    pub fn cache(&self) -> &'a ImageCache {
        self.cache
    }

    /// Images per full batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Batches per epoch (the last one may be partial).
    pub fn batches_per_epoch(&self) -> usize {
        self.cache.len().div_ceil(self.batch_size)
    }

    /// The order samples are visited in during `epoch`: a permutation seeded by the seed and
    /// epoch for training loaders, `0..len` otherwise.
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.cache.len()).collect();
        if self.shuffle {
            order.shuffle(&mut sample_rng(self.seed ^ SHUFFLE_SALT, epoch, u64::MAX));
        }
        order
    }

    /// Batch `batch_index` of `epoch`.
    pub fn batch(&self, epoch: u64, batch_index: usize) -> Result<Batch, LoaderError> {
        let count = self.batches_per_epoch();
        if batch_index >= count {
            return Err(LoaderError::NoSuchBatch {
                index: batch_index,
                count,
            });
        }
        let order = self.epoch_order(epoch);
        let start = batch_index * self.batch_size;
        let end = (start + self.batch_size).min(order.len());
        self.assemble(epoch, &order[start..end])
    }

    /// Every batch of `epoch`, in order; each is assembled when the iterator reaches it.
    pub fn batches(&self, epoch: u64) -> impl Iterator<Item = Result<Batch, LoaderError>> + '_ {
        let order = self.epoch_order(epoch);
        let batch_size = self.batch_size;
        (0..self.batches_per_epoch()).map(move |b| {
            let start = b * batch_size;
            let end = (start + batch_size).min(order.len());
            self.assemble(epoch, &order[start..end])
        })
    }

    /// A batch of the given sample indices, augmented as in `epoch` (for training loaders).
    ///
    /// Samples are processed in parallel on the current rayon pool; the result does not depend
    /// on the number of threads. On failure the error of the first failing sample (in batch
    /// order) is returned.
    pub fn assemble(&self, epoch: u64, indices: &[usize]) -> Result<Batch, LoaderError> {
        let side = self.cache.preprocess.size as usize;
        let plane = side * side;
        let labels = indices
            .iter()
            .map(|&index| {
                self.cache
                    .samples
                    .get(index)
                    .map(|sample| sample.label)
                    .ok_or(LoaderError::NoSuchSample {
                        index,
                        len: self.cache.len(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut images = vec![0f32; indices.len() * plane];
        if plane > 0 {
            let failure = images
                .par_chunks_mut(plane)
                .zip(indices.par_iter())
                .enumerate()
                .filter_map(|(position, (out, &index))| {
                    self.fill(epoch, index, out)
                        .err()
                        .map(|error| (position, error))
                })
                .min_by_key(|(position, _)| *position);
            if let Some((_, error)) = failure {
                return Err(error);
            }
        }
        Ok(Batch {
            images,
            labels,
            indices: indices.to_vec(),
            shape: [indices.len(), 1, side, side],
        })
    }

    /// Augments (when training) and normalises sample `index` into `out` (`size²` values).
    fn fill(&self, epoch: u64, index: usize, out: &mut [f32]) -> Result<(), LoaderError> {
        let cached = self.cache.get(index)?;
        let (mean, std) = (self.cache.preprocess.mean, self.cache.preprocess.std);
        match &self.augment {
            Some(config) => {
                let mut rng = sample_rng(self.seed, epoch, index as u64);
                let augmented = augment(&cached, config, &mut rng);
                normalize_into(&augmented.pixels, mean, std, out);
            }
            None => normalize_into(&cached.pixels, mean, std, out),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Writes `count` small grey PNGs of different sizes and contents; labels alternate.
    fn write_samples(dir: &Path, count: usize) -> Vec<Sample> {
        (0..count)
            .map(|i| {
                let (width, height) = (40 + (i as u32 % 3) * 10, 30 + (i as u32 % 4) * 7);
                let image = image::GrayImage::from_fn(width, height, |x, y| {
                    image::Luma([((x * 5 + y * 3 + i as u32 * 17) % 256) as u8])
                });
                let path = dir.join(format!("image-{i}.png"));
                image.save(&path).expect("write test PNG");
                Sample { path, label: i % 2 }
            })
            .collect()
    }

    fn config(size: u32, batch_size: usize) -> LoaderConfig {
        LoaderConfig {
            preprocess: PreprocessConfig {
                size,
                ..PreprocessConfig::default()
            },
            batch_size,
            seed: 42,
            ..LoaderConfig::default()
        }
    }

    fn bits(batch: &Batch) -> Vec<u32> {
        batch.images.iter().map(|v| v.to_bits()).collect()
    }

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("thread pool")
    }

    #[test]
    fn batches_cover_each_sample_once_with_shapes_and_labels() {
        let dir = tempfile::tempdir().expect("tempdir");
        let samples = write_samples(dir.path(), 10);
        let config = config(16, 4);
        let cache = ImageCache::from_config(samples.clone(), &config);
        let loader = BatchLoader::training(&cache, &config);
        assert_eq!(loader.batches_per_epoch(), 3);
        let batches: Vec<Batch> = loader
            .batches(0)
            .collect::<Result<_, _>>()
            .expect("batches");
        let sizes: Vec<usize> = batches.iter().map(Batch::len).collect();
        assert_eq!(sizes, [4, 4, 2]);
        let mut seen: Vec<usize> = Vec::new();
        for batch in &batches {
            assert_eq!(batch.shape, [batch.len(), 1, 16, 16]);
            assert_eq!(batch.images.len(), batch.len() * 16 * 16);
            for (&index, &label) in batch.indices.iter().zip(&batch.labels) {
                assert_eq!(label, samples[index].label);
            }
            seen.extend(&batch.indices);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        // batch() agrees with batches().
        assert_eq!(loader.batch(0, 1).expect("batch"), batches[1]);
    }

    #[test]
    fn epoch_order_is_a_seeded_permutation_when_training() {
        let samples = (0..50)
            .map(|i| Sample {
                path: PathBuf::from(format!("unused-{i}.png")),
                label: 0,
            })
            .collect();
        let config = config(8, 8);
        let cache = ImageCache::from_config(samples, &config);
        let training = BatchLoader::training(&cache, &config);
        let first = training.epoch_order(0);
        assert_eq!(first, training.epoch_order(0));
        assert_ne!(first, training.epoch_order(1));
        assert_ne!(first, (0..50).collect::<Vec<_>>());
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        let other_seed = LoaderConfig {
            seed: 43,
            ..config.clone()
        };
        assert_ne!(
            first,
            BatchLoader::training(&cache, &other_seed).epoch_order(0)
        );
        let evaluation = BatchLoader::evaluation(&cache, &config);
        assert_eq!(evaluation.epoch_order(5), (0..50).collect::<Vec<_>>());
        // Nothing was decoded: ordering never touches files.
        assert_eq!(cache.decode_count(), 0);
    }

    #[test]
    fn same_seed_and_epoch_give_identical_batches_on_any_thread_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let samples = write_samples(dir.path(), 12);
        let config = config(32, 6);
        let reference = {
            let cache = ImageCache::from_config(samples.clone(), &config);
            pool(1).install(|| {
                BatchLoader::training(&cache, &config)
                    .batch(3, 1)
                    .expect("batch")
            })
        };
        for threads in [1, 2, 4] {
            let cache = ImageCache::from_config(samples.clone(), &config);
            let loader = BatchLoader::training(&cache, &config);
            let batch = pool(threads).install(|| loader.batch(3, 1).expect("batch"));
            assert_eq!(batch.indices, reference.indices, "{threads} threads");
            assert_eq!(bits(&batch), bits(&reference), "{threads} threads");
        }
        // Another epoch visits other samples or augments them differently.
        let cache = ImageCache::from_config(samples, &config);
        let loader = BatchLoader::training(&cache, &config);
        let other = loader.batch(4, 1).expect("batch");
        assert_ne!(bits(&other), bits(&reference));
        // The same sample in two epochs is augmented differently.
        let a = loader.assemble(0, &[0]).expect("batch");
        let b = loader.assemble(1, &[0]).expect("batch");
        assert_ne!(bits(&a), bits(&b));
        assert_eq!(bits(&a), bits(&loader.assemble(0, &[0]).expect("batch")));
    }

    #[test]
    fn no_file_is_decoded_after_warm_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let samples = write_samples(dir.path(), 9);
        let config = config(24, 4);
        let cache = ImageCache::from_config(samples.clone(), &config);
        let calls = AtomicUsize::new(0);
        let last = AtomicUsize::new(0);
        cache
            .warm(|done| {
                calls.fetch_add(1, Ordering::Relaxed);
                last.fetch_max(done, Ordering::Relaxed);
            })
            .expect("warm");
        assert_eq!((calls.into_inner(), last.into_inner()), (9, 9));
        assert_eq!(cache.decode_count(), 9);
        assert_eq!((cache.cached(), cache.cached_bytes()), (9, 9 * 24 * 24));
        for sample in &samples {
            std::fs::remove_file(&sample.path).expect("delete");
        }
        let training = BatchLoader::training(&cache, &config);
        let evaluation = BatchLoader::evaluation(&cache, &config);
        for epoch in 0..3 {
            for batch in training.batches(epoch).chain(evaluation.batches(epoch)) {
                batch.expect("batch from cache");
            }
        }
        assert_eq!(cache.decode_count(), 9);
        // Warming again is free.
        cache.warm(|_| {}).expect("warm");
        assert_eq!(cache.decode_count(), 9);
    }

    #[test]
    fn lazy_filling_decodes_each_file_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let samples = write_samples(dir.path(), 7);
        let config = config(16, 3);
        let cache = ImageCache::from_config(samples, &config);
        let loader = BatchLoader::training(&cache, &config);
        for epoch in 0..4 {
            for batch in loader.batches(epoch) {
                batch.expect("batch");
            }
        }
        assert_eq!(cache.decode_count(), 7);
    }

    #[test]
    fn evaluation_batches_are_normalised_resized_pixels() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A constant 60x30 image padded into 20x20: rows 5..15 hold the value, the rest is 0.
        let path = dir.path().join("flat.png");
        image::GrayImage::from_pixel(60, 30, image::Luma([204u8]))
            .save(&path)
            .expect("write");
        let config = LoaderConfig {
            preprocess: PreprocessConfig {
                size: 20,
                mean: 0.2,
                std: 0.5,
                ..PreprocessConfig::default()
            },
            ..LoaderConfig::default()
        };
        let cache = ImageCache::from_config(vec![Sample { path, label: 1 }], &config);
        let batch = BatchLoader::evaluation(&cache, &config)
            .batch(0, 0)
            .expect("batch");
        assert_eq!(batch.shape, [1, 1, 20, 20]);
        assert_eq!(batch.labels, [1]);
        for y in 0..20 {
            for x in 0..20 {
                let value = batch.images[y * 20 + x];
                let expected = if (5..15).contains(&y) {
                    (0.8 - 0.2) / 0.5
                } else {
                    -0.4
                };
                assert!((value - expected).abs() < 1e-5, "({x}, {y}): {value}");
            }
        }
    }

    #[test]
    fn errors_name_the_file_and_keep_the_rest_cached() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut samples = write_samples(dir.path(), 5);
        let corrupt = dir.path().join("corrupt-scan.png");
        std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nnot really a png").expect("write");
        samples[3].path = corrupt;
        samples[1].path = dir.path().join("missing-scan.png");
        let config = config(16, 5);
        let cache = ImageCache::from_config(samples, &config);
        let error = cache.warm(|_| {}).expect_err("two bad files");
        assert!(error.to_string().contains("missing-scan.png"), "{error}");
        assert_eq!(cache.cached(), 3);
        let error = cache.get(3).expect_err("corrupt");
        assert!(error.to_string().contains("corrupt-scan.png"), "{error}");
        let loader = BatchLoader::evaluation(&cache, &config);
        let error = loader.batch(0, 0).expect_err("batch with bad files");
        assert!(error.to_string().contains("missing-scan.png"), "{error}");
        assert!(matches!(
            loader.batch(0, 1),
            Err(LoaderError::NoSuchBatch { index: 1, count: 1 })
        ));
        assert!(matches!(
            cache.get(5),
            Err(LoaderError::NoSuchSample { index: 5, len: 5 })
        ));
        assert!(matches!(
            loader.assemble(0, &[0, 9]),
            Err(LoaderError::NoSuchSample { index: 9, .. })
        ));
    }

    #[test]
    fn empty_dataset_gives_no_batches() {
        let config = config(16, 4);
        let cache = ImageCache::from_config(Vec::new(), &config);
        cache.warm(|_| {}).expect("warm");
        let loader = BatchLoader::training(&cache, &config);
        assert_eq!(loader.batches(0).count(), 0);
        assert!(loader.epoch_order(0).is_empty());
    }

    #[test]
    fn config_round_trips_through_json_and_fills_defaults() {
        let config = LoaderConfig {
            augment: None,
            seed: 7,
            ..LoaderConfig::default()
        };
        let json = serde_json::to_string(&config).expect("serialise");
        let back: LoaderConfig = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, config);
        let partial: LoaderConfig = serde_json::from_str(r#"{"batch_size": 8}"#).expect("parse");
        assert_eq!(partial.batch_size, 8);
        assert_eq!(partial.preprocess, PreprocessConfig::default());
    }
}
