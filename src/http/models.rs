//! `GET /v1/models`: the models and agents the caller may use.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::AppState;
use crate::auth::Principal;

/// Lists the models and agents available (configured providers only). `echo` is always there.
pub async fn list_models(State(state): State<AppState>, _principal: Principal) -> Response {
    let data: Vec<_> = state
        .models()
        .names()
        .into_iter()
        .map(|(id, owner)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}
