//! `/admin/login` and `/admin/logout`. The login form carries a CSRF token too: before there is
//! a login, it is a random value set in a short-lived cookie (`Path=/admin/login`) and echoed by
//! the form (double submit), so another site cannot log a browser in with its own token.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Form, FromRequestParts, State};
use axum::http::header::SET_COOKIE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::session::{COOKIE_NAME, LOGIN_CSRF_COOKIE, LoggedIn, client_ip, cookie, https, set_cookie};
use crate::admin::AdminError;
use crate::app::AppState;
use crate::auth::secret;
use crate::db::now_ms;

#[derive(Template, WebTemplate)]
#[template(path = "admin/login.html")]
struct LoginPage {
    nav: &'static str,
    csrf: String,
    login_csrf: String,
    error: String,
}

/// The login page with a fresh double-submit token (and its cookie), answered with `status`.
fn login_page(headers: &HeaderMap, status: StatusCode, error: String) -> Response {
    let token = hex::encode(secret::hash(&secret::generate("login")));
    let page = LoginPage { nav: "", csrf: String::new(), login_csrf: token.clone(), error };
    let mut response = (status, page).into_response();
    let cookie = set_cookie(LOGIN_CSRF_COOKIE, &token, "/admin/login", 3600, https(headers));
    response.headers_mut().append(SET_COOKIE, cookie);
    response
}

/// `GET /admin/login`.
pub async fn show(headers: HeaderMap) -> Response {
    login_page(&headers, StatusCode::OK, String::new())
}

/// The login form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf_token: String,
}

/// The client's address, for the rate limit.
pub struct ClientIp(std::net::IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(client_ip(parts)))
    }
}

/// `POST /admin/login`: checks the form's CSRF token, then the admin token (rate-limited per
/// client address); on success sets the login cookie and goes to the overview.
pub async fn submit(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or("");
    if expected.is_empty() || !secret::constant_time_eq(expected.as_bytes(), form.csrf_token.as_bytes()) {
        let message = "The login form's CSRF token is missing or wrong (are cookies enabled?). Try again.";
        return login_page(&headers, StatusCode::FORBIDDEN, message.into());
    }
    match state.admin().login(ip, &form.token).await {
        Ok(login) => {
            let max_age = (login.expires_at - now_ms()) / 1000;
            let mut response = Redirect::to("/admin").into_response();
            let secure = https(&headers);
            response
                .headers_mut()
                .append(SET_COOKIE, set_cookie(COOKIE_NAME, &login.cookie, "/admin", max_age, secure));
            response
                .headers_mut()
                .append(SET_COOKIE, set_cookie(LOGIN_CSRF_COOKIE, "", "/admin/login", 0, secure));
            response
        }
        Err(AdminError::BadToken) => {
            login_page(&headers, StatusCode::UNAUTHORIZED, "That is not an admin token.".into())
        }
        Err(AdminError::RateLimited { retry_after }) => {
            let message = format!("Too many login attempts from this address; try again in {retry_after} s.");
            let mut response = login_page(&headers, StatusCode::TOO_MANY_REQUESTS, message);
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, retry_after.into());
            response
        }
        Err(e) => super::pages::ErrorPage::from_admin(e, ""),
    }
}

/// The logout form.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf_token: String,
}

/// `POST /admin/logout`: ends the login (server-side) and clears the cookie.
pub async fn logout(
    login: LoggedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(refused) = login.check_csrf(&form.csrf_token) {
        return refused;
    }
    if let Err(e) = state.admin().logout(&login.cookie).await {
        return super::pages::ErrorPage::from_admin(e.into(), &login.login.csrf);
    }
    let mut response = Redirect::to("/admin/login").into_response();
    response.headers_mut().append(SET_COOKIE, set_cookie(COOKIE_NAME, "", "/admin", 0, https(&headers)));
    response
}
