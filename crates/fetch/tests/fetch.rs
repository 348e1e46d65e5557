//! `fetch_kaggle` end to end against a local server that answers like Kaggle.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod common;

use common::{KaggleStub, NORMAL_ENTRIES, Scratch, StubConfig, tree};
use covidct_common::sha256_hex;
use covidct_fetch::{
    ExtractLimits, FetchError, KaggleCredentials, KaggleFetchOptions, fetch_kaggle,
};
use covidct_testkit::archive::zip_of;

fn alice() -> KaggleCredentials {
    KaggleCredentials {
        username: "alice".into(),
        key: "secret-key".into(),
    }
}

fn options(stub: &KaggleStub, scratch: &Scratch) -> KaggleFetchOptions {
    KaggleFetchOptions {
        dataset: "owner/data".into(),
        out_dir: scratch.out(),
        api_base: stub.api_base.clone(),
        show_progress: false,
        timeout_secs: 10,
        ..KaggleFetchOptions::default()
    }
}

fn assert_dataset_extracted(scratch: &Scratch) {
    for (name, data) in NORMAL_ENTRIES {
        let path = scratch.out().join("data").join(name);
        assert_eq!(
            &std::fs::read(&path).expect("extracted file"),
            data,
            "{}",
            path.display()
        );
    }
}

#[test]
fn downloads_through_the_redirect_verifies_and_extracts() {
    let zip = zip_of(NORMAL_ENTRIES);
    let sha = sha256_hex(&zip);
    let stub = KaggleStub::start(StubConfig::new(zip.clone()));
    let scratch = Scratch::new();
    let options = KaggleFetchOptions {
        expected_sha256: Some(sha.to_uppercase()),
        ..options(&stub, &scratch)
    };

    let report = fetch_kaggle(&options, &alice()).expect("fetch");

    assert_eq!(report.sha256, sha);
    assert!(report.sha256_verified);
    assert_eq!(report.bytes_downloaded, zip.len() as u64);
    assert_eq!(report.archive_bytes, zip.len() as u64);
    assert_eq!(report.resumed_from, None);
    assert!(!report.reused_archive);
    assert_eq!(report.files_extracted, 2);
    assert_eq!(report.archive_path, scratch.out().join("data.zip"));
    assert_eq!(report.dataset_dir, scratch.out().join("data"));
    assert_eq!(std::fs::read(&report.archive_path).expect("archive"), zip);
    assert_dataset_extracted(&scratch);
    assert_eq!(
        tree(scratch.root()),
        [
            "out",
            "out/data",
            "out/data.zip",
            "out/data/COVID",
            "out/data/COVID/a.png",
            "out/data/non-COVID",
            "out/data/non-COVID/b.png"
        ]
    );
    let shown = report.to_string();
    assert!(
        shown.contains(&sha) && shown.contains("verified"),
        "{shown}"
    );

    let seen = stub.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!((seen[0].host, seen[0].status), ("api", 302));
    assert_eq!(seen[0].target, "/api/v1/datasets/download/owner/data");
    assert!(seen[0].authorization.is_some());
    assert_eq!((seen[1].host, seen[1].status), ("storage", 200));
    assert_eq!(
        seen[1].authorization, None,
        "credentials leaked to the storage host"
    );
    assert_eq!(seen[1].range, None);
}

#[test]
fn interrupted_download_resumes_from_the_part_file() {
    let zip = zip_of(NORMAL_ENTRIES);
    let cut = zip.len() / 2;
    let stub = KaggleStub::start(StubConfig {
        cut_first_after: Some(cut),
        ..StubConfig::new(zip.clone())
    });
    let scratch = Scratch::new();
    let options = options(&stub, &scratch);

    let err = fetch_kaggle(&options, &alice()).expect_err("the connection is cut");
    assert!(
        matches!(err, FetchError::DownloadInterrupted { received, .. } if received == cut as u64),
        "{err:?}"
    );
    assert!(err.to_string().contains("data.zip.part"), "{err}");
    let part = scratch.out().join("data.zip.part");
    assert_eq!(std::fs::read(&part).expect("part file"), zip[..cut]);
    assert!(!scratch.out().join("data").exists());

    let report = fetch_kaggle(&options, &alice()).expect("resumed fetch");
    assert_eq!(report.resumed_from, Some(cut as u64));
    assert_eq!(report.bytes_downloaded, (zip.len() - cut) as u64);
    assert_eq!(report.sha256, sha256_hex(&zip));
    assert!(!part.exists());
    assert_eq!(std::fs::read(&report.archive_path).expect("archive"), zip);
    assert_dataset_extracted(&scratch);

    let seen = stub.seen();
    let last = seen.last().expect("requests");
    assert_eq!(last.host, "storage");
    assert_eq!(
        last.range.as_deref(),
        Some(format!("bytes={cut}-").as_str())
    );
    assert_eq!(last.status, 206);
    assert_eq!(last.authorization, None);
}

