//! Test helpers: zip builders and a tiny local server that answers like Kaggle's download API.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{Cursor, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use zip::ZipWriter;
use zip::write::SimpleFileOptions;

/// The normal dataset: two tiny "images" in the two class folders.
pub const NORMAL_ENTRIES: &[(&str, &[u8])] = &[
    ("COVID/a.png", b"\x89PNG covid image bytes"),
    (
        "non-COVID/b.png",
        b"\x89PNG non-covid image bytes, a bit longer",
    ),
];

/// A zip holding one normal file and a symlink entry pointing outside.
pub fn symlink_zip() -> Vec<u8> {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default();
    writer
        .start_file("COVID/a.png", options)
        .expect("start_file");
    writer.write_all(b"png").expect("write");
    writer
        .add_symlink("COVID/link.png", "/etc/passwd", options)
        .expect("add_symlink");
    writer.finish().expect("finish zip").into_inner()
}

/// Rewrites the declared uncompressed size of entry `name`, in its local header and in the
/// central directory (they must agree or the reader refuses the archive), leaving the data,
/// CRC and compressed size alone: a lying archive.
pub fn patch_declared_size(zip: &mut [u8], name: &str, size: u32) {
    let le16 = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]) as usize;
    let mut patched = 0;
    let mut i = 0;
    while i + 46 <= zip.len() {
        let sig = &zip[i..i + 4];
        let (size_at, name_len_at, name_at) = if sig == [0x50, 0x4b, 0x03, 0x04] {
            (22, 26, 30)
        } else if sig == [0x50, 0x4b, 0x01, 0x02] {
            (24, 28, 46)
        } else {
            i += 1;
            continue;
        };
        let name_len = le16(zip, i + name_len_at);
        if zip.get(i + name_at..i + name_at + name_len) == Some(name.as_bytes()) {
            zip[i + size_at..i + size_at + 4].copy_from_slice(&size.to_le_bytes());
            patched += 1;
        }
        i += 4;
    }
    assert_eq!(
        patched, 2,
        "expected one local and one central header for {name}"
    );
}

/// Every path under `root`, relative, sorted (to prove nothing else was written).
pub fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(root).expect("under root");
            out.push(rel.to_string_lossy().replace('\\', "/"));
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// How the fake Kaggle behaves.
#[derive(Clone)]
pub struct StubConfig {
    /// Accepted username.
    pub username: String,
    /// Accepted key.
    pub key: String,
    /// The dataset the API knows (`owner/name`); others get 404.
    pub dataset: String,
    /// The archive the storage host serves.
    pub archive: Vec<u8>,
    /// On the first storage request, send only this many body bytes then close the connection.
    pub cut_first_after: Option<usize>,
    /// Answer 200 with the whole archive even when a Range is asked.
    pub ignore_range: bool,
}

impl StubConfig {
    /// A stub serving `archive` for `owner/data` to `alice`/`secret-key`.
    pub fn new(archive: Vec<u8>) -> Self {
        Self {
            username: "alice".into(),
            key: "secret-key".into(),
            dataset: "owner/data".into(),
            archive,
            cut_first_after: None,
            ignore_range: false,
        }
    }
}

/// One request the stub saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// "api" or "storage".
    pub host: &'static str,
    /// Request target (path and query).
    pub target: String,
    /// The Authorization header, if any.
    pub authorization: Option<String>,
    /// The Range header, if any.
    pub range: Option<String>,
    /// Status answered.
    pub status: u16,
}

