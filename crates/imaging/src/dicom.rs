//! DICOM input: attributes through `dicom-object`, native (uncompressed) pixel data by hand.
//!
//! Reading goes in three steps:
//!
//! 1. [`Scanner`] walks the element headers of the file (file meta group, then the data set,
//!    descending into sequences and items) up to the top-level Pixel Data element, mirroring
//!    the structure rules of `dicom-parser`. It checks that no declared length runs past the end
//!    of the input and that nesting stays shallow. This guard exists because the parser reserves
//!    and zero-fills every value at its *declared* length before reading it, so a few crafted
//!    bytes claiming a 4 GiB element would otherwise cost 4 GiB of memory.
//! 2. `dicom-object` parses only the bytes *before* the Pixel Data element (attributes such as
//!    Rows, BitsStored, RescaleSlope), so it never copies the pixels.
//! 3. The pixels are read in place from the input, as located by the scanner. Only native
//!    (uncompressed) transfer syntaxes are supported: Implicit VR Little Endian, Explicit VR
//!    Little Endian and Explicit VR Big Endian. Encapsulated (JPEG, JPEG 2000, RLE, ...) and
//!    deflated files are refused with a clear reason.

use crate::failure::{Failure, FailureKind, check_pixel_count, error_chain};
use crate::luma::{COLOUR_TOLERANCE, luma8};
use crate::options::{DecodeOptions, HuWindow};
use crate::types::{DecodedImage, FileFormat, GreyImage, PixelLayout, SeriesInfo, SourceInfo};
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::header::HasLength;
use dicom_core::{Tag, VR};
use dicom_dictionary_std::{StandardDataDictionary, tags};
use dicom_object::file::{OddLengthStrategy, ReadPreamble};
use dicom_object::{InMemDicomObject, OpenFileOptions};

/// The 4-byte magic that follows the 128-byte preamble of a DICOM Part 10 file.
pub(crate) const DICM_MAGIC: &[u8; 4] = b"DICM";
/// Offset of [`DICM_MAGIC`] in a file with the standard preamble.
pub(crate) const PREAMBLE_LEN: usize = 128;

/// Where the DICOM content starts in the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DicomStart {
    /// Standard Part 10 file: 128-byte preamble, `DICM`, file meta group, data set.
    Preamble,
    /// `DICM` and the file meta group at offset 0 (no preamble).
    NoPreamble,
    /// No file meta group at all: a bare Implicit VR Little Endian data set (old files with a
    /// `.dcm` extension). Only tried when the caller hinted at DICOM.
    RawDataset,
}

impl DicomStart {
    /// Offset of the first byte handed to the scanner and parser.
    fn offset(self) -> usize {
        match self {
            DicomStart::Preamble => PREAMBLE_LEN,
            DicomStart::NoPreamble | DicomStart::RawDataset => 0,
        }
    }
}

/// Detects a Part 10 file by its `DICM` magic (at offset 128, or at 0 without preamble).
pub(crate) fn detect(head: &[u8]) -> Option<DicomStart> {
    if head.get(PREAMBLE_LEN..PREAMBLE_LEN + 4) == Some(DICM_MAGIC.as_slice()) {
        Some(DicomStart::Preamble)
    } else if head.starts_with(DICM_MAGIC) {
        Some(DicomStart::NoPreamble)
    } else {
        None
    }
}

/// How the data set after the file meta group is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Syntax {
    explicit_vr: bool,
    big_endian: bool,
}

const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";
const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";

/// Human name of a few common compressed transfer syntaxes, for error messages.
fn transfer_syntax_name(uid: &str) -> &'static str {
    match uid {
        "1.2.840.10008.1.2.4.50" => "JPEG Baseline",
        "1.2.840.10008.1.2.4.51" => "JPEG Extended",
        "1.2.840.10008.1.2.4.57" | "1.2.840.10008.1.2.4.70" => "JPEG Lossless",
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => "JPEG-LS",
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => "JPEG 2000",
        "1.2.840.10008.1.2.4.201" | "1.2.840.10008.1.2.4.202" | "1.2.840.10008.1.2.4.203" => {
            "HTJ2K"
        }
        "1.2.840.10008.1.2.5" => "RLE Lossless",
        "1.2.840.10008.1.2.4.100" | "1.2.840.10008.1.2.4.101" | "1.2.840.10008.1.2.4.102" => {
            "MPEG-2"
        }
        "1.2.840.10008.1.2.4.110" | "1.2.840.10008.1.2.4.111" | "1.2.840.10008.1.2.4.112" => {
            "JPEG XL"
        }
        _ => "compressed",
    }
}

