//! Graded image perturbations for robustness analysis: what a different scanner, protocol or
//! export pipeline could do to an image, at a chosen severity in physical units.
//!
//! A [`Perturbation`] is applied to the decoded image at its native resolution, before the
//! model's own preprocessing, so a model sees what the changed pipeline would hand it. Every
//! kind keeps the image's size, and each has a documented severity scale (see
//! [`Perturbation::unit`]) and a default list of severities, mildest first
//! ([`Perturbation::default_severities`]). Only [`Perturbation::Noise`] is random; it is a pure
//! function of the seed passed to [`Perturbation::apply`].
//!
//! The primitives are the augmentation's (affine warp, Gaussian blur, Gaussian noise, intensity
//! lookup table) and the preprocessing's antialiased resize; JPEG is a real encode/decode round
//! trip through the same decoder as JPEG files.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::augment::{
    Crop, add_gaussian_noise, gaussian_blur, map_intensities, mean_intensity, warp,
};
use crate::decode::decode_bytes;
use crate::options::DecodeOptions;
use crate::preprocess::resize_exact;
use crate::types::{FileFormat, GreyImage};

/// A kind of image degradation with a severity scale in physical units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Perturbation {
    /// Additive Gaussian noise; severity: its standard deviation in grey levels (0–255 scale).
    Noise,
    /// Gaussian blur; severity: sigma in pixels of the native image.
    Blur,
    /// Contrast scaled around the image's mean intensity; severity: the factor (1 = unchanged,
    /// below 1 flatter).
    Contrast,
    /// Gamma curve `255 · (v / 255)^γ`; severity: the exponent γ (1 = unchanged, above 1
    /// darker mid-tones).
    Gamma,
    /// JPEG compression round trip; severity: the encoder quality (1–100, lower is worse).
    Jpeg,
    /// Downscaling then upscaling back (antialiased triangle filter both ways); severity: the
    /// scale factor of the intermediate image (1 = unchanged).
    Downscale,
    /// Rotation about the centre, bilinear, black outside the source; severity: degrees.
    Rotation,
    /// Shift right and down, black where the image moved away; severity: the shift as a
    /// fraction of the width and of the height.
    Translation,
    /// Centre crop resized back to the full size (a zoom); severity: the kept fraction of the
    /// width and of the height (1 = unchanged).
    Crop,
}

/// Why a perturbation could not be applied or parsed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PerturbError {
    /// The severity is outside the kind's valid range.
    #[error("invalid severity {severity} for perturbation `{perturbation}`: expected {expected}")]
    InvalidSeverity {
        /// The perturbation.
        perturbation: Perturbation,
        /// The severity given.
        severity: f64,
        /// The valid range, in words.
        expected: &'static str,
    },
    /// A name that is not one of [`Perturbation::ALL`].
    #[error(
        "unknown perturbation `{name}`: expected one of {}",
        Perturbation::names()
    )]
    UnknownName {
        /// The name given.
        name: String,
    },
    /// The image's pixel buffer does not match its size.
    #[error("malformed image: {width}×{height} with {len} pixel values")]
    MalformedImage {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Number of pixel values.
        len: usize,
    },
    /// The JPEG round trip failed.
    #[error("JPEG round trip at quality {quality}: {reason}")]
    Jpeg {
        /// The quality asked for.
        quality: u8,
        /// What went wrong.
        reason: String,
    },
}

impl Perturbation {
    /// Every kind, in the order reports list them.
    pub const ALL: [Perturbation; 9] = [
        Perturbation::Noise,
        Perturbation::Blur,
        Perturbation::Contrast,
        Perturbation::Gamma,
        Perturbation::Jpeg,
        Perturbation::Downscale,
        Perturbation::Rotation,
        Perturbation::Translation,
        Perturbation::Crop,
    ];

