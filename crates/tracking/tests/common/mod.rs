//! Test helpers: a real `mlflow server` per test binary, and a tiny fake HTTP server.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use covidct_tracking::{Auth, MlflowClient, RetryPolicy, ServerConfig};

/// How long a fresh server may take to answer `/health` (it takes 15–30 s on two cores).
const STARTUP_LIMIT: Duration = Duration::from_secs(180);

/// The MLflow version the tests are written against.
pub const MLFLOW_VERSION: &str = "3.17.2";

/// Runs the command after the folder argument in this process group, and stops the whole group
/// (the `mlflow server` process, uvicorn, anything they started) as soon as this script's
/// standard input closes, that is when the test process exits, however it exits; then removes
/// the folder. If the server exits by itself first, the script ends too (keeping the folder and
/// its `server.log`), so the test sees it at once.
const SUPERVISOR: &str = r#"
dir=$1; shift
trap ':' TERM INT HUP
exec 3<&0 </dev/null
"$@" 3<&- >"$dir/server.log" 2>&1 &
server=$!
{ cat <&3 >/dev/null; : >"$dir/.stop"; kill -TERM 0; } 2>/dev/null &
exec 3<&-
wait "$server"
kill -TERM 0 2>/dev/null
if [ -e "$dir/.stop" ]; then
    sleep 2
    rm -rf "$dir"
else
    sleep 1
fi
kill -KILL 0
"#;

/// Which kind of server to start.
#[derive(Debug, Clone, Copy)]
pub enum ServerKind {
    /// `mlflow server` without authentication.
    Plain,
    /// `mlflow server --app-name basic-auth` with the admin account below.
    BasicAuth,
}

/// The admin account of the basic-auth server.
pub const ADMIN_USER: &str = "admin";
/// Its password (not MLflow's old default, which 3.17.2 refuses).
pub const ADMIN_PASSWORD: &str = "covidct-test-admin-password";

/// A running `mlflow server`, stopped when the test process exits.
pub struct MlflowServer {
    /// Its root URL.
    pub url: String,
    /// The folder with its database, artifacts and `server.log`.
    pub dir: PathBuf,
    /// The supervisor; kept (never dropped) so that its stdin stays open while tests run.
    _supervisor: Mutex<Child>,
}

/// The `mlflow` executable: `COVIDCT_MLFLOW`, else `<workspace>/.venv/bin/mlflow`.
pub fn mlflow_executable() -> Result<PathBuf, String> {
    let path = match std::env::var_os("COVIDCT_MLFLOW") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/mlflow"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "the MLflow tests need an mlflow {MLFLOW_VERSION} executable, and {} does not exist: \
             install it with `python3 -m venv .venv && .venv/bin/pip install -r \
             tests/requirements.txt` at the workspace root (bash scripts/setup.sh does this), or \
             set COVIDCT_MLFLOW to the path of an mlflow {MLFLOW_VERSION} executable",
            path.display()
        ))
    }
}

fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot pick a free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("cannot pick a free port: {e}"))
}

fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

