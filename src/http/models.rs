//! `GET /v1/models`: the models the caller may use.

use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::Principal;

/// Lists the models and agents available to the caller. `echo` is always there.
pub async fn list_models(_principal: Principal) -> Response {
    axum::Json(json!({
        "object": "list",
        "data": [
            {"id": "echo", "object": "model", "created": 0, "owned_by": "hearth"}
        ]
    }))
    .into_response()
}