/// Deepest sequence/item nesting accepted (the parser recurses once per level).
const MAX_DEPTH: usize = 32;
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_DELIMITER: (u16, u16) = (0xFFFE, 0xE00D);
const SEQUENCE_DELIMITER: (u16, u16) = (0xFFFE, 0xE0DD);
const UNDEFINED: u32 = u32::MAX;

/// Explicit VRs whose length field is 16 bits (PS3.5 7.1.2); all others use 32 bits.
const SHORT_LENGTH_VRS: [&[u8; 2]; 21] = [
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
    b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
];

/// Why the scanner stopped early.
#[derive(Debug)]
pub(crate) enum ScanError {
    /// The input is a prefix of a longer file and the scan needs more of it.
    NeedMore,
    /// The structure is corrupt or dangerous; the string says why.
    Invalid(String),
}

/// One element header as read by the scanner.
#[derive(Clone, Copy, Debug)]
struct ElementHeader {
    tag: (u16, u16),
    /// Explicit VR bytes; `None` for implicit VR and for item/delimiter tags.
    vr: Option<[u8; 2]>,
    len: u32,
    /// Offset of the header's first byte.
    start: usize,
}

/// The top-level Pixel Data element, as found by the scanner.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PixelDataLocation {
    /// Offset of the value's first byte (relative to the scanned input).
    value_offset: usize,
    /// Declared length; `None` when undefined (encapsulated, i.e. compressed, pixel data).
    len: Option<u32>,
    /// Explicit VR, if any.
    vr: Option<[u8; 2]>,
}

/// What a successful scan found.
#[derive(Debug)]
pub(crate) struct ScanOutcome {
    syntax: Syntax,
    transfer_syntax: String,
    /// Bytes `0..attributes_end` hold the meta group and every top-level element before Pixel
    /// Data: exactly what `dicom-object` is given.
    attributes_end: usize,
    pixel_data: Option<PixelDataLocation>,
}

/// Walks element headers without allocating, checking declared lengths against `total`.
struct Scanner<'a> {
    data: &'a [u8],
    /// Length of the whole input; larger than `data.len()` when `data` is a prefix of a file.
    total: usize,
    pos: usize,
    syntax: Syntax,
}

impl<'a> Scanner<'a> {
    fn truncated(&self, n: usize) -> ScanError {
        if self.data.len() < self.total {
            ScanError::NeedMore
        } else {
            ScanError::Invalid(format!(
                "truncated DICOM data: needed {n} more bytes at offset {} but the input ends \
                 at {}",
                self.pos,
                self.data.len()
            ))
        }
    }

