//! MCP tools: hearth as an MCP client of the configured servers (Streamable HTTP, through the
//! official Rust SDK, rmcp), exposing their tools to models as `server__tool`.
//!
//! - [`catalog`]: each server's tool list, kept fresh by a task of its own;
//! - [`sessions`]: users' client sessions, one per (server, organization, user), bounded;
//! - [`transport`]: the HTTP client, adding a fresh user assertion per request where configured;
//! - [`keys`]: the assertion signing key and the JWKS that publishes it;
//! - [`call`]: one tool call, every failure turned into an error result for the model.
//!
//! The caller's own credentials never reach a server: sessions carry only the server's configured
//! headers and, with `user_assertion: true`, an assertion hearth signs.

pub mod call;
pub mod catalog;
pub mod keys;
pub mod sessions;
pub mod transport;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::McpServerConfig;
use crate::domain::message::ToolSpec;
use catalog::Server;
use keys::Signer;
use sessions::Sessions;

/// `error` with its sources, `: `-separated (reqwest's own text hides why a request failed:
/// refused, a certificate nobody vouches for…).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

/// Why a session could not be opened, naming the underlying cause (rmcp's own text names its
/// transport's type instead).
pub(crate) fn init_error(error: &rmcp::service::ClientInitializeError) -> String {
    match error {
        rmcp::service::ClientInitializeError::TransportError { error, context } => {
            format!(
                "{} (when it tried to {})",
                transport_error(&*error.error),
                context.trim_start_matches("send ")
            )
        }
        other => error_chain(other),
    }
}

/// A transport's error: for an HTTP client error, reqwest's whole chain (rmcp shows only its
/// first line, "error sending request", not the refused connection or certificate behind it).
fn transport_error(error: &(dyn std::error::Error + Send + Sync + 'static)) -> String {
    use rmcp::transport::streamable_http_client::StreamableHttpError;
    match error.downcast_ref::<StreamableHttpError<reqwest::Error>>() {
        Some(StreamableHttpError::Client(e)) => error_chain(e),
        _ => error_chain(error),
    }
}

/// Why a request on an open session failed, naming the underlying cause.
pub(crate) fn service_error(error: &rmcp::service::ServiceError) -> String {
    match error {
        rmcp::service::ServiceError::TransportSend(e) => transport_error(&*e.error),
        other => error_chain(other),
    }
}

/// What the MCP service is built from.
#[derive(Debug)]
pub struct McpSettings {
    /// The servers.
    pub servers: Vec<McpServerConfig>,
    /// HEARTH_MCP_REFRESH_S.
    pub refresh: Duration,
    /// HEARTH_MCP_MAX_SESSIONS.
    pub max_sessions: usize,
    /// HEARTH_MCP_SESSION_IDLE_S.
    pub idle: Duration,
}

/// The MCP client side of hearth.
pub struct Mcp {
    servers: Vec<Arc<Server>>,
    sessions: Sessions,
    signer: Option<Arc<Signer>>,
    http: reqwest::Client,
    idle: Duration,
    refresh: Duration,
}

impl std::fmt::Debug for Mcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mcp")
            .field("servers", &self.servers.len())
            .field("sessions", &self.sessions.len())
            .finish()
    }
}

/// Why the MCP service could not start.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// A server needs assertions and there is no key to sign them.
    #[error(
        "MCP server `{0}` has user_assertion: true but there is no signing key: set HEARTH_MCP_SIGNING_KEY (an Ed25519 PKCS#8 PEM; `hearth worker` must share the server's key)"
    )]
    NoSigningKey(String),
    /// The HTTP client could not be built.
    #[error("the MCP HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

impl Mcp {
    /// The service; `signer` signs user assertions (required when a server asks for them).
    /// Nothing runs until [`Mcp::start`].
    ///
    /// # Errors
    /// A server with `user_assertion` and no signer, or an HTTP client that cannot be built.
    pub fn new(settings: McpSettings, signer: Option<Arc<Signer>>) -> Result<Self, McpError> {
        if signer.is_none()
            && let Some(s) = settings.servers.iter().find(|s| s.user_assertion)
        {
            return Err(McpError::NoSigningKey(s.name.clone()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self {
            servers: settings.servers.into_iter().map(|c| Arc::new(Server::new(c))).collect(),
            sessions: Sessions::new(settings.max_sessions, settings.idle),
            signer,
            http,
            idle: settings.idle,
            refresh: settings.refresh,
        })
    }

    /// Starts listing every server's tools (in the background: a server that is down does not
    /// delay start-up) and closing idle sessions, until `shutdown`.
    pub fn start(self: &Arc<Self>, tasks: &TaskTracker, shutdown: &CancellationToken) {
        for server in &self.servers {
            tasks.spawn(catalog::keep_listed(
                Arc::clone(server),
                self.http.clone(),
                self.refresh,
                shutdown.clone(),
            ));
        }
        if self.servers.is_empty() {
            return;
        }
        let (mcp, shutdown) = (Arc::clone(self), shutdown.clone());
        tasks.spawn(async move {
            let every = mcp.sessions_idle_check();
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(every) => {
                        let closed = mcp.sessions.close_idle();
                        if closed > 0 {
                            tracing::debug!(closed, "closed idle MCP sessions");
                        }
                    }
                }
            }
        });
    }

    /// How often idle sessions are looked for.
    fn sessions_idle_check(&self) -> Duration {
        self.idle.min(Duration::from_secs(30))
    }

    /// Whether any server is configured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// The configured servers' names.
    pub fn server_names(&self) -> impl Iterator<Item = &str> {
        self.servers.iter().map(|s| s.config.name.as_str())
    }

    /// Every tool offered now, by exposed name.
    #[must_use]
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.servers.iter().flat_map(|s| s.specs()).collect()
    }

    /// Names of the tools offered to a request: for an agent, its servers' tools; else the
    /// tools of every server whose entry does not say `"default": false`.
    #[must_use]
    pub fn offered(&self, agent_servers: Option<&[String]>) -> Vec<String> {
        self.servers
            .iter()
            .filter(|s| match agent_servers {
                Some(list) => list.iter().any(|n| *n == s.config.name),
                None => s.config.default,
            })
            .flat_map(|s| s.specs().into_iter().map(|t| t.name))
            .collect()
    }

    /// Whether `name` is one of this service's exposed names (`server__…` of a configured server).
    #[must_use]
    pub fn owns(&self, name: &str) -> bool {
        self.server_of(name).is_some()
    }

    fn server_of(&self, exposed: &str) -> Option<(usize, &Arc<Server>)> {
        let (prefix, _) = exposed.split_once("__")?;
        self.servers.iter().enumerate().find(|(_, s)| s.config.name == prefix)
    }

    /// The public keys of the user assertions (`GET /.well-known/jwks.json`).
    #[must_use]
    pub fn jwks(&self) -> serde_json::Value {
        self.signer.as_ref().map_or_else(|| serde_json::json!({"keys": []}), |s| s.jwks())
    }

    /// How many user sessions are open.
    #[must_use]
    pub fn open_sessions(&self) -> usize {
        self.sessions.len()
    }
}
