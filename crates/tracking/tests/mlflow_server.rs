//! The client against a real MLflow 3.17.2 server (one per test binary, started on first use),
//! plus failure modes against closed ports and a fake server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod common;

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use common::{FakeServer, MlflowServer, ServerKind, now_ms, pseudo_random_bytes, unique};
use covidct_tracking::{
    Auth, LoggedModelStatus, Metric, MlflowClient, ModelSelector, ModelUri, Param, RetryPolicy,
    RunStatus, ServerConfig, Tag, TrackingError,
};

static SERVER: LazyLock<Result<MlflowServer, String>> =
    LazyLock::new(|| MlflowServer::start(ServerKind::Plain));

fn server() -> &'static MlflowServer {
    match &*SERVER {
        Ok(server) => server,
        Err(reason) => panic!("{reason}"),
    }
}

fn client() -> MlflowClient {
    server().client_with(Auth::None)
}

/// An experiment and a fresh run in it.
fn new_run(client: &MlflowClient, prefix: &str) -> (String, covidct_tracking::RunInfo) {
    let experiment = client
        .get_or_create_experiment(&unique(prefix))
        .expect("experiment");
    let run = client
        .create_run(&experiment, "test-run", now_ms(), &[])
        .expect("create run");
    (experiment, run)
}

#[test]
fn experiment_run_params_metric_history_tags_and_status_round_trip() {
    let client = client();
    let name = unique("round-trip");
    let experiment = client.get_or_create_experiment(&name).expect("create");
    assert_eq!(
        client.get_or_create_experiment(&name).expect("get again"),
        experiment,
        "the second call finds the same experiment"
    );

    let start = now_ms();
    let run = client
        .create_run(
            &experiment,
            "resnet18-baseline",
            start,
            &[Tag::new("covidct.git_commit", "abc123")],
        )
        .expect("create run");
    assert_eq!(run.experiment_id, experiment);
    assert_eq!(run.run_name, "resnet18-baseline");
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.start_time_ms, Some(start));
    assert!(
        run.artifact_uri.starts_with("mlflow-artifacts:/"),
        "{}",
        run.artifact_uri
    );

    let metrics: Vec<Metric> = (0..5)
        .flat_map(|epoch| {
            [
                Metric::new("train_loss", 1.0 / (epoch + 1) as f64, start + epoch, epoch),
                Metric::new("val_auc", 0.5 + 0.1 * epoch as f64, start + epoch, epoch),
            ]
        })
        .collect();
    let params = [
        Param::new("architecture", "resnet18"),
        Param::new("learning_rate", "0.001"),
    ];
    let tags = [Tag::new("covidct.split", "blocks")];
    client
        .log_batch(&run.run_id, &metrics, &params, &tags)
        .expect("log batch");

    let history = client
        .metric_history(&run.run_id, "val_auc")
        .expect("history");
    let steps: Vec<i64> = history.iter().map(|m| m.step).collect();
    assert_eq!(steps, vec![0, 1, 2, 3, 4]);
    assert!((history[4].value - 0.9).abs() < 1e-12);
    assert_eq!(history[2].timestamp_ms, start + 2);
    assert!(history.iter().all(|m| m.key == "val_auc"));

    let end = now_ms();
    client
        .update_run(&run.run_id, RunStatus::Finished, Some(end))
        .expect("finish");
    let fetched = client.get_run(&run.run_id).expect("get run");
    assert_eq!(fetched.info.status, RunStatus::Finished);
    assert_eq!(fetched.info.end_time_ms, Some(end));
    assert_eq!(fetched.data.param("architecture"), Some("resnet18"));
    assert_eq!(fetched.data.param("learning_rate"), Some("0.001"));
    assert_eq!(fetched.data.tag("covidct.split"), Some("blocks"));
    assert_eq!(fetched.data.tag("covidct.git_commit"), Some("abc123"));
    assert_eq!(
        fetched.data.tag("mlflow.runName"),
        Some("resnet18-baseline")
    );
    let latest = fetched.data.metric("train_loss").expect("latest loss");
    assert_eq!((latest.step, latest.value), (4, 0.2));
}

