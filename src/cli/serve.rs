//! `hearth serve`: open and migrate the database, bootstrap, serve until a signal.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::ConfigError;
use crate::app::{App, AppParts, AppState};
use crate::auth::jwt::JwtVerifier;
use crate::catalog::Catalog;
use crate::config::ServeConfig;
use crate::db::Db;
use crate::db::migrate::{self, SchemaState};
use crate::llm::Models;
use crate::replication::RoleSource;
use crate::runner::Resolver;
use crate::{bootstrap, metrics, server, worker};

/// Runs the server until SIGTERM or SIGINT, then shuts down gracefully.
///
/// # Errors
/// On bad settings, an unusable database, or a port that cannot be bound.
pub async fn run(db_path: &Path, config: ServeConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    let static_key = config.static_api_key().map_err(ConfigError)?;
    let rules = config.resolver_rules().map_err(ConfigError)?;
    let jwt = JwtVerifier::from_config(&config).map_err(ConfigError)?;
    let catalog = match &config.config {
        Some(path) => Catalog::load(path).map_err(ConfigError)?,
        None => Catalog::default(),
    };
    let models = Models::build(&config.provider_settings(), catalog, config.model_specifier.clone())
        .map_err(ConfigError)?;
    let metrics = metrics::install().map_err(|e| anyhow::anyhow!("metrics recorder: {e}"))?;
    let role = RoleSource::new(config.litefs_dir.as_deref()).current();
    let db = Db::open(db_path, config.db_readers)?;
    prepare_schema(db_path, role.is_writer(), config.auto_migrate)?;
    let default_org = if role.is_writer() {
        let boot = bootstrap::ensure(&db, config.admin_token.is_some(), static_key.is_some()).await?;
        bootstrap::announce(&boot);
        boot.default_org
    } else {
        bootstrap::find_default_org(&db).await?
    };
    let addr = SocketAddr::new(config.host, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ConfigError(format!("cannot listen on {addr} (PORT / HEARTH_HOST): {e}")))?;
    let local = listener.local_addr()?;
    let grace = Duration::from_secs(config.shutdown_grace_s);
    let embedded = (role.is_writer() && !config.no_embedded_workers).then_some(usize::from(config.workers));
    let default_runner = rules.default_runner().to_owned();
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
    });
    if let Some(capacity) = embedded {
        worker::embedded::start(worker::embedded::Embedded {
            queue: std::sync::Arc::clone(state.queue()),
            executor: std::sync::Arc::clone(state.executor()),
            runner: default_runner,
            capacity,
            heartbeat: Duration::from_secs(state.config().heartbeat_s),
            shutdown: state.shutdown().clone(),
            tasks: state.tasks().clone(),
        })
        .await?;
    }
    tracing::info!(
        addr = %local,
        db = %db_path.display(),
        role = role.as_str(),
        startup_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "listening"
    );
    watch_signals(&state);
    if role.is_writer() {
        checkpoint_in_background(&state);
    }
    server::serve(listener, state.clone(), grace).await.context("serving HTTP")?;
    finish(&state, &db).await;
    Ok(())
}

/// Brings the schema up to date (writer nodes with auto-migrate) or checks that it is.
fn prepare_schema(path: &Path, writer: bool, auto_migrate: bool) -> anyhow::Result<()> {
    let conn = rusqlite::Connection::open(path)?;
    conn.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;")?;
    match migrate::state(&conn)? {
        SchemaState::Current => Ok(()),
        SchemaState::Behind { .. } if writer && auto_migrate => {
            for name in migrate::migrate_to(&conn, None)? {
                tracing::info!(migration = name, "applied migration");
            }
            Ok(())
        }
        SchemaState::Behind { applied, latest } if writer => Err(ConfigError(format!(
            "the database at {} has {applied} of {latest} migrations applied and \
             HEARTH_AUTO_MIGRATE is false: run `hearth migrate` first",
            path.display()
        ))
        .into()),
        SchemaState::Behind { applied, latest } => Err(ConfigError(format!(
            "this LiteFS replica's database has {applied} of {latest} migrations applied; \
             the primary migrates it: start or upgrade the primary first"
        ))
        .into()),
        SchemaState::Ahead { found, latest } => Err(ConfigError(format!(
            "the database at {} is at schema {found}, newer than this hearth ({latest}): upgrade hearth",
            path.display()
        ))
        .into()),
    }
}

