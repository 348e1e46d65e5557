//! Decoding every supported file into the canonical grey layout.
//!
//! Supported inputs: PNG, JPEG, BMP and TIFF (8- and 16-bit samples, grey, grey+alpha, RGB,
//! RGBA; TIFF also 32-bit float RGB(A)) through the `image` crate, and DICOM Part 10 files with
//! native (uncompressed) pixel data through `dicom-object` (see `dicom.rs` for details).
//! Whatever the input, the output is a [`GreyImage`]: 8-bit, single channel.
//!
//! Canonicalisation rules:
//!
//! * **Format detection** is by content (magic bytes, [`image::guess_format`]; DICOM by the
//!   `DICM` magic at offset 128, or at offset 0 for files without the preamble). The file
//!   extension is only a hint, used for `.dcm` files that carry a bare data set without any
//!   file meta group.
//! * **Colour → grey** uses the ITU-R BT.601 luma weights `Y = 0.299 R + 0.587 G + 0.114 B`
//!   (the weights of PIL's `Image.convert("L")`), in 16.16 fixed point (19595, 38470, 7471,
//!   which sum to exactly 65536) so that a pixel with `R = G = B` keeps its exact value.
//! * **Alpha is dropped**, not composited: a CT slice saved as RGBA gives exactly the same grey
//!   image as the same slice saved as RGB, whatever its alpha values.
//! * **16-bit → 8-bit** is `round(x / 257)`, which maps 0 → 0, 65535 → 255 and 0x8080 → 128;
//!   16-bit colour is converted to luma at full precision and rounded once.
//! * **32-bit float** samples (TIFF) are clamped to `[0, 1]` and scaled by 255.
//! * **DICOM**: stored values → Hounsfield units via RescaleSlope/RescaleIntercept, then the
//!   [`HuWindow`] of [`DecodeOptions::dicom_window`]; MONOCHROME1 is inverted; multi-frame files
//!   give their first frame.
//! * Palette PNGs are expanded through their palette; 1/2/4-bit grey is scaled to 8 bits.
//!
//! Decompression bombs are refused from the header, before any pixel buffer is allocated, when
//! `width × height` exceeds [`DecodeOptions::max_pixels`]; the `image` crate is additionally
//! given [`image::Limits`] derived from the same budget. Errors never panic and always name the
//! file ([`DecodeError`]).

use crate::dicom::{self, DicomStart, ProbeError};
use crate::failure::{DecodeError, Failure, FailureKind, check_pixel_count, error_chain};
use crate::luma::{COLOUR_TOLERANCE, luma8, luma16_to_8};
use crate::options::DecodeOptions;
use crate::types::{DecodedImage, FileFormat, GreyImage, PixelLayout, SourceInfo};
use image::codecs::bmp::BmpDecoder;
use image::codecs::jpeg::JpegDecoder;
use image::codecs::png::PngDecoder;
use image::codecs::tiff::TiffDecoder;
use image::{ColorType, DynamicImage, ExtendedColorType, ImageDecoder, ImageError, ImageFormat};
use image::{Limits, error::LimitErrorKind};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::Path;

/// The path reported by [`decode_bytes`] and [`probe_bytes`] for in-memory input.
pub const MEMORY_PATH: &str = "<memory>";

/// The format suggested by a file name's extension (case-insensitive), if any.
///
/// Only a hint: the content decides. `.dcm`, `.dicom` and `.dic` suggest DICOM, which lets
/// [`decode_file`] try bare data sets that lack the `DICM` magic.
pub fn format_hint_from_path(path: &Path) -> Option<FileFormat> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => FileFormat::Png,
        "jpg" | "jpeg" | "jpe" | "jfif" => FileFormat::Jpeg,
        "bmp" | "dib" => FileFormat::Bmp,
        "tif" | "tiff" => FileFormat::Tiff,
        "dcm" | "dicom" | "dic" => FileFormat::Dicom,
        _ => return None,
    })
}

