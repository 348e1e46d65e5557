//! The settings of decoding: the pixel budget and the DICOM display window.

use serde::{Deserialize, Serialize};

/// A Hounsfield-unit display window applied to DICOM data (centre/level and width).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HuWindow {
    /// Window centre (level) in HU.
    pub center: f32,
    /// Window width in HU.
    pub width: f32,
}

impl Default for HuWindow {
    /// The lung window: W 1500 / L -600.
    fn default() -> Self {
        Self {
            center: -600.0,
            width: 1500.0,
        }
    }
}

/// Limits and settings for decoding.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DecodeOptions {
    /// Refuse images with more pixels than this, checked from the header before allocating.
    pub max_pixels: u64,
    /// Window applied to DICOM Hounsfield units.
    pub dicom_window: HuWindow,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            max_pixels: 64 * 1024 * 1024,
            dicom_window: HuWindow::default(),
        }
    }
}
