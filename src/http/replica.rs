//! On a LiteFS replica, every write request is answered at once with `fly-replay:
//! instance=<primary>`, so Fly's proxy replays it on the primary (SPEC §8).
//!
//! A write request is any method but `GET`, `HEAD` and `OPTIONS`: every `POST` of the API and
//! the whole worker protocol. No `GET` handler writes on a replica (the only writes a read
//! makes, refreshing a key's or worker token's `last_used_at`, are skipped where the node may
//! not write), so reads are served here. The role is read on each write request from the
//! mount's `.primary` (docs/DEPLOY.md "LiteFS roles").
//!
//! Fly's proxy acts on the header whatever the status, and drops the body. A client that
//! reached the replica directly (not through Fly's proxy) gets `409` with an OpenAI-shaped body
//! naming the primary, code `read_only_replica`.

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::AppState;
use crate::replication::Role;

/// Fly's replay header.
pub const FLY_REPLAY: HeaderName = HeaderName::from_static("fly-replay");

/// Passes reads through; answers writes on a replica with `fly-replay` to the primary.
pub async fn replay_writes(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(request).await;
    }
    match state.role() {
        Role::Replica { primary } => replay(&primary, request.method(), request.uri().path()),
        Role::Standalone | Role::Primary => next.run(request).await,
    }
}

fn replay(primary: &str, method: &Method, path: &str) -> Response {
    let message = format!(
        "{method} {path} writes, and this node is a read-only LiteFS replica: send it to the primary \
         `{primary}` (Fly's proxy does so by itself from the fly-replay header)"
    );
    let body = json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": "read_only_replica"}});
    let mut response = (StatusCode::CONFLICT, axum::Json(body)).into_response();
    match HeaderValue::from_str(&format!("instance={primary}")) {
        Ok(value) => {
            response.headers_mut().insert(FLY_REPLAY, value);
        }
        Err(_) => {
            tracing::warn!(primary, "the LiteFS .primary file names no usable instance; no fly-replay sent")
        }
    }
    response
}
