//! `/health` (liveness, no database), `/ready` (database, migrations, role and, on a LiteFS
//! replica, the primary's name) and `/metrics`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::AppState;
use crate::auth::secret;
use crate::db::migrate::{self, SchemaState};

/// `GET /health`: the process is up and serving. Touches nothing else.
pub async fn health() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// `GET /ready`: the database answers, every migration is applied, writes are not failing (the
/// last write batch did not fail for the storage's sake); reports the role.
pub async fn ready(State(state): State<AppState>) -> Response {
    let role = state.role();
    let schema = state.db().read(migrate::state).await;
    let (status, ready, detail) = match schema {
        Ok(SchemaState::Current) => match state.db().write_failure() {
            None => (StatusCode::OK, true, json!(null)),
            // Reads work, writes do not (disk full, I/O errors): not ready until one commits.
            Some(why) => {
                (StatusCode::SERVICE_UNAVAILABLE, false, json!(format!("writes are failing: {why}")))
            }
        },
        Ok(SchemaState::Readable { found, latest }) => (
            StatusCode::OK,
            true,
            json!(format!(
                "database schema {found} is newer than this hearth ({latest}); its newer migrations are additive"
            )),
        ),
        Ok(SchemaState::Behind { applied, latest }) => (
            StatusCode::SERVICE_UNAVAILABLE,
            false,
            json!(format!("{applied} of {latest} migrations applied: run `hearth migrate`")),
        ),
        Ok(SchemaState::Ahead { found, latest }) => {
            (StatusCode::SERVICE_UNAVAILABLE, false, json!(migrate::too_new(found, latest)))
        }
        Err(e) => {
            tracing::warn!(error = %e, "readiness check could not read the database");
            (StatusCode::SERVICE_UNAVAILABLE, false, json!("database unreachable"))
        }
    };
    let primary = match &role {
        crate::replication::Role::Replica { primary } => json!(primary),
        _ => json!(null),
    };
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "role": role.as_str(),
        "primary": primary,
        "schema_version": migrate::latest_version(),
        "uptime_s": state.uptime_s(),
        "detail": detail,
    });
    (status, axum::Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text format; needs `Bearer HEARTH_METRICS_TOKEN` when set.
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.config().http.metrics_token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let ok = secret::constant_time_eq(&secret::hash(presented), &secret::hash(token.expose()));
        if !ok {
            return (StatusCode::UNAUTHORIZED, "metrics need Authorization: Bearer <HEARTH_METRICS_TOKEN>\n")
                .into_response();
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics().render())
        .into_response()
}
