//! Decoding every image of a scan once, in parallel, into the facts that inspection and
//! splitting need: original layout, content hash, thumbnail and perceptual hash.

use crate::error::DataError;
use crate::problem::Problem;
use crate::scan::{DatasetFile, Scan};
use covidct_imaging::{
    ContentHash, DecodeOptions, PerceptualHash, SourceInfo, Thumbnail, content_hash, decode_file,
    perceptual_hash, thumbnail,
};
use rayon::prelude::*;

/// The facts about one readable image.
#[derive(Clone, Debug)]
pub struct ImageRecord {
    /// Where it is and which class it belongs to.
    pub file: DatasetFile,
    /// Its original format, layout, depth and size.
    pub source: SourceInfo,
    /// Hash of the canonical pixels: equal for exact duplicates.
    pub content_hash: ContentHash,
    /// Small thumbnail for similarity distances.
    pub thumbnail: Thumbnail,
    /// 64-bit DCT perceptual hash for near-duplicates.
    pub perceptual_hash: PerceptualHash,
}

/// Every image of a dataset, decoded once.
#[derive(Clone, Debug)]
pub struct Analysis {
    /// The scan it came from (root, layout, classes, skipped files).
    pub scan: Scan,
    /// Readable images, in the scan's order.
    pub records: Vec<ImageRecord>,
    /// Image files that could not be decoded, with the reason.
    pub invalid: Vec<Problem>,
}

impl Analysis {
    /// Scans the dataset folder `dir` and decodes every image: `on_scanned` gets the number of
    /// files before decoding starts, `on_progress` is called once per file; the problems met
    /// are logged as warnings.
    pub fn of_dir(
        dir: &std::path::Path,
        skip_invalid: bool,
        decode: &DecodeOptions,
        on_scanned: impl FnOnce(usize),
        on_progress: &(dyn Fn() + Sync),
    ) -> Result<Self, crate::DataError> {
        let started = std::time::Instant::now();
        let scan = crate::scan_dataset(dir, skip_invalid)?;
        on_scanned(scan.files.len());
        let analysis = Self::run(scan, decode, on_progress);
        tracing::info!(
            images = analysis.records.len(),
            invalid = analysis.invalid.len(),
            skipped = analysis.scan.problems.len(),
            seconds = started.elapsed().as_secs_f32(),
            "dataset decoded"
        );
        for problem in &analysis.scan.problems {
            tracing::warn!(path = %problem.path, "{}", problem.reason);
        }
        Ok(analysis)
    }

    /// Decodes all files of `scan` in parallel; `on_progress` is called once per file.
    pub fn run(scan: Scan, decode: &DecodeOptions, on_progress: &(dyn Fn() + Sync)) -> Self {
        let results: Vec<Result<ImageRecord, Problem>> = scan
            .files
            .par_iter()
            .map(|file| {
                let outcome = decode_file(&file.path, decode)
                    .map(|decoded| {
                        let thumb = thumbnail(&decoded.image);
                        ImageRecord {
                            file: file.clone(),
                            source: decoded.source,
                            content_hash: content_hash(&decoded.image),
                            perceptual_hash: perceptual_hash(&thumb),
                            thumbnail: thumb,
                        }
                    })
                    .map_err(|error| Problem {
                        path: file.path.display().to_string(),
                        reason: error.reason,
                    });
                on_progress();
                outcome
            })
            .collect();
        let mut records = Vec::with_capacity(results.len());
        let mut invalid = Vec::new();
        for result in results {
            match result {
                Ok(record) => records.push(record),
                Err(problem) => invalid.push(problem),
            }
        }
        Self {
            scan,
            records,
            invalid,
        }
    }

    /// Fails on undecodable images unless `skip_invalid` (then they are only listed), and when
    /// fewer than two classes keep images.
    pub fn require_usable(&self, skip_invalid: bool) -> Result<(), DataError> {
        if !self.invalid.is_empty() && !skip_invalid {
            return Err(DataError::InvalidFiles(self.invalid.clone()));
        }
        let mut classes: Vec<&str> = self.records.iter().map(|r| r.file.class.as_str()).collect();
        classes.sort_unstable();
        classes.dedup();
        if classes.len() < 2 {
            return Err(DataError::Layout {
                path: self.scan.root.clone(),
                reason: format!(
                    "only {} class(es) have readable images; a classifier needs at least two",
                    classes.len()
                ),
            });
        }
        Ok(())
    }

    /// A fingerprint of the dataset's content: paths, labels and pixel hashes, order-independent
    /// of the file system. Two datasets with the same fingerprint hold the same labelled pixels.
    pub fn fingerprint(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        for record in &self.records {
            hasher.update(record.file.relative.as_bytes());
            hasher.update(&[0]);
            hasher.update(record.file.class.as_bytes());
            hasher.update(&[0]);
            hasher.update(&record.content_hash);
        }
        hex::encode(&hasher.finalize().as_bytes()[..16])
    }
}
