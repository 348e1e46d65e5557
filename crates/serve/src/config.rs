//! Service settings: a plain serde struct with defaults, checked by [`ServeConfig::validate`].

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::batching::BatchPlan;
use crate::error::ServeError;

/// API keys; never printed (their `Debug` shows only how many there are).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApiKeys(pub Vec<String>);

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeys({} redacted)", self.0.len())
    }
}

impl ApiKeys {
    /// Keys from text: one per line or comma-separated; blank entries and `#` comments ignored.
    pub fn parse(text: &str) -> Self {
        Self(
            text.lines()
                .filter(|line| !line.trim_start().starts_with('#'))
                .flat_map(|line| line.split(','))
                .map(str::trim)
                .filter(|key| !key.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    /// Whether `candidate` is one of the keys (compared in constant time per key).
    pub fn contains(&self, candidate: &str) -> bool {
        self.0
            .iter()
            .fold(false, |found, key| found | constant_time_eq(key, candidate))
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Compares two strings without stopping at the first differing byte.
fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, &x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    diff == 0
}

/// Everything `covidct serve` can be told.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// Address and port to listen on.
    pub bind: SocketAddr,
    /// Require an API key for `/v1` routes (and the admin key for `/v1/admin`).
    pub auth: bool,
    /// Keys accepted for prediction routes (`X-API-Key: KEY` or `Authorization: Bearer KEY`).
    pub api_keys: ApiKeys,
    /// Keys accepted for admin routes (`/v1/admin/…`).
    pub admin_keys: ApiKeys,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Largest image in pixels (width × height), checked from the header before decoding.
    pub max_pixels: u64,
    /// Most images in one `/v1/predict/batch` request.
    pub max_batch_images: usize,
    /// Requests slower than this are answered 503 `timeout`.
    pub request_timeout_ms: u64,
    /// Most slices in one `/v1/predict/study` request (files, or entries of its zip archive).
    pub max_study_slices: usize,
    /// Largest `/v1/predict/study` body in bytes (a zip archive's entries: uncompressed).
    pub max_study_bytes: usize,
    /// Most pixels over every slice of a study, read from the headers before decoding.
    pub max_study_pixels: u64,
    /// `/v1/predict/study` requests slower than this are answered 503 `timeout`.
    pub study_timeout_ms: u64,
    /// Fewest usable (decoded, not refused) slices a study needs for a verdict.
    pub study_min_slices: usize,
    /// Smallest share of a study's decoded slices that must be usable for a verdict.
    pub study_min_usable_share: f64,
    /// Most `/v1` requests in progress at once; more are answered 503 with `Retry-After`.
    pub max_concurrency: usize,
    /// Micro-batching: most images one forward pass takes (1 disables batching).
    pub batch_size: usize,
    /// Micro-batching: how long the first image of a batch waits for others, in milliseconds.
    pub batch_wait_ms: u64,
    /// Threads for decoding, features and Grad-CAM (0: one per core).
    pub threads: usize,
    /// Inference workers, each running whole forward passes on its share of the cores (0: one
    /// single-threaded worker per core on the CPU, one worker on a GPU).
    pub inference_workers: usize,
    /// Compute device: `cpu` (flex), `tch`, `tch-cuda:N`, `cuda:N` or `wgpu` in builds with them.
    pub device: String,
    /// SQLite file of the prediction log (WAL mode).
    pub prediction_log: PathBuf,
    /// When set, each predicted image is stored here as `<request id>.<ext>`.
    pub store_images: Option<PathBuf>,
    /// Origins allowed by CORS (`*` for any); empty disables CORS.
    pub cors_origins: Vec<String>,
    /// Output folder of the monitoring job (`python -m covidct_monitor watch --out`); its
    /// `latest/` report is served under `/v1/admin/monitoring/`.
    pub monitoring_reports: Option<PathBuf>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            auth: true,
            api_keys: ApiKeys::default(),
            admin_keys: ApiKeys::default(),
            max_body_bytes: 32 * 1024 * 1024,
            max_pixels: 4096 * 4096,
            max_batch_images: 16,
            request_timeout_ms: 30_000,
            max_study_slices: 1000,
            max_study_bytes: 512 * 1024 * 1024,
            max_study_pixels: 1000 * 1024 * 1024,
            study_timeout_ms: 600_000,
            study_min_slices: 3,
            study_min_usable_share: 0.5,
            max_concurrency: 64,
            batch_size: 8,
            batch_wait_ms: 2,
            threads: 0,
            inference_workers: 0,
            device: "cpu".to_owned(),
            prediction_log: PathBuf::from("predictions.sqlite"),
            store_images: None,
            cors_origins: Vec::new(),
            monitoring_reports: None,
        }
    }
}

impl ServeConfig {
    /// Refuses settings the service cannot run with, naming the field.
    pub fn validate(&self) -> Result<(), ServeError> {
        let fail = |field: &'static str, value: String, reason: &'static str| {
            Err(ServeError::Config {
                field,
                value,
                reason,
            })
        };
        if self.auth && self.api_keys.is_empty() {
            return fail(
                "api_keys",
                "none".into(),
                "authentication is on but no API key is configured: give --api-keys-file, \
                 COVIDCT_API_KEYS or COVIDCT_API_KEYS_FILE, or turn authentication off with --no-auth",
            );
        }
        if self.auth && self.admin_keys.is_empty() {
            return fail(
                "admin_keys",
                "none".into(),
                "authentication is on but no admin key is configured: give --admin-keys-file, \
                 COVIDCT_ADMIN_KEYS or COVIDCT_ADMIN_KEYS_FILE",
            );
        }
        if self.auth && self.api_keys.0.iter().any(|k| self.admin_keys.contains(k)) {
            return fail(
                "admin_keys",
                "shared".into(),
                "an admin key must not also be an API key",
            );
        }
        let positive = [
            ("max_body_bytes", self.max_body_bytes as u64),
            ("max_pixels", self.max_pixels),
            ("max_batch_images", self.max_batch_images as u64),
            ("request_timeout_ms", self.request_timeout_ms),
            ("max_study_slices", self.max_study_slices as u64),
            ("max_study_bytes", self.max_study_bytes as u64),
            ("max_study_pixels", self.max_study_pixels),
            ("study_timeout_ms", self.study_timeout_ms),
            ("study_min_slices", self.study_min_slices as u64),
            ("max_concurrency", self.max_concurrency as u64),
            ("batch_size", self.batch_size as u64),
        ];
        for (field, value) in positive {
            if value == 0 {
                return fail(field, "0".into(), "must be at least 1");
            }
        }
        if !(0.0..=1.0).contains(&self.study_min_usable_share) {
            return fail(
                "study_min_usable_share",
                self.study_min_usable_share.to_string(),
                "must be between 0 and 1",
            );
        }
        if self.batch_wait_ms > 1000 {
            return fail(
                "batch_wait_ms",
                self.batch_wait_ms.to_string(),
                "must be at most 1000",
            );
        }
        if self.inference_workers > 256 {
            return fail(
                "inference_workers",
                self.inference_workers.to_string(),
                "must be at most 256 (0: one per core)",
            );
        }
        if self
            .cors_origins
            .iter()
            .any(|o| o != "*" && o.parse::<axum::http::HeaderValue>().is_err())
        {
            return fail(
                "cors_origins",
                self.cors_origins.join(","),
                "each origin must be `*` or a valid header value such as https://example.org",
            );
        }
        Ok(())
    }

