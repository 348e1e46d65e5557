//! Shared state: settings, the loaded model (swapped atomically on reload), the prediction log,
//! metrics, the decoding pool and the concurrency limiter.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use covidct_model::{ModelPackage, Predictor, select_device};
use prometheus::IntGauge;
use serde::Serialize;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, oneshot};
use utoipa::ToSchema;

use crate::batching::Batcher;
use crate::card_html::card_html;
use crate::config::ServeConfig;
use crate::error::{ApiError, ServeError};
use crate::metrics::Metrics;
use crate::prediction_log::PredictionLog;

/// Where the model comes from; re-resolved on every (re)load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A model package file.
    Package(PathBuf),
    /// A model registry URI, e.g. `models:/covidct@champion`, resolved by a [`RegistryResolver`].
    Registry(String),
}

impl ModelSource {
    /// `models:/…` is a registry URI; anything else a package path.
    pub fn parse(text: &str) -> Self {
        if text.starts_with("models:/") {
            Self::Registry(text.to_owned())
        } else {
            Self::Package(PathBuf::from(text))
        }
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Package(path) => write!(f, "{}", path.display()),
            Self::Registry(uri) => f.write_str(uri),
        }
    }
}

/// A registry URI resolved to a local package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    /// The package file (downloaded by the resolver when remote).
    pub path: PathBuf,
    /// The registry's version of the model, reported instead of the weights digest.
    pub version: Option<String>,
}

/// Resolves a registry URI (`models:/NAME@ALIAS`, `models:/NAME/VERSION`) to a package. Given
/// by the binary, so that this crate does not depend on any registry client; the error is a
/// message for the client and the log.
pub type RegistryResolver = Arc<dyn Fn(&str) -> Result<ResolvedModel, String> + Send + Sync>;

/// Name and version of a model, as reported in every answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ModelRef {
    /// Model name (from the package).
    pub name: String,
    /// Registry version, else the first 12 hex digits of the weights' SHA-256.
    pub version: String,
}

/// A loaded, warmed-up model with its inference thread.
pub struct LoadedModel {
    /// The predictor (BatchNorm folded).
    pub predictor: Arc<Predictor>,
    /// Name and version.
    pub reference: ModelRef,
    /// The source it was loaded from.
    pub source: String,
    /// The package's model card (Markdown).
    pub model_card: String,
    /// The model card as an HTML fragment for the page, rendered once at load
    /// ([`crate::card_html::card_html`]).
    pub model_card_html: String,
    /// When it was loaded, in seconds since the Unix epoch.
    pub loaded_unix: u64,
    /// Its micro-batching queue.
    pub batcher: Batcher,
}

struct Inner {
    config: ServeConfig,
    source: ModelSource,
    resolver: Option<RegistryResolver>,
    model: RwLock<Option<Arc<LoadedModel>>>,
    metrics: Metrics,
    log: PredictionLog,
    pool: rayon::ThreadPool,
    limiter: Arc<Semaphore>,
    reload: Mutex<()>,
}

/// The service's state, shared by every request (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

