//! Image handling for covidct, independent of any deep-learning framework.
//!
//! Every file, whatever its format, channel layout or bit depth, is decoded into one canonical
//! layout ([`GreyImage`]: 8-bit, single channel) before anything else sees it, so that the file
//! format can never leak into a model. The original layout is kept as metadata
//! ([`SourceInfo`]) for dataset audits.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod augment;
mod decode;
mod dicom;
mod failure;
mod features;
mod hash;
mod luma;
mod mask;
mod options;
mod perturb;
mod preprocess;
mod quality;
mod types;

pub use augment::{AugmentConfig, augment, sample_rng};
pub use decode::{
    MEMORY_PATH, decode_bytes, decode_bytes_named, decode_file, format_hint_from_path, probe_bytes,
    probe_file,
};
pub use failure::{DecodeError, DecodeErrorKind};
pub use features::{FEATURE_NAMES, ImageFeatures, image_features};
pub use hash::{
    ContentHash, PerceptualHash, THUMBNAIL_SIDE, Thumbnail, content_hash, perceptual_hash,
    thumbnail,
};
pub use luma::COLOUR_TOLERANCE;
pub use mask::{BodyMask, body_mask, otsu_threshold};
pub use options::{DecodeOptions, HuWindow};
pub use perturb::{PerturbError, Perturbation};
pub use preprocess::{
    Orientation, PreprocessConfig, ResizeMode, fit_input, normalize_into, orient, resize_square,
};
pub use quality::{ImageChecks, Range, Refusal, SliceStats};
pub use types::{DecodedImage, FileFormat, GreyImage, PixelLayout, SeriesInfo, SourceInfo};