    /// The snake_case name, as serde writes it and [`FromStr`] reads it.
    pub fn name(self) -> &'static str {
        match self {
            Perturbation::Noise => "noise",
            Perturbation::Blur => "blur",
            Perturbation::Contrast => "contrast",
            Perturbation::Gamma => "gamma",
            Perturbation::Jpeg => "jpeg",
            Perturbation::Downscale => "downscale",
            Perturbation::Rotation => "rotation",
            Perturbation::Translation => "translation",
            Perturbation::Crop => "crop",
        }
    }

    /// Every name, comma-separated (for messages).
    pub fn names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }

    /// What the severity measures, with its unit.
    pub fn unit(self) -> &'static str {
        match self {
            Perturbation::Noise => "noise σ, grey levels of 255",
            Perturbation::Blur => "blur σ, pixels",
            Perturbation::Contrast => "contrast factor around the mean",
            Perturbation::Gamma => "gamma exponent",
            Perturbation::Jpeg => "JPEG quality",
            Perturbation::Downscale => "intermediate scale factor",
            Perturbation::Rotation => "degrees",
            Perturbation::Translation => "shift, fraction of the size",
            Perturbation::Crop => "kept fraction of the size",
        }
    }

    /// The severity that leaves every image unchanged; `None` for JPEG, which is lossy at any
    /// quality.
    pub fn identity(self) -> Option<f64> {
        match self {
            Perturbation::Noise
            | Perturbation::Blur
            | Perturbation::Rotation
            | Perturbation::Translation => Some(0.0),
            Perturbation::Contrast
            | Perturbation::Gamma
            | Perturbation::Downscale
            | Perturbation::Crop => Some(1.0),
            Perturbation::Jpeg => None,
        }
    }

    /// The default severities, mildest first: from what a change of scanner or export could
    /// plausibly do to what clearly damages the image.
    pub fn default_severities(self) -> &'static [f64] {
        match self {
            Perturbation::Noise => &[4.0, 8.0, 16.0, 32.0],
            Perturbation::Blur => &[0.5, 1.0, 2.0, 4.0],
            Perturbation::Contrast => &[0.8, 0.6, 0.4, 0.2],
            Perturbation::Gamma => &[1.25, 1.5, 2.0, 3.0],
            Perturbation::Jpeg => &[75.0, 50.0, 25.0, 10.0],
            Perturbation::Downscale => &[0.75, 0.5, 0.35, 0.25],
            Perturbation::Rotation => &[2.5, 5.0, 10.0, 20.0],
            Perturbation::Translation => &[0.025, 0.05, 0.1, 0.2],
            Perturbation::Crop => &[0.95, 0.9, 0.8, 0.7],
        }
    }

    /// `count` of the default severities, spread evenly over the list and always ending with
    /// the most severe (`count` is clamped to 1 ..= the list's length).
    pub fn severities(self, count: usize) -> Vec<f64> {
        let all = self.default_severities();
        let count = count.clamp(1, all.len());
        (1..=count)
            .map(|i| all[(i * all.len()).div_ceil(count) - 1])
            .collect()
    }

    /// The valid severities, in words.
    fn valid_range(self) -> &'static str {
        match self {
            Perturbation::Noise => "a number in [0, 255]",
            Perturbation::Blur => "a number in [0, 20]",
            Perturbation::Contrast => "a number in [0, 10]",
            Perturbation::Gamma => "a number in (0, 10]",
            Perturbation::Jpeg => "a whole number in [1, 100]",
            Perturbation::Downscale | Perturbation::Crop => "a number in (0, 1]",
            Perturbation::Rotation => "a number in [-180, 180]",
            Perturbation::Translation => "a number in (-1, 1)",
        }
    }

    /// Checks that `severity` is in the kind's valid range.
    pub fn validate(self, severity: f64) -> Result<(), PerturbError> {
        let s = severity;
        let valid = s.is_finite()
            && match self {
                Perturbation::Noise => (0.0..=255.0).contains(&s),
                Perturbation::Blur => (0.0..=20.0).contains(&s),
                Perturbation::Contrast => (0.0..=10.0).contains(&s),
                Perturbation::Gamma => s > 0.0 && s <= 10.0,
                Perturbation::Jpeg => (1.0..=100.0).contains(&s) && s.fract() == 0.0,
                Perturbation::Downscale | Perturbation::Crop => s > 0.0 && s <= 1.0,
                Perturbation::Rotation => (-180.0..=180.0).contains(&s),
                Perturbation::Translation => s > -1.0 && s < 1.0,
            };
        if valid {
            Ok(())
        } else {
            Err(PerturbError::InvalidSeverity {
                perturbation: self,
                severity,
                expected: self.valid_range(),
            })
        }
    }

    /// The image perturbed at `severity`, of the same size.
    ///
    /// Deterministic: only [`Perturbation::Noise`] uses `seed`, and the same seed gives the same
    /// noise (pass a distinct seed per image for independent noise; the same seed at several
    /// severities gives the same noise pattern, scaled). An empty image is returned unchanged.
    /// Fails on a severity outside the kind's range, a malformed image, or an image the JPEG
    /// encoder refuses (a side above 65,535 pixels).
    pub fn apply(
        self,
        image: &GreyImage,
        severity: f64,
        seed: u64,
    ) -> Result<GreyImage, PerturbError> {
        self.validate(severity)?;
        let (width, height) = (image.width as usize, image.height as usize);
        if image.pixels.len() != width * height {
            return Err(PerturbError::MalformedImage {
                width: image.width,
                height: image.height,
                len: image.pixels.len(),
            });
        }
        if width == 0 || height == 0 {
            return Ok(image.clone()); // nothing to perturb
        }
        // Severities are validated; single precision is ample for image operations.
        let s = severity as f32;
        let (w, h) = (width as f32, height as f32);
        let centred = |fraction: f32, shift: f32| Crop {
            center_x: w / 2.0 - shift * w,
            center_y: h / 2.0 - shift * h,
            width: fraction * w,
            height: fraction * h,
        };
        let mut out = image.clone();
        match self {
            Perturbation::Noise => add_gaussian_noise(&mut out.pixels, s, seed),
            Perturbation::Blur => gaussian_blur(&mut out, s),
            Perturbation::Contrast => {
                let mean = mean_intensity(&out.pixels);
                map_intensities(&mut out.pixels, |v| (v - mean) * s + mean);
            }
            Perturbation::Gamma => {
                map_intensities(&mut out.pixels, |v| 255.0 * (v / 255.0).powf(s));
            }
            Perturbation::Jpeg => out = jpeg_round_trip(image, severity as u8)?,
            Perturbation::Downscale => {
                let scaled = |side: usize| ((side as f32 * s).round() as u32).max(1);
                let small = resize_exact(image, scaled(width), scaled(height));
                out = resize_exact(&small, image.width, image.height);
            }
            Perturbation::Rotation => out = warp(image, None, false, s.to_radians()),
            Perturbation::Translation => out = warp(image, Some(centred(1.0, s)), false, 0.0),
            Perturbation::Crop => out = warp(image, Some(centred(s, 0.0)), false, 0.0),
        }
        Ok(out)
    }
}