    fn bytes(&self, at: usize, n: usize) -> Result<&'a [u8], ScanError> {
        at.checked_add(n)
            .and_then(|end| self.data.get(at..end))
            .ok_or_else(|| self.truncated(n))
    }

    fn u16_at(&self, at: usize, big_endian: bool) -> Result<u16, ScanError> {
        let b = self.bytes(at, 2)?;
        let b = [b[0], b[1]];
        Ok(if big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }

    fn u32_at(&self, at: usize, big_endian: bool) -> Result<u32, ScanError> {
        let b = self.bytes(at, 4)?;
        let b = [b[0], b[1], b[2], b[3]];
        Ok(if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    /// Reads one element header at the current position with the given encoding.
    fn header(&mut self, syntax: Syntax) -> Result<ElementHeader, ScanError> {
        let start = self.pos;
        let be = syntax.big_endian;
        let tag = (self.u16_at(start, be)?, self.u16_at(start + 2, be)?);
        if !syntax.explicit_vr || tag.0 == 0xFFFE {
            let len = self.u32_at(start + 4, be)?;
            self.pos = start + 8;
            return Ok(ElementHeader {
                tag,
                vr: None,
                len,
                start,
            });
        }
        let vr_bytes = self.bytes(start + 4, 2)?;
        let vr = [vr_bytes[0], vr_bytes[1]];
        let (len, size) = if SHORT_LENGTH_VRS.contains(&&vr) {
            (u32::from(self.u16_at(start + 6, be)?), 8)
        } else {
            (self.u32_at(start + 8, be)?, 12)
        };
        self.pos = start + size;
        Ok(ElementHeader {
            tag,
            vr: Some(vr),
            len,
            start,
        })
    }

    /// Checks that `len` bytes from the current position fit in the input.
    fn check_fits(&self, header: &ElementHeader) -> Result<(), ScanError> {
        let remaining = self.total.saturating_sub(self.pos);
        if header.len as usize > remaining {
            return Err(ScanError::Invalid(format!(
                "corrupt DICOM data: element ({:04X},{:04X}) at offset {} declares {} bytes but \
                 only {remaining} remain",
                header.tag.0, header.tag.1, header.start, header.len
            )));
        }
        Ok(())
    }

    /// Skips a defined-length value.
    fn skip_value(&mut self, header: &ElementHeader) -> Result<(), ScanError> {
        self.check_fits(header)?;
        let end = self.pos + header.len as usize;
        if end > self.data.len() {
            return Err(self.truncated(end - self.data.len()));
        }
        self.pos = end;
        Ok(())
    }

    /// Whether the data set parser treats this element as a sequence of items.
    fn is_sequence(&self, header: &ElementHeader) -> bool {
        match header.vr {
            Some(vr) => &vr == b"SQ",
            None if header.tag.0 == 0xFFFE => false,
            None => {
                let tag = Tag(header.tag.0, header.tag.1);
                // Mirrors the implicit VR decoder: Pixel Data and Overlay Data are OW.
                if header.tag == PIXEL_DATA || (header.tag.0 >> 8 == 0x60 && header.tag.1 == 0x3000)
                {
                    return false;
                }
                StandardDataDictionary
                    .by_tag(tag)
                    .is_some_and(|entry| entry.vr().relaxed() == VR::SQ)
            }
        }
    }

    /// Walks the file meta group (always explicit VR little endian); returns the transfer
    /// syntax UID.
    fn meta_group(&mut self) -> Result<String, ScanError> {
        let magic = self.bytes(self.pos, 4)?;
        if magic != DICM_MAGIC {
            return Err(ScanError::Invalid("not a DICOM file: no DICM magic".into()));
        }
        self.pos += 4;
        let meta = Syntax {
            explicit_vr: true,
            big_endian: false,
        };
        let first = self.header(meta)?;
        if first.tag != (0x0002, 0x0000) || first.len != 4 {
            return Err(ScanError::Invalid(format!(
                "corrupt DICOM file meta group: expected the group length (0002,0000) first, \
                 found ({:04X},{:04X})",
                first.tag.0, first.tag.1
            )));
        }
        let group_length = self.u32_at(self.pos, false)?;
        self.pos += 4;
        let mut transfer_syntax = None;
        let mut read: u32 = 0;
        while read < group_length {
            let header = self.header(meta)?;
            if header.len == UNDEFINED {
                return Err(ScanError::Invalid(format!(
                    "corrupt DICOM file meta group: element ({:04X},{:04X}) has undefined length",
                    header.tag.0, header.tag.1
                )));
            }
            let value_start = self.pos;
            self.skip_value(&header)?;
            if header.tag == (0x0002, 0x0010) {
                let raw = &self.data[value_start..self.pos];
                let uid = String::from_utf8_lossy(raw);
                transfer_syntax = Some(uid.trim_end_matches(['\0', ' ']).trim().to_string());
            }
            let header_size = (value_start - header.start) as u32;
            read = read.saturating_add(header_size).saturating_add(header.len);
        }
        transfer_syntax.ok_or_else(|| {
            ScanError::Invalid(
                "corrupt DICOM file meta group: no Transfer Syntax UID (0002,0010)".into(),
            )
        })
    }

    /// Walks a data set up to `end` (a defined-length item), an item delimiter (`end` is `None`
    /// inside an item), or, at the top level, the end of input / the Pixel Data element.
    fn data_set(
        &mut self,
        end: Option<usize>,
        depth: usize,
    ) -> Result<Option<PixelDataLocation>, ScanError> {
        let top = depth == 0;
        loop {
            if let Some(end) = end {
                if self.pos == end {
                    return Ok(None);
                }
                if self.pos > end {
                    return Err(ScanError::Invalid(format!(
                        "corrupt DICOM data: an element overruns the end of its item at offset \
                         {end}"
                    )));
                }
            }
            if top && self.data.len().saturating_sub(self.pos) < 4 {
                // The parser treats running out of input at a tag boundary as the end.
                if self.data.len() < self.total {
                    return Err(ScanError::NeedMore);
                }
                return Ok(None);
            }
            let header = self.header(self.syntax)?;
            if top {
                if header.tag == ITEM_DELIMITER {
                    // A stray item delimiter at the top level is skipped by the parser.
                    continue;
                }
                if header.tag >= PIXEL_DATA {
                    // The attribute parse stops here (`read_until(PixelData)` semantics).
                    self.pos = header.start;
                    if header.tag != PIXEL_DATA {
                        return Ok(None);
                    }
                    if header.vr == Some(*b"SQ") {
                        return Err(ScanError::Invalid(
                            "corrupt DICOM data: Pixel Data is encoded as a sequence".into(),
                        ));
                    }
                    let value_offset = header.start
                        + match header.vr {
                            Some(vr) if SHORT_LENGTH_VRS.contains(&&vr) => 8,
                            Some(_) => 12,
                            None => 8,
                        };
                    let len = (header.len != UNDEFINED).then_some(header.len);
                    if let Some(len) = len {
                        let remaining = self.total.saturating_sub(value_offset);
                        if len as usize > remaining {
                            return Err(ScanError::Invalid(format!(
                                "truncated DICOM data: Pixel Data declares {len} bytes but only \
                                 {remaining} remain"
                            )));
                        }
                    }
                    return Ok(Some(PixelDataLocation {
                        value_offset,
                        len,
                        vr: header.vr,
                    }));
                }
            } else if header.tag == ITEM_DELIMITER {
                if end.is_none() {
                    return Ok(None);
                }
                return Err(ScanError::Invalid(
                    "corrupt DICOM data: item delimiter inside a defined-length item".into(),
                ));
            } else if header.tag == SEQUENCE_DELIMITER || header.tag == ITEM {
                return Err(ScanError::Invalid(format!(
                    "corrupt DICOM data: unexpected ({:04X},{:04X}) inside an item at offset {}",
                    header.tag.0, header.tag.1, header.start
                )));
            }

            // Same order of checks as the parser: an SQ VR first, then encapsulated pixel data,
            // then any other undefined length (read as a sequence), then a plain value.
            if self.is_sequence(&header) {
                let seq_end = if header.len == UNDEFINED {
                    None
                } else {
                    self.check_fits(&header)?;
                    Some(self.pos + header.len as usize)
                };
                self.sequence(seq_end, depth + 1)?;
            } else if header.len == UNDEFINED && header.tag == PIXEL_DATA {
                self.fragments(depth + 1)?;
            } else if header.len == UNDEFINED {
                self.sequence(None, depth + 1)?;
            } else {
                self.skip_value(&header)?;
            }
        }
    }

    /// Walks the items of a sequence.
    fn sequence(&mut self, end: Option<usize>, depth: usize) -> Result<(), ScanError> {
        if depth > MAX_DEPTH {
            return Err(ScanError::Invalid(format!(
                "corrupt DICOM data: sequences nested deeper than {MAX_DEPTH} levels"
            )));
        }
        loop {
            if let Some(end) = end {
                if self.pos == end {
                    return Ok(());
                }
                if self.pos > end {
                    return Err(ScanError::Invalid(format!(
                        "corrupt DICOM data: an item overruns the end of its sequence at offset \
                         {end}"
                    )));
                }
            }
            let header = self.header(Syntax {
                explicit_vr: false,
                ..self.syntax
            })?;
            match header.tag {
                ITEM if header.len == UNDEFINED => {
                    self.data_set(None, depth)?;
                }
                ITEM => {
                    self.check_fits(&header)?;
                    let item_end = self.pos + header.len as usize;
                    self.data_set(Some(item_end), depth)?;
                }
                SEQUENCE_DELIMITER => return Ok(()),
                tag => {
                    return Err(ScanError::Invalid(format!(
                        "corrupt DICOM data: expected a sequence item at offset {}, found \
                         ({:04X},{:04X})",
                        header.start, tag.0, tag.1
                    )));
                }
            }
        }
    }

    /// Walks the fragments of a nested encapsulated Pixel Data element.
    fn fragments(&mut self, depth: usize) -> Result<(), ScanError> {
        if depth > MAX_DEPTH {
            return Err(ScanError::Invalid(format!(
                "corrupt DICOM data: sequences nested deeper than {MAX_DEPTH} levels"
            )));
        }
        loop {
            let header = self.header(Syntax {
                explicit_vr: false,
                ..self.syntax
            })?;
            match header.tag {
                ITEM if header.len != UNDEFINED => self.skip_value(&header)?,
                SEQUENCE_DELIMITER => return Ok(()),
                _ => {
                    return Err(ScanError::Invalid(format!(
                        "corrupt DICOM data: bad pixel data fragment at offset {}",
                        header.start
                    )));
                }
            }
        }
    }
}

/// Scans `data` (starting at `DICM`, or at a bare data set for [`DicomStart::RawDataset`]).
/// `total` is the full input length: more than `data.len()` when `data` is a prefix.
pub(crate) fn scan(data: &[u8], total: usize, start: DicomStart) -> Result<ScanOutcome, ScanError> {
    let mut scanner = Scanner {
        data,
        total,
        pos: 0,
        syntax: Syntax {
            explicit_vr: false,
            big_endian: false,
        },
    };
    let transfer_syntax = if start == DicomStart::RawDataset {
        IMPLICIT_VR_LE.to_string()
    } else {
        scanner.meta_group()?
    };
    scanner.syntax = match transfer_syntax.as_str() {
        IMPLICIT_VR_LE => Syntax {
            explicit_vr: false,
            big_endian: false,
        },
        EXPLICIT_VR_BE => Syntax {
            explicit_vr: true,
            big_endian: true,
        },
        DEFLATED_EXPLICIT_VR_LE => {
            return Err(ScanError::Invalid(
                "unsupported DICOM transfer syntax: Deflated Explicit VR Little Endian \
                 (1.2.840.10008.1.2.1.99); convert it to an uncompressed transfer syntax first"
                    .into(),
            ));
        }
        // Explicit VR little endian (1.2.840.10008.1.2.1), and every encapsulated (compressed) syntax (an unknown UID
        // is refused by `dicom-object` before the data set is read).
        _ => Syntax {
            explicit_vr: true,
            big_endian: false,
        },
    };
    let pixel_data = scanner.data_set(None, 0)?;
    Ok(ScanOutcome {
        syntax: scanner.syntax,
        transfer_syntax,
        attributes_end: scanner.pos,
        pixel_data,
    })
}

/// Parses the attributes (everything before Pixel Data) with `dicom-object`.
fn parse_attributes(
    data: &[u8],
    outcome: &ScanOutcome,
    start: DicomStart,
) -> Result<InMemDicomObject, Failure> {
    let attributes = &data[..outcome.attributes_end];
    let result = if start == DicomStart::RawDataset {
        let ts = dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN.erased();
        InMemDicomObject::read_dataset_with_ts(attributes, &ts)
    } else {
        OpenFileOptions::new()
            .read_preamble(ReadPreamble::Never)
            .odd_length_strategy(OddLengthStrategy::Accept)
            .from_reader(attributes)
            .map(|file| file.into_inner())
    };
    result.map_err(|e| {
        Failure::new(
            FailureKind::Corrupt,
            format!("corrupt DICOM data: {}", error_chain(&e)),
        )
    })
}

/// The pixel description read from the attributes.
#[derive(Clone, Copy, Debug)]
struct PixelModule {
    rows: u32,
    columns: u32,
    samples_per_pixel: u32,
    bits_allocated: u32,
    bits_stored: u32,
    high_bit: u32,
    signed: bool,
    monochrome1: bool,
    planar: bool,
    slope: f64,
    intercept: f64,
}

fn corrupt(reason: String) -> Failure {
    Failure::new(FailureKind::Corrupt, reason)
}

fn unsupported(reason: String) -> Failure {
    Failure::new(FailureKind::Unsupported, reason)
}

/// An attribute's element, treating an empty value as absent.
fn element(
    obj: &InMemDicomObject,
    tag: Tag,
) -> Option<&dicom_object::mem::InMemElement<StandardDataDictionary>> {
    obj.get(tag).filter(|e| !e.is_empty())
}

fn int_attribute(obj: &InMemDicomObject, tag: Tag, name: &str) -> Result<Option<i64>, Failure> {
    element(obj, tag)
        .map(|e| {
            e.to_int::<i64>()
                .map_err(|err| corrupt(format!("DICOM {name} {tag} is not an integer: {err}")))
        })
        .transpose()
}

fn required_int(obj: &InMemDicomObject, tag: Tag, name: &str) -> Result<i64, Failure> {
    int_attribute(obj, tag, name)?
        .ok_or_else(|| corrupt(format!("DICOM attribute {name} {tag} is missing")))
}

fn float_attribute(
    obj: &InMemDicomObject,
    tag: Tag,
    name: &str,
    default: f64,
) -> Result<f64, Failure> {
    let Some(e) = element(obj, tag) else {
        return Ok(default);
    };
    let value = e
        .to_float64()
        .map_err(|err| corrupt(format!("DICOM {name} {tag} is not a number: {err}")))?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(corrupt(format!(
            "DICOM {name} {tag} is not finite: {value}"
        )))
    }
}

fn text_attribute(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    element(obj, tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_matches(['\0', ' ']).to_ascii_uppercase())
}

/// The study, series and place of a slice. A value that does not parse is taken as absent: it
/// only orders slices, and the order falls back to the next key (see `covidct-study`).
fn series_info(obj: &InMemDicomObject) -> SeriesInfo {
    let uid = |tag| {
        element(obj, tag)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_matches(['\0', ' ']).to_owned())
            .filter(|s| !s.is_empty())
    };
    let floats = |tag| {
        element(obj, tag)
            .and_then(|e| e.to_multi_float64().ok())
            .filter(|v| v.iter().all(|x| x.is_finite()))
    };
    SeriesInfo {
        study_uid: uid(tags::STUDY_INSTANCE_UID),
        series_uid: uid(tags::SERIES_INSTANCE_UID),
        instance_number: element(obj, tags::INSTANCE_NUMBER).and_then(|e| e.to_int::<i64>().ok()),
        position: floats(tags::IMAGE_POSITION_PATIENT).and_then(|v| v.try_into().ok()),
        orientation: floats(tags::IMAGE_ORIENTATION_PATIENT).and_then(|v| v.try_into().ok()),
    }
}

