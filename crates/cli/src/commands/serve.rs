//! `covidct serve`: settings, keys, the model source, the runtime and graceful shutdown.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, Result};
use covidct_serve::{
    ApiKeys, AppState, ModelSource, RegistryResolver, ResolvedModel, ServeConfig, ServeError,
};

use crate::cli::ServeArgs;
use crate::config::ConfigFile;
use covidct_tracking::resolve_source;

/// Keys from the inline list and the file, else those of the config file.
fn keys(inline: Option<&str>, file: Option<&Path>, configured: ApiKeys) -> Result<ApiKeys> {
    let mut keys = inline.map(ApiKeys::parse).unwrap_or_default();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read key file {}", path.display()))?;
        keys.0.extend(ApiKeys::parse(&text).0);
    }
    Ok(if keys.is_empty() { configured } else { keys })
}

/// Resolves `models:/…` sources through the MLflow registry (pulled once per version into the
/// cache, checksums verified); called at start and on every reload, so a reload picks up the
/// version the alias points at now.
fn registry_resolver(tracking_uri: String, cache: PathBuf) -> RegistryResolver {
    Arc::new(move |uri: &str| {
        let (path, version) =
            resolve_source(uri, &tracking_uri, &cache).map_err(|e| format!("{e:#}"))?;
        Ok(ResolvedModel {
            path,
            version: version.map(|v| v.version.to_string()),
        })
    })
}

/// `covidct serve`: runs until Ctrl-C or SIGTERM, then drains the requests in progress.
pub fn serve(config: &ConfigFile, args: &ServeArgs) -> Result<()> {
    let mut settings: ServeConfig = config.resolve("serve", &args.settings)?;
    if args.no_auth {
        settings.auth = false;
    }
    settings.api_keys = keys(
        args.api_keys.as_deref(),
        args.api_keys_file.as_deref(),
        settings.api_keys,
    )?;
    settings.admin_keys = keys(
        args.admin_keys.as_deref(),
        args.admin_keys_file.as_deref(),
        settings.admin_keys,
    )?;
    let source = ModelSource::parse(&args.model);
    let resolver = registry_resolver(args.store.tracking_uri.clone(), args.model_cache.clone());
    let state = AppState::new(settings, source, Some(resolver))?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("covidct-http")
        .build()
        .context("cannot start the async runtime")?
        .block_on(run(state))
}

async fn run(state: AppState) -> Result<()> {
    let bind = state.config().bind;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind}"))?;
    let address = listener.local_addr().context("no local address")?;
    tracing::info!(%address, "listening (readiness at /readyz once the model is loaded)");

    // The model loads in the background: /healthz answers at once, /readyz once it is warm.
    // A model that cannot be loaded at start stops the service with its error.
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<ServeError>();
    let loader = state.clone();
    tokio::spawn(async move {
        if let Err(error) = loader.load_model().await {
            let _ = failed_tx.send(error);
        }
    });
    let failure = Arc::new(Mutex::new(None));
    let slot = failure.clone();
    let shutdown = async move {
        tokio::select! {
            () = shutdown_signal() => tracing::info!("shutting down: draining requests in progress"),
            Ok(error) = failed_rx => {
                *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
            }
        }
    };
    covidct_serve::serve(listener, state, shutdown)
        .await
        .context("the server failed")?;
    if let Some(error) = failure
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    {
        return Err(error).context("cannot load the model");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Ctrl-C, or SIGTERM on Unix (what `docker stop` sends).
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
