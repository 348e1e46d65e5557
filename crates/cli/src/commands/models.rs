//! `covidct models register | list | promote | pull`: model packages in MLflow's model registry.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use covidct_evaluation::{EvaluationReport, Metric};
use covidct_model::ModelPackage;
use covidct_tracking::{
    MlflowClient, ModelSelector, ModelUri, ModelVersion, Param, Tag, TrackingError,
};

use crate::cli::{ListArgs, PromoteArgs, PullArgs, RegisterArgs};
use crate::commands::evaluate::{evaluate_source, print_intervals};
use crate::commands::tracking::{RunLink, target};

/// Version tag holding the package file's SHA-256, checked by `pull`.
const SHA256_TAG: &str = "covidct.package_sha256";

/// Alias of the version that serves.
const CHAMPION: &str = "champion";

/// Alias the previous champion keeps after a promotion, for rollbacks.
const PREVIOUS_CHAMPION: &str = "previous-champion";

/// Exit status of a promotion the quality gate refused.
pub const GATE_REFUSED: u8 = 3;

/// SHA-256 of a package file.
pub fn package_sha256(path: &Path) -> Result<String> {
    Ok(covidct_weights::sha256_file(path)?)
}

/// A package fetched from the registry.
#[derive(Debug, Clone)]
pub struct PulledModel {
    /// The verified package file in the cache.
    pub path: PathBuf,
    /// The registry version it is.
    pub version: ModelVersion,
}

/// Resolves a `models:/name@alias` or `models:/name/version` URI and returns the package,
/// downloaded once per version into `cache_dir/<name>/<version>/model.ctpkg` and checked
/// against the SHA-256 recorded at registration and the package's own checksum.
pub fn pull(client: &MlflowClient, uri: &ModelUri, cache_dir: &Path) -> Result<PulledModel> {
    let version = client.resolve_model_uri(uri)?;
    let dir = cache_dir
        .join(&version.name)
        .join(version.version.to_string());
    let path = dir.join("model.ctpkg");
    let expected = version.tags.get(SHA256_TAG).cloned();
    let cached_ok = path.exists()
        && match &expected {
            Some(sha) => package_sha256(&path).is_ok_and(|actual| &actual == sha),
            None => false,
        };
    if !cached_ok {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the model cache {}", dir.display()))?;
        client
            .download_artifact(&version.source, "model.ctpkg", &path)
            .with_context(|| format!("cannot download {uri} (version {})", version.version))?;
        let actual = package_sha256(&path)?;
        match &expected {
            Some(sha) if sha != &actual => {
                let _ = std::fs::remove_file(&path);
                bail!(
                    "{uri} (version {}): the downloaded package has SHA-256 {actual}, the \
                     registry recorded {sha}; refusing it",
                    version.version
                );
            }
            Some(_) => {}
            None => tracing::warn!(
                %uri,
                "the registry version has no {SHA256_TAG} tag; only the package's own checksum \
                 is checked"
            ),
        }
    }
    ModelPackage::load(&path)
        .with_context(|| format!("{uri} (version {}) is not a valid package", version.version))?;
    Ok(PulledModel { path, version })
}

/// Resolves a model source, a package path or a `models:/` URI, to a local package file.
pub fn resolve_source(
    source: &str,
    tracking_uri: &str,
    cache_dir: &Path,
) -> Result<(PathBuf, Option<ModelVersion>)> {
    if !source.starts_with("models:/") {
        return Ok((PathBuf::from(source), None));
    }
    let uri = ModelUri::parse(source)?;
    let client = covidct_tracking::TrackingTarget::from_uri(tracking_uri).server()?;
    let pulled = pull(&client, &uri, cache_dir)?;
    Ok((pulled.path, Some(pulled.version)))
}

/// `covidct models pull`.
pub fn pull_command(args: &PullArgs) -> Result<u8> {
    let client = target(&args.store).server()?;
    let uri = ModelUri::parse(&args.uri)?;
    let pulled = pull(&client, &uri, &args.cache_dir)?;
    println!("{}", pulled.path.display());
    eprintln!(
        "{} version {} verified (SHA-256 {})",
        pulled.version.name,
        pulled.version.version,
        package_sha256(&pulled.path)?
    );
    Ok(0)
}

