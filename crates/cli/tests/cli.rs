//! Black-box tests of the real `covidct` binary on datasets the tests generate.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use assert_cmd::Command;
use image::{ImageBuffer, Rgb, Rgba};
use std::path::Path;

/// A 2-class dataset: `A` stored as RGB PNGs, `B` as RGBA PNGs (a layout shortcut), `per_class`
/// images each, numbered so that runs of 5 look alike (pseudo-patients).
fn make_dataset(root: &Path, per_class: u32) {
    for class in ["A", "B"] {
        std::fs::create_dir_all(root.join(class)).expect("mkdir");
        for n in 1..=per_class {
            let patient = (n - 1) / 5;
            // Alternate dark and bright patients so that neighbouring patients differ clearly.
            let base = if patient % 2 == 0 {
                20 + patient * 3
            } else {
                200 - patient * 3
            } as u8;
            let k = if class == "A" { 3 } else { 5 };
            let shade = |x: u32, y: u32| base.wrapping_add(((x * k + y * (8 - k) + n) % 20) as u8);
            let path = root.join(class).join(format!("{class} ({n}).png"));
            if class == "A" {
                ImageBuffer::from_fn(40, 30, |x, y| Rgb([shade(x, y); 3])).save(&path)
            } else {
                ImageBuffer::from_fn(40, 30, |x, y| {
                    let v = shade(x, y);
                    Rgba([v, v, v, 255])
                })
                .save(&path)
            }
            .expect("save png");
        }
    }
}

fn covidct() -> Command {
    let mut command = Command::cargo_bin("covidct").expect("binary");
    // Tracking has its own tests (tests/test_tracking.py); runs here leave no `./mlruns`.
    command
        .env_remove("COVIDCT_SEED")
        .env_remove("COVIDCT_CONFIG")
        .env_remove("MLFLOW_TRACKING_URI")
        .env("COVIDCT_NO_TRACKING", "true");
    command
}

fn json_stdout(command: &mut Command) -> serde_json::Value {
    let output = command.output().expect("run");
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

#[test]
fn help_explains_every_subcommand() {
    for args in [
        &["--help"][..],
        &["data", "split", "--help"],
        &["data", "inspect", "--help"],
    ] {
        let output = covidct().args(args).output().expect("run");
        assert!(output.status.success());
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("Usage"), "{text}");
    }
    let text = String::from_utf8(
        covidct()
            .args(["data", "split", "--help"])
            .output()
            .expect("run")
            .stdout,
    )
    .expect("utf8");
    assert!(
        text.contains("COVIDCT_SEED") && text.contains("--strategy"),
        "{text}"
    );
}

#[test]
fn inspect_reports_counts_layout_shortcut_and_duplicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_dataset(dir.path(), 20);
    std::fs::copy(
        dir.path().join("A/A (1).png"),
        dir.path().join("B/copy.png"),
    )
    .expect("copy");
    let report = json_stdout(
        covidct()
            .args(["data", "inspect", "--json"])
            .arg(dir.path()),
    );
    assert_eq!(report["total_images"], 41);
    assert_eq!(report["classes"][0]["images"], 20);
    assert_eq!(report["classes"][0]["layouts"]["PNG RGB 8-bit"], 20);
    let layout = &report["shortcuts"][0];
    assert_eq!(layout["feature"], "pixel layout");
    assert_eq!(layout["is_shortcut"], true, "{layout}");
    let duplicates = report["exact_duplicates"].as_array().expect("array");
    assert_eq!(duplicates.len(), 1);
    assert_eq!(duplicates[0]["cross_class"], true);

    // The same as a table, and --deny-warnings turns the warning into exit status 3.
    let output = covidct()
        .args(["data", "inspect", "--deny-warnings"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(3));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("WARNING") && text.contains("CROSS-CLASS"),
        "{text}"
    );
}