impl PixelModule {
    fn read(obj: &InMemDicomObject) -> Result<Self, Failure> {
        let rows = required_int(obj, tags::ROWS, "Rows")?;
        let columns = required_int(obj, tags::COLUMNS, "Columns")?;
        if !(1..=i64::from(u16::MAX)).contains(&rows)
            || !(1..=i64::from(u16::MAX)).contains(&columns)
        {
            return Err(corrupt(format!(
                "DICOM image size {columns}×{rows} (Columns×Rows) is invalid"
            )));
        }
        let bits_allocated = required_int(obj, tags::BITS_ALLOCATED, "BitsAllocated")?;
        if !matches!(bits_allocated, 8 | 16 | 32) {
            return Err(unsupported(format!(
                "unsupported DICOM BitsAllocated {bits_allocated} (supported: 8, 16, 32)"
            )));
        }
        let bits_stored =
            int_attribute(obj, tags::BITS_STORED, "BitsStored")?.unwrap_or(bits_allocated);
        if !(1..=bits_allocated).contains(&bits_stored) {
            return Err(corrupt(format!(
                "DICOM BitsStored {bits_stored} is invalid for BitsAllocated {bits_allocated}"
            )));
        }
        let high_bit = int_attribute(obj, tags::HIGH_BIT, "HighBit")?
            .filter(|&h| h + 1 >= bits_stored && h < bits_allocated)
            .unwrap_or(bits_stored - 1);
        let pixel_representation =
            int_attribute(obj, tags::PIXEL_REPRESENTATION, "PixelRepresentation")?.unwrap_or(0);
        let samples_per_pixel =
            int_attribute(obj, tags::SAMPLES_PER_PIXEL, "SamplesPerPixel")?.unwrap_or(1);
        let photometric = text_attribute(obj, tags::PHOTOMETRIC_INTERPRETATION);
        let monochrome1 = match (samples_per_pixel, photometric.as_deref()) {
            (1, Some("MONOCHROME1")) => true,
            (1, Some("MONOCHROME2") | None) => false,
            (3, Some("RGB")) if bits_allocated != 32 => false,
            (spp, photometric) => {
                return Err(unsupported(format!(
                    "unsupported DICOM PhotometricInterpretation {} with SamplesPerPixel {spp} \
                     and BitsAllocated {bits_allocated} (supported: MONOCHROME1, MONOCHROME2, \
                     8/16-bit RGB)",
                    photometric.unwrap_or("(missing)")
                )));
            }
        };
        let planar = samples_per_pixel == 3
            && int_attribute(obj, tags::PLANAR_CONFIGURATION, "PlanarConfiguration")?.unwrap_or(0)
                == 1;
        Ok(Self {
            rows: rows as u32,
            columns: columns as u32,
            samples_per_pixel: samples_per_pixel as u32,
            bits_allocated: bits_allocated as u32,
            bits_stored: bits_stored as u32,
            high_bit: high_bit as u32,
            signed: pixel_representation == 1,
            monochrome1,
            planar,
            slope: float_attribute(obj, tags::RESCALE_SLOPE, "RescaleSlope", 1.0)?,
            intercept: float_attribute(obj, tags::RESCALE_INTERCEPT, "RescaleIntercept", 0.0)?,
        })
    }

