//! Fuzz target: `decode_bytes` and `probe_bytes` on arbitrary bytes with every format hint.
//!
//! Under `cfg(fuzzing)` the decoder does not turn panics into errors, so any panic, abort,
//! out-of-memory or timeout is reported by libFuzzer. The pixel budget is kept small so that a
//! mutated size field cannot make a legitimate-looking allocation larger than the RSS limit.

#![no_main]

use covidct_imaging::{DecodeOptions, FileFormat, decode_bytes, probe_bytes};
use libfuzzer_sys::fuzz_target;

const HINTS: [Option<FileFormat>; 6] = [
    None,
    Some(FileFormat::Png),
    Some(FileFormat::Jpeg),
    Some(FileFormat::Bmp),
    Some(FileFormat::Tiff),
    Some(FileFormat::Dicom),
];

fuzz_target!(|data: &[u8]| {
    let options = DecodeOptions {
        max_pixels: 4 * 1024 * 1024,
        ..DecodeOptions::default()
    };
    for hint in HINTS {
        match decode_bytes(data, hint, &options) {
            Ok(decoded) => {
                let image = &decoded.image;
                assert_eq!(
                    image.pixels.len() as u64,
                    u64::from(image.width) * u64::from(image.height)
                );
                assert_eq!(
                    (decoded.source.width, decoded.source.height),
                    (image.width, image.height)
                );
            }
            Err(e) => assert!(!e.reason.is_empty()),
        }
        let _ = probe_bytes(data, hint, &options);
    }
});