#[test]
fn bad_files_are_named_and_skippable() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_dataset(dir.path(), 10);
    std::fs::write(dir.path().join("A/empty.png"), b"").expect("write");
    std::fs::write(dir.path().join("B/text.png"), b"hello, I am text").expect("write");
    let out = dir.path().join("split.csv");
    let output = covidct()
        .args(["data", "split"])
        .arg(dir.path())
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run");
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("empty.png") && error.contains("text.png"),
        "{error}"
    );
    assert!(error.contains("--skip-invalid"), "{error}");
    assert!(!out.exists(), "nothing written on failure");

    let output = covidct()
        .args(["data", "split", "--skip-invalid"])
        .arg(dir.path())
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("skipped") && stdout.contains("empty.png"),
        "{stdout}"
    );
    let manifest = std::fs::read_to_string(&out).expect("manifest");
    assert_eq!(manifest.lines().count(), 21);
}

#[test]
fn split_is_byte_identical_for_the_same_seed_and_flags_beat_env_beat_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_dataset(dir.path(), 30);
    let config = dir.path().join("covidct.toml");
    std::fs::write(&config, "[data.split]\nseed = 5\nratios = [60, 20, 20]\n").expect("write");
    let run = |extra: &[&str], env_seed: Option<&str>, out: &str| {
        let mut command = covidct();
        command
            .args(["data", "split", "--json", "--config"])
            .arg(&config)
            .arg(dir.path());
        command.arg("--out").arg(dir.path().join(out)).args(extra);
        if let Some(seed) = env_seed {
            command.env("COVIDCT_SEED", seed);
        }
        json_stdout(&mut command)
    };
    assert_eq!(run(&[], None, "a.csv")["settings"]["seed"], 5, "file");
    assert_eq!(
        run(&[], Some("6"), "b.csv")["settings"]["seed"],
        6,
        "env over file"
    );
    assert_eq!(
        run(&["--seed", "7"], Some("6"), "c.csv")["settings"]["seed"],
        7,
        "flag over env"
    );
    assert_eq!(run(&[], None, "d.csv")["settings"]["ratios"], "60,20,20");
    let read = |name: &str| std::fs::read(dir.path().join(name)).expect("read");
    assert_eq!(read("a.csv"), read("d.csv"), "same seed, same bytes");
    assert_ne!(read("a.csv"), read("b.csv"), "another seed, another split");
}

#[test]
fn split_report_compares_strategies() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_dataset(dir.path(), 30);
    let summary = json_stdout(
        covidct()
            .args(["data", "split", "--json", "--report"])
            .arg(dir.path())
            .arg("--out")
            .arg(dir.path().join("s.csv")),
    );
    let strategies: Vec<&str> = summary["leakage"]
        .as_array()
        .expect("leakage rows")
        .iter()
        .map(|row| row["strategy"].as_str().expect("name"))
        .collect();
    assert_eq!(strategies, vec!["blocks", "similarity", "random"]);
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_dataset(dir.path(), 5);
    let output = covidct()
        .args(["--log-format", "json", "data", "inspect", "--json"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        let value: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
        assert!(value.get("level").is_some(), "{line}");
    }
}

#[test]
fn config_errors_name_the_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_dataset(dir.path(), 5);
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[data.split]\nsed = 1\n").expect("write");
    let output = covidct()
        .args(["data", "split", "--config"])
        .arg(&config)
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("bad.toml") && error.contains("sed"),
        "{error}"
    );
}

#[test]
fn missing_dataset_is_a_clear_error() {
    let output = covidct()
        .args(["data", "inspect", "/no/such/folder"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("/no/such/folder"), "{error}");
    assert!(!error.contains("panicked"), "{error}");
}

#[test]
fn fetch_without_credentials_says_where_to_put_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = covidct()
        .args(["data", "fetch", "--out"])
        .arg(dir.path().join("data"))
        .env("HOME", dir.path())
        .env_remove("KAGGLE_USERNAME")
        .env_remove("KAGGLE_KEY")
        .env_remove("KAGGLE_CONFIG_DIR")
        .output()
        .expect("run");
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("kaggle.json") && error.contains("KAGGLE_KEY"),
        "{error}"
    );
}
