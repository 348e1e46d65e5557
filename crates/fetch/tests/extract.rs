//! `extract_zip_safely` against normal and malicious archives built here.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod common;

use std::path::Path;

use common::{NORMAL_ENTRIES, Scratch, patch_declared_size, symlink_zip, tree};
use covidct_fetch::{ExistingDir, ExtractLimits, FetchError, extract_zip_safely, extract_zip_with};
use covidct_testkit::archive::zip_of;

/// The scratch tree after extracting `NORMAL_ENTRIES` into `out/data`.
const NORMAL_TREE: [&str; 7] = [
    "archive.zip",
    "out",
    "out/data",
    "out/data/COVID",
    "out/data/COVID/a.png",
    "out/data/non-COVID",
    "out/data/non-COVID/b.png",
];

/// Writes `zip` to `root/archive.zip`, and a pre-existing dataset folder `root/out/data`
/// holding `keep.txt`.
fn setup(scratch: &Scratch, zip: &[u8]) -> (std::path::PathBuf, std::path::PathBuf) {
    let archive = scratch.root().join("archive.zip");
    std::fs::write(&archive, zip).expect("write archive");
    let dest = scratch.out().join("data");
    std::fs::create_dir_all(&dest).expect("mkdir dest");
    std::fs::write(dest.join("keep.txt"), b"previous dataset").expect("write keep");
    (archive, dest)
}

/// The failure left the scratch area exactly as `setup` made it: the old dataset is intact,
/// and there is no temporary folder or escaped file anywhere.
fn assert_untouched(scratch: &Scratch, dest: &Path) {
    assert_eq!(
        tree(scratch.root()),
        ["archive.zip", "out", "out/data", "out/data/keep.txt"]
    );
    assert_eq!(
        std::fs::read(dest.join("keep.txt")).expect("keep.txt"),
        b"previous dataset"
    );
}

/// Extracts with `ExistingDir::Replace` (the most permissive mode) and returns the error.
fn refuse(scratch: &Scratch, zip: &[u8], limits: &ExtractLimits) -> FetchError {
    let (archive, dest) = setup(scratch, zip);
    let err = extract_zip_with(&archive, &dest, limits, ExistingDir::Replace)
        .expect_err("the archive must be refused");
    assert_untouched(scratch, &dest);
    err
}

#[test]
fn normal_archive_is_extracted() {
    let scratch = Scratch::new();
    let archive = scratch.root().join("archive.zip");
    std::fs::write(&archive, zip_of(NORMAL_ENTRIES)).expect("write");
    let dest = scratch.out().join("data");

    let report = extract_zip_safely(&archive, &dest, &ExtractLimits::default()).expect("extract");

    assert_eq!(report.files, 2);
    assert_eq!(
        report.bytes,
        NORMAL_ENTRIES
            .iter()
            .map(|(_, d)| d.len() as u64)
            .sum::<u64>()
    );
    assert!(!report.replaced_existing);
    for (name, data) in NORMAL_ENTRIES {
        assert_eq!(
            &std::fs::read(dest.join(name)).expect("extracted file"),
            data
        );
    }
    assert_eq!(tree(scratch.root()), NORMAL_TREE);
}

