//! The request extractors of the caller: [`Principal`] (any API route) and [`Caller`] (the chat
//! and runs APIs, where HEARTH_REQUIRE_USER applies). They read the headers and hand them to
//! the [`crate::auth::Authenticator`].

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::error::ApiError;
use crate::app::AppState;
use crate::auth::{Credentials, Principal};

/// The user header and its legacy alias.
const USER_HEADERS: [&str; 2] = ["x-runtime-user", "x-meshi-runtime-user-id"];

/// A [`Principal`] on the chat and runs APIs, where HEARTH_REQUIRE_USER applies.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

fn unauthorized(message: &str) -> ApiError {
    ApiError::Unauthorized(message.to_owned())
}

pub(crate) fn bearer(parts: &Parts) -> Result<&str, ApiError> {
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

fn user_token(parts: &Parts) -> Result<Option<&str>, ApiError> {
    for name in USER_HEADERS {
        if let Some(value) = parts.headers.get(name) {
            let text = value.to_str().map_err(|_| unauthorized("malformed X-Runtime-User header"))?;
            return Ok(Some(text.trim()));
        }
    }
    Ok(None)
}

async fn principal(parts: &Parts, state: &AppState, user_required: bool) -> Result<Principal, ApiError> {
    let credentials = Credentials { bearer: bearer(parts)?, user_jwt: user_token(parts)? };
    Ok(state.auth().authenticate(credentials, user_required).await?)
}

/// The caller of any API route.
impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        principal(parts, state, false).await
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        principal(parts, state, true).await.map(Self)
    }
}

/// A caller of the worker protocol: a worker token, never an API key.
#[derive(Debug, Clone)]
pub struct WorkerCaller(pub crate::ids::WorkerTokenId);

impl FromRequestParts<AppState> for WorkerCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        let may_write = state.role().is_writer();
        let id = crate::auth::worker_tokens::authenticate_worker_token(state.db(), token, may_write).await?;
        Ok(Self(id))
    }
}

/// `response` with its body holding `slot` until the body ends (or the client goes away).
pub fn holding(
    response: axum::response::Response,
    slot: crate::auth::streams::StreamSlot,
) -> axum::response::Response {
    use futures::StreamExt as _;
    let (parts, body) = response.into_parts();
    let body = body.into_data_stream().map(move |chunk| {
        let _held = &slot;
        chunk
    });
    axum::response::Response::from_parts(parts, axum::body::Body::from_stream(body))
}
