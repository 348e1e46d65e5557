//! The whole router, request by request, without a port (tower `oneshot`): every endpoint,
//! authentication, limits, JSON errors, reload under load.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use covidct_imaging::{PreprocessConfig, ResizeMode};
use covidct_model::PackageMetadata;
use covidct_serve::{ApiKeys, AppState, ModelSource, ServeConfig, router};
use covidct_testkit::images::grey_png;
use covidct_testkit::package;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const KEY: &str = "test-key";
const ADMIN: &str = "admin-key";

/// A random ResNet-18 package; with `study_rule`, a study rule (mean of the slice
/// probabilities, temperature 1, threshold 0.5) as training would fit on validation patients.
fn write_package(dir: &std::path::Path, study_rule: bool) -> std::path::PathBuf {
    let metadata = PackageMetadata {
        name: "covidct-test".into(),
        preprocess: PreprocessConfig {
            size: 64,
            resize: ResizeMode::Pad,
            mean: 0.5,
            std: 0.5,
            ..PreprocessConfig::default()
        },
        training: json!({}),
        evaluation: json!({"accuracy": 0.5}),
        group: study_rule.then(package::mean_study_rule),
        ..package::metadata()
    };
    let path = dir.join("model.ctpkg");
    package::write_package(&path, metadata, 5, "# Model card\ntest");
    path
}

struct App {
    router: Router,
    state: AppState,
    dir: tempfile::TempDir,
}

async fn app_with(change: impl FnOnce(&mut ServeConfig)) -> App {
    app_of(true, change).await
}

async fn app_of(study_rule: bool, change: impl FnOnce(&mut ServeConfig)) -> App {
    let dir = tempfile::tempdir().expect("tempdir");
    let package = write_package(dir.path(), study_rule);
    let mut config = ServeConfig {
        api_keys: ApiKeys(vec![KEY.into()]),
        admin_keys: ApiKeys(vec![ADMIN.into()]),
        prediction_log: dir.path().join("log.sqlite"),
        max_pixels: 1_000_000,
        max_body_bytes: 2_000_000,
        max_batch_images: 4,
        batch_size: 4,
        threads: 2,
        ..ServeConfig::default()
    };
    change(&mut config);
    let state = AppState::new(config, ModelSource::Package(package), None).expect("state");
    state.load_model().await.expect("load");
    App {
        router: router(state.clone()),
        state,
        dir,
    }
}

async fn app() -> App {
    app_with(|_| {}).await
}

fn png(width: u32, height: u32) -> Vec<u8> {
    grey_png(width, height, |x, y| ((x * 7 + y * 3) % 256) as u8)
}

fn post(uri: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(uri)
        .header("x-api-key", KEY)
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .expect("request")
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .header("x-api-key", KEY)
        .body(Body::empty())
        .expect("request")
}

fn multipart(files: &[(&str, Vec<u8>)]) -> (String, Vec<u8>) {
    let boundary = "XBOUNDARYX";
    let mut body = Vec::new();
    for (name, bytes) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn send(
    router: &Router,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let response = router.clone().oneshot(request).await.expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

async fn send_json(router: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let (status, headers, body) = send(router, request).await;
    let value: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "{status}: not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    });
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap_or("")
            .starts_with("application/json"),
        "{status}: {headers:?}"
    );
    (status, value)
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no code>")
}

#[tokio::test]
async fn health_readiness_and_not_ready_before_loading() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ServeConfig {
        auth: false,
        prediction_log: dir.path().join("log.sqlite"),
        ..ServeConfig::default()
    };
    let state = AppState::new(
        config,
        ModelSource::Package(write_package(dir.path(), true)),
        None,
    )
    .expect("state");
    let router = router(state.clone());
    let (status, body) = send_json(&router, get("/healthz")).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("alive"))
    );
    let (status, headers, _) = send(&router, get("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[header::RETRY_AFTER], "1");
    let (status, body) = send_json(&router, post("/v1/predict", "image/png", png(8, 8))).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    );
    state.load_model().await.expect("load");
    let (status, body) = send_json(&router, get("/readyz")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["model"]["name"], "covidct-test");
}

