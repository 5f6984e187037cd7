//! Admin logins: the admin token checked in constant time against HEARTH_ADMIN_TOKEN and the
//! stored hashes, a per-client rate limit on attempts, and server-side login sessions.
//!
//! A login is a random cookie value whose SHA-256 is stored in `admin_sessions` with an expiry
//! (server-side, so logout and expiry end it for certain, and no signing key has to be managed
//! or rotated). Its CSRF token is derived from the cookie value (SHA-256 of a label and the
//! value): only a holder of the cookie can know it, and nothing more is stored.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};

use super::{AdminError, AdminSettings};
use crate::auth::secret;
use crate::db::{Db, DbError, admin_sessions, admin_tokens, now_ms};

/// Prefix of login cookie values.
const COOKIE_PREFIX: &str = "hads_";

/// A new login: the cookie value to set (shown to this browser only) and when it expires.
#[derive(Debug, Clone)]
pub struct NewLogin {
    /// The cookie's value.
    pub cookie: String,
    /// Unix ms.
    pub expires_at: i64,
}

/// A live login.
#[derive(Debug, Clone)]
pub struct LoginSession {
    /// The CSRF token every form of this login carries.
    pub csrf: String,
    /// Unix ms.
    pub expires_at: i64,
}

impl LoginSession {
    /// Whether `token` is this login's CSRF token (constant time).
    #[must_use]
    pub fn csrf_matches(&self, token: &str) -> bool {
        secret::constant_time_eq(self.csrf.as_bytes(), token.as_bytes())
    }
}

/// The CSRF token of the login whose cookie value is `cookie`.
fn csrf_of(cookie: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"hearth admin csrf\0");
    hasher.update(cookie.as_bytes());
    hex::encode(hasher.finalize())
}

pub(super) struct Logins {
    env_hash: Option<[u8; 32]>,
    ttl_ms: i64,
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl Logins {
    pub(super) fn new(settings: &AdminSettings) -> Self {
        let per_minute = NonZeroU32::new(settings.logins_per_minute).unwrap_or(NonZeroU32::MIN);
        Self {
            env_hash: settings.env_token.as_ref().map(|t| secret::hash(t.expose())),
            ttl_ms: i64::try_from(settings.session_ttl.as_millis()).unwrap_or(i64::MAX),
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
        }
    }

    pub(super) async fn verify(&self, db: &Db, token: &str) -> Result<bool, DbError> {
        let hash = secret::hash(token.trim());
        if let Some(expected) = &self.env_hash
            && secret::constant_time_eq(expected, &hash)
        {
            return Ok(true);
        }
        let found = db.read(move |conn| admin_tokens::find_admin_token_by_hash(conn, &hash)).await?;
        Ok(found.is_some_and(|(_, stored)| secret::constant_time_eq(&stored, &hash)))
    }

    pub(super) async fn login(&self, db: &Db, client: IpAddr, token: &str) -> Result<NewLogin, AdminError> {
        self.limiter.check_key(&client).map_err(|not_until| AdminError::RateLimited {
            retry_after: not_until.wait_time_from(DefaultClock::default().now()).as_secs() + 1,
        })?;
        if token.trim().is_empty() || !self.verify(db, token).await? {
            return Err(AdminError::BadToken);
        }
        let cookie = secret::generate(COOKIE_PREFIX);
        let hash = secret::hash(&cookie);
        let now = now_ms();
        let expires_at = now.saturating_add(self.ttl_ms);
        db.write(move |conn| {
            admin_sessions::delete_expired_admin_sessions(conn, now)?;
            admin_sessions::insert_admin_session(conn, &hash, now, expires_at)
        })
        .await?;
        Ok(NewLogin { cookie, expires_at })
    }

    pub(super) async fn session(&self, db: &Db, cookie: &str) -> Result<Option<LoginSession>, DbError> {
        if !cookie.starts_with(COOKIE_PREFIX) {
            return Ok(None);
        }
        let hash = secret::hash(cookie);
        let found = db.read(move |conn| admin_sessions::find_admin_session(conn, &hash, now_ms())).await?;
        Ok(found
            .filter(|(stored, _)| secret::constant_time_eq(stored, &hash))
            .map(|(_, expires_at)| LoginSession { csrf: csrf_of(cookie), expires_at }))
    }

    pub(super) async fn logout(&self, db: &Db, cookie: &str) -> Result<(), DbError> {
        let hash = secret::hash(cookie);
        db.write(move |conn| admin_sessions::delete_admin_session(conn, &hash)).await?;
        Ok(())
    }

    pub(super) fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_belong_to_one_cookie() {
        assert_eq!(csrf_of("hads_a"), csrf_of("hads_a"));
        assert_ne!(csrf_of("hads_a"), csrf_of("hads_b"));
        let login = LoginSession { csrf: csrf_of("hads_a"), expires_at: 0 };
        assert!(login.csrf_matches(&csrf_of("hads_a")));
        assert!(!login.csrf_matches(""));
        assert!(!login.csrf_matches("hads_a"));
    }
}
