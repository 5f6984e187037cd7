//! `hearth serve`: open and migrate the database, bootstrap, serve until a signal.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{ConfigError, roles};
use crate::app::{App, AppParts, AppState};
use crate::auth::jwt::JwtVerifier;
use crate::catalog::Catalog;
use crate::config::ServeConfig;
use crate::db::Db;
use crate::llm::{Models, ProviderSettings};
use crate::replication::RoleSource;
use crate::runner::Resolver;
use crate::{metrics, server};

/// Runs the server until SIGTERM or SIGINT, then shuts down gracefully.
///
/// # Errors
/// On bad settings, an unusable database, or a port that cannot be bound.
pub async fn run(db_path: &Path, config: ServeConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    config.auth.check_secrets().map_err(ConfigError)?;
    if let Some(token) = &config.http.metrics_token {
        token
            .at_least(crate::config::MIN_SECRET, "HEARTH_METRICS_TOKEN (--metrics-token)")
            .map_err(ConfigError)?;
    }
    let static_key = config.auth.static_api_key().map_err(ConfigError)?;
    let rules = config.runner.resolver_rules().map_err(ConfigError)?;
    let jwt = JwtVerifier::from_config(&config).map_err(ConfigError)?;
    let mcp_servers = config.mcp.servers().map_err(ConfigError)?;
    let models = build_models(&config.upstream, &mcp_servers)?;
    let metrics = metrics::install().map_err(|e| anyhow::anyhow!("metrics recorder: {e}"))?;
    let source = RoleSource::new(config.storage.litefs_dir.as_deref());
    let db = Db::open(db_path, config.storage.db_readers)?;
    let default_org = roles::prepare(&roles::Start {
        path: db_path,
        db: &db,
        source: &source,
        auto_migrate: config.storage.auto_migrate,
        env_admin_token: config.auth.admin_token.is_some(),
        env_api_key: static_key.is_some(),
    })
    .await?;
    // The MCP signing key: generated and stored on a writer when none is, read on a replica.
    let role = source.current();
    let mcp = super::mcp::build(&config.mcp, mcp_servers, Some((&db, role.is_writer()))).await?;
    let addr = SocketAddr::new(config.http.host, config.http.port);
    let listener = server::bind(config.http.host, config.http.port)
        .map_err(|e| ConfigError(format!("cannot listen on {addr} (PORT / HEARTH_HOST): {e}")))?;
    let local = listener.local_addr()?;
    let grace = Duration::from_secs(config.http.shutdown_grace_s);
    let embedded = (!config.queue.no_embedded_workers && config.queue.workers > 0)
        .then(|| (rules.default_runner().to_owned(), usize::from(config.queue.workers)));
    let resolver = Resolver::new(rules);
    let state = App::build(AppParts {
        config,
        db: db.clone(),
        metrics,
        default_org,
        static_key,
        resolver,
        jwt,
        models,
        mcp,
    });
    state.mcp().start(state.tasks(), state.shutdown());
    roles::Duties { state: state.clone(), path: db_path.to_path_buf(), source, embedded }
        .start(role.clone())
        .await?;
    tracing::info!(
        addr = %local,
        db = %db_path.display(),
        role = role.as_str(),
        startup_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "listening"
    );
    watch_signals(&state);
    prune_rate_limits(&state);
    server::serve(listener, state.clone(), grace).await.context("serving HTTP")?;
    finish(&state, &db).await;
    Ok(())
}

/// The models requests may name: the providers configured, `hearth.toml`'s aliases and
/// agents, the default model.
///
/// # Errors
/// A message naming the setting that is wrong.
pub(super) fn build_models(
    upstream: &crate::config::UpstreamConfig,
    mcp_servers: &[crate::config::McpServerConfig],
) -> Result<Models, ConfigError> {
    let catalog = match &upstream.config {
        Some(path) => Catalog::load(path).map_err(ConfigError)?,
        None => Catalog::default(),
    };
    let names: Vec<&str> = mcp_servers.iter().map(|s| s.name.as_str()).collect();
    catalog.check_mcp_servers(&names).map_err(|e| ConfigError(format!("HEARTH_CONFIG: {e}")))?;
    Models::build(&ProviderSettings::from_config(upstream), catalog, upstream.model_specifier.clone())
        .map_err(ConfigError)
}

/// Every minute, forgets the rate-limit state of keys and users whose limit has replenished.
fn prune_rate_limits(state: &AppState) {
    let (app, shutdown) = (state.clone(), state.shutdown().clone());
    state.tasks().spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(60)) => {
                    app.auth().prune_limits();
                    app.admin().prune();
                }
                () = shutdown.cancelled() => return,
            }
        }
    });
}

/// Every ten minutes until `stop`, forgets the `Idempotency-Key`s used more than a day ago (a
/// writing task: started on the primary only, see `roles`).
pub(super) fn prune_idempotency_keys(state: &AppState, stop: &tokio_util::sync::CancellationToken) {
    let (app, shutdown) = (state.clone(), stop.clone());
    state.tasks().spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(600)) => {}
                () = shutdown.cancelled() => return,
            }
            if let Err(e) = app.turns().prune_idempotency_keys().await {
                tracing::warn!(error = %e, "could not prune old Idempotency-Keys; will retry");
            }
        }
    });
}

/// Cancels the app's shutdown token on SIGTERM or SIGINT.
fn watch_signals(state: &AppState) {
    let token = state.shutdown().clone();
    state.tasks().spawn(async move {
        let signal = wait_for_signal().await;
        tracing::info!(signal, "signal received");
        token.cancel();
    });
}

async fn wait_for_signal() -> &'static str {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                () = ctrl_c => "SIGINT",
            },
            Err(_) => {
                ctrl_c.await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        ctrl_c.await;
        "SIGINT"
    }
}

/// Waits for background tasks, then checkpoints and closes the database.
async fn finish(state: &AppState, db: &Db) {
    state.shutdown().cancel();
    state.tasks().close();
    if tokio::time::timeout(Duration::from_secs(10), state.tasks().wait()).await.is_err() {
        tracing::warn!("background tasks did not stop within 10 s");
    }
    // A replica's file is LiteFS's to write.
    if !state.role().is_writer() {
        tracing::info!("stopped");
        return;
    }
    let checkpoint =
        db.read(|conn| Ok(conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?)).await;
    if let Err(e) = checkpoint {
        tracing::warn!(error = %e, "final WAL checkpoint failed (the WAL will be replayed on next open)");
    }
    tracing::info!("stopped; database closed");
}
