//! The admin JSON API (SPEC §7), with an admin token as bearer: workers, organizations, setting
//! or clearing a runner flag (guarded, audited), minting and revoking API keys. Every handler
//! calls the same `admin` service function as the pages and the CLI.

use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::admin::WorkerView;
use crate::app::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{Json, Path};
use crate::runner::{FlagUpdate, OrgRunner};

/// The caller of an admin API route: it sent a valid admin token (HEARTH_ADMIN_TOKEN or a stored
/// one, compared in constant time). An API key or a worker token is refused.
#[derive(Debug, Clone, Copy)]
pub struct AdminBearer;

impl FromRequestParts<AppState> for AdminBearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if !parts.headers.contains_key(AUTHORIZATION) {
            return Err(ApiError::Unauthorized(
                "missing admin token: send `Authorization: Bearer <admin token>`".into(),
            ));
        }
        let token = crate::http::auth::bearer(parts)?;
        if state.admin().verify_token(token).await.map_err(crate::admin::AdminError::from)? {
            Ok(Self)
        } else {
            Err(ApiError::Unauthorized("invalid admin token".into()))
        }
    }
}

/// A worker as the API answers it.
fn worker_json(view: &WorkerView) -> Value {
    let mut value = serde_json::to_value(view).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.insert("object".into(), json!("worker"));
    }
    value
}

/// An organization with its runner as the API answers it.
pub(super) fn org_json(org: &OrgRunner) -> Value {
    let o = &org.organization;
    json!({
        "object": "organization",
        "id": o.id,
        "slug": o.slug,
        "name": o.name,
        "features": o.features,
        "runner_default": org.runner_default,
        "effective_runner": org.effective_runner,
        "runner_reason": org.runner_reason,
        "created_at": o.created_at,
        "updated_at": o.updated_at,
    })
}

/// `GET /admin/api/workers`.
pub async fn list_workers(_: AdminBearer, State(state): State<AppState>) -> Result<Response, ApiError> {
    let workers = state.admin().workers().await.map_err(crate::admin::AdminError::from)?;
    let data: Vec<Value> = workers.iter().map(worker_json).collect();
    Ok(axum::Json(json!({"object": "list", "data": data})).into_response())
}

/// `GET /admin/api/orgs`.
pub async fn list_orgs(_: AdminBearer, State(state): State<AppState>) -> Result<Response, ApiError> {
    let orgs = state.admin().orgs().await.map_err(crate::admin::AdminError::from)?;
    let data: Vec<Value> = orgs.iter().map(org_json).collect();
    Ok(axum::Json(json!({"object": "list", "data": data})).into_response())
}

/// The body of `PUT /admin/api/orgs/{slug}/runner`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerBody {
    /// The runner, or `null` to clear the flag. Required, so that a forgotten field never clears.
    #[serde(deserialize_with = "Option::deserialize")]
    runner: Option<String>,
    /// Set it even without a healthy worker of that runtime (audited).
    #[serde(default)]
    force: bool,
    /// Why (recorded in the audit).
    #[serde(default)]
    reason: Option<String>,
}

/// The longest reason recorded.
pub(super) const MAX_REASON: usize = 500;

/// Checks a reason's length and trims it; empty means none.
pub(super) fn reason(text: Option<String>) -> Result<Option<String>, ApiError> {
    let text = text.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
    if text.as_ref().is_some_and(|r| r.chars().count() > MAX_REASON) {
        return Err(ApiError::invalid(Some("reason"), format!("reason is at most {MAX_REASON} characters")));
    }
    Ok(text)
}

/// `PUT /admin/api/orgs/{slug}/runner`: sets or clears the flag through the guard; 409 when no
/// healthy worker of that runtime at its minimum version exists and `force` is not set.
pub async fn set_runner(
    _: AdminBearer,
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Json(body): Json<RunnerBody>,
) -> Result<Response, ApiError> {
    let runner = body.runner.map(|r| r.trim().to_owned());
    if runner.as_deref() == Some("") {
        return Err(ApiError::invalid(Some("runner"), "runner is a runner name, or null to clear the flag"));
    }
    let update = FlagUpdate {
        org_slug: slug.clone(),
        runner,
        force: body.force,
        actor: "admin-api".into(),
        reason: reason(body.reason)?,
    };
    let change = state.admin().set_runner(update).await?;
    let org = state.admin().org(&slug, 0).await?;
    Ok(axum::Json(json!({
        "object": "runner_flag_change",
        "organization": slug,
        "old": change.old,
        "new": change.new,
        "forced": change.forced,
        "actor": change.actor,
        "reason": change.reason,
        "at": change.at,
        "effective_runner": org.effective_runner,
        "runner_reason": org.runner_reason,
    }))
    .into_response())
}

/// The body of `POST /admin/api/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyBody {
    /// The organization's slug.
    org: String,
    /// A label.
    name: String,
}

/// `POST /admin/api/keys`: 201 with the secret, shown only here.
pub async fn create_key(
    _: AdminBearer,
    State(state): State<AppState>,
    Json(body): Json<KeyBody>,
) -> Result<Response, ApiError> {
    let minted = state.admin().mint_key(&body.org, &body.name).await?;
    let body = json!({
        "object": "api_key",
        "id": minted.key.id,
        "org": minted.org_slug,
        "name": minted.key.name,
        "secret": minted.secret,
        "created_at": minted.key.created_at,
    });
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// `DELETE /admin/api/keys/{id}`: 200, also for a key revoked before; 404 for an unknown id.
pub async fn revoke_key(
    _: AdminBearer,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let revocation = state.admin().revoke_key(&id).await?;
    Ok(axum::Json(json!({"object": "api_key", "id": revocation.key.id, "revoked": true})).into_response())
}
