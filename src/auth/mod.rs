//! Who is calling: service keys (static or database, hashed, constant-time) → a [`Principal`].

pub mod keys;
pub mod secret;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::app::AppState;
use crate::db::{api_keys, now_ms};
use crate::error::ApiError;
use crate::ids::{KeyId, OrgId};

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

/// The authenticated caller of an API request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The organization the request acts in.
    pub org: OrgId,
    /// The service credential used.
    pub key: KeyRef,
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
        ApiError::Unauthorized("missing API key: send `Authorization: Bearer <key>`".into())
    })?;
    let text = value.to_str().map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
    let (scheme, token) = text.split_once(' ').ok_or_else(|| {
        ApiError::Unauthorized("malformed Authorization header: expected `Bearer <key>`".into())
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::Unauthorized("malformed Authorization header: expected `Bearer <key>`".into()));
    }
    Ok(token.trim())
}

/// Authenticates a service key: the static key, else a live database key.
///
/// # Errors
/// 401 for a missing, unknown, revoked or expired key.
pub async fn authenticate_key(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    let presented = secret::hash(token);
    if let Some(expected) = state.static_key_hash()
        && secret::constant_time_eq(&presented, expected)
    {
        return Ok(Principal { org: state.default_org().clone(), key: KeyRef::Static });
    }
    if !token.starts_with(secret::API_KEY_PREFIX) {
        return Err(ApiError::Unauthorized("invalid API key".into()));
    }
    let found = state.db().read(move |conn| api_keys::find_api_key_by_hash(conn, &presented)).await?;
    let Some((key, stored)) = found.filter(|(_, stored)| secret::constant_time_eq(stored, &presented)) else {
        return Err(ApiError::Unauthorized("invalid API key".into()));
    };
    let now = now_ms();
    if key.revoked_at.is_some() {
        return Err(ApiError::Unauthorized("this API key has been revoked".into()));
    }
    if key.expires_at.is_some_and(|at| at <= now) {
        return Err(ApiError::Unauthorized("this API key has expired".into()));
    }
    drop(stored);
    if key.last_used_at.is_none_or(|at| now - at > TOUCH_EVERY_MS) && state.role().is_writer() {
        let id = key.id.clone();
        // Best effort: a failed touch must not fail the request.
        if let Err(e) = state.db().write(move |conn| api_keys::touch_api_key(conn, &id, now)).await {
            tracing::warn!(error = %e, key.id = %key.id, "could not record API key use");
        }
    }
    Ok(Principal { org: key.organization_id, key: KeyRef::Db(key.id) })
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?.to_owned();
        authenticate_key(state, &token).await
    }
}
