//! Idempotent turns: a request carrying `Idempotency-Key` starts its run once. A retry of it
//! (the OpenAI SDK retries on timeouts and connection errors) gets that run back instead of a
//! second turn in the session: `POST /v1/runs` answers the same run; a chat turn follows it —
//! replaying its answer when it has one, or joining it while it runs. A chat turn whose run
//! ended without an answer (failed, or cancelled because its client went away) is started
//! again: nothing of it reached the session, so that duplicates nothing.
//!
//! The key is the caller's (organization, credential and user): another caller's equal key is
//! another key. Reused with a different request, it is refused. Keys are kept 24 hours.

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::chat::ChatTurn;
use super::{RunInput, TurnError, Turns};
use crate::auth::Principal;
use crate::db::{idempotency_keys, now_ms};
use crate::domain::run::RunStatus;
use crate::ids::{RunId, SessionId};
use crate::queue::{OnBusy, RunRow};

/// How long keys are kept.
pub const KEY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How long a retry waits for the run of a key used a moment ago to be stored.
const STORED_WITHIN: Duration = Duration::from_secs(2);

/// A client's `Idempotency-Key`: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses a header value.
    ///
    /// # Errors
    /// A message saying what a key may hold.
    pub fn parse(text: &str) -> Result<Self, String> {
        let fits = (1..=255).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic());
        if fits {
            Ok(Self(text.to_owned()))
        } else {
            Err("Idempotency-Key must be 1 to 255 visible ASCII characters (no spaces)".into())
        }
    }
}

/// One use of a key: whose it is, and what it asked for.
struct KeyUse {
    scope: Vec<u8>,
    key: String,
    request: Vec<u8>,
}

impl KeyUse {
    fn new(
        principal: &Principal,
        key: IdempotencyKey,
        input: &RunInput,
        session: Option<&SessionId>,
    ) -> Result<Self, TurnError> {
        let mut scope = Sha256::new();
        for part in
            [principal.org.as_str(), &principal.key.label(), principal.user.as_deref().unwrap_or_default()]
        {
            scope.update(part.as_bytes());
            scope.update([0]);
        }
        let mut request = Sha256::new();
        request.update(serde_json::to_vec(input)?);
        request.update([0]);
        request.update(session.map_or("", SessionId::as_str).as_bytes());
        Ok(Self { scope: scope.finalize().to_vec(), key: key.0, request: request.finalize().to_vec() })
    }

    /// Claims the key for `run`: `None` when it was free (now `run`'s), else the run it
    /// started. A key reused with another request is refused.
    async fn claim(&self, turns: &Turns, run: &RunId) -> Result<Option<RunId>, TurnError> {
        let (scope, key, request, run) =
            (self.scope.clone(), self.key.clone(), self.request.clone(), run.clone());
        let used = turns
            .db
            .write(move |conn| idempotency_keys::claim_key(conn, &scope, &key, &request, &run, now_ms()))
            .await?;
        match used {
            None => Ok(None),
            Some(used) if used.request_hash == self.request => Ok(Some(used.run_id)),
            Some(_) => Err(TurnError::KeyReused),
        }
    }

    /// Forgets the key after its run could not start, so a retry may start it.
    async fn release(&self, turns: &Turns, run: &RunId) {
        let (scope, key, run) = (self.scope.clone(), self.key.clone(), run.clone());
        if let Err(e) = turns.db.write(move |conn| idempotency_keys::drop_key(conn, &scope, &key, &run)).await
        {
            tracing::warn!(error = %e, "could not forget the Idempotency-Key of a turn that did not start");
        }
    }

    /// Points the key at `run` instead of `was`; false when another retry moved it first.
    async fn move_to(&self, turns: &Turns, was: &RunId, run: &RunId) -> Result<bool, TurnError> {
        let (scope, key, was, run) = (self.scope.clone(), self.key.clone(), was.clone(), run.clone());
        Ok(turns.db.write(move |conn| idempotency_keys::move_key(conn, &scope, &key, &was, &run)).await?)
    }
}

impl Turns {
    /// [`Turns::start_run`] once per `key`: a retry gets the run the key started (`true`: a
    /// replay).
    ///
    /// # Errors
    /// As [`Turns::start_run`]; [`TurnError::KeyReused`] for the key of another request.
    pub async fn start_run_once(
        &self,
        principal: &Principal,
        input: RunInput,
        session: Option<SessionId>,
        on_busy: OnBusy,
        key: IdempotencyKey,
    ) -> Result<(RunRow, bool), TurnError> {
        let once = KeyUse::new(principal, key, &input, session.as_ref())?;
        let id = RunId::new();
        let id = match once.claim(self, &id).await? {
            None => id,
            Some(used) => match self.stored_run(principal, &used).await? {
                Some(run) => return Ok((run, true)),
                // Claimed, but its run never stored (its process stopped in between): start it.
                None => used,
            },
        };
        match self.start_run_with(principal, input, session, on_busy, id.clone()).await {
            Ok(run) => Ok((run, false)),
            Err(e) => {
                once.release(self, &id).await;
                Err(e)
            }
        }
    }

    /// [`Turns::start_chat`] once per `key`: a retry follows the run the key started (`true`: a
    /// replay), unless that run ended without an answer — then a new one starts.
    ///
    /// # Errors
    /// As [`Turns::start_chat`]; [`TurnError::KeyReused`] for the key of another request.
    pub async fn start_chat_once(
        &self,
        principal: &Principal,
        input: RunInput,
        session: Option<SessionId>,
        key: IdempotencyKey,
    ) -> Result<(ChatTurn, bool), TurnError> {
        let once = KeyUse::new(principal, key, &input, session.as_ref())?;
        let mut tries = 0;
        let id = loop {
            tries += 1;
            let id = RunId::new();
            let Some(used) = once.claim(self, &id).await? else { break id };
            match self.stored_run(principal, &used).await? {
                Some(run) if !matches!(run.status, RunStatus::Failed | RunStatus::Cancelled) => {
                    return Ok((self.resume_chat(run), true));
                }
                Some(ended) => {
                    // Failed or cancelled: no answer, nothing in the session. Start it again,
                    // unless a concurrent retry already did (then follow that one).
                    let again = RunId::new();
                    if once.move_to(self, &ended.id, &again).await? || tries >= 3 {
                        break again;
                    }
                }
                // Claimed, but its run never stored (its process stopped in between): start it.
                None => break used,
            }
        };
        match self.start_chat_with(principal, input, session, id.clone(), false).await {
            Ok(turn) => Ok((turn, false)),
            Err(e) => {
                once.release(self, &id).await;
                Err(e)
            }
        }
    }

    /// Forgets the keys used longer ago than [`KEY_TTL`]; returns how many.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn prune_idempotency_keys(&self) -> Result<usize, TurnError> {
        let before = now_ms() - i64::try_from(KEY_TTL.as_millis()).unwrap_or(i64::MAX);
        Ok(self.db.write(move |conn| idempotency_keys::prune_keys(conn, before)).await?)
    }

    /// The run a key started, waiting a moment for it to be stored (a concurrent first use
    /// stores it in its dispatch); `None` when it never was.
    async fn stored_run(&self, principal: &Principal, id: &RunId) -> Result<Option<RunRow>, TurnError> {
        let deadline = tokio::time::Instant::now() + STORED_WITHIN;
        loop {
            match self.find_run(principal, id.as_str()).await {
                Ok(run) => return Ok(Some(run)),
                Err(TurnError::NoRun(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(TurnError::NoRun(_)) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }
}