/// Decodes a file, choosing the decoder from its content (and extension for DICOM).
pub fn decode_file(path: &Path, options: &DecodeOptions) -> Result<DecodedImage, DecodeError> {
    let at = |f: Failure| f.at(path);
    let (mut file, len) = open(path).map_err(at)?;
    let head = read_head(&mut file).map_err(at)?;
    let hint = format_hint_from_path(path);
    guard(|| match detect(&head, hint)? {
        Detected::Dicom(start) => {
            let bytes = read_all(&mut file, len)?;
            decode_dicom(&bytes, start, options)
        }
        Detected::Image(format) => {
            rewind(&mut file)?;
            decode_image(BufReader::new(file), format, &head, options)
        }
    })
    .map_err(at)
}

/// Decodes bytes already in memory; `hint` is the format suggested by a file extension or
/// content type, if any.
pub fn decode_bytes(
    bytes: &[u8],
    hint: Option<FileFormat>,
    options: &DecodeOptions,
) -> Result<DecodedImage, DecodeError> {
    decode_bytes_named(bytes, Path::new(MEMORY_PATH), hint, options)
}

/// Like [`decode_bytes`], but errors name `name` (e.g. the entry of an archive) instead of
/// `<memory>`.
pub fn decode_bytes_named(
    bytes: &[u8],
    name: &Path,
    hint: Option<FileFormat>,
    options: &DecodeOptions,
) -> Result<DecodedImage, DecodeError> {
    let head = &bytes[..bytes.len().min(HEAD_LEN)];
    guard(|| match detect(head, hint)? {
        Detected::Dicom(start) => decode_dicom(bytes, start, options),
        Detected::Image(format) => decode_image(Cursor::new(bytes), format, head, options),
    })
    .map_err(|f| f.at(name))
}

/// Reads only the header: format, layout, depth and size, without decoding pixels.
///
/// Reads a few kilobytes for PNG, BMP, TIFF and DICOM (DICOM: up to the Pixel Data element);
/// JPEG files are read whole by the JPEG decoder but not decoded. Fails for exactly the headers
/// that [`decode_file`] would refuse: unknown content, unsupported variants (such as compressed
/// DICOM) and images over [`DecodeOptions::max_pixels`]. It does not detect corrupt pixel data.
pub fn probe_file(path: &Path, options: &DecodeOptions) -> Result<SourceInfo, DecodeError> {
    let at = |f: Failure| f.at(path);
    let (mut file, len) = open(path).map_err(at)?;
    let head = read_head(&mut file).map_err(at)?;
    let hint = format_hint_from_path(path);
    guard(|| match detect(&head, hint)? {
        Detected::Dicom(start) => probe_dicom_file(&mut file, len, start, options),
        Detected::Image(format) => {
            rewind(&mut file)?;
            open_image(BufReader::new(file), format, &head, options).map(|(_, info)| info)
        }
    })
    .map_err(at)
}

/// [`probe_file`] for bytes in memory (errors name `<memory>`).
pub fn probe_bytes(
    bytes: &[u8],
    hint: Option<FileFormat>,
    options: &DecodeOptions,
) -> Result<SourceInfo, DecodeError> {
    let head = &bytes[..bytes.len().min(HEAD_LEN)];
    guard(|| match detect(head, hint)? {
        Detected::Dicom(start) => {
            match dicom::probe(bytes, bytes.len(), start, options) {
                Ok(info) => Ok(info),
                Err(ProbeError::Failed(f)) => Err(raw_dataset_failure(f, start)),
                // Unreachable with the whole input; report it as truncation.
                Err(ProbeError::NeedMore) => {
                    Err(Failure::new(FailureKind::Corrupt, "truncated DICOM data"))
                }
            }
        }
        Detected::Image(format) => {
            open_image(Cursor::new(bytes), format, head, options).map(|(_, info)| info)
        }
    })
    .map_err(|f| f.at(Path::new(MEMORY_PATH)))
}

// ---------------------------------------------------------------------------------------------
// Files

/// Bytes read for format detection: enough for the DICOM magic at offset 128.
const HEAD_LEN: usize = 132;

fn io_failure(action: &str, e: &io::Error) -> Failure {
    let reason = match e.kind() {
        io::ErrorKind::NotFound => "file not found".to_string(),
        io::ErrorKind::PermissionDenied => format!("permission denied while trying to {action}"),
        io::ErrorKind::IsADirectory => "is a directory, not an image file".to_string(),
        _ => format!("I/O error while trying to {action}: {e}"),
    };
    Failure::new(FailureKind::Io, reason)
}

