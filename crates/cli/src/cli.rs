//! The command line: every subcommand and option, with the help text users read.
//!
//! Options that are `Option<T>` come from the flag, else the `COVIDCT_*` variable named in the
//! help, else the config file's section for the command, else the library default.

use crate::logging::LogFormat;
use clap::{Args, Parser, Subcommand};
use covidct_data::{Ratios, SplitStrategy};
use covidct_imaging::HuWindow;
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
    /// Measure throughput.
    #[command(subcommand)]
    Bench(BenchCommand),
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
}

/// `covidct bench …`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Images/s for decode+preprocess from files and for augmented batches from the cache.
    Data(BenchDataArgs),
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