#[test]
fn existing_dataset_is_refused_without_replace_and_replaced_with_it() {
    let scratch = Scratch::new();
    let (archive, dest) = setup(&scratch, &zip_of(NORMAL_ENTRIES));

    let err = extract_zip_safely(&archive, &dest, &ExtractLimits::default()).expect_err("refused");
    assert!(
        matches!(err, FetchError::DestinationNotEmpty { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("overwrite"), "{err}");
    assert_untouched(&scratch, &dest);

    let report = extract_zip_with(
        &archive,
        &dest,
        &ExtractLimits::default(),
        ExistingDir::Replace,
    )
    .expect("replace");
    assert!(report.replaced_existing);
    assert!(!dest.join("keep.txt").exists());
    assert_eq!(tree(scratch.root()), NORMAL_TREE);
}

#[test]
fn empty_existing_folder_is_filled() {
    let scratch = Scratch::new();
    let archive = scratch.root().join("archive.zip");
    std::fs::write(&archive, zip_of(NORMAL_ENTRIES)).expect("write");
    let dest = scratch.out().join("data");
    std::fs::create_dir_all(&dest).expect("mkdir");
    extract_zip_safely(&archive, &dest, &ExtractLimits::default()).expect("extract");
    assert!(dest.join("COVID/a.png").is_file());
}

#[test]
fn parent_traversal_is_refused() {
    let scratch = Scratch::new();
    let zip = zip_of(&[("COVID/a.png", b"ok"), ("../evil.txt", b"pwned")]);
    let err = refuse(&scratch, &zip, &ExtractLimits::default());
    assert!(
        matches!(&err, FetchError::UnsafeEntryPath { entry, .. } if entry == "../evil.txt"),
        "{err:?}"
    );
    assert!(err.to_string().contains("../evil.txt"), "{err}");

    let scratch = Scratch::new();
    let zip = zip_of(&[("COVID/../../evil.txt", b"pwned")]);
    let err = refuse(&scratch, &zip, &ExtractLimits::default());
    assert!(matches!(err, FetchError::UnsafeEntryPath { .. }), "{err:?}");
}

#[test]
fn absolute_paths_are_refused() {
    let scratch = Scratch::new();
    let zip = zip_of(&[("/abs/evil.txt", b"pwned")]);
    let err = refuse(&scratch, &zip, &ExtractLimits::default());
    assert!(
        matches!(&err, FetchError::UnsafeEntryPath { entry, .. } if entry == "/abs/evil.txt"),
        "{err:?}"
    );
    assert!(!Path::new("/abs/evil.txt").exists());
}

#[test]
fn windows_path_tricks_are_refused() {
    for name in [
        "..\\evil.txt",
        "C:\\evil.txt",
        "C:evil.txt",
        "COVID\\..\\..\\evil.txt",
        "a.png:stream",
    ] {
        let scratch = Scratch::new();
        let zip = zip_of(&[(name, b"pwned")]);
        let err = refuse(&scratch, &zip, &ExtractLimits::default());
        assert!(
            matches!(&err, FetchError::UnsafeEntryPath { entry, .. } if entry == name),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn symlinks_are_refused() {
    let scratch = Scratch::new();
    let err = refuse(&scratch, &symlink_zip(), &ExtractLimits::default());
    assert!(
        matches!(&err, FetchError::SymlinkEntry { entry, .. } if entry == "COVID/link.png"),
        "{err:?}"
    );
    assert!(err.to_string().contains("symbolic link"), "{err}");
}

#[test]
fn file_and_folder_clash_is_refused() {
    let scratch = Scratch::new();
    let zip = zip_of(&[("COVID", b"a file"), ("COVID/a.png", b"png")]);
    let err = refuse(&scratch, &zip, &ExtractLimits::default());
    assert!(matches!(err, FetchError::DuplicateEntry { .. }), "{err:?}");
}

#[test]
fn too_many_entries_are_refused() {
    let scratch = Scratch::new();
    let names: Vec<String> = (0..5).map(|i| format!("COVID/{i}.png")).collect();
    let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    let limits = ExtractLimits {
        max_entries: 4,
        ..ExtractLimits::default()
    };
    let err = refuse(&scratch, &zip_of(&entries), &limits);
    assert!(
        matches!(
            err,
            FetchError::TooManyEntries {
                count: 5,
                limit: 4,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn huge_declared_size_is_refused_before_reading() {
    let scratch = Scratch::new();
    let mut zip = zip_of(&[("COVID/a.png", b"ok"), ("COVID/huge.png", b"tiny really")]);
    patch_declared_size(&mut zip, "COVID/huge.png", 3_000_000_000);
    let err = refuse(&scratch, &zip, &ExtractLimits::default());
    assert!(
        matches!(&err, FetchError::DeclaredSizeTooLarge { entry, declared: 3_000_000_000, .. } if entry == "COVID/huge.png"),
        "{err:?}"
    );
}

#[test]
fn honest_entry_over_the_limit_is_refused() {
    let scratch = Scratch::new();
    let zip = zip_of(&[("COVID/big.png", &[7u8; 5000])]);
    let limits = ExtractLimits {
        max_entry_bytes: 1000,
        ..ExtractLimits::default()
    };
    let err = refuse(&scratch, &zip, &limits);
    assert!(
        matches!(
            err,
            FetchError::DeclaredSizeTooLarge {
                declared: 5000,
                limit: 1000,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn declared_total_over_the_limit_is_refused() {
    let scratch = Scratch::new();
    let zip = zip_of(&[("COVID/a.png", &[1u8; 800]), ("COVID/b.png", &[2u8; 800])]);
    let limits = ExtractLimits {
        max_total_bytes: 1000,
        ..ExtractLimits::default()
    };
    let err = refuse(&scratch, &zip, &limits);
    assert!(
        matches!(&err, FetchError::TotalTooLarge { entry, .. } if entry == "COVID/b.png"),
        "{err:?}"
    );
}

/// A lying entry (actual data larger than declared) must be refused on the bytes actually
/// produced. The zip crate itself stops reading past the declared size (reported as a `Zip`
/// error naming the entry); our own byte counting (`EntryTooLarge`/`TotalTooLarge`, unit-tested
/// in `extract.rs`) is the second line of defence. Either is a refusal.
fn assert_refused_for_size(err: &FetchError, expected_entry: &str) {
    let ok = match err {
        FetchError::EntryTooLarge { entry, .. } | FetchError::TotalTooLarge { entry, .. } => {
            entry == expected_entry
        }
        FetchError::Zip {
            entry: Some(entry),
            source,
            ..
        } => entry == expected_entry && source.to_string().contains("larger than"),
        _ => false,
    };
    assert!(
        ok,
        "expected a size refusal for {expected_entry}, got {err:?}"
    );
    assert!(err.to_string().contains(expected_entry), "{err}");
}

#[test]
fn lying_entry_is_stopped_on_actual_bytes() {
    // 1 MiB of zeros deflates to ~1 KiB; the headers claim 100 bytes.
    let scratch = Scratch::new();
    let bomb = vec![0u8; 1 << 20];
    let mut zip = zip_of(&[("COVID/a.png", b"ok"), ("COVID/bomb.png", &bomb)]);
    assert!(
        zip.len() < 16 * 1024,
        "the test archive should be small: {}",
        zip.len()
    );
    patch_declared_size(&mut zip, "COVID/bomb.png", 100);
    let limits = ExtractLimits {
        max_entry_bytes: 64 * 1024,
        ..ExtractLimits::default()
    };
    let err = refuse(&scratch, &zip, &limits);
    assert_refused_for_size(&err, "COVID/bomb.png");
}

#[test]
fn lying_entries_are_stopped_on_actual_bytes_even_under_generous_limits() {
    let scratch = Scratch::new();
    let data = vec![0u8; 48 * 1024];
    let mut zip = zip_of(&[("COVID/a.png", &data), ("COVID/b.png", &data)]);
    patch_declared_size(&mut zip, "COVID/a.png", 10);
    patch_declared_size(&mut zip, "COVID/b.png", 10);
    let err = refuse(&scratch, &zip, &ExtractLimits::default());
    assert_refused_for_size(&err, "COVID/a.png");
}

#[test]
fn limits_exactly_met_are_accepted() {
    let scratch = Scratch::new();
    let archive = scratch.root().join("archive.zip");
    std::fs::write(&archive, zip_of(&[("a", &[1u8; 100]), ("b", &[2u8; 100])])).expect("write");
    let limits = ExtractLimits {
        max_entries: 2,
        max_entry_bytes: 100,
        max_total_bytes: 200,
    };
    let report =
        extract_zip_safely(&archive, &scratch.out().join("data"), &limits).expect("extract");
    assert_eq!(report.bytes, 200);
}

#[test]
fn corrupt_archive_names_the_file() {
    let scratch = Scratch::new();
    let err = refuse(
        &scratch,
        b"this is not a zip file",
        &ExtractLimits::default(),
    );
    assert!(matches!(err, FetchError::Zip { .. }), "{err:?}");
    assert!(err.to_string().contains("archive.zip"), "{err}");
}

#[test]
fn corrupt_entry_data_leaves_nothing_behind() {
    // Flip bytes inside the stored data of the second entry: its CRC check fails mid-way,
    // after the first entry was already written to the temporary folder.
    let scratch = Scratch::new();
    let payload = b"0123456789abcdef0123456789abcdef";
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    use std::io::Write;
    writer.start_file("COVID/a.png", stored).expect("start");
    writer.write_all(b"first").expect("write");
    writer.start_file("COVID/b.png", stored).expect("start");
    writer.write_all(payload).expect("write");
    let mut zip = writer.finish().expect("finish").into_inner();
    let at = zip
        .windows(payload.len())
        .position(|w| w == payload)
        .expect("payload in archive");
    zip[at] ^= 0xff;
    let err = refuse(&scratch, &zip, &ExtractLimits::default());
    assert!(
        matches!(&err, FetchError::Zip { entry: Some(entry), .. } if entry == "COVID/b.png"),
        "{err:?}"
    );
}
