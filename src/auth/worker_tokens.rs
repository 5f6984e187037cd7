//! Worker tokens, the credentials of the worker protocol (SPEC §3): minting (the secret is
//! returned once, only its hash is stored), revoking, and checking the token a worker presents.
//! They are distinct from API keys: each is refused where the other belongs.

use crate::db::worker_tokens::{self, WorkerToken};
use crate::db::{Db, DbError, now_ms};
use crate::ids::WorkerTokenId;

use super::{AuthError, TOUCH_EVERY_MS, secret, unauthorized};

/// The name of a token minted without one.
pub const DEFAULT_NAME: &str = "worker";

/// Why a worker token could not be minted or revoked.
#[derive(Debug, thiserror::Error)]
pub enum WorkerTokenError {
    /// No token has this id, or it is already revoked.
    #[error("no live worker token with id `{0}`")]
    UnknownToken(String),
    /// The name is empty or too long.
    #[error("a worker token name must be 1 to 100 characters")]
    BadName,
    /// Storage failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Mints a worker token named `name`; returns the row and the secret (`hwk_…`), shown once.
///
/// # Errors
/// On a bad name or a storage failure.
pub async fn create_worker_token(db: &Db, name: &str) -> Result<(WorkerToken, String), WorkerTokenError> {
    let name = name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(WorkerTokenError::BadName);
    }
    let secret = secret::generate(secret::WORKER_TOKEN_PREFIX);
    let token = WorkerToken {
        id: WorkerTokenId::new(),
        name,
        prefix: secret::display_prefix(&secret),
        created_at: now_ms(),
        last_used_at: None,
        revoked_at: None,
    };
    let (row, hash) = (token.clone(), secret::hash(&secret));
    db.write(move |conn| worker_tokens::insert_worker_token(conn, &row, &hash)).await?;
    Ok((token, secret))
}

/// Revokes a worker token by id; a worker using it is refused from its next request on.
///
/// # Errors
/// When no live token has this id, or on a storage failure.
pub async fn revoke_worker_token(db: &Db, id: &str) -> Result<WorkerToken, WorkerTokenError> {
    let Ok(token_id) = id.parse::<WorkerTokenId>() else {
        return Err(WorkerTokenError::UnknownToken(id.to_owned()));
    };
    let text = id.to_owned();
    db.write(move |conn| {
        if !worker_tokens::revoke_worker_token(conn, &token_id, now_ms())? {
            return Ok(Err(WorkerTokenError::UnknownToken(text)));
        }
        Ok(worker_tokens::find_worker_token(conn, &token_id)?.ok_or(WorkerTokenError::UnknownToken(text)))
    })
    .await?
}

/// What to tell a caller who presents something other than a live worker token.
const HOW_TO_GET_ONE: &str =
    "the worker protocol takes a worker token (`hwk_…`), made with `hearth workers token create`";

