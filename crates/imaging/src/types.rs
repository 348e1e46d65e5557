//! Plain image types shared by every stage.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The canonical in-memory image: 8-bit, single channel, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GreyImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height` intensities, row by row.
    pub pixels: Vec<u8>,
}

impl GreyImage {
    /// Wraps a pixel buffer; `None` when its length is not `width * height`.
    pub fn new(width: u32, height: u32, pixels: Vec<u8>) -> Option<Self> {
        (pixels.len() as u64 == u64::from(width) * u64::from(height)).then_some(Self {
            width,
            height,
            pixels,
        })
    }

    /// An image of one constant intensity.
    pub fn filled(width: u32, height: u32, value: u8) -> Self {
        Self {
            width,
            height,
            pixels: vec![value; width as usize * height as usize],
        }
    }

    /// The intensity at column `x`, row `y` (panics when out of bounds, like slice indexing).
    pub fn get(&self, x: u32, y: u32) -> u8 {
        self.pixels[y as usize * self.width as usize + x as usize]
    }
}

/// The container format a file was decoded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Portable Network Graphics.
    Png,
    /// JPEG / JFIF.
    Jpeg,
    /// Windows bitmap.
    Bmp,
    /// Tagged Image File Format.
    Tiff,
    /// DICOM Part 10 file.
    Dicom,
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileFormat::Png => "PNG",
            FileFormat::Jpeg => "JPEG",
            FileFormat::Bmp => "BMP",
            FileFormat::Tiff => "TIFF",
            FileFormat::Dicom => "DICOM",
        })
    }
}

/// The channel layout a file stored its pixels in, before canonicalisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelLayout {
    /// One grey channel.
    Grey,
    /// Grey plus alpha.
    GreyAlpha,
    /// Red, green, blue.
    Rgb,
    /// Red, green, blue, alpha.
    Rgba,
}

/// What a file looked like before it was reduced to the canonical layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SourceInfo {
    /// Container format.
    pub format: FileFormat,
    /// Channel layout.
    pub layout: PixelLayout,
    /// Bits per channel sample (8, 16, 32, or the DICOM `BitsStored`).
    pub bit_depth: u8,
    /// Original width in pixels.
    pub width: u32,
    /// Original height in pixels.
    pub height: u32,
}

impl SourceInfo {
    /// A short label of layout and depth, e.g. `RGBA 8-bit`: the unit of shortcut analysis.
    pub fn layout_label(&self) -> String {
        let layout = match self.layout {
            PixelLayout::Grey => "grey",
            PixelLayout::GreyAlpha => "grey+alpha",
            PixelLayout::Rgb => "RGB",
            PixelLayout::Rgba => "RGBA",
        };
        format!("{} {layout} {}-bit", self.format, self.bit_depth)
    }
}

/// Where a DICOM slice sits: its study, its series and its place in the series, read from the
/// header (each part absent when the file does not say). Other formats carry none.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SeriesInfo {
    /// StudyInstanceUID (0020,000D).
    pub study_uid: Option<String>,
    /// SeriesInstanceUID (0020,000E).
    pub series_uid: Option<String>,
    /// InstanceNumber (0020,0013).
    pub instance_number: Option<i64>,
    /// ImagePositionPatient (0020,0032): the first pixel's position in millimetres.
    pub position: Option<[f64; 3]>,
    /// ImageOrientationPatient (0020,0037): row and column direction cosines.
    pub orientation: Option<[f64; 6]>,
}

impl SeriesInfo {
    /// The slice's position along the normal of its plane (row × column direction), when the
    /// header gives both position and orientation: the coordinate slices are ordered by.
    pub fn slice_location(&self) -> Option<f64> {
        let (p, o) = (self.position?, self.orientation?);
        let normal = [
            o[1] * o[5] - o[2] * o[4],
            o[2] * o[3] - o[0] * o[5],
            o[0] * o[4] - o[1] * o[3],
        ];
        Some(p[0] * normal[0] + p[1] * normal[1] + p[2] * normal[2])
    }
}

/// A decoded image in canonical layout with the description of its source.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedImage {
    /// Canonical pixels.
    pub image: GreyImage,
    /// The original layout.
    pub source: SourceInfo,
    /// Pixels whose colour channels differ by more than [`crate::COLOUR_TOLERANCE`]: 0 for grey
    /// sources and for grey content stored as colour (CT is grey; colour means something else).
    pub coloured_pixels: u64,
    /// The study, series and place of a DICOM slice; `None` for other formats.
    pub series: Option<SeriesInfo>,
}
