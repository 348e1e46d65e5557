//! Property test: mutated valid images (bit flips, truncation, insertion, overwritten length
//! fields) never make decoding or probing panic; they decode or return an error.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use covidct_imaging::{DecodeOptions, FileFormat, decode_bytes, probe_bytes};
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, LumaA, Rgb, Rgba};
use proptest::prelude::*;
use std::io::Cursor;
use std::sync::OnceLock;

fn encode(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).expect("encode");
    out.into_inner()
}

fn dicom(ts: &str) -> Vec<u8> {
    let mut obj = InMemDicomObject::new_empty();
    let mut put = |tag, vr, value: PrimitiveValue| {
        obj.put(DataElement::new(tag, vr, value));
    };
    put(tags::SAMPLES_PER_PIXEL, VR::US, 1u16.into());
    put(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2".into(),
    );
    put(tags::ROWS, VR::US, 6u16.into());
    put(tags::COLUMNS, VR::US, 5u16.into());
    put(tags::BITS_ALLOCATED, VR::US, 16u16.into());
    put(tags::BITS_STORED, VR::US, 12u16.into());
    put(tags::HIGH_BIT, VR::US, 11u16.into());
    put(tags::PIXEL_REPRESENTATION, VR::US, 1u16.into());
    put(tags::RESCALE_INTERCEPT, VR::DS, "-1024".into());
    put(tags::RESCALE_SLOPE, VR::DS, "1".into());
    let words: Vec<u16> = (0..30u16).map(|i| i * 97).collect();
    put(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(words.into()));
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .media_storage_sop_class_uid(uids::CT_IMAGE_STORAGE)
                .media_storage_sop_instance_uid("1.2.3.4")
                .transfer_syntax(ts),
        )
        .expect("meta");
    let mut out = Vec::new();
    file.write_all(&mut out).expect("write");
    out
}

/// Small valid files of every format and several layouts.
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let (w, h) = (9, 7);
        let px = |x: u32, y: u32, c: u32| ((x * 31 + y * 57 + c * 91) % 256) as u8;
        let grey = DynamicImage::ImageLuma8(ImageBuffer::from_fn(w, h, |x, y| Luma([px(x, y, 0)])));
        let grey_alpha = DynamicImage::ImageLumaA8(ImageBuffer::from_fn(w, h, |x, y| {
            LumaA([px(x, y, 0), px(x, y, 1)])
        }));
        let rgb = DynamicImage::ImageRgb8(ImageBuffer::from_fn(w, h, |x, y| {
            Rgb([px(x, y, 0), px(x, y, 1), px(x, y, 2)])
        }));
        let rgba16 = DynamicImage::ImageRgba16(ImageBuffer::from_fn(w, h, |x, y| {
            let v = |c| u16::from(px(x, y, c)) * 251;
            Rgba([v(0), v(1), v(2), v(3)])
        }));
        let grey16 = DynamicImage::ImageLuma16(ImageBuffer::from_fn(w, h, |x, y| {
            Luma([u16::from(px(x, y, 0)) * 257])
        }));
        vec![
            encode(grey.clone(), ImageFormat::Png),
            encode(grey_alpha, ImageFormat::Png),
            encode(rgba16.clone(), ImageFormat::Png),
            encode(grey.clone(), ImageFormat::Jpeg),
            encode(rgb.clone(), ImageFormat::Jpeg),
            encode(rgb.clone(), ImageFormat::Bmp),
            encode(grey16, ImageFormat::Tiff),
            encode(rgb, ImageFormat::Tiff),
            dicom("1.2.840.10008.1.2.1"),
            dicom("1.2.840.10008.1.2"),
        ]
    })
}

#[derive(Clone, Debug)]
enum Mutation {
    FlipBit {
        at: usize,
        bit: u8,
    },
    SetByte {
        at: usize,
        value: u8,
    },
    /// Overwrites 4 bytes with a big value: hits length and dimension fields.
    SetBigU32 {
        at: usize,
        value: u32,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Remove {
        at: usize,
        len: usize,
    },
    Truncate {
        at: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::SetByte { at, value }),
        1 => (any::<usize>(), prop_oneof![Just(u32::MAX), Just(0x7FFF_FFFF), 0x10000u32..0x1000_0000])
            .prop_map(|(at, value)| Mutation::SetBigU32 { at, value }),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (any::<usize>(), 1usize..32).prop_map(|(at, len)| Mutation::Remove { at, len }),
        1 => any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let n = bytes.len();
    match *m {
        Mutation::FlipBit { at, bit } => bytes[at % n] ^= 1 << bit,
        Mutation::SetByte { at, value } => bytes[at % n] = value,
        Mutation::SetBigU32 { at, value } => {
            let at = at % n;
            let end = (at + 4).min(n);
            let le = value.to_le_bytes();
            let be = value.to_be_bytes();
            let src = if at.is_multiple_of(2) { le } else { be };
            bytes[at..end].copy_from_slice(&src[..end - at]);
        }
        Mutation::Insert { at, bytes: ref ins } => {
            let at = at % (n + 1);
            bytes.splice(at..at, ins.iter().copied());
        }
        Mutation::Remove { at, len } => {
            let at = at % n;
            let end = (at + len).min(n);
            bytes.drain(at..end);
        }
        Mutation::Truncate { at } => bytes.truncate(at % n),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_images_never_panic(
        seed in 0usize..10,
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let mut bytes = seeds()[seed % seeds().len()].clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        // A small pixel budget keeps mutated size fields from costing much memory.
        let options = DecodeOptions { max_pixels: 1 << 20, ..DecodeOptions::default() };
        for hint in [None, Some(FileFormat::Png), Some(FileFormat::Dicom)] {
            // Panics inside decoders are caught and reported with this marker: none expected.
            if let Err(e) = decode_bytes(&bytes, hint, &options) {
                prop_assert!(!e.reason.contains("fail unexpectedly"), "{}", e);
                prop_assert!(!e.reason.is_empty());
            }
            if let Err(e) = probe_bytes(&bytes, hint, &options) {
                prop_assert!(!e.reason.contains("fail unexpectedly"), "{}", e);
            }
        }
    }
}

#[test]
fn seeds_are_valid() {
    for (i, seed) in seeds().iter().enumerate() {
        let d = decode_bytes(seed, None, &DecodeOptions::default());
        assert!(d.is_ok(), "seed {i}: {:?}", d.err());
    }
}

/// Writes the seed files as a fuzzing corpus into `$COVIDCT_FUZZ_CORPUS` (see `fuzz/README.md`).
#[test]
#[ignore = "writes files; run explicitly to seed the fuzz corpus"]
fn write_fuzz_corpus() {
    let Some(dir) = std::env::var_os("COVIDCT_FUZZ_CORPUS") else {
        eprintln!("set COVIDCT_FUZZ_CORPUS to a directory");
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("create corpus directory");
    for (i, seed) in seeds().iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), seed).expect("write seed");
    }
    // The DICOM seed without preamble.
    let dicom = &seeds()[8];
    std::fs::write(dir.join("seed-dicom-no-preamble"), &dicom[128..]).expect("write seed");
    eprintln!("wrote {} seeds to {}", seeds().len() + 1, dir.display());
}