#[test]
fn server_ignoring_range_restarts_from_zero() {
    let zip = zip_of(NORMAL_ENTRIES);
    let cut = zip.len() / 3;
    let stub = KaggleStub::start(StubConfig {
        cut_first_after: Some(cut),
        ignore_range: true,
        ..StubConfig::new(zip.clone())
    });
    let scratch = Scratch::new();
    let options = options(&stub, &scratch);

    fetch_kaggle(&options, &alice()).expect_err("the connection is cut");
    let report = fetch_kaggle(&options, &alice()).expect("restarted fetch");

    assert_eq!(report.resumed_from, None);
    assert_eq!(report.bytes_downloaded, zip.len() as u64);
    assert_eq!(report.sha256, sha256_hex(&zip));
    assert_eq!(std::fs::read(&report.archive_path).expect("archive"), zip);
    assert_dataset_extracted(&scratch);
    let last = stub.seen().last().cloned().expect("requests");
    assert_eq!((last.range.is_some(), last.status), (true, 200));
}

#[test]
fn complete_part_file_is_downloaded_again_after_416() {
    let zip = zip_of(NORMAL_ENTRIES);
    let stub = KaggleStub::start(StubConfig::new(zip.clone()));
    let scratch = Scratch::new();
    std::fs::create_dir_all(scratch.out()).expect("mkdir");
    std::fs::write(scratch.out().join("data.zip.part"), &zip).expect("write part");

    let report = fetch_kaggle(&options(&stub, &scratch), &alice()).expect("fetch");

    assert_eq!(report.sha256, sha256_hex(&zip));
    assert_eq!(report.resumed_from, None);
    let statuses: Vec<u16> = stub.seen().iter().map(|s| s.status).collect();
    assert_eq!(statuses, [302, 416, 302, 200]);
}

