//! Report computation and writing: PNGs, JSON round trip, escaped HTML.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use covidct_evaluation::{
    BootstrapConfig, EvalError, EvaluationReport, Metric, ModelInfo, ReportInput, ThresholdInfo,
    ThresholdRule, read_report, write_report,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct Data {
    probabilities: Vec<f64>,
    labels: Vec<bool>,
    groups: Vec<String>,
}

fn data() -> Data {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut d = Data {
        probabilities: Vec::new(),
        labels: Vec::new(),
        groups: Vec::new(),
    };
    for i in 0..300 {
        let label = rng.random_bool(0.5);
        let centre = if label { 0.7 } else { 0.3 };
        d.probabilities
            .push((centre + rng.random_range(-0.35..0.35f64)).clamp(0.0, 1.0));
        d.labels.push(label);
        d.groups.push(format!("p{}", i / 3));
    }
    d
}

fn input<'a>(d: &'a Data, model_name: &str) -> ReportInput<'a> {
    ReportInput {
        model: ModelInfo {
            name: model_name.into(),
            version: Some("run-7".into()),
            architecture: Some("resnet18".into()),
            details: serde_json::json!({"epochs": 12}),
        },
        dataset_name: "sarscov2-ct".into(),
        split: "test".into(),
        class_names: vec!["COVID".into(), "non-COVID".into()],
        positive_class: "COVID".into(),
        probabilities: &d.probabilities,
        labels: &d.labels,
        groups: &d.groups,
        threshold: ThresholdInfo {
            value: 0.45,
            rule: ThresholdRule::default(),
            chosen_on: "validation".into(),
        },
        temperature: Some(1.3),
        bootstrap: BootstrapConfig {
            resamples: 200,
            ..BootstrapConfig::default()
        },
        group: None,
    }
}

#[test]
fn report_is_written_as_json_html_and_pngs() {
    let d = data();
    let mut report =
        EvaluationReport::compute(input(&d, "<script>alert('x')</script> & co")).unwrap();
    assert_eq!(report.dataset.n, 300);
    assert_eq!(report.dataset.groups, 100);
    assert_eq!(report.negative_label(), "non-COVID");
    report.add_section(
        "Robustness",
        serde_json::json!([
            {"perturbation": "noise σ=0.05", "roc_auc": 0.91},
            {"perturbation": "<b>blur</b>", "roc_auc": 0.88}
        ]),
    );
    report.add_section("Notes", serde_json::json!("free text"));

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("eval");
    let files = write_report(&out, &report).unwrap();

    for png in [&files.roc, &files.pr, &files.reliability, &files.confusion] {
        let bytes = std::fs::read(png).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{} is not a PNG",
            png.display()
        );
        assert!(
            bytes.len() > 8_000,
            "{} is only {} bytes",
            png.display(),
            bytes.len()
        );
    }

    let back = read_report(&files.json).unwrap();
    assert_eq!(back.model, report.model);
    assert_eq!(back.dataset, report.dataset);
    assert_eq!(back.threshold, report.threshold);
    assert_eq!(back.extra, report.extra);
    assert_eq!(back.metrics.point.confusion, report.metrics.point.confusion);
    assert_eq!(back.curves.roc.len(), report.curves.roc.len());
    for metric in Metric::ALL {
        let (a, b) = (
            report.metrics.intervals[&metric],
            back.metrics.intervals[&metric],
        );
        for (x, y) in [(a.value, b.value), (a.lower, b.lower), (a.upper, b.upper)] {
            assert!((x.unwrap() - y.unwrap()).abs() < 1e-12, "{metric:?}");
        }
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files.json).unwrap()).unwrap();
    assert!(json["metrics"]["intervals"]["roc_auc"]["lower"].is_f64());
    assert_eq!(json["threshold"]["rule"]["sensitivity"]["min"], 0.95);

    let html = std::fs::read_to_string(&files.html).unwrap();
    for label in Metric::ALL.map(Metric::label) {
        assert!(html.contains(label), "HTML lacks {label}");
    }
    assert!(!html.contains("<script"), "unescaped script in the HTML");
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co"));
    assert!(html.contains("&lt;b&gt;blur&lt;/b&gt;"));
    assert!(html.contains("data:image/png;base64,iVBORw0KGgo"));
    assert!(html.contains("validation"));

    // Only the six files: no temporary file left behind.
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "confusion.png",
            "pr.png",
            "reliability.png",
            "report.html",
            "report.json",
            "roc.png"
        ]
    );
}

#[test]
fn invalid_report_inputs_are_named() {
    let d = data();
    let mut bad = input(&d, "m");
    bad.positive_class = "pneumonia".into();
    let error = EvaluationReport::compute(bad).unwrap_err();
    assert!(error.to_string().contains("pneumonia"), "{error}");

    let mut bad = input(&d, "m");
    bad.class_names = vec!["COVID".into()];
    assert!(matches!(
        EvaluationReport::compute(bad),
        Err(EvalError::InvalidSetting {
            field: "class_names",
            ..
        })
    ));

    let mut bad = input(&d, "m");
    bad.temperature = Some(-1.0);
    assert!(EvaluationReport::compute(bad).is_err());

    let mut bad = input(&d, "m");
    let labels = vec![true; d.labels.len()];
    bad.labels = &labels;
    assert!(matches!(
        EvaluationReport::compute(bad),
        Err(EvalError::SingleClass { negatives: 0, .. })
    ));
}