#[test]
fn large_batches_are_split_within_mlflow_limits() {
    let client = client();
    let (_, run) = new_run(&client, "large-batch");
    let t0 = now_ms();
    // 2,500 points and 150 params: one request of this would be refused by the server.
    let metrics: Vec<Metric> = (0..2500)
        .map(|i| Metric::new("batch_loss", i as f64 * 0.5, t0 + i, i))
        .collect();
    let params: Vec<Param> = (0..150)
        .map(|i| Param::new(format!("p{i:03}"), i.to_string()))
        .collect();
    client
        .log_batch(&run.run_id, &metrics, &params, &[])
        .expect("log large batch");
    let history = client
        .metric_history(&run.run_id, "batch_loss")
        .expect("history");
    assert_eq!(history.len(), 2500);
    assert_eq!(history[1234].step, 1234);
    let fetched = client.get_run(&run.run_id).expect("run");
    assert_eq!(fetched.data.params.len(), 150);
    assert_eq!(fetched.data.param("p149"), Some("149"));
}

/// What the buffered replay relies on: sending the same batch again adds nothing.
#[test]
fn replaying_the_same_log_batch_leaves_no_duplicate_points() {
    let client = client();
    let (_, run) = new_run(&client, "replay");
    let t0 = now_ms();
    let metrics: Vec<Metric> = (0..3)
        .map(|step| Metric::new("loss", 1.0 - 0.1 * step as f64, t0 + step, step))
        .collect();
    let params = [Param::new("seed", "42")];
    let tags = [Tag::new("phase", "head")];
    client
        .log_batch(&run.run_id, &metrics, &params, &tags)
        .expect("first delivery");
    client
        .log_batch(&run.run_id, &metrics, &params, &tags)
        .expect("replay (same param value is accepted)");
    let history = client.metric_history(&run.run_id, "loss").expect("history");
    assert_eq!(
        history.len(),
        3,
        "a replayed batch must not duplicate points: {history:?}"
    );
    let back: Vec<Metric> = history;
    assert_eq!(back, metrics);

    // A different value at the same (key, timestamp, step) is a new point, not a replay.
    client
        .log_batch(&run.run_id, &[Metric::new("loss", 0.123, t0, 0)], &[], &[])
        .expect("other value");
    assert_eq!(
        client.metric_history(&run.run_id, "loss").expect("h").len(),
        4
    );

    // A parameter cannot change value: a clear 400 that is not worth retrying.
    let err = client
        .log_batch(&run.run_id, &[], &[Param::new("seed", "43")], &[])
        .expect_err("param change");
    assert!(!err.is_transient(), "{err}");
    let text = err.to_string();
    assert!(text.contains("HTTP 400"), "{text}");
    assert!(text.contains("INVALID_PARAMETER_VALUE"), "{text}");
    assert!(text.contains("runs/log-batch"), "{text}");
}

#[test]
fn non_finite_metrics_are_refused_before_anything_is_sent() {
    let client = client();
    let (_, run) = new_run(&client, "nan");
    let t = now_ms();
    let err = client
        .log_batch(
            &run.run_id,
            &[
                Metric::new("fine", 1.0, t, 0),
                Metric::new("val_loss", f64::NAN, t, 0),
            ],
            &[],
            &[],
        )
        .expect_err("NaN");
    assert!(
        matches!(&err, TrackingError::NonFiniteMetric { key, .. } if key == "val_loss"),
        "{err:?}"
    );
    assert!(err.to_string().contains("'val_loss'"), "{err}");
    assert!(
        client
            .metric_history(&run.run_id, "fine")
            .expect("h")
            .is_empty(),
        "nothing of the refused batch was sent"
    );
}

