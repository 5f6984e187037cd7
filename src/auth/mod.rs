//! Who is calling: a service key (static or database, hashed, compared in constant time), an
//! optional user JWT, the organization they act in, and rate limits → a [`Principal`].
//!
//! The [`Authenticator`] knows nothing of HTTP: the transport reads the bearer token and the
//! user header and hands them over (`http/auth.rs`); its [`AuthError`]s are mapped to OpenAI's
//! error shape there. Workers authenticate with worker tokens instead ([`worker_tokens`]); each
//! kind of credential is refused where the other belongs.

pub mod jwt;
pub mod keys;
pub mod limits;
pub mod secret;
pub mod streams;
pub mod worker_tokens;

use crate::db::{Db, DbError, api_keys, now_ms, organizations};
use crate::ids::{KeyId, OrgId};
use crate::replication::RoleSource;
use jwt::JwtVerifier;
use limits::RateLimits;

/// How often a key's `last_used_at` is refreshed at most, in ms.
const TOUCH_EVERY_MS: i64 = 60_000;

/// Which service credential authenticated a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    /// The static GATEWAY_API_KEY.
    Static,
    /// A database API key.
    Db(KeyId),
}

impl KeyRef {
    /// A stable name for rate limiting and logs.
    #[must_use]
    pub fn label(&self) -> String {
        match self {
            Self::Static => "static".into(),
            Self::Db(id) => id.to_string(),
        }
    }
}

/// The authenticated caller of an API request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The organization the request acts in.
    pub org: OrgId,
    /// The service credential used.
    pub key: KeyRef,
    /// The user (JWT `sub`), when the request carries `X-Runtime-User`.
    pub user: Option<String>,
}

impl Principal {
    /// Whether this caller may see a run or session of `org` owned by `user`: its own
    /// organization's, and a user only their own.
    #[must_use]
    pub fn may_see(&self, org: &OrgId, user: Option<&str>) -> bool {
        self.org == *org && self.user.as_deref().is_none_or(|u| user == Some(u))
    }
}

/// Why a caller was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No, or bad, credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// Valid credentials, but not for this.
    #[error("{0}")]
    Forbidden(String),
    /// Over a rate limit.
    #[error("rate limit exceeded: {message}")]
    RateLimited {
        /// Which limit.
        message: String,
        /// Seconds until a retry can succeed.
        retry_after: u64,
    },
    /// Storage failed while checking.
    #[error(transparent)]
    Db(#[from] DbError),
}

fn unauthorized(message: &str) -> AuthError {
    AuthError::Unauthorized(message.to_owned())
}

/// What a request presents: its bearer token and, if any, its user JWT.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// The service key (`Authorization: Bearer …`).
    pub bearer: &'a str,
    /// The user JWT (`X-Runtime-User`).
    pub user_jwt: Option<&'a str>,
}

/// Authenticates callers: service keys, user JWTs, rate limits.
pub struct Authenticator {
    db: Db,
    role: RoleSource,
    default_org: OrgId,
    static_key_hash: Option<[u8; 32]>,
    jwt: Option<JwtVerifier>,
    limits: RateLimits,
    require_user: bool,
    streams: streams::StreamSlots,
}

/// What an [`Authenticator`] is built from.
pub struct AuthSettings {
    /// The `default` organization, which the static key acts in.
    pub default_org: OrgId,
    /// The static API key, if any.
    pub static_key: Option<crate::config::Secret>,
    /// User JWT verification, when a key is configured.
    pub jwt: Option<JwtVerifier>,
    /// Per-key and per-user rate limits.
    pub limits: RateLimits,
    /// HEARTH_REQUIRE_USER.
    pub require_user: bool,
    /// HEARTH_MAX_STREAMS_PER_KEY.
    pub max_streams_per_key: usize,
}

impl Authenticator {
    /// An authenticator over `db`, touching keys' `last_used_at` only where `role` may write.
    #[must_use]
    pub fn new(db: Db, role: RoleSource, settings: AuthSettings) -> Self {
        Self {
            db,
            role,
            default_org: settings.default_org,
            static_key_hash: settings.static_key.map(|k| secret::hash(k.expose())),
            jwt: settings.jwt,
            limits: settings.limits,
            require_user: settings.require_user,
            streams: streams::StreamSlots::new(settings.max_streams_per_key),
        }
    }

    /// A slot for one more open stream of `principal`'s key, held until the stream ends.
    ///
    /// # Errors
    /// 429 when the key holds HEARTH_MAX_STREAMS_PER_KEY streams already.
    pub fn open_stream(&self, principal: &Principal) -> Result<streams::StreamSlot, AuthError> {
        self.streams.open(&principal.key)
    }

