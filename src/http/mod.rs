//! The HTTP API: health and metrics, the OpenAI-dialect `/v1` routes, and the admin inspector
//! (`/admin`).

pub mod admin;
pub mod auth;
pub mod error;
pub mod extract;
pub mod health;
pub mod jwks;
pub mod metrics;
pub mod models;
pub mod openai;
pub mod replica;
pub mod runs;
pub mod sessions;
pub mod streams;
pub mod workers;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::app::AppState;
use crate::http::error::ApiError;

/// Every API route (not yet with state or layers).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route("/.well-known/jwks.json", get(jwks::jwks))
        .route("/v1/models", get(models::list_models))
        .route("/v1/chat/completions", post(openai::chat::chat_completions))
        .route("/v1/runs", post(runs::create_run))
        .route("/v1/runs/{id}", get(runs::get_run))
        .route("/v1/runs/{id}/events", get(streams::run_events).post(workers::append_events))
        .route("/v1/runs/{id}/cancel", post(runs::cancel_run))
        .route("/v1/runs/{id}/complete", post(workers::complete_run))
        .route("/v1/workers/register", post(workers::register_worker))
        .route("/v1/workers/{id}/heartbeat", post(workers::worker_heartbeat))
        .route("/v1/workers/{id}/claim", post(workers::claim_runs))
        .route("/v1/sessions", get(sessions::list_sessions))
        .route("/v1/sessions/{id}", get(sessions::get_session))
        .merge(admin::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

/// 405 in OpenAI's error shape (`invalid_request_error`, code `method_not_allowed`). axum's
/// method router adds the `Allow` header, listing the route's methods, to this answer.
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let message = format!("{method} is not allowed on {}; the Allow header lists what is", uri.path());
    let mut body = ApiError::invalid(None, message).body();
    body["error"]["code"] = "method_not_allowed".into();
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}
