//! SHA-256 digests as lowercase hex, of bytes, of a stream fed piece by piece, and of files.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::CommonError;

/// The SHA-256 of `bytes`, as its 32 raw bytes.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha256(bytes))
}

/// A SHA-256 computed over data that arrives in pieces (a download, a file read in chunks).
#[derive(Debug, Clone, Default)]
pub struct Sha256Stream {
    hasher: Sha256,
}

impl Sha256Stream {
    /// An empty digest.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `bytes` to the digest.
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
    }

    /// Adds the whole contents of the file at `path`.
    pub fn update_from_file(&mut self, path: &Path) -> Result<(), CommonError> {
        let mut file = File::open(path).map_err(|e| CommonError::io_at(path, e))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match file.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => self.hasher.update(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(CommonError::io_at(path, e)),
            }
        }
    }

    /// The digest of everything added, lowercase hex.
    pub fn finish_hex(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

/// The SHA-256 of the file at `path`, lowercase hex.
pub fn sha256_file(path: impl AsRef<Path>) -> Result<String, CommonError> {
    let mut stream = Sha256Stream::new();
    stream.update_from_file(path.as_ref())?;
    Ok(stream.finish_hex())
}

/// Checks that the file at `path` has the SHA-256 `expected` (hex, any case, surrounding
/// blanks ignored).
pub fn verify_sha256(path: impl AsRef<Path>, expected: &str) -> Result<(), CommonError> {
    let path = path.as_ref();
    let actual = sha256_file(path)?;
    if actual.eq_ignore_ascii_case(expected.trim()) {
        Ok(())
    } else {
        Err(CommonError::ChecksumMismatch {
            path: path.to_path_buf(),
            expected: expected.trim().to_ascii_lowercase(),
            actual,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{Sha256Stream, sha256_file, sha256_hex, verify_sha256};
    use crate::CommonError;

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn bytes_streams_and_files_agree_with_the_known_digest() {
        assert_eq!(sha256_hex(b"abc"), ABC);
        let mut stream = Sha256Stream::new();
        stream.update(b"a");
        stream.update(b"bc");
        assert_eq!(stream.finish_hex(), ABC);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("abc");
        std::fs::write(&file, b"abc").unwrap();
        assert_eq!(sha256_file(&file).unwrap(), ABC);
    }

    #[test]
    fn verification_ignores_case_and_reports_a_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("abc");
        std::fs::write(&file, b"abc").unwrap();
        verify_sha256(&file, &format!(" {} ", ABC.to_uppercase())).unwrap();
        let err = verify_sha256(&file, &"0".repeat(64)).unwrap_err();
        assert!(
            matches!(&err, CommonError::ChecksumMismatch { actual, .. } if actual == ABC),
            "{err:?}"
        );
        assert!(matches!(
            sha256_file(dir.path().join("missing")),
            Err(CommonError::IoAt { .. })
        ));
    }
}
