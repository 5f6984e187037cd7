//! The public error of every `/v1/*` answer, in OpenAI's shape, and its mapping from the
//! services' own errors.
//!
//! `ApiError` variants name outcomes a client acts on differently. Every service error enum
//! (`AuthError`, `TurnError`, `DbError`, …) becomes an `ApiError` here, through `From`, and
//! nowhere else: this is the one place a 5xx cause is logged.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::admin::AdminError;
use crate::auth::AuthError;
use crate::auth::keys::KeyError;
use crate::domain::outcome::ErrorCode;
use crate::fleet::FleetError;
use crate::runner::FlagError;
use crate::turns::TurnError;

/// An error answered to an API client as `{"error":{"message","type","param","code"}}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or asks for something unsupported.
    #[error("{message}")]
    InvalidRequest {
        /// What is wrong and what to do instead.
        message: String,
        /// The offending request field, if one.
        param: Option<String>,
    },
    /// 401: no or bad credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: credentials are valid but not for this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such thing, or not the caller's (ids do not leak).
    #[error("{message}")]
    NotFound {
        /// What was not found.
        message: String,
        /// OpenAI's code, e.g. `model_not_found`.
        code: &'static str,
    },
    /// 409: conflicts with the current state (e.g. a busy session with `on_busy: reject`).
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is larger than `HEARTH_MAX_BODY`.
    #[error("request body is larger than the limit of {limit} bytes (HEARTH_MAX_BODY)")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// 408: the request body did not arrive within `HEARTH_BODY_TIMEOUT_S`.
    #[error("the request body did not arrive within {seconds} s (HEARTH_BODY_TIMEOUT_S)")]
    RequestTimeout {
        /// The deadline in seconds.
        seconds: u64,
    },
    /// 429: over a rate limit; retry after this many seconds.
    #[error("rate limit exceeded: {message}")]
    RateLimited {
        /// Which limit.
        message: String,
        /// Seconds until a retry can succeed.
        retry_after: u64,
    },
    /// 502: the upstream model provider failed.
    #[error("{0}")]
    Upstream(String),
    /// 504: the upstream model provider did not answer in time.
    #[error("{0}")]
    UpstreamTimeout(String),
    /// 500: the run ended with an error that is not the upstream's (e.g. max_steps).
    #[error("{0}")]
    RunFailed(String),
    /// 503: this node cannot serve the request now (shutting down, not ready).
    #[error("{0}")]
    Unavailable(String),
    /// 503: the database failed (busy, full, I/O error); the same request may succeed shortly.
    #[error(
        "hearth's database could not complete this request (the cause is in hearth's log); retry in a few seconds"
    )]
    StorageUnavailable,
    /// 500: an internal failure, already logged.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// A 400 about `param`.
    #[must_use]
    pub fn invalid(param: Option<&str>, message: impl Into<String>) -> Self {
        Self::InvalidRequest { message: message.into(), param: param.map(str::to_owned) }
    }

    /// A 404 with the generic `not_found` code.
    #[must_use]
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound { message: message.into(), code: "not_found" }
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Unavailable(_) | Self::StorageUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal | Self::RunFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's `type` and `code` for this error.
    #[must_use]
    pub fn kind(&self) -> (&'static str, &'static str) {
        match self {
            Self::InvalidRequest { .. } => ("invalid_request_error", "invalid_request"),
            Self::Unauthorized(_) => ("invalid_request_error", "invalid_api_key"),
            Self::Forbidden(_) => ("permission_error", "forbidden"),
            Self::NotFound { code, .. } => ("invalid_request_error", code),
            Self::Conflict(_) => ("invalid_request_error", "conflict"),
            Self::PayloadTooLarge { .. } => ("invalid_request_error", "request_too_large"),
            Self::RequestTimeout { .. } => ("invalid_request_error", "request_timeout"),
            Self::RateLimited { .. } => ("rate_limit_error", "rate_limit_exceeded"),
            Self::Upstream(_) => ("api_error", "upstream_error"),
            Self::UpstreamTimeout(_) => ("api_error", "upstream_timeout"),
            Self::Unavailable(_) => ("api_error", "unavailable"),
            Self::StorageUnavailable => ("api_error", "storage_unavailable"),
            Self::RunFailed(_) => ("server_error", "run_failed"),
            Self::Internal => ("server_error", "internal_error"),
        }
    }

    /// The JSON body.
    #[must_use]
    pub fn body(&self) -> serde_json::Value {
        let (kind, code) = self.kind();
        let param = match self {
            Self::InvalidRequest { param, .. } => param.clone(),
            _ => None,
        };
        json!({"error": {"message": self.to_string(), "type": kind, "param": param, "code": code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if let Self::RateLimited { retry_after, .. } = &self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        if matches!(self, Self::StorageUnavailable) {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(STORAGE_RETRY_AFTER_S));
        }
        if matches!(self, Self::Unauthorized(_)) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Seconds a client is told to wait before retrying after a storage failure.
const STORAGE_RETRY_AFTER_S: u64 = 2;

impl ApiError {
    /// The answer to a storage failure (logged here, once): 503 with `Retry-After` when the
    /// storage itself failed (busy, full, I/O), else 500.
    fn storage(error: &dyn std::fmt::Display, transient: bool) -> Self {
        tracing::error!(error = %error, transient, "database failure while serving a request");
        if transient { Self::StorageUnavailable } else { Self::Internal }
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Unauthorized(message) => Self::Unauthorized(message),
            AuthError::Forbidden(message) => Self::Forbidden(message),
            AuthError::RateLimited { message, retry_after } => Self::RateLimited { message, retry_after },
            AuthError::Db(e) => Self::storage(&e, e.is_transient()),
        }
    }
}

impl From<TurnError> for ApiError {
    fn from(error: TurnError) -> Self {
        match error {
            TurnError::UnknownModel(_) => {
                Self::NotFound { message: error.to_string(), code: "model_not_found" }
            }
            TurnError::NoSession(_) | TurnError::NoRun(_) => Self::not_found(error.to_string()),
            TurnError::Busy(_) => Self::Conflict(error.to_string()),
            TurnError::KeyReused => Self::invalid(Some("Idempotency-Key"), error.to_string()),
            TurnError::ToolCollision(_) => Self::invalid(Some("tools"), error.to_string()),
            TurnError::NoWorker { .. } => Self::Unavailable(error.to_string()),
            TurnError::Retried { .. } => Self::RunFailed(error.to_string()),
            TurnError::Ended(end) => {
                let message = end.error.message;
                match end.error.code {
                    ErrorCode::UpstreamTimeout => Self::UpstreamTimeout(message),
                    ErrorCode::UpstreamError => Self::Upstream(message),
                    ErrorCode::Cancelled => Self::Conflict(format!("the run was cancelled: {message}")),
                    code => {
                        tracing::warn!(message, code = %code, "chat run failed");
                        Self::RunFailed(message)
                    }
                }
            }
            TurnError::Db(e) => Self::storage(&e, e.is_transient()),
            TurnError::Unrecorded | TurnError::Encode(_) => {
                tracing::error!(error = %error, "a turn failed inside hearth");
                Self::Internal
            }
        }
    }
}

impl From<FleetError> for ApiError {
    fn from(error: FleetError) -> Self {
        match error {
            FleetError::Invalid { param, message } => Self::invalid(Some(param), message),
            FleetError::Gap(_) => Self::invalid(Some("from_seq"), error.to_string()),
            FleetError::TooOld(message) => Self::Forbidden(message),
            FleetError::UnknownWorker(_) | FleetError::NoRun(_) => Self::not_found(error.to_string()),
            FleetError::Fenced { .. } => Self::Conflict(error.to_string()),
            FleetError::Db(e) => Self::storage(&e, e.is_transient()),
        }
    }
}

impl From<AdminError> for ApiError {
    fn from(error: AdminError) -> Self {
        match error {
            AdminError::BadToken => Self::Unauthorized(error.to_string()),
            AdminError::RateLimited { retry_after } => Self::RateLimited {
                message: "too many admin login attempts from this address".into(),
                retry_after,
            },
            AdminError::Invalid { param, message } => Self::invalid(Some(param), message),
            AdminError::NotFound(message) => Self::not_found(message),
            AdminError::Flag(FlagError::UnknownOrg(_)) => Self::not_found(error.to_string()),
            AdminError::Flag(FlagError::UnknownRunner(_)) => Self::invalid(Some("runner"), error.to_string()),
            AdminError::Flag(FlagError::NoHealthyWorker { .. }) => Self::Conflict(error.to_string()),
            AdminError::Flag(FlagError::Db(e)) | AdminError::Key(KeyError::Db(e)) | AdminError::Db(e) => {
                Self::storage(&e, e.is_transient())
            }
            AdminError::Key(KeyError::UnknownOrg(_) | KeyError::UnknownKey(_)) => {
                Self::not_found(error.to_string())
            }
            AdminError::Key(KeyError::BadName) => Self::invalid(Some("name"), error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_openai_shape() {
        let body = ApiError::invalid(Some("n"), "n must be 1").body();
        assert_eq!(body["error"]["message"], "n must be 1");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], "n");
        let limited = ApiError::RateLimited { message: "key".into(), retry_after: 7 };
        let response = limited.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    }

    #[test]
    fn storage_failures_are_503_with_a_retry_hint_and_other_database_errors_500() {
        let full = ApiError::storage(&"database or disk is full", true);
        assert_eq!(full, ApiError::StorageUnavailable);
        let response = full.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(ApiError::StorageUnavailable.kind(), ("api_error", "storage_unavailable"));
        assert_eq!(ApiError::storage(&"stored JSON: bad", false), ApiError::Internal);
    }
}
