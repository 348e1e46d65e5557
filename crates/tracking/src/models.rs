//! Model packages in MLflow's model registry: [`pull`] a verified package, [`resolve_source`]
//! for commands that take a path or a `models:/` URI, [`register`] a package, and [`promote`]
//! through the quality gate.

use std::path::{Path, PathBuf};

use crate::run_link::RunLink;
use crate::types::{ModelVersion, Param, Tag};
use crate::uri::{ModelSelector, ModelUri};
use crate::{MlflowClient, TrackingError, TrackingTarget, tags};

/// Alias of the version that serves.
pub const CHAMPION: &str = "champion";
/// Alias the previous champion keeps after a promotion, for rollbacks.
pub const PREVIOUS_CHAMPION: &str = "previous-champion";
/// Artifact name of the package file.
pub const PACKAGE_FILE: &str = "model.ctpkg";
/// Artifact name of the model card.
pub const MODEL_CARD_FILE: &str = "MODEL_CARD.md";

/// A package fetched from the registry.
#[derive(Debug, Clone)]
pub struct PulledModel {
    /// The verified package file in the cache.
    pub path: PathBuf,
    /// The registry version it is.
    pub version: ModelVersion,
}

/// Resolves a `models:/name@alias` or `models:/name/version` URI and returns the package file,
/// downloaded once per version into `cache_dir/<name>/<version>/model.ctpkg` and checked
/// against the SHA-256 recorded at registration (the package's own checksum is the loader's).
pub fn pull(
    client: &MlflowClient,
    uri: &ModelUri,
    cache_dir: &Path,
) -> Result<PulledModel, TrackingError> {
    let version = client.resolve_model_uri(uri)?;
    let dir = cache_dir
        .join(&version.name)
        .join(version.version.to_string());
    let path = dir.join(PACKAGE_FILE);
    let expected = version.tags.get(tags::PACKAGE_SHA256).cloned();
    let cached_ok = path.exists()
        && expected
            .as_ref()
            .is_some_and(|sha| covidct_common::sha256_file(&path).is_ok_and(|a| &a == sha));
    if !cached_ok {
        std::fs::create_dir_all(&dir).map_err(|e| TrackingError::io(&dir, e))?;
        client.download_artifact(&version.source, PACKAGE_FILE, &path)?;
        let actual = covidct_common::sha256_file(&path)?;
        match expected {
            Some(expected) if expected != actual => {
                let _ = std::fs::remove_file(&path);
                return Err(TrackingError::PackageMismatch {
                    what: format!("{uri} (version {})", version.version),
                    actual,
                    expected,
                });
            }
            Some(_) => {}
            None => tracing::warn!(
                %uri,
                "the registry version has no {} tag; only the package's own checksum is checked",
                tags::PACKAGE_SHA256
            ),
        }
    }
    Ok(PulledModel { path, version })
}

/// Resolves a model source, a package path or a `models:/` URI, to a local package file and,
/// for a URI, the registry version it is.
pub fn resolve_source(
    source: &str,
    tracking_uri: &str,
    cache_dir: &Path,
) -> Result<(PathBuf, Option<ModelVersion>), TrackingError> {
    if !source.starts_with("models:/") {
        return Ok((PathBuf::from(source), None));
    }
    let uri = ModelUri::parse(source)?;
    let client = TrackingTarget::from_uri(tracking_uri).server()?;
    let pulled = pull(&client, &uri, cache_dir)?;
    Ok((pulled.path, Some(pulled.version)))
}

/// A package to add to the registry.
#[derive(Debug, Clone)]
pub struct Registration<'a> {
    /// The package file.
    pub package: &'a Path,
    /// Its architecture, as a tag and parameter.
    pub architecture: String,
    /// Its model card (Markdown), uploaded beside it when no training run logged it.
    pub model_card: &'a str,
    /// The registered model's name.
    pub name: &'a str,
    /// The alias pointed at the new version.
    pub alias: &'a str,
    /// The experiment of a logged model made here.
    pub experiment: &'a str,
}