    /// What a study request may hold and when it gets a verdict.
    pub fn study_options(&self, split: bool) -> covidct_study::StudyOptions {
        covidct_study::StudyOptions {
            limits: covidct_study::StudyLimits {
                max_slices: self.max_study_slices,
                max_bytes: self.max_study_bytes as u64,
                max_pixels: self.max_study_pixels,
            },
            rules: covidct_study::StudyRules {
                min_slices: self.study_min_slices,
                min_usable_share: self.study_min_usable_share,
                ..covidct_study::StudyRules::default()
            },
            split,
        }
    }

    /// Threads for the decoding pool: [`ServeConfig::threads`], or the number of cores.
    pub fn pool_threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            cores()
        }
    }

    /// How forward passes are scheduled: the micro-batching settings, and the cores shared out
    /// among [`ServeConfig::inference_workers`] workers.
    pub fn batch_plan(&self) -> BatchPlan {
        let workers = match self.inference_workers {
            0 if covidct_model::is_cpu(&self.device) => cores(),
            0 => 1,
            n => n,
        };
        BatchPlan {
            batch_size: self.batch_size,
            batch_wait: Duration::from_millis(self.batch_wait_ms),
            workers,
            threads_per_worker: (cores() / workers).max(1),
        }
    }
}

/// Cores available to this process.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed() -> ServeConfig {
        ServeConfig {
            api_keys: ApiKeys::parse("a1,a2\n# comment\n"),
            admin_keys: ApiKeys::parse("root"),
            ..ServeConfig::default()
        }
    }

    #[test]
    fn defaults_need_keys() {
        assert!(ServeConfig::default().validate().is_err());
        assert!(keyed().validate().is_ok());
        let open = ServeConfig {
            auth: false,
            ..ServeConfig::default()
        };
        assert!(open.validate().is_ok());
    }

    #[test]
    fn keys_parse_match_and_stay_secret() {
        let keys = ApiKeys::parse("a1, a2\n\n#x\na3");
        assert_eq!(keys.0, ["a1", "a2", "a3"]);
        assert!(keys.contains("a2"));
        assert!(!keys.contains("a"));
        assert!(!keys.contains("a22"));
        assert!(!format!("{keys:?}").contains("a1"));
    }

    #[test]
    fn zero_limits_and_shared_keys_are_refused() {
        let zero = ServeConfig {
            max_batch_images: 0,
            ..keyed()
        };
        assert!(
            zero.validate()
                .unwrap_err()
                .to_string()
                .contains("max_batch_images")
        );
        let shared = ServeConfig {
            admin_keys: ApiKeys::parse("a1"),
            ..keyed()
        };
        assert!(shared.validate().is_err());
    }

    #[test]
    fn inference_workers_share_out_the_cores() {
        let cores = cores();
        let cpu = ServeConfig::default().batch_plan();
        assert_eq!((cpu.workers, cpu.threads_per_worker), (cores, 1));
        assert_eq!(cpu.batch_size, 8);
        assert_eq!(cpu.batch_wait, Duration::from_millis(2));
        let gpu = ServeConfig {
            device: "cuda:0".into(),
            ..ServeConfig::default()
        }
        .batch_plan();
        assert_eq!((gpu.workers, gpu.threads_per_worker), (1, cores));
        let one = ServeConfig {
            inference_workers: 1,
            ..ServeConfig::default()
        }
        .batch_plan();
        assert_eq!((one.workers, one.threads_per_worker), (1, cores));
        let many = ServeConfig {
            inference_workers: 4 * cores,
            ..ServeConfig::default()
        }
        .batch_plan();
        assert_eq!((many.workers, many.threads_per_worker), (4 * cores, 1));
        let absurd = ServeConfig {
            inference_workers: 10_000,
            ..keyed()
        };
        assert!(
            absurd
                .validate()
                .unwrap_err()
                .to_string()
                .contains("inference_workers")
        );
    }
}