#[test]
fn wrong_credentials_are_reported_as_refused() {
    let stub = KaggleStub::start(StubConfig::new(zip_of(NORMAL_ENTRIES)));
    let scratch = Scratch::new();
    let wrong = KaggleCredentials {
        username: "alice".into(),
        key: "wrong-key".into(),
    };

    let err = fetch_kaggle(&options(&stub, &scratch), &wrong).expect_err("refused");

    assert!(
        matches!(err, FetchError::CredentialsRefused { status: 401, .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("alice") && message.contains("kaggle.json"),
        "{message}"
    );
    assert!(
        !message.contains("wrong-key"),
        "the key must not be shown: {message}"
    );
    assert_eq!(tree(scratch.root()), ["out"]);
}

#[test]
fn unknown_dataset_is_reported_as_not_found() {
    let stub = KaggleStub::start(StubConfig::new(zip_of(NORMAL_ENTRIES)));
    let scratch = Scratch::new();
    let options = KaggleFetchOptions {
        dataset: "owner/nope".into(),
        ..options(&stub, &scratch)
    };

    let err = fetch_kaggle(&options, &alice()).expect_err("404");

    assert!(
        matches!(&err, FetchError::DatasetNotFound { dataset, .. } if dataset == "owner/nope"),
        "{err:?}"
    );
    assert!(err.to_string().contains("owner/nope"), "{err}");
    assert_eq!(tree(scratch.root()), ["out"]);
}

#[test]
fn checksum_mismatch_keeps_the_file_and_extracts_nothing() {
    let zip = zip_of(NORMAL_ENTRIES);
    let stub = KaggleStub::start(StubConfig::new(zip.clone()));
    let scratch = Scratch::new();
    let wrong = "0".repeat(64);
    let options = KaggleFetchOptions {
        expected_sha256: Some(wrong.clone()),
        ..options(&stub, &scratch)
    };

    let err = fetch_kaggle(&options, &alice()).expect_err("mismatch");

    let rejected = scratch.out().join("data.zip.rejected");
    assert!(
        matches!(&err, FetchError::ChecksumMismatch { path, .. } if *path == rejected),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&wrong) && message.contains(&sha256_hex(&zip)),
        "{message}"
    );
    assert!(message.contains("data.zip.rejected"), "{message}");
    assert_eq!(std::fs::read(&rejected).expect("kept file"), zip);
    assert_eq!(tree(scratch.root()), ["out", "out/data.zip.rejected"]);
}

#[test]
fn invalid_expected_checksum_is_refused_before_any_request() {
    let stub = KaggleStub::start(StubConfig::new(zip_of(NORMAL_ENTRIES)));
    let scratch = Scratch::new();
    let options = KaggleFetchOptions {
        expected_sha256: Some("abc".into()),
        ..options(&stub, &scratch)
    };
    let err = fetch_kaggle(&options, &alice()).expect_err("invalid");
    assert!(
        matches!(err, FetchError::InvalidExpectedChecksum { .. }),
        "{err:?}"
    );
    assert!(stub.seen().is_empty());
}

#[test]
fn unsafe_dataset_names_are_refused_before_any_request() {
    let stub = KaggleStub::start(StubConfig::new(zip_of(NORMAL_ENTRIES)));
    let scratch = Scratch::new();
    for dataset in [
        "owner",
        "owner/../x",
        "../../etc/passwd",
        "owner/data/extra",
        "owner/da ta",
    ] {
        let options = KaggleFetchOptions {
            dataset: dataset.into(),
            ..options(&stub, &scratch)
        };
        let err = fetch_kaggle(&options, &alice()).expect_err("invalid");
        assert!(
            matches!(err, FetchError::InvalidDataset { .. }),
            "{dataset}: {err:?}"
        );
    }
    assert!(stub.seen().is_empty());
    assert!(tree(scratch.root()).is_empty());
}

#[test]
fn existing_dataset_folder_is_refused_before_downloading_then_replaced_with_overwrite() {
    let zip = zip_of(NORMAL_ENTRIES);
    let stub = KaggleStub::start(StubConfig::new(zip.clone()));
    let scratch = Scratch::new();
    let dataset_dir = scratch.out().join("data");
    std::fs::create_dir_all(&dataset_dir).expect("mkdir");
    std::fs::write(dataset_dir.join("old.png"), b"old").expect("write");

    let err = fetch_kaggle(&options(&stub, &scratch), &alice()).expect_err("refused");
    assert!(
        matches!(err, FetchError::DestinationNotEmpty { .. }),
        "{err:?}"
    );
    assert!(stub.seen().is_empty(), "nothing should be downloaded");
    assert_eq!(
        std::fs::read(dataset_dir.join("old.png")).expect("old file"),
        b"old"
    );

    let options = KaggleFetchOptions {
        overwrite: true,
        ..options(&stub, &scratch)
    };
    let report = fetch_kaggle(&options, &alice()).expect("overwrite");
    assert!(report.replaced_existing);
    assert!(!dataset_dir.join("old.png").exists());
    assert_dataset_extracted(&scratch);
}

#[test]
fn finished_archive_is_reused_unless_redownload() {
    let zip = zip_of(NORMAL_ENTRIES);
    let stub = KaggleStub::start(StubConfig::new(zip.clone()));
    let scratch = Scratch::new();
    let first = fetch_kaggle(&options(&stub, &scratch), &alice()).expect("first fetch");
    let requests = stub.seen().len();

    let options = KaggleFetchOptions {
        overwrite: true,
        ..options(&stub, &scratch)
    };
    let again = fetch_kaggle(&options, &alice()).expect("reuse");
    assert!(again.reused_archive);
    assert_eq!(again.bytes_downloaded, 0);
    assert_eq!(again.sha256, first.sha256);
    assert_eq!(
        stub.seen().len(),
        requests,
        "no request expected when reusing"
    );

    let options = KaggleFetchOptions {
        redownload: true,
        ..options
    };
    let fresh = fetch_kaggle(&options, &alice()).expect("redownload");
    assert!(!fresh.reused_archive);
    assert_eq!(fresh.bytes_downloaded, zip.len() as u64);
    assert!(stub.seen().len() > requests);
}

#[test]
fn malicious_archive_from_the_server_is_refused_and_previous_data_kept() {
    let zip = zip_of(&[("COVID/a.png", b"ok"), ("../evil.txt", b"pwned")]);
    let stub = KaggleStub::start(StubConfig::new(zip));
    let scratch = Scratch::new();
    let dataset_dir = scratch.out().join("data");
    std::fs::create_dir_all(&dataset_dir).expect("mkdir");
    std::fs::write(dataset_dir.join("old.png"), b"old").expect("write");
    let options = KaggleFetchOptions {
        overwrite: true,
        ..options(&stub, &scratch)
    };

    let err = fetch_kaggle(&options, &alice()).expect_err("refused");

    assert!(matches!(err, FetchError::UnsafeEntryPath { .. }), "{err:?}");
    assert_eq!(
        tree(scratch.root()),
        ["out", "out/data", "out/data.zip", "out/data/old.png"]
    );
}

#[test]
fn zip_bomb_from_the_server_is_refused() {
    let zip = zip_of(&[("COVID/bomb.png", &vec![0u8; 1 << 20])]);
    let stub = KaggleStub::start(StubConfig::new(zip));
    let scratch = Scratch::new();
    let options = KaggleFetchOptions {
        limits: ExtractLimits {
            max_entry_bytes: 1024,
            ..ExtractLimits::default()
        },
        ..options(&stub, &scratch)
    };
    let err = fetch_kaggle(&options, &alice()).expect_err("refused");
    assert!(
        matches!(err, FetchError::DeclaredSizeTooLarge { .. }),
        "{err:?}"
    );
    assert_eq!(tree(scratch.root()), ["out", "out/data.zip"]);
}

#[test]
fn report_serializes_to_json() {
    let stub = KaggleStub::start(StubConfig::new(zip_of(NORMAL_ENTRIES)));
    let scratch = Scratch::new();
    let report = fetch_kaggle(&options(&stub, &scratch), &alice()).expect("fetch");
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["files_extracted"], 2);
    assert_eq!(json["sha256"], report.sha256.as_str());
    assert_eq!(json["sha256_verified"], false);
}
