//! DICOM decoding tests on files written here with `dicom-object`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use covidct_imaging::{
    DecodeErrorKind, DecodeOptions, FileFormat, HuWindow, PixelLayout, SourceInfo, decode_bytes,
    decode_file, probe_bytes, probe_file,
};
use dicom_core::value::{PixelFragmentSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, Length, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";
const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";

/// Hounsfield units of the test CT, one row of 8 pixels; two rows.
const HU: [i32; 8] = [-2000, -1350, -600, -975, 150, 1000, -1000, -1200];
/// Their lung-window (W 1500 / L −600) values: ≤ −1350 → 0, ≥ 150 → 255, linear between.
const LUNG: [u8; 8] = [0, 0, 128, 64, 255, 255, 60, 26];

fn put(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: impl Into<PrimitiveValue>) {
    obj.put(DataElement::new(tag, vr, value.into()));
}

/// A CT-like data set without pixel data.
fn ct_header(
    rows: u16,
    cols: u16,
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    put(
        &mut obj,
        tags::SOP_CLASS_UID,
        VR::UI,
        uids::CT_IMAGE_STORAGE,
    );
    put(
        &mut obj,
        tags::SOP_INSTANCE_UID,
        VR::UI,
        "1.2.826.0.1.3680043.2.1143.1",
    );
    put(&mut obj, tags::MODALITY, VR::CS, "CT");
    put(&mut obj, tags::SAMPLES_PER_PIXEL, VR::US, 1u16);
    put(
        &mut obj,
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2",
    );
    put(&mut obj, tags::ROWS, VR::US, rows);
    put(&mut obj, tags::COLUMNS, VR::US, cols);
    put(&mut obj, tags::BITS_ALLOCATED, VR::US, bits_allocated);
    put(&mut obj, tags::BITS_STORED, VR::US, bits_stored);
    put(&mut obj, tags::HIGH_BIT, VR::US, bits_stored - 1);
    put(
        &mut obj,
        tags::PIXEL_REPRESENTATION,
        VR::US,
        u16::from(signed),
    );
    obj
}

fn set_words(obj: &mut InMemDicomObject, words: Vec<u16>) {
    put(
        obj,
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(words.into()),
    );
}

/// The standard test CT: 16-bit signed, slope 1, intercept −1024, two rows of [`HU`].
fn ct() -> InMemDicomObject {
    let mut obj = ct_header(2, 8, 16, 16, true);
    put(&mut obj, tags::RESCALE_SLOPE, VR::DS, "1");
    put(&mut obj, tags::RESCALE_INTERCEPT, VR::DS, "-1024");
    let words = HU
        .iter()
        .chain(HU.iter())
        .map(|&hu| (hu + 1024) as i16 as u16)
        .collect();
    set_words(&mut obj, words);
    obj
}

/// Writes a Part 10 file (preamble, `DICM`, meta group, data set).
fn part10(obj: InMemDicomObject, transfer_syntax: &str) -> Vec<u8> {
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .media_storage_sop_class_uid(uids::CT_IMAGE_STORAGE)
                .media_storage_sop_instance_uid("1.2.826.0.1.3680043.2.1143.1")
                .transfer_syntax(transfer_syntax),
        )
        .expect("meta");
    let mut out = Vec::new();
    file.write_all(&mut out).expect("write DICOM");
    out
}

fn decode_with(bytes: &[u8], options: &DecodeOptions) -> (Vec<u8>, SourceInfo) {
    let d = decode_bytes(bytes, None, options).unwrap_or_else(|e| panic!("{e}"));
    (d.image.pixels, d.source)
}

fn lung_twice() -> Vec<u8> {
    LUNG.iter().chain(LUNG.iter()).copied().collect()
}

#[test]
fn signed_ct_lung_window() {
    let bytes = part10(ct(), EXPLICIT_LE);
    assert_eq!(&bytes[128..132], b"DICM");
    let (pixels, source) = decode_with(&bytes, &DecodeOptions::default());
    assert_eq!(pixels, lung_twice());
    assert_eq!(
        source,
        SourceInfo {
            format: FileFormat::Dicom,
            layout: PixelLayout::Grey,
            bit_depth: 16,
            width: 8,
            height: 2
        }
    );
}