    fn source_info(&self) -> SourceInfo {
        SourceInfo {
            format: FileFormat::Dicom,
            layout: if self.samples_per_pixel == 3 {
                PixelLayout::Rgb
            } else {
                PixelLayout::Grey
            },
            bit_depth: self.bits_stored as u8,
            width: self.columns,
            height: self.rows,
        }
    }
}

/// Scan result plus parsed attributes: everything but the pixels.
struct Header {
    outcome: ScanOutcome,
    module: PixelModule,
    series: SeriesInfo,
}

fn scan_failure(e: ScanError) -> Failure {
    match e {
        // Only reachable when `total` is wrong; report it as truncation.
        ScanError::NeedMore => corrupt("truncated DICOM data".into()),
        ScanError::Invalid(reason) if reason.starts_with("unsupported") => unsupported(reason),
        ScanError::Invalid(reason) => corrupt(reason),
    }
}

/// Checks a scanned file's header: compression, attributes, size limit.
fn header(
    data: &[u8],
    outcome: ScanOutcome,
    start: DicomStart,
    options: &DecodeOptions,
) -> Result<Header, Failure> {
    let obj = parse_attributes(data, &outcome, start)?;
    let module = PixelModule::read(&obj)?;
    check_pixel_count(module.columns, module.rows, options)?;
    match outcome.pixel_data {
        None => {
            return Err(corrupt(
                "DICOM file has no Pixel Data (7FE0,0010) element".to_string(),
            ));
        }
        Some(PixelDataLocation { len: None, .. }) => {
            return Err(unsupported(format!(
                "unsupported DICOM transfer syntax: {} ({}) pixel data is compressed; only \
                 uncompressed (native) pixel data is supported",
                transfer_syntax_name(&outcome.transfer_syntax),
                outcome.transfer_syntax
            )));
        }
        Some(_) => {}
    }
    Ok(Header {
        outcome,
        module,
        series: series_info(&obj),
    })
}