/// How often the checkpoint loop looks at the WAL.
const CHECKPOINT_LOOK: Duration = Duration::from_millis(50);
/// Commits after which the next look checkpoints (under load: a pass every 50 ms).
const CHECKPOINT_COMMITS: u64 = 64;
/// Longest a committed write waits for its checkpoint (light load).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Whether the checkpoint loop runs a pass now: never when nothing was committed since a pass
/// that copied the whole log back (`clean`: the commit count then); else once
/// [`CHECKPOINT_COMMITS`] commits have come since the last pass, or [`CHECKPOINT_EVERY`] has
/// gone by. Small checkpoints keep each pass's `fsync`s short: while one runs, requests wait
/// on the disk and on the cores it takes. Measured (docs/PERFORMANCE.md): a pass a second
/// stalled every request ~20 ms once a second (p99 50 ms at 32 clients); every 250 ms, p99
/// 13–15 ms at 32 clients and 2.8–2.9 ms at one; every 50 ms, 10.6–12.0 and 1.9–2.0 ms at the
/// same throughput. Light load keeps the 250 ms pace (fewer flushes for the same writes).
fn checkpoint_due(commits: u64, at_last_pass: u64, since_last_pass: Duration, clean: Option<u64>) -> bool {
    clean != Some(commits)
        && (commits.saturating_sub(at_last_pass) >= CHECKPOINT_COMMITS || since_last_pass >= CHECKPOINT_EVERY)
}

/// Passes in a row that may leave the WAL's restart to a later pass while writes come one at a
/// time.
const CATCH_UP_ALONE: u32 = 4;

/// Whether a checkpoint pass also catches up with the last commit on the writer's connection
/// (see `Db::checkpoint`), which lets the WAL start over but holds every write until its
/// `fsync`s are done. When writes come one at a time (one write a commit since the last pass),
/// each such stall delays the one request in flight, so it comes every [`CATCH_UP_ALONE`]th
/// pass: at one client, 1 % of requests met one, which set the p99 (1.55–1.60 ms; 1.28–1.40
/// with every fourth pass, in alternating pairs). When writers share commits, a stall meets many requests whatever
/// its pace and its length sets the tail, which a log restarted at every pass keeps short
/// (p99 at 32 clients 7.4–7.8 ms against 7.8–9.1 every fourth pass). docs/PERFORMANCE.md.
fn catch_up_due(passes_without: u32, commits: u64, writes: u64) -> bool {
    passes_without.saturating_add(1) >= CATCH_UP_ALONE || writes > commits
}

/// Checkpoints the WAL from a background task when [`checkpoint_due`] says so (see
/// `Db::checkpoint`); an idle store is left alone.
fn checkpoint_in_background(state: &AppState) {
    let state2 = state.clone();
    state.tasks().spawn(async move {
        let mut look = tokio::time::interval(CHECKPOINT_LOOK);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut clean, mut at_last_pass, mut last_pass) = (None, 0, std::time::Instant::now());
        let (mut writes_at_last_pass, mut passes_without) = (0, 0);
        loop {
            tokio::select! {
                _ = look.tick() => {}
                () = state2.shutdown().cancelled() => return,
            }
            let commits = state2.db().commits();
            if !checkpoint_due(commits, at_last_pass, last_pass.elapsed(), clean) {
                continue;
            }
            let writes = state2.db().writes();
            let catch_up = catch_up_due(
                passes_without,
                commits.saturating_sub(at_last_pass),
                writes.saturating_sub(writes_at_last_pass),
            );
            passes_without = if catch_up { 0 } else { passes_without + 1 };
            (at_last_pass, writes_at_last_pass, last_pass) = (commits, writes, std::time::Instant::now());
            match state2.db().checkpoint(catch_up).await {
                // Look again unless the log was copied back whole.
                Ok((frames, backfilled)) => clean = (frames <= 0 || backfilled >= frames).then_some(commits),
                Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; will retry"),
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
    let checkpoint =
        db.read(|conn| Ok(conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?)).await;
    if let Err(e) = checkpoint {
        tracing::warn!(error = %e, "final WAL checkpoint failed (the WAL will be replayed on next open)");
    }
    tracing::info!("stopped; database closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_store_is_never_checkpointed_again_until_something_is_committed() {
        assert!(!checkpoint_due(7, 7, Duration::from_secs(3600), Some(7)));
        assert!(checkpoint_due(8, 7, CHECKPOINT_EVERY, Some(7)));
    }

    #[test]
    fn writes_one_at_a_time_catch_up_every_fourth_pass_and_shared_commits_every_pass() {
        let alone: Vec<bool> = (0..8)
            .scan(0, |without, _| {
                let due = catch_up_due(*without, 100, 100);
                *without = if due { 0 } else { *without + 1 };
                Some(due)
            })
            .collect();
        assert_eq!(alone, [false, false, false, true, false, false, false, true]);
        assert!(catch_up_due(0, 100, 101), "writers sharing commits");
        assert!(catch_up_due(0, 64, 400));
    }

    #[test]
    fn light_writes_wait_for_the_slow_pace_and_heavy_ones_do_not() {
        let (soon, later) = (CHECKPOINT_LOOK, CHECKPOINT_EVERY);
        assert!(!checkpoint_due(10, 0, soon, None), "a few commits wait for the slow pace");
        assert!(checkpoint_due(10, 0, later, None));
        assert!(checkpoint_due(CHECKPOINT_COMMITS, 0, soon, None), "many commits do not wait");
        assert!(!checkpoint_due(CHECKPOINT_COMMITS + 5, 6, soon, None));
        // A pass that left frames behind (a reader held them) is retried at the slow pace.
        assert!(!checkpoint_due(3, 3, soon, None));
        assert!(checkpoint_due(3, 3, later, None));
    }
}
