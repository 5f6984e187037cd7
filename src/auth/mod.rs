//! Who is calling: a service key (static or database, hashed, compared in constant time), an
//! optional user JWT, the organization they act in, and rate limits → a [`Principal`].

pub mod jwt;
pub mod keys;
pub mod limits;
pub mod secret;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::app::AppState;
use crate::db::{api_keys, now_ms, organizations};
use crate::error::ApiError;
use crate::ids::{KeyId, OrgId};

/// How often a key's `last_used_at` is refreshed at most, in ms.
const TOUCH_EVERY_MS: i64 = 60_000;
/// The user header and its legacy alias.
const USER_HEADERS: [&str; 2] = ["x-runtime-user", "x-meshi-runtime-user-id"];

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

/// A [`Principal`] on the chat and runs APIs, where HEARTH_REQUIRE_USER applies.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

fn unauthorized(message: &str) -> ApiError {
    ApiError::Unauthorized(message.to_owned())
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing API key: send `Authorization: Bearer <key>`"))?;
    let text = value.to_str().map_err(|_| unauthorized("malformed Authorization header"))?;
    match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Ok(token.trim())
        }
        _ => Err(unauthorized("malformed Authorization header: expected `Bearer <key>`")),
    }
}

/// Authenticates a service key: the static key, else a live database key.
///
/// # Errors
/// 401 for an unknown, revoked or expired key.
pub async fn authenticate_key(state: &AppState, token: &str) -> Result<(OrgId, KeyRef), ApiError> {
    let presented = secret::hash(token);
    if let Some(expected) = state.static_key_hash()
        && secret::constant_time_eq(&presented, expected)
    {
        return Ok((state.default_org().clone(), KeyRef::Static));
    }
    if !token.starts_with(secret::API_KEY_PREFIX) {
        return Err(unauthorized("invalid API key"));
    }
    let found = state.db().read(move |conn| api_keys::find_api_key_by_hash(conn, &presented)).await?;
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
    if key.last_used_at.is_none_or(|at| now - at > TOUCH_EVERY_MS) && state.role().is_writer() {
        let id = key.id.clone();
        // Best effort: a failed touch must not fail the request.
        if let Err(e) = state.db().write(move |conn| api_keys::touch_api_key(conn, &id, now)).await {
            tracing::warn!(error = %e, key.id = %key.id, "could not record API key use");
        }
    }
    Ok((key.organization_id, KeyRef::Db(key.id)))
}

fn user_token(parts: &Parts) -> Result<Option<&str>, ApiError> {
    for name in USER_HEADERS {
        if let Some(value) = parts.headers.get(name) {
            let text = value.to_str().map_err(|_| unauthorized("malformed X-Runtime-User header"))?;
            return Ok(Some(text.trim()));
        }
    }
    Ok(None)
}

/// Checks the JWT's `org` claim against the key's organization, or picks the organization for
/// the static key.
async fn org_for_user(
    state: &AppState,
    key: &KeyRef,
    key_org: OrgId,
    claim: Option<String>,
) -> Result<OrgId, ApiError> {
    let Some(claim) = claim else { return Ok(key_org) };
    let lookup = claim.clone();
    let org = state
        .db()
        .read(move |conn| match lookup.parse::<OrgId>() {
            Ok(id) => organizations::find_organization(conn, &id),
            Err(_) => organizations::find_organization_by_slug(conn, &lookup),
        })
        .await?;
    match (key, org) {
        (_, None) => {
            Err(ApiError::Forbidden(format!("the user token names an unknown organization `{claim}`")))
        }
        (KeyRef::Db(_), Some(org)) if org.id != key_org => Err(ApiError::Forbidden(
            "the user token's organization is not this API key's organization".into(),
        )),
        (_, Some(org)) => Ok(org.id),
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?.to_owned();
        let (key_org, key) = authenticate_key(state, &token).await?;
        let mut principal = Principal { org: key_org.clone(), key, user: None };
        if let Some(user_jwt) = user_token(parts)? {
            let verifier = state.jwt().ok_or_else(|| {
                unauthorized("X-Runtime-User was sent but no JWT key is configured (HEARTH_JWT_SECRET or HEARTH_JWT_PUBLIC_KEY)")
            })?;
            let claims = verifier.verify(user_jwt)?;
            principal.org = org_for_user(state, &principal.key, key_org, claims.org).await?;
            principal.user = Some(claims.sub);
        }
        let user_key = principal.user.as_ref().map(|u| format!("{}/{u}", principal.org));
        state.limits().check(&principal.key.label(), user_key.as_deref())?;
        Ok(principal)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        if state.config().auth.require_user && principal.user.is_none() {
            return Err(unauthorized("this server requires the X-Runtime-User header (HEARTH_REQUIRE_USER)"));
        }
        Ok(Self(principal))
    }
}