#[tokio::test]
async fn predict_takes_raw_multipart_and_base64_bodies() {
    let app = app().await;
    let (status, headers, body) =
        send(&app.router, post("/v1/predict", "image/png", png(40, 30))).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let answer: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        headers["x-request-id"].to_str().ok(),
        answer["request_id"].as_str()
    );
    let p = answer["probability"].as_f64().expect("probability");
    assert!((0.0..=1.0).contains(&p));
    assert_eq!(answer["threshold"], 0.5);
    let expected = if p >= 0.5 { "COVID" } else { "non-COVID" };
    assert_eq!(answer["label"], expected);
    assert_eq!(answer["model"]["name"], "covidct-test");
    assert_eq!(answer["model"]["version"].as_str().map(str::len), Some(12));
    assert!(answer["timing"]["total_ms"].as_f64().is_some());

    let (content_type, form) = multipart(&[("scan.png", png(40, 30))]);
    let (status, multi) = send_json(&app.router, post("/v1/predict", &content_type, form)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        multi["probability"], answer["probability"],
        "same image, same answer"
    );

    let encoded = base64::engine::general_purpose::STANDARD.encode(png(40, 30));
    let json_body = json!({"image": encoded, "filename": "scan.png"}).to_string();
    let (status, b64) = send_json(
        &app.router,
        post("/v1/predict", "application/json", json_body),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(b64["probability"], answer["probability"]);
}

