//! `App`: everything a request handler or background task needs, built once at start.

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::tools::{NoTools, TestTools, ToolExecutor};
use crate::auth::jwt::JwtVerifier;
use crate::auth::limits::RateLimits;
use crate::auth::secret;
use crate::config::ServeConfig;
use crate::db::Db;
use crate::ids::OrgId;
use crate::llm::Models;
use crate::queue::Queue;
use crate::replication::{Role, RoleSource};
use crate::runner::Resolver;

/// The application: configuration, storage and shared runtime handles.
pub struct App {
    /// Settings of `hearth serve`, validated.
    config: ServeConfig,
    /// The SQLite store.
    db: Db,
    /// Renders `/metrics`.
    metrics: PrometheusHandle,
    /// Where this node's role (standalone/primary/replica) is read from.
    role: RoleSource,
    /// The `default` organization, used by the static API key.
    default_org: OrgId,
    /// SHA-256 of the static API key, when one is configured.
    static_key_hash: Option<[u8; 32]>,
    /// Cancelled when the server begins shutting down; long-lived streams end on it.
    shutdown: CancellationToken,
    /// Every background task, so shutdown can wait for them.
    tasks: TaskTracker,
    /// When the process started.
    started: Instant,
    /// The run queue and its event hub.
    queue: Queue,
    /// The models requests may name.
    models: Models,
    /// Server-side tools.
    tools: Arc<dyn ToolExecutor>,
    /// The runner resolver.
    resolver: Resolver,
    /// User JWT verification, when a key is configured.
    jwt: Option<JwtVerifier>,
    /// Per-key and per-user rate limits.
    limits: RateLimits,
}

/// Cheap-to-clone handle to the [`App`], the state of every handler.
#[derive(Clone)]
pub struct AppState(Arc<App>);

/// Parts that [`App::build`] assembles.
pub struct AppParts {
    /// Settings.
    pub config: ServeConfig,
    /// The store.
    pub db: Db,
    /// The metrics handle.
    pub metrics: PrometheusHandle,
    /// The `default` organization.
    pub default_org: OrgId,
    /// The static API key, if any.
    pub static_key: Option<crate::config::Secret>,
    /// The runner resolver.
    pub resolver: Resolver,
    /// User JWT verification.
    pub jwt: Option<JwtVerifier>,
    /// The models requests may name.
    pub models: Models,
}

impl App {
    /// Builds the state from its parts.
    #[must_use]
    pub fn build(parts: AppParts) -> AppState {
        let role = RoleSource::new(parts.config.storage.litefs_dir.as_deref());
        let tools: Arc<dyn ToolExecutor> =
            if parts.config.agent.test_tools { Arc::new(TestTools) } else { Arc::new(NoTools) };
        AppState(Arc::new(Self {
            role,
            queue: Queue::new(parts.db.clone(), Duration::from_secs(parts.config.queue.lease_s)),
            models: parts.models,
            tools,
            resolver: parts.resolver,
            jwt: parts.jwt,
            limits: RateLimits::new(parts.config.auth.key_rpm, parts.config.auth.user_rpm),
            static_key_hash: parts.static_key.map(|k| secret::hash(k.expose())),
            config: parts.config,
            db: parts.db,
            metrics: parts.metrics,
            default_org: parts.default_org,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            started: Instant::now(),
        }))
    }

    /// Settings.
    #[must_use]
    pub fn config(&self) -> &ServeConfig {
        &self.config
    }

    /// The store.
    #[must_use]
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The metrics handle.
    #[must_use]
    pub fn metrics(&self) -> &PrometheusHandle {
        &self.metrics
    }

    /// This node's role now.
    #[must_use]
    pub fn role(&self) -> Role {
        self.role.current()
    }

    /// The `default` organization.
    #[must_use]
    pub fn default_org(&self) -> &OrgId {
        &self.default_org
    }

    /// SHA-256 of the static API key.
    #[must_use]
    pub fn static_key_hash(&self) -> Option<&[u8; 32]> {
        self.static_key_hash.as_ref()
    }

    /// Cancelled at shutdown.
    #[must_use]
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// The background-task tracker.
    #[must_use]
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// The run queue.
    #[must_use]
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// The models requests may name.
    #[must_use]
    pub fn models(&self) -> &Models {
        &self.models
    }

    /// Server-side tools.
    #[must_use]
    pub fn tools(&self) -> Arc<dyn ToolExecutor> {
        Arc::clone(&self.tools)
    }

    /// The runner resolver.
    #[must_use]
    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// User JWT verification, when configured.
    #[must_use]
    pub fn jwt(&self) -> Option<&JwtVerifier> {
        self.jwt.as_ref()
    }

    /// Rate limits.
    #[must_use]
    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    /// Seconds since start.
    #[must_use]
    pub fn uptime_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

impl Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.0
    }
}
