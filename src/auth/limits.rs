//! Per-key and per-user rate limits (requests per minute), answered with 429 and `Retry-After`.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::AuthError;

/// The configured limits.
pub struct RateLimits {
    per_key: Option<DefaultKeyedRateLimiter<String>>,
    per_user: Option<DefaultKeyedRateLimiter<String>>,
}

fn limiter(rpm: Option<u32>) -> Option<DefaultKeyedRateLimiter<String>> {
    rpm.and_then(NonZeroU32::new).map(|n| RateLimiter::keyed(Quota::per_minute(n)))
}

fn check(limiter: Option<&DefaultKeyedRateLimiter<String>>, key: &str, what: &str) -> Result<(), AuthError> {
    let Some(limiter) = limiter else { return Ok(()) };
    limiter.check_key(&key.to_owned()).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        AuthError::RateLimited {
            message: format!("too many requests for this {what}"),
            retry_after: wait.as_secs() + 1,
        }
    })
}

impl RateLimits {
    /// Limits of `key_rpm` per key and `user_rpm` per user (off when `None`).
    #[must_use]
    pub fn new(key_rpm: Option<u32>, user_rpm: Option<u32>) -> Self {
        Self { per_key: limiter(key_rpm), per_user: limiter(user_rpm) }
    }

    /// Counts one request of `key` (and `user`); 429 when over a limit.
    ///
    /// # Errors
    /// [`AuthError::RateLimited`] with the seconds to wait.
    pub fn check(&self, key: &str, user: Option<&str>) -> Result<(), AuthError> {
        check(self.per_key.as_ref(), key, "API key")?;
        match user {
            Some(user) => check(self.per_user.as_ref(), user, "user"),
            None => Ok(()),
        }
    }
}
