//! Kaggle dataset names (`owner/name`).

use crate::error::FetchError;

/// Splits `owner/name` after checking both parts are non-empty and made of safe characters
/// (ASCII letters, digits, `-`, `_`, `.`; not starting with `.`; at most 100 characters).
pub fn parse_dataset(dataset: &str) -> Result<(&str, &str), FetchError> {
    let invalid = |reason: &str| FetchError::InvalidDataset {
        dataset: dataset.to_owned(),
        reason: reason.to_owned(),
    };
    let (owner, name) = dataset
        .split_once('/')
        .ok_or_else(|| invalid("expected owner/name"))?;
    for part in [owner, name] {
        if part.is_empty() {
            return Err(invalid("expected owner/name with both parts non-empty"));
        }
        if part.len() > 100 {
            return Err(invalid("a part is longer than 100 characters"));
        }
        if part.starts_with('.') {
            return Err(invalid("a part starts with '.'"));
        }
        if !part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(invalid(
                "only ASCII letters, digits, '-', '_' and '.' are allowed, with exactly one '/'",
            ));
        }
    }
    Ok((owner, name))
}