#[test]
fn artifacts_upload_download_and_list_byte_identical() {
    let client = client();
    let (_, run) = new_run(&client, "artifacts");
    let dir = tempfile::tempdir().expect("tempdir");
    let small = dir.path().join("report.json");
    std::fs::write(&small, br#"{"auc": 0.93}"#).expect("write small");
    let big = dir.path().join("model.ctpkg");
    let big_bytes = pseudo_random_bytes(6 * 1024 * 1024 + 123, 7);
    std::fs::write(&big, &big_bytes).expect("write big");

    client
        .upload_artifact(&run.artifact_uri, "evaluation/report.json", &small)
        .expect("upload small");
    client
        .upload_artifact(&run.artifact_uri, "model/model v1.ctpkg", &big)
        .expect("upload big (space in name)");

    let listing = client
        .list_artifacts(&run.artifact_uri, "")
        .expect("list root");
    let mut names: Vec<(String, bool)> =
        listing.iter().map(|e| (e.path.clone(), e.is_dir)).collect();
    names.sort();
    assert_eq!(
        names,
        vec![("evaluation".to_owned(), true), ("model".to_owned(), true)]
    );
    let model_dir = client
        .list_artifacts(&run.artifact_uri, "model")
        .expect("list model/");
    assert_eq!(model_dir.len(), 1);
    assert_eq!(model_dir[0].path, "model/model v1.ctpkg");
    assert_eq!(model_dir[0].file_size, Some(big_bytes.len() as u64));
    assert!(
        client
            .list_artifacts(&run.artifact_uri, "missing")
            .expect("list missing")
            .is_empty()
    );

    let out = dir.path().join("downloads/nested/model.ctpkg");
    client
        .download_artifact(&run.artifact_uri, &model_dir[0].path, &out)
        .expect("download big");
    assert!(
        std::fs::read(&out).expect("read back") == big_bytes,
        "the downloaded model differs from the upload"
    );
    let out_small = dir.path().join("report.json.back");
    client
        .download_artifact(&run.artifact_uri, "evaluation/report.json", &out_small)
        .expect("download small");
    assert_eq!(
        std::fs::read(&out_small).expect("read"),
        br#"{"auc": 0.93}"#
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("downloads/nested"))
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");

    let missing = dir.path().join("never.bin");
    let err = client
        .download_artifact(&run.artifact_uri, "nope/absent.bin", &missing)
        .expect_err("missing artifact");
    assert!(matches!(err, TrackingError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("nope/absent.bin"), "{err}");
    assert!(!missing.exists());

    let err = client
        .upload_artifact(&run.artifact_uri, "x.bin", &dir.path().join("absent"))
        .expect_err("missing local file");
    assert!(matches!(err, TrackingError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("absent"), "{err}");
}

#[test]
fn logged_model_is_uploaded_finalized_and_linked_to_its_run() {
    let client = client();
    let (experiment, run) = new_run(&client, "logged-model");
    let model = client
        .create_logged_model(
            &experiment,
            "covidct",
            Some(&run.run_id),
            &[Param::new("architecture", "resnet18")],
            &[Tag::new("covidct.package_sha256", "00ff")],
        )
        .expect("create logged model");
    assert!(model.model_id.starts_with("m-"), "{}", model.model_id);
    assert_eq!(model.status, LoggedModelStatus::Pending);
    assert_eq!(model.source_run_id.as_deref(), Some(run.run_id.as_str()));
    assert!(
        model.artifact_location.starts_with("mlflow-artifacts:/"),
        "{}",
        model.artifact_location
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let package = dir.path().join("model.ctpkg");
    let bytes = pseudo_random_bytes(2 * 1024 * 1024, 11);
    std::fs::write(&package, &bytes).expect("write");
    client
        .upload_artifact(&model.artifact_location, "model.ctpkg", &package)
        .expect("upload to the model's location");
    client
        .finalize_logged_model(&model.model_id)
        .expect("finalize");
    let ready = client.get_logged_model(&model.model_id).expect("get");
    assert_eq!(ready.status, LoggedModelStatus::Ready);
    assert_eq!(ready.params, vec![Param::new("architecture", "resnet18")]);
    assert_eq!(ready.tags, vec![Tag::new("covidct.package_sha256", "00ff")]);

    client
        .log_model_output(&run.run_id, &model.model_id, 7)
        .expect("link to run");
    let fetched = client.get_run(&run.run_id).expect("run");
    assert_eq!(fetched.model_outputs.len(), 1);
    assert_eq!(fetched.model_outputs[0].model_id, model.model_id);
    assert_eq!(fetched.model_outputs[0].step, 7);

    let listed = client
        .list_artifacts(&model.artifact_location, "")
        .expect("list model files");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].file_size, Some(bytes.len() as u64));
}

#[test]
fn registry_versions_aliases_tags_and_model_uris() {
    let client = client();
    let (experiment, run) = new_run(&client, "registry");
    let model = client
        .create_logged_model(&experiment, "covidct", Some(&run.run_id), &[], &[])
        .expect("logged model");
    let dir = tempfile::tempdir().expect("tempdir");
    let package = dir.path().join("model.ctpkg");
    std::fs::write(&package, b"package bytes").expect("write");
    client
        .upload_artifact(&model.artifact_location, "model.ctpkg", &package)
        .expect("upload");
    client
        .finalize_logged_model(&model.model_id)
        .expect("ready");

    let name = unique("covidct-registry");
    let registered = client
        .get_or_create_registered_model(&name)
        .expect("create registered");
    assert_eq!(registered.name, name);
    assert_eq!(
        client
            .get_or_create_registered_model(&name)
            .expect("get again")
            .name,
        name
    );

    let v1 = client
        .create_model_version(
            &name,
            &model.artifact_location,
            Some(&run.run_id),
            Some(&model.model_id),
            &[Tag::new("covidct.val_auc", "0.91")],
        )
        .expect("version 1");
    assert_eq!(v1.version, 1);
    assert_eq!(v1.source, model.artifact_location);
    assert_eq!(v1.run_id.as_deref(), Some(run.run_id.as_str()));
    assert_eq!(v1.status, "READY");
    assert_eq!(
        v1.tags.get("covidct.val_auc").map(String::as_str),
        Some("0.91")
    );
    // MLflow 3.17.2 checks that an mlflow-artifacts source lies under the artifact location of
    // the model_id given (or else of the run_id's run): a logged model's location needs its id.
    let err = client
        .create_model_version(
            &name,
            &model.artifact_location,
            Some(&run.run_id),
            None,
            &[],
        )
        .expect_err("a logged model's location without its model_id");
    assert!(
        matches!(&err, TrackingError::Api { status: 400, error_code, .. } if error_code == "INVALID_PARAMETER_VALUE"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("Invalid model version source"),
        "{err}"
    );
    let v2 = client
        .create_model_version(
            &name,
            &model.artifact_location,
            None,
            Some(&model.model_id),
            &[],
        )
        .expect("version 2");
    assert_eq!(v2.version, 2);
    // The server fills in the run from the logged model's source run.
    assert_eq!(v2.run_id.as_deref(), Some(run.run_id.as_str()));

    client.set_alias(&name, "champion", 1).expect("alias");
    let uri = ModelUri::parse(&format!("models:/{name}@champion")).expect("uri");
    let resolved = client.resolve_model_uri(&uri).expect("resolve alias");
    assert_eq!(resolved.version, 1);
    assert_eq!(resolved.aliases, vec!["champion".to_owned()]);
    let by_number = client
        .resolve_model_uri(&ModelUri {
            name: name.clone(),
            selector: ModelSelector::Version(2),
        })
        .expect("resolve version");
    assert_eq!(by_number.version, 2);

    client
        .set_model_version_tag(&name, 1, "covidct.validation", "passed")
        .expect("tag");
    let v1_again = client.get_model_version(&name, 1).expect("get v1");
    assert_eq!(
        v1_again.tags.get("covidct.validation").map(String::as_str),
        Some("passed")
    );

    let registered = client.get_registered_model(&name).expect("get registered");
    assert_eq!(registered.aliases.get("champion"), Some(&1));
    let mut versions: Vec<u64> = client
        .search_model_versions(&name)
        .expect("search")
        .iter()
        .map(|v| v.version)
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, vec![1, 2]);

    // Moving the alias, then serving the champion's files through the registry route.
    client.set_alias(&name, "champion", 2).expect("move alias");
    assert_eq!(client.resolve_model_uri(&uri).expect("resolve").version, 2);
    let served = dir.path().join("served.ctpkg");
    client
        .download_model_version_artifact(&name, 2, "model.ctpkg", &served)
        .expect("download through model-versions/get-artifact");
    assert_eq!(std::fs::read(&served).expect("read"), b"package bytes");

    client
        .delete_alias(&name, "champion")
        .expect("delete alias");
    let err = client.resolve_model_uri(&uri).expect_err("alias gone");
    assert!(matches!(err, TrackingError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("alias 'champion'"), "{err}");

    let err = client.get_model_version(&name, 9).expect_err("no v9");
    assert!(matches!(err, TrackingError::NotFound { .. }), "{err:?}");
}

#[test]
fn creating_a_registered_model_twice_is_already_exists() {
    let client = client();
    let name = unique("conflict");
    client.create_registered_model(&name).expect("first");
    let err = client.create_registered_model(&name).expect_err("second");
    assert!(
        matches!(err, TrackingError::AlreadyExists { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("registered model '{name}' already exists")),
        "{text}"
    );
    assert!(!err.is_transient());
}

#[test]
fn unknown_run_is_not_found() {
    let client = client();
    let err = client
        .get_run("0123456789abcdef0123456789abcdef")
        .expect_err("no such run");
    assert!(matches!(err, TrackingError::NotFound { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("run '0123456789abcdef0123456789abcdef' does not exist"),
        "{text}"
    );
    assert!(!err.is_transient());
    let err = client
        .log_batch(
            "0123456789abcdef0123456789abcdef",
            &[Metric::new("a", 1.0, 1, 0)],
            &[],
            &[],
        )
        .expect_err("log to no run");
    assert!(matches!(err, TrackingError::NotFound { .. }), "{err:?}");
}

/// A real 5xx: MLflow 3.17.2 cannot serve the files of a version registered from a `runs:/`
/// source (`model-versions/get-artifact` answers 500).
#[test]
fn server_errors_are_api_errors_and_transient() {
    let client = client();
    let (_, run) = new_run(&client, "runs-source");
    let name = unique("runs-source-model");
    client.create_registered_model(&name).expect("model");
    let version = client
        .create_model_version(
            &name,
            &format!("runs:/{}/model", run.run_id),
            Some(&run.run_id),
            None,
            &[],
        )
        .expect("runs:/ version registers");
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("model.ctpkg");
    let err = client
        .download_model_version_artifact(&name, version.version, "model.ctpkg", &dest)
        .expect_err("500");
    assert!(
        matches!(&err, TrackingError::Api { status: 500, .. }),
        "{err:?}"
    );
    assert!(err.is_transient());
    let text = err.to_string();
    assert!(text.contains("HTTP 500"), "{text}");
    assert!(text.contains("/model-versions/get-artifact"), "{text}");
    assert!(!dest.exists());
}

#[test]
fn five_hundreds_are_retried_with_exponential_backoff() {
    let fake = FakeServer::start(|_| {
        (
            500,
            r#"{"error_code":"INTERNAL_ERROR","message":"database is locked"}"#.to_owned(),
        )
    });
    let client = MlflowClient::new(ServerConfig {
        base_url: fake.url.clone(),
        auth: Auth::None,
        retry: RetryPolicy {
            attempts: 3,
            initial_backoff: Duration::from_millis(150),
        },
        timeout: Duration::from_secs(5),
    })
    .expect("client");
    let started = Instant::now();
    let err = client.get_run("abc").expect_err("always 500");
    let elapsed = started.elapsed();
    assert_eq!(fake.hits(), 3, "3 attempts in all");
    assert!(
        elapsed >= Duration::from_millis(450),
        "waited 150 + 300 ms: {elapsed:?}"
    );
    let received = fake.received.lock().expect("log").clone();
    let gap1 = received[1].at - received[0].at;
    let gap2 = received[2].at - received[1].at;
    assert!(gap1 >= Duration::from_millis(150), "{gap1:?}");
    assert!(gap2 >= Duration::from_millis(300), "{gap2:?}");
    assert_eq!(
        received[0].request_line,
        "GET /api/2.0/mlflow/runs/get?run_id=abc"
    );
    assert!(err.is_transient());
    assert!(
        matches!(&err, TrackingError::Api { status: 500, error_code, message, .. }
            if error_code == "INTERNAL_ERROR" && message == "database is locked"),
        "{err:?}"
    );

    // Two 503s then an answer: the call succeeds on the third try.
    let flaky = FakeServer::start(|n| {
        if n < 2 {
            (503, "<html>unavailable</html>".to_owned())
        } else {
            (
                200,
                r#"{"experiment":{"experiment_id":"7","lifecycle_stage":"active"}}"#.to_owned(),
            )
        }
    });
    let client = MlflowClient::new(ServerConfig {
        base_url: flaky.url.clone(),
        auth: Auth::None,
        retry: RetryPolicy {
            attempts: 4,
            initial_backoff: Duration::from_millis(10),
        },
        timeout: Duration::from_secs(5),
    })
    .expect("client");
    assert_eq!(
        client.get_or_create_experiment("x").expect("third try"),
        "7"
    );
    assert_eq!(flaky.hits(), 3);

    // A 4xx is not retried.
    let bad = FakeServer::start(|_| {
        (
            400,
            r#"{"error_code":"INVALID_PARAMETER_VALUE","message":"no"}"#.to_owned(),
        )
    });
    let client = MlflowClient::new(ServerConfig {
        base_url: bad.url.clone(),
        auth: Auth::None,
        retry: RetryPolicy::default(),
        timeout: Duration::from_secs(5),
    })
    .expect("client");
    assert!(client.get_run("abc").is_err());
    assert_eq!(bad.hits(), 1);
}

#[test]
fn a_closed_port_is_unreachable_and_transient() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let client = MlflowClient::new(ServerConfig {
        base_url: url.clone(),
        auth: Auth::None,
        retry: RetryPolicy {
            attempts: 2,
            initial_backoff: Duration::from_millis(10),
        },
        timeout: Duration::from_secs(5),
    })
    .expect("client");
    let err = client
        .get_or_create_experiment("covidct")
        .expect_err("nobody listens");
    assert!(matches!(&err, TrackingError::Unreachable { .. }), "{err:?}");
    assert!(err.is_transient());
    let text = err.to_string();
    assert!(text.contains(&url), "{text}");
    assert!(text.contains("cannot be reached"), "{text}");
    assert!(text.contains("MLFLOW_TRACKING_URI"), "{text}");
}

#[test]
fn a_fake_401_is_unauthorized_with_a_hint() {
    let fake = FakeServer::start(|_| (401, "You are not authenticated.".to_owned()));
    let client = MlflowClient::new(ServerConfig {
        base_url: fake.url.clone(),
        auth: Auth::Bearer("wrong".to_owned()),
        retry: RetryPolicy::default(),
        timeout: Duration::from_secs(5),
    })
    .expect("client");
    let err = client.get_run("abc").expect_err("401");
    assert!(
        matches!(err, TrackingError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    assert!(!err.is_transient());
    assert_eq!(fake.hits(), 1, "credentials errors are not retried");
    let text = err.to_string();
    assert!(text.contains("MLFLOW_TRACKING_TOKEN"), "{text}");
    assert!(text.contains("MLFLOW_TRACKING_USERNAME"), "{text}");
    assert!(!text.contains("wrong"), "the token is not shown: {text}");
}

#[test]
fn bad_uris_are_refused_with_clear_messages() {
    let client = client();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("f.txt");
    std::fs::write(&file, b"x").expect("write");

    let err = client
        .upload_artifact("s3://bucket/1/abc/artifacts", "f.txt", &file)
        .expect_err("s3");
    assert!(matches!(err, TrackingError::InvalidUri { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("invalid URI 's3://bucket/1/abc/artifacts'"),
        "{text}"
    );
    assert!(text.contains("mlflow-artifacts:/"), "{text}");

    let err = client
        .upload_artifact("mlflow-artifacts:/1/abc/artifacts", "../escape.txt", &file)
        .expect_err("..");
    assert!(err.to_string().contains("'..' segment"), "{err}");

    let err = client
        .upload_artifact("mlflow-artifacts://other-host:5000/1/abc", "f.txt", &file)
        .expect_err("other host");
    assert!(err.to_string().contains("other-host:5000"), "{err}");

    let err = ModelUri::parse("models:/covidct").expect_err("no selector");
    assert!(err.to_string().contains("models:/<name>@<alias>"), "{err}");
    let err = MlflowClient::new(ServerConfig::new("localhost:5000")).expect_err("no scheme");
    assert!(err.to_string().contains("http://"), "{err}");
}

/// A TCP forwarder to the test server that can be cut (open connections are shut and new ones
/// dropped at once, as when the server goes away) and restored.
struct Forwarder {
    url: String,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Forwarder {
    fn start(upstream: &str) -> Self {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind forwarder");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let up = Arc::new(AtomicBool::new(true));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (flag, connections) = (up.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !flag.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let pipe = |mut from: TcpStream, mut to: TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                };
                if let (Ok(c2), Ok(s2), Ok(c3)) =
                    (client.try_clone(), server.try_clone(), client.try_clone())
                {
                    connections.lock().expect("lock").push(c3);
                    pipe(client, s2);
                    pipe(server, c2);
                }
            }
        });
        Self { url, up, open }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            for connection in self.open.lock().expect("lock").drain(..) {
                let _ = connection.shutdown(Shutdown::Both);
            }
        }
    }
}

#[test]
fn a_server_that_goes_away_mid_run_loses_no_record_and_gets_none_twice() {
    use covidct_tracking::{RunRecorder, TrackingTarget, sync_spool};
    let forwarder = Forwarder::start(&server().url);
    let spool = tempfile::tempdir().expect("spool");
    let target = TrackingTarget::from_uri(&forwarder.url);
    let mut recorder = RunRecorder::start(
        &target,
        spool.path(),
        &unique("outage"),
        "outage",
        vec![Tag::new("covidct.kind", "test")],
    )
    .expect("recorder");
    recorder.log_params(vec![Param::new("lr", "0.001")]);
    for step in 1..=3 {
        recorder.log_metrics(step, &[("loss", 1.0 / step as f64)]);
    }
    let run_id = recorder.run().expect("created while up").run_id.clone();

    // The server goes away: training goes on, records wait in the journal.
    forwarder.set_up(false);
    for step in 4..=6 {
        recorder.log_metrics(step, &[("loss", 1.0 / step as f64)]);
    }
    let note = spool.path().join("note.txt");
    std::fs::write(&note, "written during the outage").expect("note");
    recorder.log_artifact("notes/note.txt", &note);
    let summary = recorder.finish(RunStatus::Finished);
    assert_eq!(
        summary.run.as_ref().map(|r| r.run_id.as_str()),
        Some(run_id.as_str())
    );
    assert_eq!(
        summary.pending, 5,
        "3 metric batches, the artifact and the status wait"
    );

    // Back up: one sync delivers the rest in order, a second has nothing to do.
    forwarder.set_up(true);
    let outcomes = sync_spool(spool.path()).expect("sync");
    assert_eq!(outcomes.len(), 1);
    assert_eq!((outcomes[0].delivered, outcomes[0].pending), (5, 0));
    assert!(outcomes[0].error.is_none(), "{:?}", outcomes[0].error);
    assert!(sync_spool(spool.path()).expect("sync again").is_empty());

    let client = client();
    let steps: Vec<i64> = client
        .metric_history(&run_id, "loss")
        .expect("history")
        .iter()
        .map(|m| m.step)
        .collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6]);
    let run = client.get_run(&run_id).expect("run");
    assert_eq!(run.info.status, RunStatus::Finished);
    assert_eq!(run.data.param("lr"), Some("0.001"));
    let back = spool.path().join("back.txt");
    client
        .download_artifact(&run.info.artifact_uri, "notes/note.txt", &back)
        .expect("artifact");
    assert_eq!(
        std::fs::read_to_string(back).expect("read"),
        "written during the outage"
    );
}