/// The logged model a training run made of this package, when the run folder links one on
/// the same server and its checksum still matches.
fn linked_logged_model(
    client: &MlflowClient,
    package: &Path,
    sha256: &str,
) -> Result<Option<(String, String, String)>> {
    let Some(run_dir) = package.parent() else {
        return Ok(None);
    };
    let Some(link) = RunLink::read(run_dir)? else {
        return Ok(None);
    };
    let (Some(run_id), Some(model_id)) = (link.run_id, link.model_ids.last()) else {
        return Ok(None);
    };
    if link.target.trim_end_matches('/') != client.base_url().trim_end_matches('/') {
        return Ok(None);
    }
    let model = match client.get_logged_model(model_id) {
        Ok(model) => model,
        Err(TrackingError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if !model
        .tags
        .iter()
        .any(|t| t.key == SHA256_TAG && t.value == sha256)
    {
        return Ok(None);
    }
    Ok(Some((model.artifact_location, run_id, model.model_id)))
}

/// `covidct models register`: adds a package as a new version and points an alias at it.
pub fn register(args: &RegisterArgs) -> Result<u8> {
    let package = ModelPackage::load(&args.package)?;
    let sha256 = package_sha256(&args.package)?;
    let client = target(&args.tracking.store).server()?;
    let meta = &package.metadata;
    let tags = vec![
        Tag::new(SHA256_TAG, &sha256),
        Tag::new("covidct.architecture", meta.architecture.to_string()),
    ];
    let (source, run_id, model_id) = match linked_logged_model(&client, &args.package, &sha256)? {
        Some((source, run_id, model_id)) => (source, Some(run_id), model_id),
        None => {
            // No training run logged this exact package here: log it as a model of its own.
            let experiment = client.get_or_create_experiment(&args.tracking.experiment)?;
            let model = client.create_logged_model(
                &experiment,
                &args.name,
                None,
                &[Param::new("architecture", meta.architecture.to_string())],
                &tags,
            )?;
            client.upload_artifact(&model.artifact_location, "model.ctpkg", &args.package)?;
            let card = tempfile::NamedTempFile::new()?;
            std::fs::write(card.path(), &package.model_card)?;
            client.upload_artifact(&model.artifact_location, "MODEL_CARD.md", card.path())?;
            client.finalize_logged_model(&model.model_id)?;
            (model.artifact_location, None, model.model_id)
        }
    };
    client.get_or_create_registered_model(&args.name)?;
    let version = client.create_model_version(
        &args.name,
        &source,
        run_id.as_deref(),
        Some(&model_id),
        &tags,
    )?;
    client.set_alias(&args.name, &args.alias, version.version)?;
    println!(
        "registered {} version {} as @{} (source {source}{})",
        args.name,
        version.version,
        args.alias,
        run_id.map(|r| format!(", run {r}")).unwrap_or_default()
    );
    Ok(0)
}

/// `covidct models list`.
pub fn list(args: &ListArgs) -> Result<u8> {
    let client = target(&args.store).server()?;
    let mut versions = client.search_model_versions(&args.name)?;
    versions.sort_by_key(|v| v.version);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&versions)?);
        return Ok(0);
    }
    if versions.is_empty() {
        println!("no versions of `{}` registered", args.name);
        return Ok(0);
    }
    println!("{:<8} {:<24} {:<34} source", "version", "aliases", "run");
    for v in &versions {
        println!(
            "{:<8} {:<24} {:<34} {}",
            v.version,
            v.aliases.join(","),
            v.run_id.as_deref().unwrap_or("-"),
            v.source
        );
    }
    Ok(0)
}

/// The value of `metric` in a report.
fn metric_value(report: &EvaluationReport, metric: Metric) -> Result<f64> {
    report
        .metrics
        .intervals
        .get(&metric)
        .and_then(|i| i.value)
        .with_context(|| format!("{} is undefined on this data", metric.key()))
}

