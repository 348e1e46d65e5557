//! `weights.lock` at the repository root, the one place of the pretrained weights' packages,
//! versions and SHA-256, read when this crate compiles.

/// The lock file's text.
const LOCK: &str = include_str!("../../../weights.lock");

/// The `sha256` column (the sixth) of the line of weights `name` in `weights.lock`. Evaluated
/// in constants: a lock without the line, or with a value that is not 64 lowercase hex
/// digits, fails the build.
pub(crate) const fn sha256_of(name: &str) -> &'static str {
    let lock = LOCK.as_bytes();
    let name = name.as_bytes();
    let mut line = 0;
    while line < lock.len() {
        if starts_with_field(lock, line, name) {
            let (start, end) = field(lock, line, 5);
            let (_, rest) = lock.split_at(start);
            let (hash, _) = rest.split_at(end - start);
            assert!(
                is_sha256(hash),
                "weights.lock: the sha256 of a line is malformed"
            );
            return match std::str::from_utf8(hash) {
                Ok(text) => text,
                Err(_) => panic!("weights.lock: a sha256 is not text"),
            };
        }
        while line < lock.len() && lock[line] != b'\n' {
            line += 1;
        }
        line += 1;
    }
    panic!("weights.lock has no line for these weights")
}

/// Whether the line starting at `at` begins with the field `name` (followed by a blank).
const fn starts_with_field(lock: &[u8], at: usize, name: &[u8]) -> bool {
    if at + name.len() >= lock.len() {
        return false;
    }
    let mut i = 0;
    while i < name.len() {
        if lock[at + i] != name[i] {
            return false;
        }
        i += 1;
    }
    lock[at + name.len()] == b' '
}

/// Byte range of field `index` (0-based, blank-separated) of the line starting at `at`.
const fn field(lock: &[u8], at: usize, index: usize) -> (usize, usize) {
    let mut i = at;
    let mut current = 0;
    loop {
        while i < lock.len() && lock[i] == b' ' {
            i += 1;
        }
        let start = i;
        while i < lock.len() && lock[i] != b' ' && lock[i] != b'\n' {
            i += 1;
        }
        if current == index || i >= lock.len() || lock[i] == b'\n' {
            return (start, i);
        }
        current += 1;
    }
}

const fn is_sha256(hash: &[u8]) -> bool {
    if hash.len() != 64 {
        return false;
    }
    let mut i = 0;
    while i < hash.len() {
        if !matches!(hash[i], b'0'..=b'9' | b'a'..=b'f') {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_of_the_lock_has_its_hash_found() {
        for line in LOCK
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let columns: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(columns.len(), 6, "{line}");
            assert_eq!(sha256_of(columns[0]), columns[5]);
        }
    }
}