/// A fake Kaggle: an API listener that checks basic auth and redirects (302) to a storage
/// listener on another port (so another origin) that serves the archive and honours Range.
/// Both threads stop when the stub is dropped, after 60 s, or after 64 connections each.
pub struct KaggleStub {
    /// The API base to put in the options, e.g. `http://127.0.0.1:1234/api/v1`.
    pub api_base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl KaggleStub {
    /// Starts both listeners on 127.0.0.1, port 0.
    pub fn start(config: StubConfig) -> Self {
        let api = TcpListener::bind("127.0.0.1:0").expect("bind api");
        let storage = TcpListener::bind("127.0.0.1:0").expect("bind storage");
        let api_port = api.local_addr().expect("addr").port();
        let storage_port = storage.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let config = Arc::new(config);
        let storage_requests = Arc::new(AtomicUsize::new(0));

        let api_thread = {
            let (config, seen, stop) = (config.clone(), seen.clone(), stop.clone());
            std::thread::spawn(move || {
                serve(api, &stop, |request| {
                    let reply = answer_api(request, &config, storage_port);
                    record(&seen, "api", request, reply.status);
                    reply
                })
            })
        };
        let storage_thread = {
            let (config, seen, stop) = (config.clone(), seen.clone(), stop.clone());
            std::thread::spawn(move || {
                serve(storage, &stop, |request| {
                    let first = storage_requests.fetch_add(1, Ordering::SeqCst) == 0;
                    let reply = answer_storage(request, &config, first);
                    record(&seen, "storage", request, reply.status);
                    reply
                })
            })
        };
        Self {
            api_base: format!("http://127.0.0.1:{api_port}/api/v1"),
            seen,
            stop,
            threads: vec![api_thread, storage_thread],
        }
    }

    /// The requests seen so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for KaggleStub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

struct Request {
    target: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn record(seen: &Mutex<Vec<Seen>>, host: &'static str, request: &Request, status: u16) {
    seen.lock().expect("lock").push(Seen {
        host,
        target: request.target.clone(),
        authorization: request.header("authorization").map(str::to_owned),
        range: request.header("range").map(str::to_owned),
        status,
    });
}

/// A response: its status (for the log) and the raw bytes to send before hanging up.
struct Reply {
    status: u16,
    bytes: Vec<u8>,
}

/// Serves one connection at a time. Each request is recorded *before* its reply is sent, so
/// the log is complete and in order by the time the client has seen the answer.
fn serve(listener: TcpListener, stop: &AtomicBool, mut handle: impl FnMut(&Request) -> Reply) {
    listener.set_nonblocking(true).expect("nonblocking");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut connections = 0;
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline && connections < 64 {
        match listener.accept() {
            Ok((mut stream, _)) => {
                connections += 1;
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
                if let Some(request) = read_request(&mut stream) {
                    let reply = handle(&request);
                    let _ = stream.write_all(&reply.bytes);
                }
                let _ = stream.flush();
                let _ = stream.shutdown(std::net::Shutdown::Write);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => break,
        }
    }
}

fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut data = Vec::new();
    let mut buf = [0u8; 1024];
    while !data.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 || data.len() > 16 * 1024 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&data);
    let mut lines = text.split("\r\n");
    let target = lines.next()?.split(' ').nth(1)?.to_owned();
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Some(Request { target, headers })
}

fn respond(status: &str, headers: &[(&str, String)], body: &[u8]) -> Reply {
    let mut bytes = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        bytes.push_str(&format!("{k}: {v}\r\n"));
    }
    bytes.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = bytes.into_bytes();
    bytes.extend_from_slice(body);
    let code = status
        .split(' ')
        .next()
        .and_then(|c| c.parse().ok())
        .expect("status code");
    Reply {
        status: code,
        bytes,
    }
}

fn answer_api(request: &Request, config: &StubConfig, storage_port: u16) -> Reply {
    let expected_path = format!("/api/v1/datasets/download/{}", config.dataset);
    let credentials = format!("{}:{}", config.username, config.key);
    let expected_auth = format!("Basic {}", base64(credentials.as_bytes()));
    if request.header("authorization") != Some(expected_auth.as_str()) {
        return respond(
            "401 Unauthorized",
            &[("WWW-Authenticate", "Basic".into())],
            b"{}",
        );
    }
    if request.target != expected_path {
        return respond(
            "404 Not Found",
            &[],
            b"{\"code\":404,\"message\":\"Not found\"}",
        );
    }
    let location = format!("http://127.0.0.1:{storage_port}/storage/archive.zip?X-Signature=abc");
    respond("302 Found", &[("Location", location)], b"")
}

fn answer_storage(request: &Request, config: &StubConfig, first: bool) -> Reply {
    if !request.target.starts_with("/storage/archive.zip") {
        return respond("404 Not Found", &[], b"no such object");
    }
    let data = &config.archive;
    let len = data.len();
    if let (Some(cut), true) = (config.cut_first_after, first) {
        // Announce the whole body, send part of it, hang up.
        let mut reply = respond("200 OK", &[], data);
        reply.bytes.truncate(reply.bytes.len() - len + cut.min(len));
        return reply;
    }
    let start = request
        .header("range")
        .filter(|_| !config.ignore_range)
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|s| s.parse::<usize>().ok());
    match start {
        None => respond("200 OK", &[], data),
        Some(start) if start >= len => {
            let range = format!("bytes */{len}");
            respond(
                "416 Range Not Satisfiable",
                &[("Content-Range", range)],
                b"",
            )
        }
        Some(start) => {
            let range = format!("bytes {start}-{}/{len}", len - 1);
            respond(
                "206 Partial Content",
                &[("Content-Range", range)],
                &data[start..],
            )
        }
    }
}

fn base64(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A scratch area: `root/out` is the out dir; anything appearing elsewhere under `root` is a leak.
pub struct Scratch {
    /// Keeps the folder alive.
    pub dir: tempfile::TempDir,
}

impl Scratch {
    /// A fresh scratch area.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The scratch root.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `root/out`.
    pub fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }
}

#[test]
fn base64_matches_known_values() {
    assert_eq!(base64(b"alice:secret-key"), "YWxpY2U6c2VjcmV0LWtleQ==");
    assert_eq!(base64(b"ab"), "YWI=");
    assert_eq!(base64(b"abc"), "YWJj");
}