/// Reads only the header of a DICOM input (`data` may be a prefix of `total` bytes).
pub(crate) fn probe(
    data: &[u8],
    total: usize,
    start: DicomStart,
    options: &DecodeOptions,
) -> Result<SourceInfo, ProbeError> {
    let data = data.get(start.offset()..).unwrap_or_default();
    let total = total.saturating_sub(start.offset());
    let outcome = scan(data, total, start).map_err(|e| match e {
        ScanError::NeedMore => ProbeError::NeedMore,
        e => ProbeError::Failed(scan_failure(e)),
    })?;
    header(data, outcome, start, options)
        .map(|h| h.module.source_info())
        .map_err(ProbeError::Failed)
}

/// Why [`probe`] stopped.
#[derive(Debug)]
pub(crate) enum ProbeError {
    /// The header extends past the prefix given; call again with more of the file.
    NeedMore,
    /// The header is unusable.
    Failed(Failure),
}

/// Decodes a whole DICOM input (first frame) into the canonical layout.
pub(crate) fn decode(
    input: &[u8],
    start: DicomStart,
    options: &DecodeOptions,
) -> Result<DecodedImage, Failure> {
    validate_window(&options.dicom_window)?;
    let data = input.get(start.offset()..).unwrap_or_default();
    let outcome = scan(data, data.len(), start).map_err(scan_failure)?;
    let Header {
        outcome,
        module,
        series,
    } = header(data, outcome, start, options)?;
    let Some(PixelDataLocation {
        value_offset,
        len: Some(len),
        vr,
    }) = outcome.pixel_data
    else {
        return Err(corrupt("DICOM file has no native Pixel Data".into()));
    };
    let pixels = data
        .get(value_offset..value_offset + len as usize)
        .ok_or_else(|| corrupt("truncated DICOM Pixel Data".into()))?;
    let npix = module.rows as usize * module.columns as usize;
    let bytes_per_sample = module.bits_allocated as usize / 8;
    let frame_bytes = npix * module.samples_per_pixel as usize * bytes_per_sample;
    if pixels.len() < frame_bytes {
        return Err(corrupt(format!(
            "truncated DICOM Pixel Data: {} bytes, less than one {}×{} frame of {} sample(s) at \
             {} bits ({frame_bytes} bytes)",
            pixels.len(),
            module.columns,
            module.rows,
            module.samples_per_pixel,
            module.bits_allocated
        )));
    }
    // Multi-frame files: only the first frame is decoded.
    let frame = &pixels[..frame_bytes];
    let samples = Samples {
        bytes: frame,
        bits_allocated: module.bits_allocated,
        big_endian: outcome.syntax.big_endian,
        // 8-bit samples in a big-endian OW value are byte-swapped in pairs.
        swap_pairs: module.bits_allocated == 8
            && outcome.syntax.big_endian
            && vr.is_none_or(|vr| &vr == b"OW"),
    };
    let (out, coloured_pixels) = if module.samples_per_pixel == 3 {
        rgb_to_grey(&samples, &module, npix)
    } else {
        (
            window_grey(&samples, &module, npix, &options.dicom_window),
            0,
        )
    };
    let image = GreyImage::new(module.columns, module.rows, out)
        .ok_or_else(|| corrupt("internal error: DICOM pixel count mismatch".into()))?;
    Ok(DecodedImage {
        image,
        source: module.source_info(),
        coloured_pixels,
        series: Some(series),
    })
}