/// Whether `challenger` passes against `champion`: not worse by more than `margin`.
pub fn passes_gate(metric: Metric, challenger: f64, champion: f64, margin: f64) -> bool {
    let gain = if metric.higher_is_better() {
        challenger - champion
    } else {
        champion - challenger
    };
    gain >= -margin
}

/// Evaluates a registry version on the promotion data.
fn evaluate_version(
    client: &MlflowClient,
    args: &PromoteArgs,
    version: &ModelVersion,
) -> Result<EvaluationReport> {
    let uri = ModelUri {
        name: version.name.clone(),
        selector: ModelSelector::Version(version.version),
    };
    let pulled = pull(client, &uri, &args.cache_dir)?;
    let out = args
        .out
        .join(format!("{}-v{}", version.name, version.version));
    evaluate_source(&pulled.path, &args.device, &args.data, &out)
}

/// `covidct models promote`: the quality gate. Evaluates the challenger and the champion on the
/// same data and moves `champion` to the challenger unless it is worse by more than the
/// margin; returns [`GATE_REFUSED`] when it refuses.
pub fn promote(args: &PromoteArgs) -> Result<u8> {
    let client = target(&args.store).server()?;
    let challenger = client
        .model_version_by_alias(&args.name, &args.challenger)
        .with_context(|| {
            format!(
                "no version of `{}` has alias @{}",
                args.name, args.challenger
            )
        })?;
    let champion = match client.model_version_by_alias(&args.name, CHAMPION) {
        Ok(version) => Some(version),
        Err(TrackingError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    if champion
        .as_ref()
        .is_some_and(|c| c.version == challenger.version)
    {
        println!(
            "{} version {} is already @{CHAMPION}",
            args.name, challenger.version
        );
        return Ok(0);
    }
    let challenger_report = evaluate_version(&client, args, &challenger)?;
    let challenger_value = metric_value(&challenger_report, args.metric)?;
    println!(
        "challenger: {} version {} on {} images",
        args.name, challenger.version, challenger_report.metrics.point.n
    );
    print_intervals(&challenger_report.metrics);
    let accepted = match &champion {
        None => {
            println!("no @{CHAMPION} yet: the challenger becomes champion");
            true
        }
        Some(champion) => {
            let champion_report = evaluate_version(&client, args, champion)?;
            let champion_value = metric_value(&champion_report, args.metric)?;
            println!("champion: {} version {}", args.name, champion.version);
            print_intervals(&champion_report.metrics);
            let accepted = passes_gate(args.metric, challenger_value, champion_value, args.margin);
            println!(
                "{}: challenger {challenger_value:.4} vs champion {champion_value:.4} (margin \
                 {:.4}, {} is better) → {}",
                args.metric.key(),
                args.margin,
                if args.metric.higher_is_better() {
                    "higher"
                } else {
                    "lower"
                },
                if accepted { "promote" } else { "refuse" }
            );
            accepted
        }
    };
    let verdict = if accepted { "promoted" } else { "refused" };
    client.set_model_version_tag(
        &args.name,
        challenger.version,
        "covidct.gate",
        &format!("{verdict}: {} {challenger_value:.6}", args.metric.key()),
    )?;
    if !accepted {
        eprintln!(
            "quality gate refused {} version {}: @{CHAMPION} stays",
            args.name, challenger.version
        );
        return Ok(GATE_REFUSED);
    }
    if let Some(champion) = &champion {
        client.set_alias(&args.name, PREVIOUS_CHAMPION, champion.version)?;
    }
    client.set_alias(&args.name, CHAMPION, challenger.version)?;
    println!(
        "{} version {} is now @{CHAMPION}",
        args.name, challenger.version
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_respects_direction_and_margin() {
        assert!(passes_gate(Metric::RocAuc, 0.95, 0.95, 0.0));
        assert!(passes_gate(Metric::RocAuc, 0.945, 0.95, 0.01));
        assert!(!passes_gate(Metric::RocAuc, 0.93, 0.95, 0.01));
        // Lower is better for the ECE: a larger challenger ECE is worse.
        assert!(passes_gate(Metric::Ece, 0.02, 0.03, 0.0));
        assert!(!passes_gate(Metric::Ece, 0.05, 0.03, 0.01));
    }
}