impl AppState {
    /// Validates the settings, opens the prediction log and starts the worker pool. No model
    /// is loaded yet (`/readyz` answers 503): call [`AppState::load_model`].
    pub fn new(
        config: ServeConfig,
        source: ModelSource,
        resolver: Option<RegistryResolver>,
    ) -> Result<Self, ServeError> {
        config.validate()?;
        select_device(&config.device)?;
        let log = PredictionLog::open(&config.prediction_log, config.store_images.clone())?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.pool_threads())
            .thread_name(|i| format!("covidct-decode-{i}"))
            .build()
            .map_err(|e| ServeError::Worker(format!("cannot start the decoding pool: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                limiter: Arc::new(Semaphore::new(config.max_concurrency)),
                config,
                source,
                resolver,
                model: RwLock::new(None),
                metrics: Metrics::new()?,
                log,
                pool,
                reload: Mutex::new(()),
            }),
        })
    }

    /// Resolves the model source (again), loads and warms the model off the async threads,
    /// then swaps it in: requests already running finish on the model they started with.
    /// Concurrent calls run one after the other. Returns the new model's name and version.
    pub async fn load_model(&self) -> Result<ModelRef, ServeError> {
        let _one_at_a_time = self.inner.reload.lock().await;
        let state = self.clone();
        let loaded = tokio::task::spawn_blocking(move || state.load_blocking())
            .await
            .map_err(|e| ServeError::Worker(format!("model loading failed: {e}")))??;
        let reference = loaded.reference.clone();
        self.inner
            .metrics
            .set_model(&reference.name, &reference.version);
        *self
            .inner
            .model
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(loaded));
        tracing::info!(name = %reference.name, version = %reference.version, "model ready");
        Ok(reference)
    }

    fn load_blocking(&self) -> Result<LoadedModel, ServeError> {
        let started = Instant::now();
        let config = &self.inner.config;
        let (path, registry_version) = match &self.inner.source {
            ModelSource::Package(path) => (path.clone(), None),
            ModelSource::Registry(uri) => {
                let resolver = self
                    .inner
                    .resolver
                    .as_ref()
                    .ok_or_else(|| ServeError::Resolve {
                        source_uri: uri.clone(),
                        reason: "no model registry is configured".to_owned(),
                    })?;
                let resolved = resolver(uri).map_err(|reason| ServeError::Resolve {
                    source_uri: uri.clone(),
                    reason,
                })?;
                (resolved.path, resolved.version)
            }
        };
        let package = ModelPackage::load(&path)?;
        let device = select_device(&config.device)?;
        let predictor = Arc::new(Predictor::new(&package, &device)?);
        // Warm-up: one single-image and one full-batch forward pass, so that the first request
        // pays no allocation or kernel-selection cost.
        let side = predictor.metadata().preprocess.size as usize;
        let plane = side * side * predictor.metadata().in_channels;
        for n in [1, config.batch_size] {
            predictor.logits(vec![0.0; n * plane], n)?;
        }
        let metadata = predictor.metadata();
        let version = registry_version
            .unwrap_or_else(|| metadata.weights_sha256.chars().take(12).collect::<String>());
        let reference = ModelRef {
            name: metadata.name.clone(),
            version,
        };
        let batcher = Batcher::start(
            predictor.clone(),
            config.batch_plan(),
            self.inner.metrics.clone(),
        )?;
        tracing::info!(
            source = %self.inner.source,
            package = %path.display(),
            seconds = started.elapsed().as_secs_f64(),
            "model loaded and warmed up"
        );
        Ok(LoadedModel {
            predictor,
            reference,
            source: self.inner.source.to_string(),
            model_card_html: card_html(&package.model_card),
            model_card: package.model_card,
            loaded_unix: u64::try_from(crate::prediction_log::now_unix_ms() / 1000).unwrap_or(0),
            batcher,
        })
    }

    /// The current model, or 503 `not_ready`.
    pub fn model(&self) -> Result<Arc<LoadedModel>, ApiError> {
        self.inner
            .model
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(ApiError::not_ready)
    }

    /// Whether a model is loaded and warmed up.
    pub fn is_ready(&self) -> bool {
        self.model().is_ok()
    }

    /// The settings.
    pub fn config(&self) -> &ServeConfig {
        &self.inner.config
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The prediction log.
    pub fn log(&self) -> &PredictionLog {
        &self.inner.log
    }

    /// Takes one of the `max_concurrency` request slots, held until the [`Slot`] is dropped,
    /// or answers 503 `overloaded` (`Retry-After: 1`) when every slot is taken.
    pub fn try_admit(&self) -> Result<Slot, ApiError> {
        let permit = self
            .inner
            .limiter
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                ApiError::unavailable(
                    "overloaded",
                    format!(
                        "{} requests are already in progress: retry shortly",
                        self.inner.config.max_concurrency
                    ),
                    1,
                )
            })?;
        let in_flight = self.inner.metrics.in_flight.clone();
        in_flight.inc();
        Ok(Slot {
            _permit: permit,
            in_flight,
        })
    }

    /// Runs CPU-bound work (decoding, features, Grad-CAM) on the decoding pool, off the async
    /// threads.
    pub(crate) async fn on_pool<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.inner.pool.spawn(move || {
            let _ = reply.send(work());
        });
        answer
            .await
            .map_err(|_| ApiError::internal("a decoding task stopped without an answer"))
    }
}

/// One of the `max_concurrency` request slots ([`AppState::try_admit`]), counted in
/// `covidct_http_requests_in_flight` while held and given back when dropped: when its request is
/// answered, fails or is cancelled.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    in_flight: IntGauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.in_flight.dec();
    }
}
