//! The admin inspector over HTTP: the JSON API under `/admin/api` (admin token as bearer) and
//! the server-rendered pages under `/admin` (login cookie, CSRF token on every form).

pub mod api;

use axum::Router;
use axum::routing::{delete, get, post, put};

use crate::app::AppState;

/// The admin routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/api/workers", get(api::list_workers))
        .route("/admin/api/orgs", get(api::list_orgs))
        .route("/admin/api/orgs/{slug}/runner", put(api::set_runner))
        .route("/admin/api/keys", post(api::create_key))
        .route("/admin/api/keys/{id}", delete(api::revoke_key))
}
