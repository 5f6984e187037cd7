//! `GET /.well-known/jwks.json`: the public keys that verify the user assertions hearth sends to
//! MCP servers (`user_assertion: true`). Public, like any JWKS; a list, ready for rotation.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;

/// The JWKS (`{"keys": [{"kty": "OKP", "crv": "Ed25519", "x", "kid", "use": "sig", "alg": "EdDSA"}]}`).
pub async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = axum::Json(state.mcp().jwks()).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, header::HeaderValue::from_static("public, max-age=300"));
    response
}
