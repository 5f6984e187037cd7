//! The admin pages' forms: drain a worker, set or clear an organization's runner flag, mint
//! and revoke API keys. Each checks the login's CSRF token first (403 without it), then calls
//! the same `admin` service function as the JSON API.

use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::api::MAX_REASON;
use super::pages::{self, KeysMessage, fail};
use super::session::LoggedIn;
use crate::admin::AdminError;
use crate::app::AppState;
use crate::http::error::ApiError;
use crate::runner::{FlagError, FlagUpdate};

/// A form with only its CSRF token.
#[derive(Debug, Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf_token: String,
}

/// `POST /admin/workers/{id}/drain`.
pub async fn drain(
    login: LoggedIn,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, Response> {
    login.check_csrf(&form.csrf_token)?;
    state.admin().drain_worker(&id).await.map_err(fail(&login))?;
    let notice = format!("Worker {id} is draining: its next heartbeat tells it to finish what it holds.");
    pages::workers_page(&state, &login, notice).await
}

/// The runner-flag form.
#[derive(Debug, Deserialize)]
pub struct RunnerForm {
    #[serde(default)]
    csrf_token: String,
    /// `set` or `clear`.
    #[serde(default)]
    action: String,
    #[serde(default)]
    runner: String,
    /// A checkbox: present when ticked.
    #[serde(default)]
    force: Option<String>,
    #[serde(default)]
    reason: String,
}

/// `POST /admin/orgs/{slug}/runner`: through the guard; a refusal shows the organization page
/// again with the reason (409), a change goes back to it (303), where the audit row shows.
pub async fn set_runner(
    login: LoggedIn,
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Form(form): Form<RunnerForm>,
) -> Result<Response, Response> {
    login.check_csrf(&form.csrf_token)?;
    let reason =
        Some(form.reason.trim().chars().take(MAX_REASON).collect::<String>()).filter(|r| !r.is_empty());
    let runner = match form.action.as_str() {
        "clear" => None,
        _ => Some(form.runner.trim().to_owned()),
    };
    let update = FlagUpdate {
        org_slug: slug.clone(),
        runner,
        force: form.force.is_some(),
        actor: "admin-web".into(),
        reason,
    };
    match state.admin().set_runner(update).await {
        Ok(_) => Ok(Redirect::to(&format!("/admin/orgs/{slug}")).into_response()),
        Err(AdminError::Flag(e @ FlagError::NoHealthyWorker { .. })) => {
            pages::org_page(&state, &login, &slug, StatusCode::CONFLICT, (e.to_string(), String::new())).await
        }
        Err(AdminError::Flag(e @ FlagError::UnknownRunner(_))) => {
            pages::org_page(&state, &login, &slug, StatusCode::BAD_REQUEST, (e.to_string(), String::new()))
                .await
        }
        Err(e) => Err(fail(&login)(e)),
    }
}

/// The mint form.
#[derive(Debug, Deserialize)]
pub struct MintForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    org: String,
    #[serde(default)]
    name: String,
}

/// `POST /admin/keys`: answers the keys page with the new secret, shown this once (never
/// redirected through a URL, never stored).
pub async fn mint(
    login: LoggedIn,
    State(state): State<AppState>,
    Form(form): Form<MintForm>,
) -> Result<Response, Response> {
    login.check_csrf(&form.csrf_token)?;
    let (status, message) = match state.admin().mint_key(&form.org, &form.name).await {
        Ok(minted) => {
            let message = KeysMessage {
                minted: Some((minted.secret, minted.key.id.to_string())),
                ..Default::default()
            };
            (StatusCode::OK, message)
        }
        Err(e @ AdminError::Key(_)) => {
            let api = ApiError::from(e);
            (api.status(), KeysMessage { error: api.to_string(), ..Default::default() })
        }
        Err(e) => return Err(fail(&login)(e)),
    };
    let mut response = pages::keys_page(&state, &login, status, message).await?;
    // The secret must not linger in a cache.
    response
        .headers_mut()
        .insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `POST /admin/keys/{id}/revoke`.
pub async fn revoke(
    login: LoggedIn,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, Response> {
    login.check_csrf(&form.csrf_token)?;
    let revocation = state.admin().revoke_key(&id).await.map_err(fail(&login))?;
    let notice =
        format!("Revoked API key {} `{}`: it stops working at once.", revocation.key.id, revocation.key.name);
    pages::keys_page(&state, &login, StatusCode::OK, KeysMessage { notice, ..Default::default() }).await
}