/// Encodes `image` as a baseline grey JPEG at `quality` and decodes it again.
fn jpeg_round_trip(image: &GreyImage, quality: u8) -> Result<GreyImage, PerturbError> {
    let failed = |reason: String| PerturbError::Jpeg { quality, reason };
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode(
            &image.pixels,
            image.width,
            image.height,
            image::ExtendedColorType::L8,
        )
        .map_err(|e| failed(e.to_string()))?;
    let decoded = decode_bytes(&bytes, Some(FileFormat::Jpeg), &DecodeOptions::default())
        .map_err(|e| failed(e.to_string()))?;
    Ok(decoded.image)
}

impl fmt::Display for Perturbation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Perturbation {
    type Err = PerturbError;

    /// Parses a [`Perturbation::name`] (surrounding spaces ignored, case-insensitive).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wanted = text.trim();
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| PerturbError::UnknownName {
                name: text.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::image_features;

    /// A CT-like test image: a bright disc with texture on a dark background, non-square.
    fn phantom() -> GreyImage {
        let (w, h) = (96u32, 80u32);
        let pixels = (0..h)
            .flat_map(|y| {
                (0..w).map(move |x| {
                    let (dx, dy) = (x as f32 - 48.0, y as f32 - 40.0);
                    let inside = dx * dx + dy * dy < 30.0 * 30.0;
                    let texture = ((x * 7 + y * 13) % 23) as u8 * 3;
                    if inside {
                        140 + texture
                    } else {
                        10 + texture / 3
                    }
                })
            })
            .collect();
        GreyImage::new(w, h, pixels).expect("size matches")
    }

    #[test]
    fn identity_severities_leave_the_image_unchanged() {
        let image = phantom();
        for kind in Perturbation::ALL {
            if let Some(identity) = kind.identity() {
                let out = kind.apply(&image, identity, 3).expect("valid severity");
                assert_eq!(out, image, "{kind} at {identity}");
            }
        }
    }

    #[test]
    fn every_default_severity_is_valid_keeps_the_size_and_changes_the_image() {
        let image = phantom();
        for kind in Perturbation::ALL {
            let severities = kind.default_severities();
            assert!(severities.len() >= 4, "{kind}");
            for &severity in severities {
                assert_ne!(Some(severity), kind.identity(), "{kind}");
                let out = kind.apply(&image, severity, 1).expect("valid severity");
                assert_eq!((out.width, out.height), (image.width, image.height));
                assert_eq!(out.pixels.len(), image.pixels.len());
                assert_ne!(out, image, "{kind} at {severity} changed nothing");
            }
        }
    }

    #[test]
    fn effects_grow_with_severity() {
        let image = phantom();
        let feature = |kind: Perturbation, severity: f64, f: &dyn Fn(&GreyImage) -> f64| {
            f(&kind.apply(&image, severity, 9).expect("valid"))
        };
        let std = |i: &GreyImage| image_features(i).std;
        let sharpness = |i: &GreyImage| image_features(i).sharpness;
        let mean = |i: &GreyImage| image_features(i).mean;
        // Mean absolute difference from the clean image.
        let distance = |i: &GreyImage| {
            let total: u64 = i
                .pixels
                .iter()
                .zip(&image.pixels)
                .map(|(&a, &b)| u64::from(a.abs_diff(b)))
                .sum();
            total as f64 / i.pixels.len() as f64
        };
        let by_severity = |kind: Perturbation, f: &dyn Fn(&GreyImage) -> f64| -> Vec<f64> {
            kind.default_severities()
                .iter()
                .map(|&s| feature(kind, s, f))
                .collect()
        };
        let increasing = |kind: Perturbation, f: &dyn Fn(&GreyImage) -> f64| {
            let values = by_severity(kind, f);
            assert!(
                values.windows(2).all(|w| w[0] < w[1]),
                "{kind}: {values:?} not increasing"
            );
            values
        };
        let decreasing = |kind: Perturbation, f: &dyn Fn(&GreyImage) -> f64| {
            let values = by_severity(kind, f);
            assert!(
                values.windows(2).all(|w| w[0] > w[1]),
                "{kind}: {values:?} not decreasing"
            );
        };
        let noisy = increasing(Perturbation::Noise, &std);
        assert!(noisy[0] > std(&image));
        decreasing(Perturbation::Blur, &sharpness);
        decreasing(Perturbation::Contrast, &std);
        decreasing(Perturbation::Gamma, &mean);
        decreasing(Perturbation::Downscale, &sharpness);
        for kind in [
            Perturbation::Jpeg,
            Perturbation::Rotation,
            Perturbation::Translation,
            Perturbation::Crop,
        ] {
            increasing(kind, &distance);
        }
    }

    #[test]
    fn geometry_moves_content_as_documented() {
        let image = phantom();
        // Translation by a quarter: the top-left quarter turns black, content moves.
        let shifted = Perturbation::Translation
            .apply(&image, 0.25, 0)
            .expect("valid");
        assert_eq!(shifted.get(0, 0), 0);
        assert_eq!(shifted.get(23, 19), 0);
        assert_eq!(shifted.get(48 + 24, 40 + 20), image.get(48, 40));
        // A centre crop keeps the centre and never shows black in a constant image.
        let flat = GreyImage::filled(50, 40, 200);
        let cropped = Perturbation::Crop.apply(&flat, 0.5, 0).expect("valid");
        assert!(cropped.pixels.iter().all(|&p| p == 200));
        // Rotation blackens the corners.
        let rotated = Perturbation::Rotation.apply(&flat, 20.0, 0).expect("valid");
        assert_eq!(rotated.get(0, 0), 0);
        assert_eq!(rotated.get(25, 20), 200);
    }

    #[test]
    fn noise_is_deterministic_per_seed() {
        let image = phantom();
        let a = Perturbation::Noise.apply(&image, 8.0, 11).expect("valid");
        let b = Perturbation::Noise.apply(&image, 8.0, 11).expect("valid");
        let c = Perturbation::Noise.apply(&image, 8.0, 12).expect("valid");
        assert_eq!(a, b);
        assert_ne!(a, c);
        for kind in Perturbation::ALL {
            let s = kind.default_severities()[1];
            assert_eq!(
                kind.apply(&image, s, 1).expect("valid"),
                kind.apply(&image, s, 1).expect("valid"),
                "{kind}"
            );
        }
    }

    #[test]
    fn jpeg_quality_controls_the_loss() {
        let image = phantom();
        let error = |quality: f64| {
            let out = Perturbation::Jpeg.apply(&image, quality, 0).expect("valid");
            out.pixels
                .iter()
                .zip(&image.pixels)
                .map(|(&a, &b)| f64::from(a.abs_diff(b)))
                .sum::<f64>()
        };
        assert!(error(95.0) < error(50.0));
        assert!(error(50.0) < error(5.0));
        // Wider than JPEG allows (65,535 pixels).
        let wide = GreyImage::filled(65_536, 1, 0);
        assert!(matches!(
            Perturbation::Jpeg.apply(&wide, 50.0, 0),
            Err(PerturbError::Jpeg { quality: 50, .. })
        ));
    }

    #[test]
    fn invalid_severities_and_images_are_refused_with_the_range() {
        let image = phantom();
        let cases = [
            (Perturbation::Noise, -1.0),
            (Perturbation::Noise, f64::NAN),
            (Perturbation::Blur, 21.0),
            (Perturbation::Contrast, -0.1),
            (Perturbation::Gamma, 0.0),
            (Perturbation::Jpeg, 0.0),
            (Perturbation::Jpeg, 50.5),
            (Perturbation::Jpeg, 101.0),
            (Perturbation::Downscale, 0.0),
            (Perturbation::Downscale, 1.5),
            (Perturbation::Rotation, 181.0),
            (Perturbation::Translation, 1.0),
            (Perturbation::Crop, f64::INFINITY),
        ];
        for (kind, severity) in cases {
            let error = kind.apply(&image, severity, 0).expect_err("invalid");
            let message = error.to_string();
            assert!(
                message.contains(kind.name()) && message.contains("expected"),
                "{message}"
            );
        }
        let malformed = GreyImage {
            width: 4,
            height: 4,
            pixels: vec![0; 3],
        };
        assert!(matches!(
            Perturbation::Blur.apply(&malformed, 1.0, 0),
            Err(PerturbError::MalformedImage { len: 3, .. })
        ));
    }

    #[test]
    fn tiny_and_empty_images_survive_every_perturbation() {
        let empty = GreyImage::filled(0, 0, 0);
        for kind in Perturbation::ALL {
            let severity = kind.default_severities()[0];
            assert_eq!(kind.apply(&empty, severity, 0), Ok(empty.clone()));
        }
        for side in [1, 2, 3] {
            let image = GreyImage::filled(side, side + 1, 77);
            for kind in Perturbation::ALL {
                for &severity in kind.default_severities() {
                    let out = kind.apply(&image, severity, 0).expect("valid");
                    assert_eq!((out.width, out.height), (side, side + 1), "{kind}");
                }
            }
        }
    }

    #[test]
    fn names_round_trip_through_serde_and_from_str() {
        for kind in Perturbation::ALL {
            let json = serde_json::to_string(&kind).expect("serialises");
            assert_eq!(json, format!("\"{}\"", kind.name()));
            assert_eq!(kind.name().parse::<Perturbation>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.name());
        }
        assert_eq!(" JPEG ".parse::<Perturbation>(), Ok(Perturbation::Jpeg));
        let error = "bogus".parse::<Perturbation>().expect_err("unknown");
        assert_eq!(
            error.to_string(),
            "unknown perturbation `bogus`: expected one of noise, blur, contrast, gamma, jpeg, \
             downscale, rotation, translation, crop"
        );
    }

    #[test]
    fn severity_subsets_spread_and_end_with_the_most_severe() {
        let all = Perturbation::Noise.default_severities();
        assert_eq!(Perturbation::Noise.severities(1), vec![32.0]);
        assert_eq!(Perturbation::Noise.severities(2), vec![8.0, 32.0]);
        assert_eq!(Perturbation::Noise.severities(3), vec![8.0, 16.0, 32.0]);
        assert_eq!(Perturbation::Noise.severities(4), all.to_vec());
        assert_eq!(Perturbation::Noise.severities(99), all.to_vec());
        assert_eq!(Perturbation::Noise.severities(0), vec![32.0]);
    }
}
