//! Helpers every covidct crate shares, each written once: [`write_atomically`] (and
//! [`write_atomically_from`] for a stream), SHA-256 of bytes, streams and files
//! ([`sha256`], [`sha256_hex`], [`Sha256Stream`], [`sha256_file`], [`verify_sha256`]) and the blocking
//! HTTP client builder [`http_client`]. Errors are [`CommonError`]; each crate wraps it in its
//! own error type.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod atomic;
mod error;
mod http;
mod sha256;

pub use crate::atomic::{write_atomically, write_atomically_from};
pub use crate::error::CommonError;
pub use crate::http::http_client;
pub use crate::sha256::{Sha256Stream, sha256, sha256_file, sha256_hex, verify_sha256};