/// Opens a file for reading, refusing directories; returns it with its length.
fn open(path: &Path) -> Result<(File, u64), Failure> {
    let file = File::open(path).map_err(|e| io_failure("open it", &e))?;
    let meta = file
        .metadata()
        .map_err(|e| io_failure("read its metadata", &e))?;
    if meta.is_dir() {
        return Err(Failure::new(
            FailureKind::Io,
            "is a directory, not an image file",
        ));
    }
    if !meta.is_file() {
        // Devices and pipes have no length to bound reads by (think `/dev/zero` named `.dcm`).
        return Err(Failure::new(
            FailureKind::Io,
            "is not a regular file (a device, pipe or socket)",
        ));
    }
    Ok((file, meta.len()))
}

/// Reads up to [`HEAD_LEN`] bytes from the start of the file.
fn read_head(file: &mut File) -> Result<Vec<u8>, Failure> {
    let mut head = Vec::with_capacity(HEAD_LEN);
    file.by_ref()
        .take(HEAD_LEN as u64)
        .read_to_end(&mut head)
        .map_err(|e| io_failure("read it", &e))?;
    Ok(head)
}

fn rewind(file: &mut File) -> Result<(), Failure> {
    file.seek(SeekFrom::Start(0))
        .map(|_| ())
        .map_err(|e| io_failure("read it", &e))
}

/// Reads the whole file (from the start).
fn read_all(file: &mut File, len: u64) -> Result<Vec<u8>, Failure> {
    rewind(file)?;
    let mut bytes = Vec::new();
    // The length is only a capacity hint; a file may change size while read.
    let _ = bytes.try_reserve_exact(usize::try_from(len).unwrap_or(0));
    file.read_to_end(&mut bytes)
        .map_err(|e| io_failure("read it", &e))?;
    Ok(bytes)
}

