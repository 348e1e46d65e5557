//! `covidct models register | list | promote | pull`: model packages in MLflow's model registry.

use anyhow::{Context, Result};
use covidct_model::ModelPackage;
use covidct_tracking::{
    CHAMPION, Contender, GateRequest, GateVerdict, ModelUri, Registration, TrackingTarget,
};

use crate::cli::{ListArgs, PromoteArgs, PullArgs, RegisterArgs};
use crate::exit::ExitStatus;
use crate::progress;

/// `covidct models pull`: prints the verified package's path.
pub fn pull(args: &PullArgs) -> Result<ExitStatus> {
    let client = TrackingTarget::from_uri(&args.store.tracking_uri).server()?;
    let uri = ModelUri::parse(&args.uri)?;
    let pulled = covidct_tracking::pull(&client, &uri, &args.cache_dir)?;
    ModelPackage::load(&pulled.path).with_context(|| {
        format!(
            "{uri} (version {}) is not a valid package",
            pulled.version.version
        )
    })?;
    println!("{}", pulled.path.display());
    eprintln!(
        "{} version {} verified (SHA-256 {})",
        pulled.version.name,
        pulled.version.version,
        covidct_common::sha256_file(&pulled.path)?
    );
    Ok(ExitStatus::Success)
}

/// `covidct models register`: adds a package as a new version and points an alias at it.
pub fn register(args: &RegisterArgs) -> Result<ExitStatus> {
    let package = ModelPackage::load(&args.package)?;
    let client = TrackingTarget::from_uri(&args.tracking.store.tracking_uri).server()?;
    let registered = covidct_tracking::register(
        &client,
        &Registration {
            package: &args.package,
            architecture: package.metadata.architecture.to_string(),
            model_card: &package.model_card,
            name: &args.name,
            alias: &args.alias,
            experiment: &args.tracking.experiment,
        },
    )?;
    println!(
        "registered {} version {} as @{} (source {}{})",
        args.name,
        registered.version,
        args.alias,
        registered.source,
        registered
            .run_id
            .map(|r| format!(", run {r}"))
            .unwrap_or_default()
    );
    Ok(ExitStatus::Success)
}

/// `covidct models list`.
pub fn list(args: &ListArgs) -> Result<ExitStatus> {
    let client = TrackingTarget::from_uri(&args.store.tracking_uri).server()?;
    let mut versions = client.search_model_versions(&args.name)?;
    versions.sort_by_key(|v| v.version);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&versions)?);
    } else if versions.is_empty() {
        println!("no versions of `{}` registered", args.name);
    } else {
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
    }
    Ok(ExitStatus::Success)
}

/// `covidct models promote`: the quality gate; [`ExitStatus::Refused`] when it refuses.
pub fn promote(args: &PromoteArgs) -> Result<ExitStatus> {
    let client = TrackingTarget::from_uri(&args.store.tracking_uri).server()?;
    let request = GateRequest {
        name: &args.name,
        challenger_alias: &args.challenger,
        metric: args.metric.key(),
        higher_is_better: args.metric.higher_is_better(),
        margin: args.margin,
        cache_dir: &args.cache_dir,
    };
    let outcome = covidct_tracking::promote(&client, &request, |contender, pulled| {
        let version = &pulled.version;
        let out = args
            .out
            .join(format!("{}-v{}", version.name, version.version));
        let report = covidct_training::evaluate_package(
            &pulled.path,
            &args.device,
            &args.data.request(),
            &out,
            &mut progress::scoring_bar(),
        )?;
        match contender {
            Contender::Challenger => println!(
                "challenger: {} version {} on {} images",
                version.name, version.version, report.metrics.point.n
            ),
            Contender::Champion => {
                println!("champion: {} version {}", version.name, version.version)
            }
        }
        print!("{}", report.metrics);
        report
            .metric_value(args.metric)
            .map_err(anyhow::Error::from)
    })
    .with_context(|| format!("quality gate of `{}` @{}", args.name, args.challenger))?;
    let version = outcome.challenger.version;
    if let (Some(challenger), Some(champion)) = (outcome.challenger_value, outcome.champion_value) {
        println!(
            "{}: challenger {challenger:.4} vs champion {champion:.4} (margin {:.4}, {} is \
             better) → {}",
            args.metric.key(),
            args.margin,
            if args.metric.higher_is_better() {
                "higher"
            } else {
                "lower"
            },
            if outcome.verdict == GateVerdict::Refused {
                "refuse"
            } else {
                "promote"
            }
        );
    }
    match outcome.verdict {
        GateVerdict::AlreadyChampion => {
            println!("{} version {version} is already @{CHAMPION}", args.name);
        }
        GateVerdict::Refused => {
            eprintln!(
                "quality gate refused {} version {version}: @{CHAMPION} stays",
                args.name
            );
            return Ok(ExitStatus::Refused);
        }
        GateVerdict::FirstChampion | GateVerdict::Promoted => {
            if outcome.verdict == GateVerdict::FirstChampion {
                println!("no @{CHAMPION} yet: the challenger became champion");
            }
            println!("{} version {version} is now @{CHAMPION}", args.name);
        }
    }
    Ok(ExitStatus::Success)
}
