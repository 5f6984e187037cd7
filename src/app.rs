//! `App`: the services a request handler or background task needs, built once at start.
//!
//! `App` sits above the services: it builds them and hands them to the transport (`http/`,
//! `cli/serve.rs`). No service depends on it.

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{Admin, AdminSettings};
use crate::agent::tools::Toolbox;
use crate::auth::jwt::JwtVerifier;
use crate::auth::limits::RateLimits;
use crate::auth::{AuthSettings, Authenticator};
use crate::config::ServeConfig;
use crate::db::Db;
use crate::fleet::{Fleet, FleetParts};
use crate::ids::OrgId;
use crate::llm::Models;
use crate::mcp::Mcp;
use crate::queue::{Queue, QueueSettings};
use crate::replication::{Role, RoleSource};
use crate::runner::{Resolver, RunnerSettings};
use crate::turns::{Turns, TurnsParts};
use crate::worker::Executor;

/// The application: configuration, storage, services and shared runtime handles.
pub struct App {
    /// Settings of `hearth serve`, validated.
    config: ServeConfig,
    /// The SQLite store.
    db: Db,
    /// Renders `/metrics`.
    metrics: PrometheusHandle,
    /// Where this node's role (standalone/primary/replica) is read from.
    role: RoleSource,
    /// Authenticates API callers.
    auth: Authenticator,
    /// Cancelled when the server begins shutting down; long-lived streams end on it.
    shutdown: CancellationToken,
    /// Every background task, so shutdown can wait for them.
    tasks: TaskTracker,
    /// When the process started.
    started: Instant,
    /// The run queue and its event hub.
    queue: Arc<Queue>,
    /// The models requests may name.
    models: Arc<Models>,
    /// Executes runs in this process (the embedded worker's runs).
    executor: Arc<Executor>,
    /// Starts turns and reads runs and sessions.
    turns: Turns,
    /// The worker protocol's service.
    fleet: Fleet,
    /// The admin inspector's service.
    admin: Admin,
    /// The MCP servers' tools and the user-assertion keys.
    mcp: Arc<Mcp>,
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
    /// The MCP servers' tools and the user-assertion keys.
    pub mcp: Arc<Mcp>,
}

impl App {
    /// Builds the services from their parts.
    #[must_use]
    pub fn build(parts: AppParts) -> AppState {
        let config = parts.config;
        let role = RoleSource::new(config.storage.litefs_dir.as_deref());
        let tasks = TaskTracker::new();
        let settings = QueueSettings {
            lease: Duration::from_secs(config.queue.lease_s),
            max_attempts: config.queue.max_attempts,
        };
        let runner = RunnerSettings {
            resolver: parts.resolver.clone(),
            runners: config.runner.runners.0.clone(),
            min_versions: config.runner.runner_min_version.clone(),
        };
        let admin = Admin::new(
            parts.db.clone(),
            runner,
            &AdminSettings {
                env_token: config.auth.admin_token.clone(),
                session_ttl: Duration::from_secs(config.auth.admin_session_s),
                logins_per_minute: config.auth.admin_login_rpm,
            },
        );
        let queue = Arc::new(Queue::new(parts.db.clone(), parts.resolver, settings));
        let models = Arc::new(parts.models);
        let toolbox = Arc::new(Toolbox::new(config.agent.test_tools, Some(Arc::clone(&parts.mcp))));
        let executor = Arc::new(Executor::new(
            Arc::clone(&queue),
            Arc::clone(&models),
            Arc::clone(&toolbox),
            tasks.clone(),
            Duration::from_secs(config.agent.tool_timeout_s),
        ));
        let turns = Turns::new(TurnsParts {
            db: parts.db.clone(),
            queue: Arc::clone(&queue),
            models: Arc::clone(&models),
            toolbox,
            executor: Arc::clone(&executor),
            max_steps: config.agent.max_steps,
            no_worker_wait: Duration::from_secs(config.queue.no_worker_wait_s),
        });
        let shutdown = CancellationToken::new();
        let fleet = Fleet::new(FleetParts {
            queue: Arc::clone(&queue),
            runners: config.runner.runners.0.clone(),
            min_versions: config.runner.runner_min_version.clone(),
            heartbeat: Duration::from_secs(config.queue.heartbeat_s),
            lease: Duration::from_secs(config.queue.lease_s),
            shutdown: shutdown.clone(),
        });
        let auth = Authenticator::new(
            parts.db.clone(),
            role.clone(),
            AuthSettings {
                default_org: parts.default_org,
                static_key: parts.static_key,
                jwt: parts.jwt,
                limits: RateLimits::new(config.auth.key_rpm, config.auth.user_rpm),
                require_user: config.auth.require_user,
                max_streams_per_key: usize::try_from(config.auth.max_streams_per_key).unwrap_or(usize::MAX),
            },
        );
        AppState(Arc::new(Self {
            config,
            db: parts.db,
            metrics: parts.metrics,
            role,
            auth,
            shutdown,
            tasks,
            started: Instant::now(),
            queue,
            models,
            executor,
            turns,
            fleet,
            admin,
            mcp: parts.mcp,
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

    /// Authenticates API callers.
    #[must_use]
    pub fn auth(&self) -> &Authenticator {
        &self.auth
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
    pub fn queue(&self) -> &Arc<Queue> {
        &self.queue
    }

    /// The models requests may name.
    #[must_use]
    pub fn models(&self) -> &Models {
        &self.models
    }

    /// Executes runs in this process.
    #[must_use]
    pub fn executor(&self) -> &Arc<Executor> {
        &self.executor
    }

    /// Starts turns and reads runs and sessions.
    #[must_use]
    pub fn turns(&self) -> &Turns {
        &self.turns
    }

    /// The worker protocol's service.
    #[must_use]
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// The admin inspector's service.
    #[must_use]
    pub fn admin(&self) -> &Admin {
        &self.admin
    }

    /// The MCP servers' tools and the user-assertion keys.
    #[must_use]
    pub fn mcp(&self) -> &Arc<Mcp> {
        &self.mcp
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
