//! Settings of who may call: the static and admin keys, user JWTs, and rate limits.

use clap::Args;

use super::Secret;
use super::parse::parse_bool;

/// The shortest service key, admin token or metrics token accepted.
pub const MIN_SECRET: usize = 16;

/// Credentials and identity: the service key, the admin token, user JWTs, rate limits.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Authentication")]
pub struct AuthConfig {
    /// Static service API key accepted as `Authorization: Bearer …` for the `default`
    /// organization (legacy alias: MESHI_RUNTIME_API_KEY). When set, first run creates no key.
    #[arg(long, env = "GATEWAY_API_KEY", value_name = "KEY", hide_env_values = true)]
    pub api_key: Option<Secret>,

    /// Admin token for the inspector and the admin API. When set, first run creates none.
    #[arg(long, env = "HEARTH_ADMIN_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,

    /// Secret of HS256 user JWTs in `X-Runtime-User`.
    #[arg(long, env = "HEARTH_JWT_SECRET", value_name = "SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// PEM public key (RS256, ES256 or EdDSA) of user JWTs: the PEM text, or a path to a file.
    #[arg(long, env = "HEARTH_JWT_PUBLIC_KEY", value_name = "PEM|PATH")]
    pub jwt_public_key: Option<String>,

    /// JWKS of user JWTs (`{"keys": [...]}` with RSA, P-256 or Ed25519 public keys, each with a
    /// `kid`): the JSON text, or a path to a file. A token's `kid` header selects its key, so
    /// several keys can be live at once (rotation). Read at start.
    #[arg(long, env = "HEARTH_JWT_JWKS", value_name = "JSON|PATH")]
    pub jwt_jwks: Option<String>,

    /// Longest lifetime a user JWT may have, in seconds (`exp - iat`, and `exp` from now).
    #[arg(long, env = "HEARTH_JWT_MAX_LIFETIME_S", value_name = "SECONDS", default_value = "86400",
          value_parser = clap::value_parser!(u64).range(60..))]
    pub jwt_max_lifetime_s: u64,

    /// Required `iss` of user JWTs.
    #[arg(long, env = "HEARTH_JWT_ISSUER", value_name = "ISS")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` of user JWTs.
    #[arg(long, env = "HEARTH_JWT_AUDIENCE", value_name = "AUD")]
    pub jwt_audience: Option<String>,

    /// Require the `X-Runtime-User` JWT on the chat and runs APIs.
    #[arg(long, env = "HEARTH_REQUIRE_USER", value_name = "BOOL", default_value = "false", value_parser = parse_bool,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub require_user: bool,

    /// Streams one API key may hold open at once (chat streams, and run event streams by SSE
    /// or long-poll); one more is refused with 429.
    #[arg(long, env = "HEARTH_MAX_STREAMS_PER_KEY", value_name = "N", default_value_t = 2000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams_per_key: u32,

    /// Requests per minute per API key (off when unset).
    #[arg(long, env = "HEARTH_KEY_RPM", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub key_rpm: Option<u32>,

    /// Requests per minute per user (off when unset).
    #[arg(long, env = "HEARTH_USER_RPM", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub user_rpm: Option<u32>,

    /// How long an admin login (the /admin pages' session cookie) lasts, in seconds.
    #[arg(long, env = "HEARTH_ADMIN_SESSION_S", value_name = "SECONDS", default_value_t = 43_200,
          value_parser = clap::value_parser!(u64).range(60..=2_592_000))]
    pub admin_session_s: u64,

    /// Admin login attempts allowed per client address and minute (/admin/login).
    #[arg(long, env = "HEARTH_ADMIN_LOGIN_RPM", value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub admin_login_rpm: u32,
}

impl AuthConfig {
    /// Refuses the service and admin secrets when they are too short to be safe.
    ///
    /// # Errors
    /// A message naming the setting.
    pub fn check_secrets(&self) -> Result<(), String> {
        if let Some(key) = &self.api_key {
            key.at_least(MIN_SECRET, "GATEWAY_API_KEY (--api-key)")?;
        }
        if let Some(token) = &self.admin_token {
            token.at_least(MIN_SECRET, "HEARTH_ADMIN_TOKEN (--admin-token)")?;
        }
        Ok(())
    }

    /// The static API key: GATEWAY_API_KEY, else the legacy MESHI_RUNTIME_API_KEY.
    ///
    /// # Errors
    /// When the legacy variable holds an invalid value.
    pub fn static_api_key(&self) -> Result<Option<Secret>, String> {
        if let Some(key) = &self.api_key {
            return Ok(Some(key.clone()));
        }
        match std::env::var("MESHI_RUNTIME_API_KEY") {
            Ok(value) => {
                value.parse().map(Some).map_err(|e| format!("invalid value for MESHI_RUNTIME_API_KEY: {e}"))
            }
            Err(_) => Ok(None),
        }
    }
}
