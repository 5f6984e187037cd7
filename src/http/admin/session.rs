//! The browser side of an admin login: the session cookie (HttpOnly, SameSite=Strict, Path
//! `/admin`, Secure behind HTTPS), the [`LoggedIn`] extractor that sends a browser without a
//! live login to `/admin/login`, the CSRF check of every form, and the client's address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::{COOKIE, HeaderValue};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::pages::ErrorPage;
use crate::admin::{AdminError, LoginSession};
use crate::app::AppState;

/// The login cookie's name.
pub const COOKIE_NAME: &str = "hearth_admin";
/// The login form's double-submit cookie (CSRF before there is a login).
pub const LOGIN_CSRF_COOKIE: &str = "hearth_admin_login";

/// The value of cookie `name` in the request, if sent.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// Whether the browser reached hearth over HTTPS (a TLS-terminating proxy says so with
/// `X-Forwarded-Proto: https`): cookies are then marked `Secure`.
pub fn https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').next().is_some_and(|p| p.trim().eq_ignore_ascii_case("https")))
}

/// A `Set-Cookie` value: `name=value` for `path`, living `max_age_s` (0 deletes it).
pub fn set_cookie(name: &str, value: &str, path: &str, max_age_s: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!("{name}={value}; Path={path}; Max-Age={max_age_s}; HttpOnly; SameSite=Strict{secure}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("hearth_admin=; Max-Age=0"))
}

/// The client's address: the TCP peer. Behind a proxy every client shares the proxy's address,
/// so the login limit is shared too — stricter, never weaker (a forwarded header is not trusted,
/// since a client could invent one to get a fresh limit per request).
pub fn client_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(addr)| addr.ip().to_canonical())
}

/// A request from a logged-in browser: its login and the cookie's value.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    /// The login (with its CSRF token).
    pub login: LoginSession,
    /// The cookie's value (to log out).
    pub cookie: String,
}

impl LoggedIn {
    /// Refuses a form whose `csrf_token` is not this login's (403).
    ///
    /// # Errors
    /// The 403 page.
    #[expect(clippy::result_large_err, reason = "the refusal is the response itself, answered at once")]
    pub fn check_csrf(&self, token: &str) -> Result<(), Response> {
        if self.login.csrf_matches(token) {
            Ok(())
        } else {
            Err(ErrorPage::response(
                StatusCode::FORBIDDEN,
                "This form's CSRF token is missing or wrong. Reload the page and submit it again.",
                &self.login.csrf,
            ))
        }
    }
}

impl FromRequestParts<AppState> for LoggedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let to_login = || Redirect::to("/admin/login").into_response();
        let Some(value) = cookie(&parts.headers, COOKIE_NAME) else { return Err(to_login()) };
        match state.admin().login_session(value).await {
            Ok(Some(login)) => Ok(Self { login, cookie: value.to_owned() }),
            Ok(None) => Err(to_login()),
            Err(e) => Err(ErrorPage::from_admin(AdminError::Db(e), "")),
        }
    }
}
