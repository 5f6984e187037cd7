//! `/v1/sessions`: the caller's sessions, and one session with its runs and messages.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{Path, Query};
use super::runs::run_json;
use crate::app::AppState;

/// Query of `GET /v1/sessions`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Page size, 1–100 (default 20).
    pub limit: Option<u32>,
    /// Cursor: the `next_before` of the previous page.
    pub before: Option<i64>,
}

/// `GET /v1/sessions`: most recently updated first, paginated with `before`.
pub async fn list_sessions(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid(Some("limit"), "limit must be between 1 and 100"));
    }
    let rows = state.turns().list_sessions(&principal, query.before, limit).await?;
    let next_before = (rows.len() == limit as usize).then(|| rows.last().map(|s| s.updated_at)).flatten();
    Ok(axum::Json(json!({"object": "list", "data": rows, "next_before": next_before})).into_response())
}

/// Query of `GET /v1/sessions/{id}`.
#[derive(Debug, Deserialize)]
pub struct SessionQuery {
    /// Messages per page, 1–1000 (default 100).
    pub limit: Option<i64>,
    /// Cursor: the `messages_before` of the previous page (its oldest message's seq).
    pub before: Option<i64>,
}

/// `GET /v1/sessions/{id}`: the session, its newest runs (up to 100) and a page of its
/// messages — the newest `limit`, or those before `before` — oldest first. `messages_before` is
/// the cursor of the older page, `null` when there is none.
pub async fn get_session(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
    Query(query): Query<SessionQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=crate::turns::MAX_MESSAGES_PAGE).contains(&limit) {
        return Err(ApiError::invalid(Some("limit"), "limit must be between 1 and 1000"));
    }
    let found = state.turns().get_session(&principal, &id, query.before, limit).await?;
    let mut view = json!(found.session);
    view["object"] = json!("session");
    view["runs"] = json!(found.runs.iter().map(run_json).collect::<Vec<_>>());
    let before = found.more_messages.then(|| found.messages.first().map(|(seq, _)| *seq)).flatten();
    view["messages"] = json!(found.messages.iter().map(|(_, m)| m).collect::<Vec<_>>());
    view["messages_before"] = json!(before);
    Ok(axum::Json(view).into_response())
}