fn validate_window(window: &HuWindow) -> Result<(), Failure> {
    if window.center.is_finite() && window.width.is_finite() && window.width > 0.0 {
        Ok(())
    } else {
        Err(Failure::new(
            FailureKind::InvalidOptions,
            format!(
                "invalid DICOM window: centre {} / width {} (the width must be positive and \
                 both finite)",
                window.center, window.width
            ),
        ))
    }
}

/// Raw stored words of one frame.
struct Samples<'a> {
    bytes: &'a [u8],
    bits_allocated: u32,
    big_endian: bool,
    swap_pairs: bool,
}

impl Samples<'_> {
    /// The `i`-th stored word, not yet masked to BitsStored.
    #[inline]
    fn word(&self, i: usize) -> u32 {
        match self.bits_allocated {
            8 => {
                let j = if self.swap_pairs { i ^ 1 } else { i };
                u32::from(self.bytes.get(j).copied().unwrap_or(0))
            }
            16 => {
                let b = &self.bytes[2 * i..2 * i + 2];
                let b = [b[0], b[1]];
                u32::from(if self.big_endian {
                    u16::from_be_bytes(b)
                } else {
                    u16::from_le_bytes(b)
                })
            }
            _ => {
                let b = &self.bytes[4 * i..4 * i + 4];
                let b = [b[0], b[1], b[2], b[3]];
                if self.big_endian {
                    u32::from_be_bytes(b)
                } else {
                    u32::from_le_bytes(b)
                }
            }
        }
    }
}