/// A registered version.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The new version number.
    pub version: u64,
    /// The artifact location it points at.
    pub source: String,
    /// The training run that logged the package, when one did.
    pub run_id: Option<String>,
}

/// The logged model a training run made of this package: `(artifact location, run, model)`,
/// when the run folder beside it links one on the same server with the same SHA-256.
fn linked_logged_model(
    client: &MlflowClient,
    package: &Path,
    sha256: &str,
) -> Result<Option<(String, String, String)>, TrackingError> {
    let Some(link) = package.parent().map(RunLink::read).transpose()?.flatten() else {
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
        Err(e) => return Err(e),
    };
    let same = model
        .tags
        .iter()
        .any(|t| t.key == tags::PACKAGE_SHA256 && t.value == sha256);
    Ok(same.then_some((model.artifact_location, run_id, model.model_id)))
}

/// Adds a package as a new version of `name` (pointing at the logged model of the training
/// run that made it, or logging it as a model of its own) and moves the alias to it.
pub fn register(
    client: &MlflowClient,
    request: &Registration<'_>,
) -> Result<Registered, TrackingError> {
    let sha256 = covidct_common::sha256_file(request.package)?;
    let version_tags = vec![
        Tag::new(tags::PACKAGE_SHA256, &sha256),
        Tag::new(tags::ARCHITECTURE, &request.architecture),
    ];
    let (source, run_id, model_id) = match linked_logged_model(client, request.package, &sha256)? {
        Some((source, run_id, model_id)) => (source, Some(run_id), model_id),
        None => {
            let experiment = client.get_or_create_experiment(request.experiment)?;
            let model = client.create_logged_model(
                &experiment,
                request.name,
                None,
                &[Param::new("architecture", &request.architecture)],
                &version_tags,
            )?;
            client.upload_artifact(&model.artifact_location, PACKAGE_FILE, request.package)?;
            let card = tempfile::NamedTempFile::new()
                .map_err(|e| TrackingError::io(&std::env::temp_dir(), e))?;
            std::fs::write(card.path(), request.model_card)
                .map_err(|e| TrackingError::io(card.path(), e))?;
            client.upload_artifact(&model.artifact_location, MODEL_CARD_FILE, card.path())?;
            client.finalize_logged_model(&model.model_id)?;
            (model.artifact_location, None, model.model_id)
        }
    };
    client.get_or_create_registered_model(request.name)?;
    let version = client.create_model_version(
        request.name,
        &source,
        run_id.as_deref(),
        Some(&model_id),
        &version_tags,
    )?;
    client.set_alias(request.name, request.alias, version.version)?;
    Ok(Registered {
        version: version.version,
        source,
        run_id,
    })
}

/// Whether `challenger` passes against `champion`: not worse by more than `margin`.
pub fn passes_gate(higher_is_better: bool, challenger: f64, champion: f64, margin: f64) -> bool {
    let gain = if higher_is_better {
        challenger - champion
    } else {
        champion - challenger
    };
    gain >= -margin
}

/// What the quality gate compares.
#[derive(Debug, Clone)]
pub struct GateRequest<'a> {
    /// The registered model.
    pub name: &'a str,
    /// The alias of the challenger version.
    pub challenger_alias: &'a str,
    /// The gate metric's name, for the verdict tag.
    pub metric: &'a str,
    /// Whether a larger value of the metric is better.
    pub higher_is_better: bool,
    /// How much worse than the champion the challenger may be.
    pub margin: f64,
    /// Where pulled packages are cached.
    pub cache_dir: &'a Path,
}

/// Which side of the gate a version is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contender {
    /// The version asking for promotion.
    Challenger,
    /// The version serving now.
    Champion,
}

/// What the gate decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateVerdict {
    /// The challenger already is the champion; nothing changed.
    AlreadyChampion,
    /// There was no champion: the challenger became it.
    FirstChampion,
    /// The challenger passed and is the champion now.
    Promoted,
    /// The challenger was worse by more than the margin; the champion stays.
    Refused,
}

