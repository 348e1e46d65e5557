//! Request bodies: images as multipart uploads, raw bodies with their content type, or JSON
//! base64; and JSON bodies, with every rejection answered as an [`ApiError`].

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;
use covidct_imaging::{FileFormat, format_hint_from_path};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use crate::error::ApiError;

/// One uploaded image before decoding.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The file's bytes.
    pub bytes: Bytes,
    /// Format suggested by the content type or file name (the content decides).
    pub hint: Option<FileFormat>,
    /// The file name the client gave, if any.
    pub filename: Option<String>,
}

/// One image as JSON.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageJson {
    /// The file's bytes in standard base64 (PNG, JPEG or DICOM).
    pub image: String,
    /// Optional file name (its extension is a format hint).
    pub filename: Option<String>,
}

/// Several images as JSON.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchJson {
    /// The images, answered in this order.
    pub images: Vec<ImageJson>,
}

/// One image as a multipart form (the documentation's view of the upload).
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // Documents the multipart body for OpenAPI; the form is parsed field by field.
pub struct ImageForm {
    /// The image file.
    #[schema(value_type = String, format = Binary)]
    pub image: Vec<u8>,
}

/// Several images as a multipart form: one file per field.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // Documents the multipart body for OpenAPI; the form is parsed field by field.
pub struct BatchForm {
    /// The image files.
    #[schema(value_type = Vec<String>, format = Binary)]
    pub images: Vec<Vec<u8>>,
}

fn content_type(headers: &HeaderMap) -> Result<String, ApiError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "a Content-Type header is required",
            )
        })?;
    Ok(value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase())
}

fn raw_hint(mime: &str) -> Option<Option<FileFormat>> {
    Some(match mime {
        "image/png" => Some(FileFormat::Png),
        "image/jpeg" | "image/jpg" => Some(FileFormat::Jpeg),
        "application/dicom" => Some(FileFormat::Dicom),
        "application/octet-stream" => None,
        _ => return None,
    })
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the request body is over the limit of {limit} bytes"),
    )
}

/// The whole body, refusing more than `limit` bytes.
async fn body_bytes(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large(limit))
}

/// A JSON body of type `T` (`Content-Type: application/json`).
pub async fn json_body<T: DeserializeOwned>(request: Request, limit: usize) -> Result<T, ApiError> {
    let (parts, body) = request.into_parts();
    if content_type(&parts.headers)? != "application/json" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be application/json",
        ));
    }
    let bytes = body_bytes(&parts.headers, body, limit).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid JSON body: {e}")))
}

fn decode_base64(entry: ImageJson) -> Result<Upload, ApiError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(entry.image.trim())
        .map_err(|e| {
            ApiError::bad_request("invalid_base64", format!("`image` is not base64: {e}"))
        })?;
    Ok(Upload {
        bytes: Bytes::from(bytes),
        hint: entry
            .filename
            .as_deref()
            .and_then(|n| format_hint_from_path(std::path::Path::new(n))),
        filename: entry.filename,
    })
}

/// How many files a route takes, and in which bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// One image: multipart, JSON or a raw body.
    One,
    /// 1 to N images: multipart or JSON.
    Batch(usize),
    /// The slices of a study: 1 to N files (or zip archives) as multipart or JSON, or one
    /// zip archive as the raw body (`application/zip`).
    Study(usize),
}

/// The one image of a single-image request (`limit`: most body bytes).
pub async fn read_upload(request: Request, limit: usize) -> Result<Upload, ApiError> {
    read_uploads(request, limit, Expect::One)
        .await?
        .pop()
        .ok_or_else(|| ApiError::bad_request("no_image", "no image"))
}

/// The files of a request, as `expect` says (`limit`: most body bytes).
pub async fn read_uploads(
    request: Request,
    limit: usize,
    expect: Expect,
) -> Result<Vec<Upload>, ApiError> {
    let (batch, max_images) = match expect {
        Expect::One => (false, 1),
        Expect::Batch(n) | Expect::Study(n) => (true, n),
    };
    let mime = content_type(request.headers())?;
    let uploads = match mime.as_str() {
        // A single-image endpoint reads a second part only to say that it takes one.
        "multipart/form-data" => {
            read_multipart(request, limit, if batch { max_images } else { 2 }, expect).await?
        }
        "application/json" if batch => json_body::<BatchJson>(request, limit)
            .await?
            .images
            .into_iter()
            .map(decode_base64)
            .collect::<Result<_, _>>()?,
        "application/json" => vec![decode_base64(
            json_body::<ImageJson>(request, limit).await?,
        )?],
        "application/zip" | "application/x-zip-compressed"
            if matches!(expect, Expect::Study(_)) =>
        {
            let (parts, body) = request.into_parts();
            vec![Upload {
                bytes: body_bytes(&parts.headers, body, limit).await?,
                hint: None,
                filename: Some("study.zip".to_owned()),
            }]
        }
        other => match raw_hint(other) {
            Some(hint) if !batch => {
                let (parts, body) = request.into_parts();
                vec![Upload {
                    bytes: body_bytes(&parts.headers, body, limit).await?,
                    hint,
                    filename: None,
                }]
            }
            _ => {
                let accepted = match expect {
                    Expect::One => {
                        "multipart/form-data, application/json, image/png, image/jpeg, \
                         application/dicom or application/octet-stream"
                    }
                    Expect::Batch(_) => "multipart/form-data or application/json",
                    Expect::Study(_) => "multipart/form-data, application/json or application/zip",
                };
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!("content type `{other}` is not accepted here: send {accepted}"),
                ));
            }
        },
    };
    match uploads.len() {
        0 => Err(ApiError::bad_request(
            "no_image",
            "the request holds no image",
        )),
        1 => Ok(uploads),
        n if !batch => Err(ApiError::bad_request(
            "expected_one_image",
            format!("this endpoint takes one image, the request holds {n}: use /v1/predict/batch"),
        )),
        n if n > max_images => Err(too_many(n, max_images, expect)),
        _ => Ok(uploads),
    }
}

fn too_many(n: usize, max: usize, expect: Expect) -> ApiError {
    let (code, what) = match expect {
        Expect::Study(_) => ("too_many_slices", "slices"),
        Expect::One | Expect::Batch(_) => ("too_many_images", "images"),
    };
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        code,
        format!("{n} {what} is over the limit of {max} per request"),
    )
}

async fn read_multipart(
    request: Request,
    limit: usize,
    max_images: usize,
    expect: Expect,
) -> Result<Vec<Upload>, ApiError> {
    let invalid = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(limit)
        } else {
            ApiError::bad_request(
                "invalid_multipart",
                format!("invalid multipart body: {}", e.body_text()),
            )
        }
    };
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?;
    let mut uploads = Vec::new();
    while let Some(field) = form.next_field().await.map_err(invalid)? {
        if uploads.len() == max_images.max(1) {
            // Refused before reading further: at most one image more than allowed is read.
            return Err(too_many(uploads.len() + 1, max_images, expect));
        }
        let filename = field.file_name().map(str::to_owned);
        let hint = field
            .content_type()
            .and_then(raw_hint)
            .flatten()
            .or_else(|| {
                filename
                    .as_deref()
                    .and_then(|n| format_hint_from_path(std::path::Path::new(n)))
            });
        let bytes = field.bytes().await.map_err(invalid)?;
        uploads.push(Upload {
            bytes,
            hint,
            filename,
        });
    }
    Ok(uploads)
}