#[test]
fn implicit_vr_and_big_endian_give_the_same_pixels() {
    for ts in [IMPLICIT_LE, EXPLICIT_BE] {
        let (pixels, _) = decode_with(&part10(ct(), ts), &DecodeOptions::default());
        assert_eq!(pixels, lung_twice(), "transfer syntax {ts}");
    }
}

#[test]
fn without_preamble_and_bare_data_set() {
    let bytes = part10(ct(), EXPLICIT_LE);
    let (pixels, _) = decode_with(&bytes[128..], &DecodeOptions::default());
    assert_eq!(pixels, lung_twice(), "DICM at offset 0");

    // A bare implicit VR data set: no magic, so only with the DICOM hint (.dcm extension).
    let mut raw = Vec::new();
    ct().write_dataset_with_ts(
        &mut raw,
        &dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN.erased(),
    )
    .unwrap();
    let d = decode_bytes(&raw, Some(FileFormat::Dicom), &DecodeOptions::default()).unwrap();
    assert_eq!(d.image.pixels, lung_twice());
    assert!(decode_bytes(&raw, None, &DecodeOptions::default()).is_err());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.dcm");
    std::fs::write(&path, &raw).unwrap();
    assert_eq!(decode_file(&path, &DecodeOptions::default()).unwrap(), d);
    assert_eq!(
        probe_file(&path, &DecodeOptions::default()).unwrap(),
        d.source
    );
}

#[test]
fn monochrome1_inverts() {
    let mut obj = ct();
    put(
        &mut obj,
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME1",
    );
    let (pixels, _) = decode_with(&part10(obj, EXPLICIT_LE), &DecodeOptions::default());
    let expected: Vec<u8> = lung_twice().iter().map(|v| 255 - v).collect();
    assert_eq!(pixels, expected);
}

#[test]
fn custom_window() {
    let options = DecodeOptions {
        dicom_window: HuWindow {
            center: 40.0,
            width: 400.0,
        },
        ..DecodeOptions::default()
    };
    let mut obj = ct_header(1, 6, 16, 16, true);
    put(&mut obj, tags::RESCALE_INTERCEPT, VR::DS, "-1024");
    let hu = [-2000, -160, 40, 240, 0, 100];
    set_words(
        &mut obj,
        hu.iter().map(|&h| (h + 1024) as i16 as u16).collect(),
    );
    let (pixels, _) = decode_with(&part10(obj, EXPLICIT_LE), &options);
    // Soft-tissue window W 400 / L 40: −160 → 0, 240 → 255, 40 → 127.5 → 128.
    assert_eq!(pixels, vec![0, 0, 128, 255, 102, 166]);

    let bad = DecodeOptions {
        dicom_window: HuWindow {
            center: 0.0,
            width: 0.0,
        },
        ..DecodeOptions::default()
    };
    let e = decode_bytes(&part10(ct(), EXPLICIT_LE), None, &bad).unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::InvalidOptions);
}

#[test]
fn rescale_slope_is_applied() {
    let mut obj = ct_header(1, 4, 16, 16, false);
    put(&mut obj, tags::RESCALE_SLOPE, VR::DS, "2.5");
    put(&mut obj, tags::RESCALE_INTERCEPT, VR::DS, "-2000");
    // HU = 2.5 × stored − 2000: 260 → −1350, 560 → −600, 860 → 150, 0 → −2000.
    set_words(&mut obj, vec![260, 560, 860, 0]);
    let (pixels, _) = decode_with(&part10(obj, EXPLICIT_LE), &DecodeOptions::default());
    assert_eq!(pixels, vec![0, 128, 255, 0]);
}

#[test]
fn bits_stored_masks_and_sign_extends() {
    // 12 bits stored in 16, signed, with garbage in the 4 unused high bits.
    let mut obj = ct_header(1, 4, 16, 12, true);
    let stored: [i16; 4] = [-1350, -600, 150, 0];
    let words = stored
        .iter()
        .map(|&v| ((v as u16) & 0x0FFF) | 0xA000)
        .collect();
    set_words(&mut obj, words);
    let bytes = part10(obj, EXPLICIT_LE);
    let (pixels, source) = decode_with(&bytes, &DecodeOptions::default());
    assert_eq!(pixels, vec![0, 128, 255, 230]);
    assert_eq!(source.bit_depth, 12);
    assert_eq!(
        probe_bytes(&bytes, None, &DecodeOptions::default()).unwrap(),
        source
    );
}

