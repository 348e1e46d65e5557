//! A study request from slices to verdicts: the steps the CLI runs here in one call
//! ([`diagnose`]) and the service runs with its own pool and batcher ([`plan`], [`assemble`]).

use std::path::Path;

use covidct_imaging::{DecodeError, DecodedImage, SeriesInfo, SliceStats, decode_bytes_named};
use covidct_model::{PackageMetadata, Prediction, Predictor};
use rayon::prelude::*;

use crate::error::{SeriesSummary, SliceError, StudyError, Unreadable};
use crate::input::{SliceFile, StudyLimits, check_pixels};
use crate::series::{Series, SeriesKey, SliceOrder, group_series};
use crate::verdict::{SliceScore, StudyRules, StudyVerdict, study_verdict};

/// What a study request may hold, when it gets a verdict, and whether several series are
/// answered one by one.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StudyOptions {
    /// Slice count, bytes and pixels.
    pub limits: StudyLimits,
    /// Verdict rules.
    pub rules: StudyRules,
    /// One answer per series instead of refusing a request that mixes several.
    pub split: bool,
}

/// A decoded slice with its prediction, before it is placed in its series.
#[derive(Debug, Clone)]
pub struct ScoredSlice {
    /// Position in the request.
    pub index: usize,
    /// Its name.
    pub name: String,
    /// Its DICOM series information.
    pub series: Option<SeriesInfo>,
    /// The prediction with the gate's verdict.
    pub prediction: Prediction,
}

/// One slice of a study's answer.
#[derive(Debug, Clone)]
pub struct SliceAnswer {
    /// Position in the request.
    pub index: usize,
    /// Its name.
    pub name: String,
    /// DICOM InstanceNumber.
    pub instance_number: Option<i64>,
    /// Position along the slice normal, in millimetres.
    pub location: Option<f64>,
    /// Its prediction (label withheld in what is shown when the gate refused it).
    pub prediction: Prediction,
}

/// One study (series) answered.
#[derive(Debug, Clone)]
pub struct StudyAnswer {
    /// The series.
    pub series: SeriesKey,
    /// What the slices are ordered by.
    pub ordered_by: SliceOrder,
    /// The verdict.
    pub verdict: StudyVerdict,
    /// Every decoded slice, in order.
    pub slices: Vec<SliceAnswer>,
}

/// Every study of a request.
#[derive(Debug, Clone)]
pub struct Diagnosis {
    /// Slices received.
    pub slices: usize,
    /// One answer per series (one unless split).
    pub studies: Vec<StudyAnswer>,
    /// Slices that could not be decoded.
    pub unreadable: Vec<Unreadable>,
}

/// The series of the decoded slices (`names` and their headers' series information); more
/// than one is refused unless `split`.
pub fn plan(
    names: &[&str],
    infos: &[Option<&SeriesInfo>],
    split: bool,
) -> Result<Vec<Series>, StudyError> {
    let series = group_series(names, infos);
    if series.len() > 1 && !split {
        return Err(StudyError::Mixed(
            series
                .iter()
                .map(|s| SeriesSummary {
                    key: s.key.clone(),
                    slices: s.members.len(),
                })
                .collect(),
        ));
    }
    Ok(series)
}

/// Places scored slices (indexed as in [`plan`]) in their series and gives each series its
/// verdict by the package's group rule.
pub fn assemble(
    series: &[Series],
    slices: Vec<ScoredSlice>,
    metadata: &PackageMetadata,
    rules: &StudyRules,
) -> Vec<StudyAnswer> {
    let mut slices: Vec<Option<ScoredSlice>> = slices.into_iter().map(Some).collect();
    series
        .iter()
        .map(|group| {
            let ordered: Vec<SliceAnswer> = group
                .members
                .iter()
                .filter_map(|&i| slices.get_mut(i).and_then(Option::take))
                .map(|slice| SliceAnswer {
                    index: slice.index,
                    name: slice.name,
                    instance_number: slice.series.as_ref().and_then(|s| s.instance_number),
                    location: slice.series.as_ref().and_then(SeriesInfo::slice_location),
                    prediction: slice.prediction,
                })
                .collect();
            let scores: Vec<SliceScore> = ordered
                .iter()
                .map(|s| SliceScore {
                    probability: s.prediction.probability,
                    in_distribution: s.prediction.in_distribution(),
                })
                .collect();
            StudyAnswer {
                series: group.key.clone(),
                ordered_by: group.ordered_by,
                verdict: study_verdict(metadata, &scores, rules),
                slices: ordered,
            }
        })
        .collect()
}

/// Decodes `files` in parallel (limits checked first, pixels from the headers), groups them
/// into series, scores the decoded slices in batches of `batch_size` and answers each series.
/// `progress` receives the number of slices scored.
pub fn diagnose(
    predictor: &Predictor,
    files: Vec<SliceFile>,
    options: &StudyOptions,
    batch_size: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Diagnosis, StudyError> {
    if files.is_empty() {
        return Err(StudyError::Empty(String::new()));
    }
    options.limits.check_count(files.len())?;
    options
        .limits
        .check_bytes(files.iter().map(|f| f.bytes.len() as u64).sum())?;
    let decode_options = predictor.decode_options();
    check_pixels(&files, &decode_options, &options.limits)?;
    let decoded: Vec<Result<DecodedImage, DecodeError>> = files
        .par_iter()
        .map(|f| decode_bytes_named(&f.bytes, Path::new(&f.name), f.hint(), &decode_options))
        .collect();
    let slices = files.len();
    let mut readable = Vec::new();
    let mut unreadable = Vec::new();
    for (index, (file, result)) in files.into_iter().zip(decoded).enumerate() {
        match result {
            Ok(image) => readable.push((index, file.name, image)),
            Err(error) => unreadable.push(Unreadable {
                index,
                name: file.name,
                error: SliceError {
                    code: error.kind.code(),
                    message: error.reason,
                },
            }),
        }
    }
    if readable.is_empty() {
        return Err(StudyError::nothing_decodable(&unreadable));
    }
    let names: Vec<&str> = readable.iter().map(|(_, n, _)| n.as_str()).collect();
    let infos: Vec<Option<&SeriesInfo>> =
        readable.iter().map(|(_, _, d)| d.series.as_ref()).collect();
    let series = plan(&names, &infos, options.split)?;
    let scored = predictor.score_images(readable.len(), batch_size, progress, &|i| {
        let image = &readable[i].2;
        Ok((image.image.clone(), SliceStats::of(image)))
    })?;
    let scored_slices = readable
        .into_iter()
        .zip(scored)
        .map(|((index, name, image), (scored, stats))| ScoredSlice {
            index,
            name,
            series: image.series,
            prediction: predictor.judge(scored, &stats),
        })
        .collect();
    Ok(Diagnosis {
        slices,
        studies: assemble(&series, scored_slices, predictor.metadata(), &options.rules),
        unreadable,
    })
}
