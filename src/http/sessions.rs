//! `/v1/sessions`: the caller's sessions, and one session with its runs and messages.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::extract::{Path, Query};
use super::runs::{run_json, visible};
use crate::app::AppState;
use crate::auth::Caller;
use crate::db::{messages, runs, sessions};
use crate::error::ApiError;
use crate::ids::SessionId;

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
    let (org, user, before) = (principal.org.clone(), principal.user.clone(), query.before);
    let rows = state
        .db()
        .read(move |conn| sessions::list_sessions(conn, &org, user.as_deref(), before, limit))
        .await?;
    let next_before = (rows.len() == limit as usize).then(|| rows.last().map(|s| s.updated_at)).flatten();
    Ok(axum::Json(json!({"object": "list", "data": rows, "next_before": next_before})).into_response())
}

/// `GET /v1/sessions/{id}`: the session, its runs and its messages.
pub async fn get_session(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found(format!("no session `{id}`"));
    let session_id: SessionId = id.parse().map_err(|_| not_found())?;
    let found = state
        .db()
        .read(move |conn| {
            let Some(session) = sessions::find_session(conn, &session_id)? else { return Ok(None) };
            let runs = runs::list_runs_by_session(conn, &session_id)?;
            let messages = messages::list_messages(conn, &session_id)?;
            Ok(Some((session, runs, messages)))
        })
        .await?;
    let (session, runs, messages) = found
        .filter(|(s, _, _)| visible(&principal, &s.organization_id, s.user_id.as_deref()))
        .ok_or_else(not_found)?;
    let mut view = json!(session);
    view["object"] = json!("session");
    view["runs"] = json!(runs.iter().map(run_json).collect::<Vec<_>>());
    view["messages"] = json!(messages);
    Ok(axum::Json(view).into_response())
}