/// Reads as much of a DICOM file as its header needs: 64 KiB first, doubling as required.
fn probe_dicom_file(
    file: &mut File,
    len: u64,
    start: DicomStart,
    options: &DecodeOptions,
) -> Result<SourceInfo, Failure> {
    rewind(file)?;
    let total = usize::try_from(len).unwrap_or(usize::MAX);
    let mut prefix = Vec::new();
    let mut want: u64 = 64 * 1024;
    loop {
        let missing = want.saturating_sub(prefix.len() as u64);
        file.by_ref()
            .take(missing)
            .read_to_end(&mut prefix)
            .map_err(|e| io_failure("read it", &e))?;
        let complete = (prefix.len() as u64) < want;
        let total = if complete {
            prefix.len()
        } else {
            total.max(prefix.len())
        };
        match dicom::probe(&prefix, total, start, options) {
            Ok(info) => return Ok(info),
            Err(ProbeError::Failed(f)) => return Err(raw_dataset_failure(f, start)),
            Err(ProbeError::NeedMore) if !complete => want = want.saturating_mul(2),
            Err(ProbeError::NeedMore) => {
                return Err(Failure::new(FailureKind::Corrupt, "truncated DICOM data"));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Detection

/// What the content was recognised as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Detected {
    Image(FileFormat),
    Dicom(DicomStart),
}

/// Recognises the format from the first bytes; `hint` only matters for bare DICOM data sets.
fn detect(head: &[u8], hint: Option<FileFormat>) -> Result<Detected, Failure> {
    if head.is_empty() {
        return Err(Failure::new(FailureKind::Empty, "empty file (0 bytes)"));
    }
    if let Some(start) = dicom::detect(head) {
        return Ok(Detected::Dicom(start));
    }
    match image::guess_format(head) {
        Ok(ImageFormat::Png) => Ok(Detected::Image(FileFormat::Png)),
        Ok(ImageFormat::Jpeg) => Ok(Detected::Image(FileFormat::Jpeg)),
        Ok(ImageFormat::Bmp) => Ok(Detected::Image(FileFormat::Bmp)),
        Ok(ImageFormat::Tiff) => Ok(Detected::Image(FileFormat::Tiff)),
        Ok(other) => Err(Failure::new(
            FailureKind::Unsupported,
            format!(
                "unsupported format: the content is {} (supported: PNG, JPEG, BMP, TIFF, DICOM)",
                other.to_mime_type()
            ),
        )),
        Err(_) if hint == Some(FileFormat::Dicom) && text_prefix(head).is_none() => {
            Ok(Detected::Dicom(DicomStart::RawDataset))
        }
        Err(_) => Err(Failure::new(
            FailureKind::NotAnImage,
            describe_unknown(head),
        )),
    }
}

/// The head as text, if it looks like text (UTF-8 without control characters).
fn text_prefix(head: &[u8]) -> Option<&str> {
    let text = match std::str::from_utf8(head) {
        Ok(text) => text,
        // A multi-byte character cut at the end of the head is still text.
        Err(e) if e.error_len().is_none() && e.valid_up_to() + 4 > head.len() => {
            std::str::from_utf8(&head[..e.valid_up_to()]).ok()?
        }
        Err(_) => return None,
    };
    let text = text.trim_start_matches('\u{feff}');
    let printable = text
        .chars()
        .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r' | '\x0c'));
    (printable && !text.trim().is_empty()).then_some(text)
}

/// Explains content that is not a supported format, saying what its first bytes look like.
fn describe_unknown(head: &[u8]) -> String {
    if let Some(text) = text_prefix(head) {
        let trimmed = text.trim_start();
        let lower = trimmed.to_ascii_lowercase();
        if lower.starts_with("version https://git-lfs") {
            return "not an image: content is a Git LFS pointer (text), not the file itself; \
                    fetch the real content with `git lfs pull`"
                .into();
        }
        let shown: String = trimmed.chars().take(40).collect();
        let more = if trimmed.chars().count() > 40 {
            "…"
        } else {
            ""
        };
        let what = if lower.starts_with("<!doctype html") || lower.starts_with("<html") {
            " (an HTML page, e.g. a download error page)"
        } else {
            ""
        };
        return format!(
            "not an image: content starts with text{what} \"{}{more}\"",
            shown.escape_debug()
        );
    }
    let known: &[(&[u8], &str)] = &[
        (b"%PDF", "a PDF document"),
        (b"PK\x03\x04", "a ZIP archive"),
        (b"\x1f\x8b", "gzip-compressed data"),
        (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
        (b"Rar!", "a RAR archive"),
        (b"\x93NUMPY", "a NumPy array"),
        (b"\x89HDF", "an HDF5 file"),
    ];
    let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let hex = hex.join(" ");
    match known.iter().find(|(magic, _)| head.starts_with(magic)) {
        Some((_, what)) => format!("not an image: content is {what} (starts with bytes {hex})"),
        None => format!(
            "not an image: content not recognised as PNG, JPEG, BMP, TIFF or DICOM (starts with \
             bytes {hex})"
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Panic guard

/// Runs a decoding step, turning a panic inside a decoding library into an error so that one bad
/// file cannot take down a batch job. Under `cfg(fuzzing)` panics propagate so the fuzzer sees
/// them.
fn guard<T>(f: impl FnOnce() -> Result<T, Failure>) -> Result<T, Failure> {
    #[cfg(fuzzing)]
    {
        f()
    }
    #[cfg(not(fuzzing))]
    {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Failure::new(
                FailureKind::Corrupt,
                format!("corrupt data made the decoder fail unexpectedly: {message}"),
            ))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// DICOM

fn decode_dicom(
    bytes: &[u8],
    start: DicomStart,
    options: &DecodeOptions,
) -> Result<DecodedImage, Failure> {
    dicom::decode(bytes, start, options).map_err(|f| raw_dataset_failure(f, start))
}

/// For a bare data set tried only because of a `.dcm` name, a parse failure means "not DICOM".
fn raw_dataset_failure(failure: Failure, start: DicomStart) -> Failure {
    if start == DicomStart::RawDataset && failure.kind == FailureKind::Corrupt {
        Failure::new(
            FailureKind::NotAnImage,
            format!(
                "not a DICOM file: no DICM magic at offset {}, and the content does not parse \
                 as a bare DICOM data set either ({})",
                dicom::PREAMBLE_LEN,
                failure.reason
            ),
        )
    } else {
        failure
    }
}

// ---------------------------------------------------------------------------------------------
// PNG, JPEG, BMP, TIFF

/// `image` crate limits derived from the pixel budget.
fn image_limits(options: &DecodeOptions) -> Limits {
    let mut limits = Limits::default();
    // No side can exceed the whole pixel budget.
    let side = u32::try_from(options.max_pixels).unwrap_or(u32::MAX);
    limits.max_image_width = Some(side);
    limits.max_image_height = Some(side);
    // The largest allowed image at the widest sample type (RGBA 32-bit float, 16 bytes per
    // pixel), plus working memory for the decoders.
    limits.max_alloc = Some(
        options
            .max_pixels
            .saturating_mul(16)
            .saturating_add(64 * 1024 * 1024),
    );
    limits
}

/// Turns an `image` error into a reason.
fn image_failure(format: FileFormat, error: ImageError) -> Failure {
    match error {
        ImageError::Decoding(e) => Failure::new(
            FailureKind::Corrupt,
            format!("corrupt or truncated {format} data: {}", error_chain(&e)),
        ),
        ImageError::IoError(e) if e.kind() == io::ErrorKind::UnexpectedEof => Failure::new(
            FailureKind::Corrupt,
            format!("truncated {format} data: the content ends too early"),
        ),
        ImageError::IoError(e) => Failure::new(
            FailureKind::Io,
            format!("I/O error while reading {format} data: {e}"),
        ),
        ImageError::Limits(e) => {
            let kind = if matches!(e.kind(), LimitErrorKind::Unsupported { .. }) {
                FailureKind::Unsupported
            } else {
                FailureKind::TooLarge
            };
            Failure::new(
                kind,
                format!(
                    "{format} image needs more memory than allowed ({e}); raise --max-pixels to \
                     allow it"
                ),
            )
        }
        ImageError::Unsupported(e) => Failure::new(
            FailureKind::Unsupported,
            format!("unsupported {format} variant: {e}"),
        ),
        other => Failure::new(
            FailureKind::Corrupt,
            format!("invalid {format} data: {}", error_chain(&other)),
        ),
    }
}

/// The fields of a PNG IHDR chunk that matter here.
#[derive(Clone, Copy, Debug)]
struct PngHeader {
    width: u32,
    height: u32,
    bit_depth: u8,
    color_type: u8,
}

/// Reads width, height, depth and colour type from the IHDR chunk at its fixed offset.
fn png_header(head: &[u8]) -> Option<PngHeader> {
    let be32 = |at: usize| -> Option<u32> {
        let b = head.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    if head.get(12..16)? != b"IHDR" {
        return None;
    }
    Some(PngHeader {
        width: be32(16)?,
        height: be32(20)?,
        bit_depth: *head.get(24)?,
        color_type: *head.get(25)?,
    })
}

/// Layout and bits per sample of a colour type, if it maps onto [`PixelLayout`].
fn layout_of(color: ExtendedColorType) -> Option<(PixelLayout, u8)> {
    use ExtendedColorType as C;
    let layout = match color {
        C::A8 | C::L1 | C::L2 | C::L4 | C::L8 | C::L16 => PixelLayout::Grey,
        C::La1 | C::La2 | C::La4 | C::La8 | C::La16 => PixelLayout::GreyAlpha,
        C::Rgb1 | C::Rgb2 | C::Rgb4 | C::Rgb5x1 | C::Rgb8 | C::Rgb16 | C::Bgr8 | C::Rgb32F => {
            PixelLayout::Rgb
        }
        C::Cmyk8 | C::Cmyk16 => PixelLayout::Rgb,
        C::Rgba1 | C::Rgba2 | C::Rgba4 | C::Rgba8 | C::Rgba16 | C::Bgra8 | C::Rgba32F => {
            PixelLayout::Rgba
        }
        _ => return None,
    };
    let channels = color.channel_count().max(1);
    let depth = u8::try_from(color.bits_per_pixel() / u16::from(channels)).ok()?;
    Some((layout, depth))
}

/// Layout and depth as stored in a PNG file, from its IHDR (palette: the decoder's expansion).
fn png_layout(header: &PngHeader, decoded: ColorType) -> Option<(PixelLayout, u8)> {
    match header.color_type {
        0 => Some((PixelLayout::Grey, header.bit_depth)),
        2 => Some((PixelLayout::Rgb, header.bit_depth)),
        // Palette entries are 8-bit RGB, with alpha when a tRNS chunk is present.
        3 => layout_of(decoded.into()),
        4 => Some((PixelLayout::GreyAlpha, header.bit_depth)),
        6 => Some((PixelLayout::Rgba, header.bit_depth)),
        _ => None,
    }
}

/// Builds the decoder (header only), refusing oversized images; returns the source description.
fn open_image<'a, R: BufRead + Seek + 'a>(
    reader: R,
    format: FileFormat,
    head: &[u8],
    options: &DecodeOptions,
) -> Result<(Box<dyn ImageDecoder + 'a>, SourceInfo), Failure> {
    let fail = |e| image_failure(format, e);
    let limits = image_limits(options);
    let mut png = None;
    let decoder: Box<dyn ImageDecoder + 'a> = match format {
        FileFormat::Png => {
            // Check the IHDR before the PNG decoder sees the file at all.
            png = png_header(head);
            if let Some(header) = png {
                check_pixel_count(header.width, header.height, options)?;
            }
            Box::new(PngDecoder::with_limits(reader, limits).map_err(fail)?)
        }
        FileFormat::Jpeg => Box::new(JpegDecoder::new(reader).map_err(fail)?),
        FileFormat::Bmp => Box::new(BmpDecoder::new(reader).map_err(fail)?),
        FileFormat::Tiff => Box::new(TiffDecoder::new(reader).map_err(fail)?),
        FileFormat::Dicom => {
            return Err(Failure::new(
                FailureKind::Unsupported,
                "internal error: DICOM routed to the image decoder",
            ));
        }
    };
    let (width, height) = decoder.dimensions();
    check_pixel_count(width, height, options)?;
    let decoded = decoder.color_type();
    let (layout, bit_depth) = png
        .and_then(|header| png_layout(&header, decoded))
        .or_else(|| layout_of(decoder.original_color_type()))
        .or_else(|| layout_of(decoded.into()))
        .unwrap_or((PixelLayout::Rgb, 8));
    let info = SourceInfo {
        format,
        layout,
        bit_depth,
        width,
        height,
    };
    Ok((decoder, info))
}

fn decode_image<R: BufRead + Seek>(
    reader: R,
    format: FileFormat,
    head: &[u8],
    options: &DecodeOptions,
) -> Result<DecodedImage, Failure> {
    let fail = |e| image_failure(format, e);
    let (mut decoder, source) = open_image(reader, format, head, options)?;
    let mut limits = image_limits(options);
    limits.reserve(decoder.total_bytes()).map_err(fail)?;
    decoder.set_limits(limits).map_err(fail)?;
    let decoded = DynamicImage::from_decoder(decoder).map_err(fail)?;
    let (width, height) = (decoded.width(), decoded.height());
    let coloured_pixels = coloured_pixels(&decoded);
    let image = GreyImage::new(width, height, to_grey(decoded)).ok_or_else(|| {
        Failure::new(
            FailureKind::Corrupt,
            format!("internal error: {format} decoder returned a buffer of the wrong size"),
        )
    })?;
    Ok(DecodedImage {
        image,
        source,
        coloured_pixels,
        series: None,
    })
}

/// Pixels of a colour image whose channels differ by more than [`COLOUR_TOLERANCE`] (8-bit
/// scale): grey content stored as RGB has none; grey layouts have none by definition.
fn coloured_pixels(image: &DynamicImage) -> u64 {
    let spread = |r: u8, g: u8, b: u8| r.max(g).max(b) - r.min(g).min(b);
    let count = |pixels: &mut dyn Iterator<Item = (u8, u8, u8)>| {
        pixels
            .filter(|&(r, g, b)| spread(r, g, b) > COLOUR_TOLERANCE)
            .count() as u64
    };
    match image {
        DynamicImage::ImageLuma8(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA16(_) => 0,
        DynamicImage::ImageRgb8(buf) => count(&mut buf.chunks_exact(3).map(|p| (p[0], p[1], p[2]))),
        DynamicImage::ImageRgba8(buf) => {
            count(&mut buf.chunks_exact(4).map(|p| (p[0], p[1], p[2])))
        }
        other => count(&mut other.to_rgb8().pixels().map(|p| (p[0], p[1], p[2]))),
    }
}

// ---------------------------------------------------------------------------------------------
// Canonicalisation

/// 16-bit sample to 8 bits: `round(x / 257)`.
#[inline]
fn scale16(x: u16) -> u8 {
    ((u32::from(x) + 128) / 257) as u8
}

/// Float sample in `[0, 1]` to 8 bits (NaN → 0).
#[inline]
fn scale_f32(x: f32) -> u8 {
    if x.is_nan() {
        0
    } else {
        (x.clamp(0.0, 1.0) * 255.0).round() as u8
    }
}

#[inline]
fn luma_f32(p: &[f32]) -> u8 {
    scale_f32(0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2])
}

/// Reduces any decoded image to 8-bit grey (see the module docs for the rules).
fn to_grey(image: DynamicImage) -> Vec<u8> {
    match image {
        // Already canonical: no copy.
        DynamicImage::ImageLuma8(buf) => buf.into_raw(),
        DynamicImage::ImageLumaA8(buf) => buf.chunks_exact(2).map(|p| p[0]).collect(),
        DynamicImage::ImageRgb8(buf) => buf
            .chunks_exact(3)
            .map(|p| luma8(p[0].into(), p[1].into(), p[2].into()))
            .collect(),
        DynamicImage::ImageRgba8(buf) => buf
            .chunks_exact(4)
            .map(|p| luma8(p[0].into(), p[1].into(), p[2].into()))
            .collect(),
        DynamicImage::ImageLuma16(buf) => buf.iter().map(|&v| scale16(v)).collect(),
        DynamicImage::ImageLumaA16(buf) => buf.chunks_exact(2).map(|p| scale16(p[0])).collect(),
        DynamicImage::ImageRgb16(buf) => buf
            .chunks_exact(3)
            .map(|p| luma16_to_8(p[0], p[1], p[2]))
            .collect(),
        DynamicImage::ImageRgba16(buf) => buf
            .chunks_exact(4)
            .map(|p| luma16_to_8(p[0], p[1], p[2]))
            .collect(),
        DynamicImage::ImageRgb32F(buf) => buf.chunks_exact(3).map(luma_f32).collect(),
        DynamicImage::ImageRgba32F(buf) => buf.chunks_exact(4).map(luma_f32).collect(),
        other => other.into_luma8().into_raw(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luma_keeps_grey_exact() {
        for v in 0..=255u32 {
            assert_eq!(luma8(v, v, v), v as u8);
        }
        for v in (0..=65535u16).step_by(7) {
            assert_eq!(luma16_to_8(v, v, v), scale16(v));
        }
    }

    #[test]
    fn scale16_rounds() {
        assert_eq!(scale16(0), 0);
        assert_eq!(scale16(0x8080), 128);
        assert_eq!(scale16(65535), 255);
        for x in 0..=65535u16 {
            let expected = (f64::from(x) / 257.0).round() as u8;
            assert_eq!(scale16(x), expected, "x = {x}");
        }
    }

    #[test]
    fn hints_from_extensions() {
        assert_eq!(
            format_hint_from_path(Path::new("a/b.DCM")),
            Some(FileFormat::Dicom)
        );
        assert_eq!(
            format_hint_from_path(Path::new("x.jpeg")),
            Some(FileFormat::Jpeg)
        );
        assert_eq!(
            format_hint_from_path(Path::new("x.TIF")),
            Some(FileFormat::Tiff)
        );
        assert_eq!(format_hint_from_path(Path::new("x")), None);
    }

    #[test]
    fn text_is_described() {
        let reason = describe_unknown(b"hello, this is not a PNG at all\n");
        assert!(
            reason.starts_with("not an image: content starts with text"),
            "{reason}"
        );
        let reason = describe_unknown(b"version https://git-lfs.github.com/spec/v1\noid sha256:");
        assert!(reason.contains("Git LFS"), "{reason}");
        let reason = describe_unknown(&[0, 1, 2, 0xff, 0xfe]);
        assert!(reason.contains("00 01 02 ff fe"), "{reason}");
        let reason = describe_unknown(b"PK\x03\x04\x14\x00");
        assert!(reason.contains("ZIP"), "{reason}");
    }
}