#[test]
fn eight_bit_multi_frame_takes_the_first_frame() {
    let mut obj = ct_header(2, 3, 8, 8, false);
    put(&mut obj, tags::NUMBER_OF_FRAMES, VR::IS, "2");
    put(&mut obj, tags::RESCALE_INTERCEPT, VR::DS, "-1350");
    put(&mut obj, tags::RESCALE_SLOPE, VR::DS, "6");
    // HU = 6 × stored − 1350: 0 → 0, 125 → −600 → 128, 250 → 150 → 255.
    let first = [0u8, 125, 250, 25, 50, 100];
    let second = [250u8; 6];
    let bytes: Vec<u8> = first.iter().chain(second.iter()).copied().collect();
    put(
        &mut obj,
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::U8(bytes.into()),
    );
    let (pixels, source) = decode_with(&part10(obj, EXPLICIT_LE), &DecodeOptions::default());
    assert_eq!(pixels, vec![0, 128, 255, 26, 51, 102]);
    assert_eq!((source.width, source.height, source.bit_depth), (3, 2, 8));
}

#[test]
fn rgb_dicom_uses_luminance() {
    for planar in [0u16, 1] {
        let mut obj = ct_header(1, 2, 8, 8, false);
        put(&mut obj, tags::SAMPLES_PER_PIXEL, VR::US, 3u16);
        put(&mut obj, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB");
        put(&mut obj, tags::PLANAR_CONFIGURATION, VR::US, planar);
        let rgb: Vec<u8> = if planar == 0 {
            vec![255, 0, 0, 90, 90, 90]
        } else {
            vec![255, 90, 0, 90, 0, 90]
        };
        put(
            &mut obj,
            tags::PIXEL_DATA,
            VR::OB,
            PrimitiveValue::U8(rgb.into()),
        );
        let (pixels, source) = decode_with(&part10(obj, EXPLICIT_LE), &DecodeOptions::default());
        assert_eq!(pixels, vec![76, 90], "planar {planar}");
        assert_eq!(source.layout, PixelLayout::Rgb);
    }
}

#[test]
fn compressed_pixel_data_is_refused_clearly() {
    let mut obj = ct_header(2, 2, 8, 8, false);
    let fragments =
        PixelFragmentSequence::new(Vec::<u32>::new(), vec![vec![0xFF, 0xD8, 0xFF, 0xD9]]);
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        Value::PixelSequence(fragments),
    ));
    let bytes = part10(obj, JPEG_BASELINE);
    let e = decode_bytes(&bytes, None, &DecodeOptions::default()).unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::Unsupported, "{e}");
    assert!(e.reason.contains("JPEG Baseline"), "{e}");
    assert!(e.reason.contains(JPEG_BASELINE), "{e}");
    assert_eq!(
        probe_bytes(&bytes, None, &DecodeOptions::default())
            .unwrap_err()
            .kind,
        DecodeErrorKind::Unsupported
    );
}

#[test]
fn dicom_bomb_is_refused_from_the_header() {
    let mut obj = ct_header(65535, 65535, 16, 16, false);
    set_words(&mut obj, vec![0; 4]);
    let bytes = part10(obj, EXPLICIT_LE);
    let e = decode_bytes(&bytes, None, &DecodeOptions::default()).unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::TooLarge, "{e}");
    assert!(e.reason.contains("65535×65535 = 4294836225 pixels"), "{e}");
}

#[test]
fn short_pixel_data_is_corrupt() {
    let mut obj = ct_header(4, 4, 16, 16, false);
    set_words(&mut obj, vec![0; 10]);
    let e = decode_bytes(&part10(obj, EXPLICIT_LE), None, &DecodeOptions::default()).unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::Corrupt, "{e}");
    assert!(e.reason.contains("Pixel Data"), "{e}");
}