    /// Forgets rate-limit state that has fully replenished (run now and then).
    pub fn prune_limits(&self) {
        self.limits.prune();
    }

    /// Authenticates a request's credentials and counts it against the rate limits;
    /// `user_required`: the route is one where HEARTH_REQUIRE_USER applies.
    ///
    /// # Errors
    /// 401/403 for bad credentials, 429 over a limit, or a storage failure.
    pub async fn authenticate(
        &self,
        presented: Credentials<'_>,
        user_required: bool,
    ) -> Result<Principal, AuthError> {
        let (key_org, key) = self.authenticate_key(presented.bearer).await?;
        let mut principal = Principal { org: key_org.clone(), key, user: None };
        if let Some(user_jwt) = presented.user_jwt {
            let verifier = self.jwt.as_ref().ok_or_else(|| {
                unauthorized("X-Runtime-User was sent but no JWT key is configured (HEARTH_JWT_SECRET or HEARTH_JWT_PUBLIC_KEY)")
            })?;
            let claims = verifier.verify(user_jwt)?;
            principal.org = self.org_for_user(&principal.key, key_org, claims.org).await?;
            principal.user = Some(claims.sub);
        }
        let user_key = principal.user.as_ref().map(|u| format!("{}/{u}", principal.org));
        self.limits.check(&principal.key.label(), user_key.as_deref())?;
        if user_required && self.require_user && principal.user.is_none() {
            return Err(unauthorized("this server requires the X-Runtime-User header (HEARTH_REQUIRE_USER)"));
        }
        Ok(principal)
    }

    /// Authenticates a service key: the static key, else a live database key.
    async fn authenticate_key(&self, token: &str) -> Result<(OrgId, KeyRef), AuthError> {
        let presented = secret::hash(token);
        if let Some(expected) = &self.static_key_hash
            && secret::constant_time_eq(&presented, expected)
        {
            return Ok((self.default_org.clone(), KeyRef::Static));
        }
        if token.starts_with(secret::WORKER_TOKEN_PREFIX) {
            return Err(unauthorized(
                "this is a worker token (`hwk_…`): worker tokens are for the worker protocol \
                 (/v1/workers/…), not the chat and runs API; send an API key",
            ));
        }
        if !token.starts_with(secret::API_KEY_PREFIX) {
            return Err(unauthorized("invalid API key"));
        }
        let found = self.db.read(move |conn| api_keys::find_api_key_by_hash(conn, &presented)).await?;
        let Some((key, _)) = found.filter(|(_, stored)| secret::constant_time_eq(stored, &presented)) else {
            return Err(unauthorized("invalid API key"));
        };
        let now = now_ms();
        if key.revoked_at.is_some() {
            return Err(unauthorized("this API key has been revoked"));
        }
        if key.expires_at.is_some_and(|at| at <= now) {
            return Err(unauthorized("this API key has expired"));
        }
        if key.last_used_at.is_none_or(|at| now - at > TOUCH_EVERY_MS) && self.role.current().is_writer() {
            let id = key.id.clone();
            // Best effort: a failed touch must not fail the request.
            if let Err(e) = self.db.write(move |conn| api_keys::touch_api_key(conn, &id, now)).await {
                tracing::warn!(error = %e, key.id = %key.id, "could not record API key use");
            }
        }
        Ok((key.organization_id, KeyRef::Db(key.id)))
    }

    /// Checks the JWT's `org` claim against the key's organization, or picks the organization
    /// for the static key.
    async fn org_for_user(
        &self,
        key: &KeyRef,
        key_org: OrgId,
        claim: Option<String>,
    ) -> Result<OrgId, AuthError> {
        let Some(claim) = claim else { return Ok(key_org) };
        let lookup = claim.clone();
        let org = self
            .db
            .read(move |conn| match lookup.parse::<OrgId>() {
                Ok(id) => organizations::find_organization(conn, &id),
                Err(_) => organizations::find_organization_by_slug(conn, &lookup),
            })
            .await?;
        match (key, org) {
            (_, None) => {
                Err(AuthError::Forbidden(format!("the user token names an unknown organization `{claim}`")))
            }
            (KeyRef::Db(_), Some(org)) if org.id != key_org => Err(AuthError::Forbidden(
                "the user token's organization is not this API key's organization".into(),
            )),
            (_, Some(org)) => Ok(org.id),
        }
    }
}
