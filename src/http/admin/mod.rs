//! The admin inspector over HTTP: the JSON API under `/admin/api` (admin token as bearer) and
//! the server-rendered pages under `/admin` (login cookie, CSRF token on every form), with
//! their stylesheet compiled into the binary. Every admin answer carries the security headers
//! (a CSP allowing no script at all, no framing, no referrer across origins, no caching).

pub mod actions;
pub mod api;
pub mod login;
pub mod pages;
mod rows;
pub mod session;
mod view;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};

use crate::app::AppState;

/// The stylesheet, compiled in.
const CSS: &str = include_str!("../../../static/admin.css");

/// The admin pages' Content-Security-Policy: only this origin's stylesheet; no script, no
/// frames, forms post only here.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// The admin routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/api/workers", get(api::list_workers))
        .route("/admin/api/orgs", get(api::list_orgs))
        .route("/admin/api/orgs/{slug}/runner", put(api::set_runner))
        .route("/admin/api/keys", post(api::create_key))
        .route("/admin/api/keys/{id}", delete(api::revoke_key))
        .route("/admin", get(pages::overview))
        .route("/admin/", get(pages::overview))
        .route("/admin/login", get(login::show).post(login::submit))
        .route("/admin/logout", post(login::logout))
        .route("/admin/workers", get(pages::workers))
        .route("/admin/workers/{id}/drain", post(actions::drain))
        .route("/admin/sessions", get(pages::sessions))
        .route("/admin/sessions/{id}", get(pages::session))
        .route("/admin/orgs", get(pages::orgs))
        .route("/admin/orgs/{slug}", get(pages::org))
        .route("/admin/orgs/{slug}/runner", post(actions::set_runner))
        .route("/admin/keys", get(pages::keys).post(actions::mint))
        .route("/admin/keys/{id}/revoke", post(actions::revoke))
        .route("/admin/static/admin.css", get(stylesheet))
        .layer(axum::middleware::map_response(security_headers))
}

async fn stylesheet() -> Response {
    let headers =
        [(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")];
    (headers, CSS).into_response()
}

/// Adds the security headers to every admin answer (pages, the API, redirects, errors).
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