#[test]
fn missing_attributes_and_pixel_data() {
    let mut obj = InMemDicomObject::new_empty();
    put(&mut obj, tags::MODALITY, VR::CS, "CT");
    let e = decode_bytes(&part10(obj, EXPLICIT_LE), None, &DecodeOptions::default()).unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::Corrupt);
    assert!(e.reason.contains("Rows"), "{e}");

    let obj = ct_header(2, 2, 16, 16, false);
    let e = decode_bytes(&part10(obj, EXPLICIT_LE), None, &DecodeOptions::default()).unwrap_err();
    assert!(e.reason.contains("no Pixel Data"), "{e}");
}

/// Preamble, `DICM` and an explicit VR little endian meta group.
fn meta_only() -> Vec<u8> {
    part10(InMemDicomObject::new_empty(), EXPLICIT_LE)
}

#[test]
fn huge_declared_length_is_refused_without_allocating() {
    let mut bytes = meta_only();
    // (0009,0010) OB with a declared length of ~4 GiB but 16 bytes of data.
    bytes.extend_from_slice(&[0x09, 0x00, 0x10, 0x00, b'O', b'B', 0, 0]);
    bytes.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    bytes.extend_from_slice(&[0u8; 16]);
    let e = decode_bytes(&bytes, None, &DecodeOptions::default()).unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::Corrupt, "{e}");
    assert!(e.reason.contains("declares 4294967280 bytes"), "{e}");
}

#[test]
fn deep_nesting_is_refused() {
    let mut bytes = meta_only();
    for _ in 0..10_000 {
        // (0008,1115) SQ, undefined length; then an item of undefined length.
        bytes.extend_from_slice(&[
            0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        bytes.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    let e = decode_bytes(&bytes, None, &DecodeOptions::default()).unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::Corrupt, "{e}");
    assert!(e.reason.contains("nested"), "{e}");
}

#[test]
fn sequences_before_pixel_data_are_walked() {
    let mut obj = ct();
    let mut item = InMemDicomObject::new_empty();
    put(
        &mut item,
        tags::REFERENCED_SOP_CLASS_UID,
        VR::UI,
        uids::CT_IMAGE_STORAGE,
    );
    put(
        &mut item,
        tags::REFERENCED_SOP_INSTANCE_UID,
        VR::UI,
        "1.2.3",
    );
    obj.put(DataElement::new(
        tags::REFERENCED_IMAGE_SEQUENCE,
        VR::SQ,
        dicom_core::value::DataSetSequence::new(vec![item.clone(), item], Length::UNDEFINED),
    ));
    for ts in [EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE] {
        let (pixels, _) = decode_with(&part10(obj.clone(), ts), &DecodeOptions::default());
        assert_eq!(pixels, lung_twice(), "{ts}");
    }
}

#[test]
fn probe_reads_big_headers_incrementally() {
    // A 200 kB private element before the pixel data: more than the first 64 KiB read.
    let mut obj = ct();
    put(
        &mut obj,
        Tag(0x0009, 0x1010),
        VR::OB,
        PrimitiveValue::U8(vec![7u8; 200_000].into()),
    );
    let bytes = part10(obj, EXPLICIT_LE);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big-header.dcm");
    std::fs::write(&path, &bytes).unwrap();
    let source = probe_file(&path, &DecodeOptions::default()).unwrap();
    assert_eq!(
        (source.format, source.width, source.height),
        (FileFormat::Dicom, 8, 2)
    );
    assert_eq!(
        decode_file(&path, &DecodeOptions::default())
            .unwrap()
            .image
            .pixels,
        lung_twice()
    );

    // Truncated inside the big element: refused, not hung.
    std::fs::write(&path, &bytes[..100_000]).unwrap();
    assert_eq!(
        probe_file(&path, &DecodeOptions::default())
            .unwrap_err()
            .kind,
        DecodeErrorKind::Corrupt
    );
    assert_eq!(
        decode_file(&path, &DecodeOptions::default())
            .unwrap_err()
            .kind,
        DecodeErrorKind::Corrupt
    );
}

#[test]
fn every_truncation_of_a_dicom_file_fails_cleanly() {
    let bytes = part10(ct(), EXPLICIT_LE);
    for cut in 1..bytes.len() {
        let r = decode_bytes(&bytes[..cut], None, &DecodeOptions::default());
        assert!(r.is_err(), "cut at {cut} decoded");
    }
}