/// The gate's decision and the figures it rests on.
#[derive(Debug, Clone)]
pub struct GateOutcome {
    /// The challenger version.
    pub challenger: ModelVersion,
    /// The champion before the gate ran, if any.
    pub champion: Option<ModelVersion>,
    /// The challenger's metric value (not evaluated when already champion).
    pub challenger_value: Option<f64>,
    /// The champion's metric value.
    pub champion_value: Option<f64>,
    /// The decision.
    pub verdict: GateVerdict,
}

/// The quality gate: pulls and `evaluate`s the challenger and the champion on the same data,
/// moves `champion` to the challenger unless it is worse by more than the margin (the old one
/// keeps [`PREVIOUS_CHAMPION`]), and tags the challenger with the verdict.
pub fn promote<E: From<TrackingError>>(
    client: &MlflowClient,
    request: &GateRequest<'_>,
    mut evaluate: impl FnMut(Contender, &PulledModel) -> Result<f64, E>,
) -> Result<GateOutcome, E> {
    let challenger = client.model_version_by_alias(request.name, request.challenger_alias)?;
    let champion = match client.model_version_by_alias(request.name, CHAMPION) {
        Ok(version) => Some(version),
        Err(TrackingError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let mut outcome = GateOutcome {
        challenger,
        champion,
        challenger_value: None,
        champion_value: None,
        verdict: GateVerdict::AlreadyChampion,
    };
    if outcome.champion.as_ref().map(|c| c.version) == Some(outcome.challenger.version) {
        return Ok(outcome);
    }
    let mut score = |contender, version: &ModelVersion| -> Result<f64, E> {
        let uri = ModelUri {
            name: version.name.clone(),
            selector: ModelSelector::Version(version.version),
        };
        let pulled = pull(client, &uri, request.cache_dir)?;
        evaluate(contender, &pulled)
    };
    let challenger_value = score(Contender::Challenger, &outcome.challenger)?;
    outcome.challenger_value = Some(challenger_value);
    outcome.verdict = match &outcome.champion {
        None => GateVerdict::FirstChampion,
        Some(champion) => {
            let champion_value = score(Contender::Champion, champion)?;
            outcome.champion_value = Some(champion_value);
            let passes = passes_gate(
                request.higher_is_better,
                challenger_value,
                champion_value,
                request.margin,
            );
            if passes {
                GateVerdict::Promoted
            } else {
                GateVerdict::Refused
            }
        }
    };
    let refused = outcome.verdict == GateVerdict::Refused;
    client.set_model_version_tag(
        request.name,
        outcome.challenger.version,
        tags::GATE,
        &format!(
            "{}: {} {challenger_value:.6}",
            if refused { "refused" } else { "promoted" },
            request.metric
        ),
    )?;
    if !refused {
        if let Some(champion) = &outcome.champion {
            client.set_alias(request.name, PREVIOUS_CHAMPION, champion.version)?;
        }
        client.set_alias(request.name, CHAMPION, outcome.challenger.version)?;
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_respects_direction_and_margin() {
        assert!(passes_gate(true, 0.95, 0.95, 0.0));
        assert!(passes_gate(true, 0.945, 0.95, 0.01));
        assert!(!passes_gate(true, 0.93, 0.95, 0.01));
        // Lower is better for an error such as the ECE: a larger challenger value is worse.
        assert!(passes_gate(false, 0.02, 0.03, 0.0));
        assert!(!passes_gate(false, 0.05, 0.03, 0.01));
    }

    #[test]
    fn a_path_source_needs_no_server() {
        let (path, version) =
            resolve_source("runs/a/model.ctpkg", "http://127.0.0.1:9", Path::new("c")).unwrap();
        assert_eq!(path, PathBuf::from("runs/a/model.ctpkg"));
        assert!(version.is_none());
    }
}