impl MlflowServer {
    /// Starts a server on a free port with a fresh SQLite store and artifact folder, and waits
    /// until `/health` answers.
    pub fn start(kind: ServerKind) -> Result<Self, String> {
        let mlflow = mlflow_executable()?;
        let dir = tempfile::Builder::new()
            .prefix("covidct-mlflow-")
            .tempdir()
            .map_err(|e| format!("cannot create a folder for the server: {e}"))?
            .keep();
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let artifacts = dir.join("artifacts");
        std::fs::create_dir_all(&artifacts).map_err(|e| e.to_string())?;

        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("mlflow-supervisor")
            .arg(&dir)
            .arg(&mlflow)
            .arg("server")
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
            .arg("--artifacts-destination")
            .arg(&artifacts)
            .args(["--workers", "1"])
            // The background job runner (used for GenAI features) doubles start-up time.
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let ServerKind::BasicAuth = kind {
            let config = dir.join("basic_auth.ini");
            std::fs::write(
                &config,
                format!(
                    "[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{}\n\
                     admin_username = {ADMIN_USER}\nadmin_password = {ADMIN_PASSWORD}\n\
                     authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
                    dir.join("basic_auth.db").display()
                ),
            )
            .map_err(|e| e.to_string())?;
            command
                .args(["--app-name", "basic-auth"])
                .env("MLFLOW_AUTH_CONFIG_PATH", &config)
                .env("MLFLOW_FLASK_SERVER_SECRET_KEY", "covidct-test-secret");
        }
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut supervisor = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", mlflow.display()))?;

        let http = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        loop {
            if let Ok(response) = http.get(format!("{url}/health")).send()
                && response.status().is_success()
            {
                eprintln!(
                    "mlflow server ({kind:?}) ready at {url} after {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                return Ok(Self {
                    url,
                    dir,
                    _supervisor: Mutex::new(supervisor),
                });
            }
            if let Ok(Some(status)) = supervisor.try_wait() {
                let tail = log_tail(&dir);
                let hint = if tail.contains("Flask-WTF") {
                    "\nThe basic-auth app needs Flask-WTF: install it into the same environment \
                     with `pip install flask-wtf==1.3.0` (mlflow[auth] extra)."
                } else {
                    ""
                };
                return Err(format!(
                    "mlflow server exited ({status}) before answering {url}/health; the end of \
                     {}/server.log:\n{tail}{hint}",
                    dir.display()
                ));
            }
            if started.elapsed() > STARTUP_LIMIT {
                return Err(format!(
                    "mlflow server did not answer {url}/health within {} s; the end of \
                     {}/server.log:\n{}",
                    STARTUP_LIMIT.as_secs(),
                    dir.display(),
                    log_tail(&dir)
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A client of this server with `auth`, quick retries and a generous timeout.
    pub fn client_with(&self, auth: Auth) -> MlflowClient {
        MlflowClient::new(ServerConfig {
            base_url: self.url.clone(),
            auth,
            retry: RetryPolicy {
                attempts: 2,
                initial_backoff: Duration::from_millis(100),
            },
            timeout: Duration::from_secs(60),
        })
        .expect("client of the test server")
    }
}

/// Milliseconds since the UNIX epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Deterministic pseudo-random bytes (xorshift), so that compression cannot hide a corruption.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// One request the fake server received.
#[derive(Debug, Clone)]
pub struct Received {
    /// `METHOD /path?query`.
    pub request_line: String,
    /// When it arrived.
    pub at: Instant,
}

/// A fake HTTP server on a free port that answers every request with `respond(n)` (n counts
/// from 0), one request per connection.
pub struct FakeServer {
    /// Its root URL.
    pub url: String,
    /// The requests received so far.
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl FakeServer {
    /// Starts the server; its thread lives as long as the test process.
    pub fn start(respond: impl Fn(usize) -> (u16, String) + Send + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake server");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let n = {
                    let Ok(log) = log.lock() else { return };
                    log.len()
                };
                let Some(request_line) = read_request(&stream) else {
                    continue;
                };
                if let Ok(mut log) = log.lock() {
                    log.push(Received {
                        request_line,
                        at: Instant::now(),
                    });
                }
                let (status, body) = respond(n);
                let answer = format!(
                    "HTTP/1.1 {status} Status\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let mut stream = stream;
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        Self { url, received }
    }

    /// How many requests arrived.
    pub fn hits(&self) -> usize {
        self.received.lock().map(|r| r.len()).unwrap_or(0)
    }
}

/// Reads one request (head and `Content-Length` body); returns its request line.
fn read_request(stream: &TcpStream) -> Option<String> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    let mut parts = request_line.split_whitespace();
    Some(format!(
        "{} {}",
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("")
    ))
}