/// Extracts the stored value from a word: shift by HighBit, mask to BitsStored, sign-extend.
#[inline]
fn stored_value(word: u32, module: &PixelModule) -> i64 {
    let shift = module.high_bit + 1 - module.bits_stored;
    let bits = module.bits_stored;
    let raw = u64::from(word >> shift) & ((1u64 << bits) - 1);
    if module.signed && raw >> (bits - 1) & 1 == 1 {
        raw as i64 - (1i64 << bits)
    } else {
        raw as i64
    }
}

/// Hounsfield units (`stored × RescaleSlope + RescaleIntercept`) through the window:
/// `HU ≤ L − W/2 → 0`, `HU ≥ L + W/2 → 255`, linear (rounded) in between; MONOCHROME1 inverts.
fn window_grey(samples: &Samples, module: &PixelModule, npix: usize, window: &HuWindow) -> Vec<u8> {
    let lower = f64::from(window.center) - f64::from(window.width) / 2.0;
    let width = f64::from(window.width);
    let map = |word: u32| -> u8 {
        let hu = stored_value(word, module) as f64 * module.slope + module.intercept;
        // Multiply before dividing: exact for integer HU and windows (e.g. −600 → 127.5 → 128).
        let v = (hu - lower) * 255.0 / width;
        let v = if v.is_nan() || v <= 0.0 {
            0
        } else if v >= 255.0 {
            255
        } else {
            v.round() as u8
        };
        if module.monochrome1 { 255 - v } else { v }
    };
    // A lookup table over every possible word pays off for large 8/16-bit images.
    if module.bits_allocated <= 16 && npix >= (1 << module.bits_allocated) / 4 {
        let lut: Vec<u8> = (0..1u32 << module.bits_allocated).map(map).collect();
        (0..npix).map(|i| lut[samples.word(i) as usize]).collect()
    } else {
        (0..npix).map(|i| map(samples.word(i))).collect()
    }
}

/// RGB DICOM (no Hounsfield units): each channel scaled to 8 bits, then BT.601 luminance.
fn rgb_to_grey(samples: &Samples, module: &PixelModule, npix: usize) -> (Vec<u8>, u64) {
    let max = (1u64 << module.bits_stored) - 1;
    let channel = |i: usize| -> u32 {
        let v = stored_value(
            samples.word(i),
            &PixelModule {
                signed: false,
                ..*module
            },
        ) as u64;
        ((v * 255 * 2 + max) / (2 * max)) as u32
    };
    let mut coloured = 0;
    let grey = (0..npix)
        .map(|p| {
            let (r, g, b) = if module.planar {
                (channel(p), channel(npix + p), channel(2 * npix + p))
            } else {
                (channel(3 * p), channel(3 * p + 1), channel(3 * p + 2))
            };
            if r.max(g).max(b) - r.min(g).min(b) > u32::from(COLOUR_TOLERANCE) {
                coloured += 1;
            }
            luma8(r, g, b)
        })
        .collect();
    (grey, coloured)
}