#[tokio::test]
async fn keys_are_required_and_checked() {
    let app = app().await;
    let anonymous = Request::post("/v1/predict")
        .header(header::CONTENT_TYPE, "image/png")
        .body(Body::from(png(8, 8)))
        .expect("request");
    let (status, body) = send_json(&app.router, anonymous).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let wrong = Request::get("/v1/model")
        .header("x-api-key", "nope")
        .body(Body::empty())
        .expect("request");
    assert_eq!(
        send_json(&app.router, wrong).await.0,
        StatusCode::UNAUTHORIZED
    );
    let bearer = Request::get("/v1/model")
        .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
        .body(Body::empty())
        .expect("request");
    assert_eq!(send_json(&app.router, bearer).await.0, StatusCode::OK);
    // The admin key is not a prediction key, nor the other way round.
    let admin_for_model = Request::get("/v1/model")
        .header("x-api-key", ADMIN)
        .body(Body::empty())
        .expect("request");
    assert_eq!(
        send_json(&app.router, admin_for_model).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = send_json(
        &app.router,
        post("/v1/admin/reload", "application/json", ""),
    )
    .await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let no_key = Request::post("/v1/admin/reload")
        .body(Body::empty())
        .expect("request");
    assert_eq!(
        send_json(&app.router, no_key).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn bad_inputs_get_json_errors_with_stable_codes() {
    let app = app().await;
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (
            post("/v1/predict", "image/png", "not an image"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_image",
        ),
        (
            post("/v1/predict", "image/png", ""),
            StatusCode::BAD_REQUEST,
            "empty_image",
        ),
        (
            post("/v1/predict", "text/plain", "hello"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            post("/v1/predict", "application/json", "{\"image\": \"***\"}"),
            StatusCode::BAD_REQUEST,
            "invalid_base64",
        ),
        (
            post("/v1/predict", "application/json", "{"),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        // 2000 × 1000 pixels: refused from the header (limit 1,000,000) before decoding.
        (
            post("/v1/predict", "image/png", png(2000, 1000)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "image_too_large",
        ),
        (
            post(
                "/v1/predict",
                "application/octet-stream",
                vec![0u8; 2_100_000],
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (get("/v1/nothing"), StatusCode::NOT_FOUND, "not_found"),
        (
            get("/v1/predict"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (request, status, expected) in cases {
        let uri = request.uri().clone();
        let (got, body) = send_json(&app.router, request).await;
        assert_eq!((got, code(&body)), (status, expected), "{uri}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.contains("panicked"))
        );
    }
    let (content_type, two) = multipart(&[("a.png", png(8, 8)), ("b.png", png(8, 8))]);
    let (status, body) = send_json(&app.router, post("/v1/predict", &content_type, two)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "expected_one_image")
    );
}

#[tokio::test]
async fn a_bad_image_fails_only_its_own_batch_entry() {
    let app = app().await;
    let (content_type, form) = multipart(&[
        ("a.png", png(30, 30)),
        ("broken.png", b"garbage".to_vec()),
        ("c.png", png(50, 20)),
    ]);
    let (status, body) =
        send_json(&app.router, post("/v1/predict/batch", &content_type, form)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    assert!(results[0]["prediction"]["probability"].is_number());
    assert_eq!(results[1]["error"]["code"], "invalid_image");
    assert_eq!(results[1]["filename"], "broken.png");
    assert!(results[2]["prediction"]["label"].is_string());
    let encoded = base64::engine::general_purpose::STANDARD.encode(png(8, 8));
    let five = json!({"images": vec![json!({"image": encoded}); 5]}).to_string();
    let (status, body) = send_json(
        &app.router,
        post("/v1/predict/batch", "application/json", five),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_many_images")
    );
}

#[tokio::test]
async fn feedback_joins_an_earlier_prediction() {
    let app = app().await;
    let (_, answer) = send_json(&app.router, post("/v1/predict", "image/png", png(20, 20))).await;
    let id = answer["request_id"].as_str().expect("id").to_owned();
    let feedback = |id: &str, label: &str| {
        post(
            "/v1/feedback",
            "application/json",
            json!({"request_id": id, "label": label}).to_string(),
        )
    };
    let (status, body) = send_json(&app.router, feedback(&id, "COVID")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = send_json(&app.router, feedback("unknown", "COVID")).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "unknown_request_id")
    );
    let (status, body) = send_json(&app.router, feedback(&id, "influenza")).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "unknown_label")
    );

    let db = rusqlite::Connection::open(app.dir.path().join("log.sqlite")).expect("open log");
    let (label, truth): (String, String) = db
        .query_row(
            "SELECT label, true_label FROM labelled_predictions WHERE request_id = ?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("the prediction joined with its feedback");
    assert_eq!(
        (label.as_str(), truth.as_str()),
        (answer["label"].as_str().unwrap_or(""), "COVID")
    );
}

#[tokio::test]
async fn explain_answers_an_overlay_or_the_raw_map() {
    let app = app().await;
    let (status, headers, body) =
        send(&app.router, post("/v1/explain", "image/png", png(64, 48))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "image/png");
    assert!(body.starts_with(b"\x89PNG"));
    assert!(headers.contains_key("x-covidct-probability"));
    let (status, json) = send_json(
        &app.router,
        post("/v1/explain?format=json", "image/png", png(64, 48)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            json["map"]["width"].as_u64(),
            json["map"]["height"].as_u64()
        ),
        (Some(2), Some(2))
    );
    assert_eq!(json["map"]["values"].as_array().map(Vec::len), Some(4));
    assert_eq!(json["explained_class"], "COVID");
    assert!(
        json["overlay_png_base64"]
            .as_str()
            .is_some_and(|s| s.len() > 100)
    );
    let (status, body) = send_json(
        &app.router,
        post("/v1/explain?format=gif", "image/png", png(8, 8)),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_query")
    );
}

#[tokio::test]
async fn model_card_metrics_docs_and_page() {
    let app = app().await;
    let (status, model) = send_json(&app.router, get("/v1/model")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(model["architecture"], "resnet18");
    assert_eq!(model["input_size"], 64);
    assert!(
        model["model_card"]
            .as_str()
            .is_some_and(|c| c.starts_with("# Model card"))
    );
    assert_eq!(
        model["model_card_html"],
        "<h1>Model card</h1>\n<p>test</p>\n"
    );
    send_json(&app.router, post("/v1/predict", "image/png", png(20, 20))).await;
    let (status, _, text) = send(&app.router, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(text).expect("utf-8");
    for needle in [
        "covidct_http_requests_total{route=\"/v1/predict\",status=\"200\"} 1",
        "covidct_http_request_duration_seconds_bucket{route=\"/v1/predict\"",
        "covidct_predictions_total{label=",
        "covidct_prediction_probability_bucket",
        "covidct_model_info{name=\"covidct-test\"",
        "covidct_inference_queue_depth 0",
        "covidct_inference_batch_size_count",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    let (status, spec) = send_json(&app.router, get("/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        spec["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1"))
    );
    for path in [
        "/v1/predict",
        "/v1/predict/batch",
        "/v1/explain",
        "/v1/model",
        "/v1/feedback",
        "/v1/admin/reload",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            spec["paths"][path].is_object(),
            "{path} missing from the spec"
        );
    }
    let (status, _, html) = send(&app.router, get("/docs/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&html).contains("swagger"));
    let (status, headers, page) = send(&app.router, get("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap_or("")
            .starts_with("text/html")
    );
    assert!(String::from_utf8_lossy(&page).contains("/v1/explain"));
}

#[tokio::test]
async fn overload_answers_503_with_retry_after_and_slow_requests_time_out() {
    // The test holds the only slot: the next request is refused, whatever the timing.
    let app = app_with(|c| c.max_concurrency = 1).await;
    let slot = app.state.try_admit().expect("the only slot is free");
    let (status, headers, body) =
        send(&app.router, post("/v1/predict", "image/png", png(8, 8))).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(headers[header::RETRY_AFTER], "1");
    assert!(String::from_utf8_lossy(&body).contains("overloaded"));
    assert!(app.state.try_admit().is_err(), "still one slot in all");
    let in_flight = |text: &[u8]| {
        String::from_utf8_lossy(text)
            .lines()
            .find_map(|l| l.strip_prefix("covidct_http_requests_in_flight "))
            .map(str::to_owned)
    };
    let (_, _, metrics) = send(&app.router, get("/metrics")).await;
    assert_eq!(
        in_flight(&metrics).as_deref(),
        Some("1"),
        "the held slot is counted"
    );
    drop(slot);
    let (status, _, _) = send(&app.router, post("/v1/predict", "image/png", png(8, 8))).await;
    assert_eq!(status, StatusCode::OK, "the slot is free again");
    let (_, _, metrics) = send(&app.router, get("/metrics")).await;
    assert_eq!(
        in_flight(&metrics).as_deref(),
        Some("0"),
        "every slot given back"
    );

    // A lone image waits a second (the most allowed) for company: a thousand times the timeout.
    let slow = app_with(|c| {
        c.request_timeout_ms = 1;
        c.batch_size = 64;
        c.batch_wait_ms = 1000;
    })
    .await;
    let (status, body) = send_json(&slow.router, post("/v1/predict", "image/png", png(8, 8))).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "timeout")
    );
}

#[tokio::test]
async fn reload_swaps_the_model_without_failing_requests_in_flight() {
    let app = app().await;
    let mut inflight = Vec::new();
    for _ in 0..8 {
        inflight.push(tokio::spawn(app.router.clone().oneshot(post(
            "/v1/predict",
            "image/png",
            png(30, 30),
        ))));
    }
    let reload = Request::post("/v1/admin/reload")
        .header("x-api-key", ADMIN)
        .body(Body::empty())
        .expect("request");
    let (status, body) = send_json(&app.router, reload).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["previous"], body["current"]);
    for request in inflight {
        assert_eq!(
            request.await.expect("join").expect("response").status(),
            StatusCode::OK
        );
    }
    assert!(app.state.is_ready());
}

#[tokio::test]
async fn cors_is_off_by_default_and_on_when_configured() {
    let preflight = || {
        Request::get("/healthz")
            .header(header::ORIGIN, "https://viewer.example")
            .body(Body::empty())
            .expect("request")
    };
    let app = app().await;
    let (_, headers, _) = send(&app.router, preflight()).await;
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    let open = app_with(|c| c.cors_origins = vec!["https://viewer.example".into()]).await;
    let (_, headers, _) = send(&open.router, preflight()).await;
    assert_eq!(
        headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://viewer.example"
    );
}

fn admin_get(uri: &str, key: &str) -> Request<Body> {
    Request::get(uri)
        .header("x-api-key", key)
        .body(Body::empty())
        .expect("request")
}

#[tokio::test]
async fn the_latest_monitoring_report_is_served_to_admins_only() {
    let reports = tempfile::tempdir().expect("tempdir");
    let latest = reports.path().join("latest");
    std::fs::create_dir_all(&latest).expect("latest");
    std::fs::write(latest.join("index.html"), "<h1>drift</h1>").expect("index");
    std::fs::write(latest.join("summary.json"), r#"{"status":"pass"}"#).expect("summary");
    std::fs::write(reports.path().join("secret.html"), "outside latest").expect("secret");
    let root = reports.path().to_path_buf();
    let app = app_with(move |c| c.monitoring_reports = Some(root)).await;

    let (status, headers, body) =
        send(&app.router, admin_get("/v1/admin/monitoring/", ADMIN)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap_or("")
            .starts_with("text/html")
    );
    assert_eq!(body, b"<h1>drift</h1>");
    let (status, body) = send_json(
        &app.router,
        admin_get("/v1/admin/monitoring/summary.json", ADMIN),
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("pass"))
    );

    let (status, _, _) = send(&app.router, admin_get("/v1/admin/monitoring/", KEY)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for escape in [
        "/v1/admin/monitoring/..%2Fsecret.html",
        "/v1/admin/monitoring/.hidden.html",
        "/v1/admin/monitoring/report.sqlite",
        "/v1/admin/monitoring/missing.html",
    ] {
        let (status, body) = send_json(&app.router, admin_get(escape, ADMIN)).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::NOT_FOUND, "no_report"),
            "{escape}"
        );
    }

    let unconfigured = app_with(|_| {}).await;
    let (status, body) = send_json(
        &unconfigured.router,
        admin_get("/v1/admin/monitoring/", ADMIN),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("--monitoring-reports")
    );
}

/// Pixel values of a 16×16 slice; `seed` varies the content.
fn slice_png(seed: u32) -> Vec<u8> {
    grey_png(16, 16, |x, y| {
        ((x * (7 + seed) + y * 3 + seed * 40) % 256) as u8
    })
}

/// A minimal explicit-VR little-endian CT file of 16×16 pixels in `series` of study `1.2.3`,
/// with its InstanceNumber and ImagePositionPatient `z` (axial orientation).
fn dicom_slice(series: &str, instance: i64, z: f64, seed: u16) -> Vec<u8> {
    fn element(group: u16, elem: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut value = value.to_vec();
        if value.len() % 2 == 1 {
            value.push(if vr == b"UI" || vr == b"OB" { 0 } else { b' ' });
        }
        let mut out = Vec::new();
        out.extend_from_slice(&group.to_le_bytes());
        out.extend_from_slice(&elem.to_le_bytes());
        out.extend_from_slice(vr);
        if vr == b"OB" || vr == b"OW" {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        out.extend_from_slice(&value);
        out
    }
    let mut meta = [
        element(2, 1, b"OB", &[0, 1]),
        element(2, 2, b"UI", b"1.2.840.10008.5.1.4.1.1.2"),
        element(2, 3, b"UI", format!("1.2.3.{series}.{instance}").as_bytes()),
        element(2, 0x10, b"UI", b"1.2.840.10008.1.2.1"),
    ]
    .concat();
    meta = [
        element(2, 0, b"UL", &(meta.len() as u32).to_le_bytes()),
        meta,
    ]
    .concat();
    let us = |v: u16| v.to_le_bytes();
    let pixels: Vec<u8> = (0..256u16)
        .flat_map(|i| (500 + (i * 37 + seed * 101) % 1500).to_le_bytes())
        .collect();
    let data = [
        element(0x20, 0x0D, b"UI", b"1.2.3"),
        element(0x20, 0x0E, b"UI", format!("1.2.3.{series}").as_bytes()),
        element(0x20, 0x13, b"IS", instance.to_string().as_bytes()),
        element(0x20, 0x32, b"DS", format!("-100\\-100\\{z}").as_bytes()),
        element(0x20, 0x37, b"DS", b"1\\0\\0\\0\\1\\0"),
        element(0x28, 2, b"US", &us(1)),
        element(0x28, 4, b"CS", b"MONOCHROME2"),
        element(0x28, 0x10, b"US", &us(16)),
        element(0x28, 0x11, b"US", &us(16)),
        element(0x28, 0x100, b"US", &us(16)),
        element(0x28, 0x101, b"US", &us(16)),
        element(0x28, 0x102, b"US", &us(15)),
        element(0x28, 0x103, b"US", &us(0)),
        element(0x28, 0x1052, b"DS", b"-1024"),
        element(0x28, 0x1053, b"DS", b"1"),
        element(0x7FE0, 0x10, b"OW", &pixels),
    ]
    .concat();
    [vec![0u8; 128], b"DICM".to_vec(), meta, data].concat()
}

fn zip_of(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let entries: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    covidct_testkit::archive::zip_of(&entries)
}

fn probabilities(study: &Value) -> Vec<f64> {
    study["slices"]
        .as_array()
        .expect("slices")
        .iter()
        .map(|s| s["probability"].as_f64().expect("probability"))
        .collect()
}

#[tokio::test]
async fn a_study_from_files_or_a_zip_gets_one_verdict_by_the_package_rule_and_is_logged() {
    let app = app().await;
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("s10.png", slice_png(4)),
        ("s2.png", slice_png(2)),
        ("s1.png", slice_png(1)),
        ("s3.png", slice_png(3)),
    ];
    let (content_type, body) = multipart(&files);
    let (status, answer) =
        send_json(&app.router, post("/v1/predict/study", &content_type, body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let study = &answer["studies"][0];
    assert_eq!(answer["studies"].as_array().map(Vec::len), Some(1));
    assert_eq!(study["ordered_by"], "file_name");
    let names: Vec<&str> = study["slices"]
        .as_array()
        .expect("slices")
        .iter()
        .filter_map(|s| s["filename"].as_str())
        .collect();
    assert_eq!(names, ["s1.png", "s2.png", "s3.png", "s10.png"]);
    // The package's rule: mean probability, temperature 1, threshold 0.5.
    let slices = probabilities(study);
    let mean = slices.iter().sum::<f64>() / slices.len() as f64;
    let probability = study["probability"].as_f64().expect("study probability");
    assert!((probability - mean).abs() < 1e-6, "{probability} vs {mean}");
    let expected = if mean >= 0.5 { "COVID" } else { "non-COVID" };
    assert_eq!(study["label"], expected);
    assert_eq!(
        (
            study["slices_used"].as_u64(),
            study["slices_refused"].as_u64()
        ),
        (Some(4), Some(0))
    );
    assert_eq!(study["drivers"].as_array().map(Vec::len), Some(3));
    assert_eq!(study["study_id"], answer["request_id"]);
    let (_, model) = send_json(&app.router, get("/v1/model")).await;
    assert_eq!(model["study_rule"]["rule"], "mean");
    assert_eq!(model["study_rule"]["threshold"], 0.5);

    // The same slices as one zip archive (raw body) give the same answer.
    let (status, zipped) = send_json(
        &app.router,
        post("/v1/predict/study", "application/zip", zip_of(&files)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{zipped}");
    assert_eq!(probabilities(&zipped["studies"][0]), slices);

    // Feedback takes the study id; the log holds the study and its slices.
    let id = study["study_id"].as_str().expect("study id").to_owned();
    let (status, body) = send_json(
        &app.router,
        post(
            "/v1/feedback",
            "application/json",
            json!({"request_id": id, "label": "COVID"}).to_string(),
        ),
    )
    .await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (StatusCode::OK, Some("study")),
        "{body}"
    );
    let db = rusqlite::Connection::open(app.dir.path().join("log.sqlite")).expect("open log");
    let (used, truth): (i64, String) = db
        .query_row(
            "SELECT used, true_label FROM labelled_studies WHERE study_id = ?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("the study joined with its feedback");
    assert_eq!((used, truth.as_str()), (4, "COVID"));
    let logged: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM predictions WHERE study_id = ?1",
            [&id],
            |r| r.get(0),
        )
        .expect("slices");
    assert_eq!(logged, 4);
    let (_, _, metrics) = send(&app.router, get("/metrics")).await;
    assert!(String::from_utf8_lossy(&metrics).contains("covidct_studies_total"));
}

#[tokio::test]
async fn dicom_series_are_ordered_by_position_and_mixed_series_need_split() {
    let app = app().await;
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("a", dicom_slice("7", 1, 30.0, 1)),
        ("b", dicom_slice("7", 2, 10.0, 2)),
        ("c", dicom_slice("8", 2, 5.0, 3)),
        ("d", dicom_slice("7", 3, 20.0, 4)),
        ("e", dicom_slice("8", 1, 0.0, 5)),
    ];
    let (content_type, body) = multipart(&files);
    let (status, refused) = send_json(
        &app.router,
        post("/v1/predict/study", &content_type, body.clone()),
    )
    .await;
    assert_eq!(
        (status, code(&refused)),
        (StatusCode::UNPROCESSABLE_ENTITY, "mixed_studies"),
        "{refused}"
    );
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("1.2.3.7") && message.contains("1.2.3.8"),
        "{message}"
    );

    let (status, split) = send_json(
        &app.router,
        post("/v1/predict/study?split=true", &content_type, body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{split}");
    let studies = split["studies"].as_array().expect("studies");
    assert_eq!(studies.len(), 2);
    let order = |study: &Value| -> Vec<String> {
        study["slices"]
            .as_array()
            .expect("slices")
            .iter()
            .map(|s| s["filename"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(studies[0]["series_instance_uid"], "1.2.3.7");
    assert_eq!(studies[0]["ordered_by"], "position");
    assert_eq!(order(&studies[0]), ["b", "d", "a"]);
    assert_eq!(order(&studies[1]), ["e", "c"]);
    assert_eq!(studies[1]["study_instance_uid"], "1.2.3");
    // Two slices are under the default minimum of three: no verdict, and why.
    assert!(studies[1]["label"].is_null());
    assert!(
        studies[1]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("at least 3"),
        "{}",
        studies[1]
    );
    assert_ne!(studies[0]["study_id"], studies[1]["study_id"]);
}

#[tokio::test]
async fn study_limits_are_checked_before_decoding_and_bad_slices_are_left_out() {
    let app = app_with(|c| {
        c.max_study_slices = 3;
        c.max_study_pixels = 16 * 16 * 3;
    })
    .await;
    let four: Vec<(&str, Vec<u8>)> = (1..=4)
        .map(|i| {
            (
                ["1.png", "2.png", "3.png", "4.png"][i - 1],
                slice_png(i as u32),
            )
        })
        .collect();
    let (content_type, body) = multipart(&four);
    let (status, answer) =
        send_json(&app.router, post("/v1/predict/study", &content_type, body)).await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_many_slices"),
        "{answer}"
    );
    let (status, answer) = send_json(
        &app.router,
        post(
            "/v1/predict/study",
            "application/zip",
            zip_of(&[("notes.txt", b"text".to_vec())]),
        ),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["message"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("the study holds no slice")
        ),
        "{answer}"
    );
    let (status, answer) = send_json(
        &app.router,
        post("/v1/predict/study", "application/zip", zip_of(&four)),
    )
    .await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_many_slices")
    );
    let big = vec![("big.png", png(40, 40)), ("1.png", slice_png(1))];
    let (content_type, body) = multipart(&big);
    let (status, answer) =
        send_json(&app.router, post("/v1/predict/study", &content_type, body)).await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::PAYLOAD_TOO_LARGE, "study_too_large")
    );

    let mixed = vec![
        ("1.png", slice_png(1)),
        ("broken.png", b"\x89PNG\r\n\x1a\nnot really".to_vec()),
        ("2.png", slice_png(2)),
    ];
    let (content_type, body) = multipart(&mixed);
    let (status, answer) =
        send_json(&app.router, post("/v1/predict/study", &content_type, body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["unreadable"][0]["filename"], "broken.png");
    assert_eq!(answer["unreadable"][0]["index"], 1);
    assert_eq!(answer["studies"][0]["slices_total"], 2);
    let (status, answer) = send_json(
        &app.router,
        post(
            "/v1/predict/study",
            "application/zip",
            b"PK\x03\x04 broken".to_vec(),
        ),
    )
    .await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::BAD_REQUEST, "invalid_archive"),
        "{answer}"
    );
    let (status, answer) =
        send_json(&app.router, post("/v1/predict/study", "text/plain", "x")).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{answer}");
}

fn three_slices() -> Vec<(&'static str, Vec<u8>)> {
    (0..3)
        .map(|i| (["a.png", "b.png", "c.png"][i], slice_png(i as u32)))
        .collect()
}

#[tokio::test]
async fn a_package_without_a_study_rule_gives_no_verdict_and_says_why() {
    let app = app_of(false, |_| {}).await;
    let (content_type, body) = multipart(&three_slices());
    let (status, answer) = send_json(
        &app.router,
        post("/v1/predict/study?explain=true", &content_type, body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let study = &answer["studies"][0];
    assert!(study["label"].is_null() && study["probability"].is_null());
    assert!(
        study["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("no study rule"),
        "{study}"
    );
    assert!(study.get("explanation").is_none());
}

#[tokio::test]
async fn explain_adds_the_grad_cam_of_the_top_driver() {
    let app = app().await;
    let (content_type, body) = multipart(&three_slices());
    let (status, answer) = send_json(
        &app.router,
        post("/v1/predict/study?explain=true", &content_type, body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let study = &answer["studies"][0];
    assert_eq!(study["explanation"]["position"], study["drivers"][0]);
    let png = base64::engine::general_purpose::STANDARD
        .decode(
            study["explanation"]["overlay_png_base64"]
                .as_str()
                .expect("png"),
        )
        .expect("base64");
    assert!(png.starts_with(b"\x89PNG"));
}
