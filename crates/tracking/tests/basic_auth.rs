//! Credentials against a real `mlflow server --app-name basic-auth` (MLflow 3.17.2 with
//! Flask-WTF, the `mlflow[auth]` extra).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod common;

use std::sync::LazyLock;

use common::{ADMIN_PASSWORD, ADMIN_USER, MlflowServer, ServerKind, now_ms, unique};
use covidct_tracking::{Auth, Metric, TrackingError};

static SERVER: LazyLock<Result<MlflowServer, String>> =
    LazyLock::new(|| MlflowServer::start(ServerKind::BasicAuth));

fn server() -> &'static MlflowServer {
    match &*SERVER {
        Ok(server) => server,
        Err(reason) => panic!("{reason}"),
    }
}

fn admin() -> Auth {
    Auth::Basic {
        username: ADMIN_USER.to_owned(),
        password: ADMIN_PASSWORD.to_owned(),
    }
}

#[test]
fn right_credentials_log_runs_and_artifacts() {
    let client = server().client_with(admin());
    let experiment = client
        .get_or_create_experiment(&unique("auth"))
        .expect("experiment");
    let run = client
        .create_run(&experiment, "authenticated", now_ms(), &[])
        .expect("run");
    client
        .log_batch(
            &run.run_id,
            &[Metric::new("loss", 0.5, now_ms(), 0)],
            &[],
            &[],
        )
        .expect("log");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a.txt");
    std::fs::write(&file, b"hello").expect("write");
    client
        .upload_artifact(&run.artifact_uri, "a.txt", &file)
        .expect("upload with credentials");
    let back = dir.path().join("b.txt");
    client
        .download_artifact(&run.artifact_uri, "a.txt", &back)
        .expect("download with credentials");
    assert_eq!(std::fs::read(&back).expect("read"), b"hello");
}

#[test]
fn wrong_or_missing_credentials_are_unauthorized() {
    let wrong_password = Auth::Basic {
        username: ADMIN_USER.to_owned(),
        password: "not-the-password".to_owned(),
    };
    for (auth, label) in [
        (wrong_password, "wrong password"),
        (Auth::None, "no credentials"),
        (Auth::Bearer("some-token".to_owned()), "a bearer token"),
    ] {
        let client = server().client_with(auth);
        let err = client.get_or_create_experiment("covidct").expect_err(label);
        assert!(
            matches!(err, TrackingError::Unauthorized { status: 401, .. }),
            "{label}: {err:?}"
        );
        assert!(!err.is_transient(), "{label}");
        let text = err.to_string();
        assert!(text.contains("rejected the credentials"), "{text}");
        assert!(text.contains("MLFLOW_TRACKING_TOKEN"), "{text}");
        assert!(
            text.contains("MLFLOW_TRACKING_USERNAME") && text.contains("MLFLOW_TRACKING_PASSWORD"),
            "{text}"
        );
        assert!(!text.contains("not-the-password"), "{text}");
    }
}