/// Authenticates the bearer token of a worker protocol request: a live worker token, found by
/// its SHA-256 and compared in constant time. Refreshes `last_used_at` at most once a minute, and
/// only when `may_write` (this node may write: not a LiteFS replica); best effort, a failed
/// refresh never fails the request.
///
/// # Errors
/// [`AuthError::Unauthorized`] for an API key (said so), an unknown or revoked token; a
/// storage failure while looking it up.
pub async fn authenticate_worker_token(
    db: &Db,
    token: &str,
    may_write: bool,
) -> Result<WorkerTokenId, AuthError> {
    if token.starts_with(secret::API_KEY_PREFIX) {
        return Err(AuthError::Unauthorized(format!(
            "this is an API key (`{}…`), not a worker token: {HOW_TO_GET_ONE}",
            secret::API_KEY_PREFIX
        )));
    }
    if !token.starts_with(secret::WORKER_TOKEN_PREFIX) {
        return Err(AuthError::Unauthorized(format!("invalid worker token: {HOW_TO_GET_ONE}")));
    }
    let presented = secret::hash(token);
    let found = db.read(move |conn| worker_tokens::find_worker_token_by_hash(conn, &presented)).await?;
    let Some((row, _)) = found.filter(|(_, stored)| secret::constant_time_eq(stored, &presented)) else {
        return Err(unauthorized("invalid worker token"));
    };
    if row.revoked_at.is_some() {
        return Err(unauthorized("this worker token has been revoked"));
    }
    let now = now_ms();
    if may_write && row.last_used_at.is_none_or(|at| now - at > TOUCH_EVERY_MS) {
        let id = row.id.clone();
        if let Err(e) = db.write(move |conn| worker_tokens::touch_worker_token(conn, &id, now)).await {
            tracing::warn!(error = %e, worker_token.id = %row.id, "could not record worker token use");
        }
    }
    Ok(row.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let db = Db::open(&path, 2).unwrap();
        crate::db::migrate::migrate_to(&rusqlite::Connection::open(&path).unwrap(), None).unwrap();
        (dir, db)
    }

    async fn last_used(db: &Db, id: &WorkerTokenId) -> Option<i64> {
        let id = id.clone();
        db.read(move |c| worker_tokens::find_worker_token(c, &id)).await.unwrap().unwrap().last_used_at
    }

    fn refusal(result: Result<WorkerTokenId, AuthError>) -> String {
        match result {
            Err(AuthError::Unauthorized(message)) => message,
            other => panic!("expected 401, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_live_token_authenticates_and_is_touched_at_most_once_a_minute_where_writable() {
        let (_dir, db) = open();
        let (token, secret) = create_worker_token(&db, " ci ").await.unwrap();
        assert!(secret.starts_with("hwk_") && secret.len() == 4 + 64, "{secret}");
        assert_eq!((token.name.as_str(), token.prefix.as_str()), ("ci", &secret[..11]));

        assert_eq!(authenticate_worker_token(&db, &secret, false).await.unwrap(), token.id);
        assert_eq!(last_used(&db, &token.id).await, None, "a node that may not write touches nothing");
        let before = now_ms();
        authenticate_worker_token(&db, &secret, true).await.unwrap();
        assert!(last_used(&db, &token.id).await.is_some_and(|at| at >= before), "touched");

        let set = |at: i64| {
            let id = token.id.clone();
            db.write(move |c| worker_tokens::touch_worker_token(c, &id, at))
        };
        let recent = now_ms() - TOUCH_EVERY_MS / 2;
        set(recent).await.unwrap();
        authenticate_worker_token(&db, &secret, true).await.unwrap();
        assert_eq!(last_used(&db, &token.id).await, Some(recent), "not again within a minute");
        let stale = now_ms() - TOUCH_EVERY_MS - 1;
        set(stale).await.unwrap();
        authenticate_worker_token(&db, &secret, true).await.unwrap();
        assert!(
            last_used(&db, &token.id).await.is_some_and(|at| at > stale + TOUCH_EVERY_MS),
            "touched again"
        );
    }

    #[tokio::test]
    async fn api_keys_unknown_and_revoked_tokens_are_refused() {
        let (_dir, db) = open();
        let (token, secret) = create_worker_token(&db, DEFAULT_NAME).await.unwrap();
        let api_key = secret::generate(secret::API_KEY_PREFIX);
        let message = refusal(authenticate_worker_token(&db, &api_key, true).await);
        assert!(message.contains("API key") && message.contains("not a worker token"), "{message}");
        let message = refusal(authenticate_worker_token(&db, "something-else", true).await);
        assert!(message.contains("invalid worker token"), "{message}");
        let unknown = secret::generate(secret::WORKER_TOKEN_PREFIX);
        let message = refusal(authenticate_worker_token(&db, &unknown, true).await);
        assert!(message.contains("invalid worker token"), "{message}");

        assert_eq!(revoke_worker_token(&db, token.id.as_str()).await.unwrap().id, token.id);
        let message = refusal(authenticate_worker_token(&db, &secret, true).await);
        assert!(message.contains("revoked"), "{message}");
        let again = revoke_worker_token(&db, token.id.as_str()).await;
        assert!(matches!(again, Err(WorkerTokenError::UnknownToken(_))), "{again:?}");
        assert!(matches!(create_worker_token(&db, "  ").await, Err(WorkerTokenError::BadName)));
    }
}
