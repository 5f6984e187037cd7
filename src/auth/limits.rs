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

impl RateLimits {
    /// Forgets the keys and users whose limit has fully replenished (their state is that of one
    /// never seen): without it the maps keep one entry per key and user ever seen.
    pub fn prune(&self) {
        for limiter in [self.per_key.as_ref(), self.per_user.as_ref()].into_iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// How many keys and users the limits remember (for tests and metrics).
    #[must_use]
    pub fn remembered(&self) -> usize {
        [self.per_key.as_ref(), self.per_user.as_ref()].into_iter().flatten().map(|l| l.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_maps_forget_keys_whose_limit_has_replenished() {
        // 60,000 a minute: one request's cell comes back within a millisecond.
        let limits = RateLimits::new(Some(60_000), Some(60_000));
        for i in 0..100 {
            limits.check(&format!("key{i}"), Some(&format!("user{i}"))).unwrap();
        }
        assert_eq!(limits.remembered(), 200);
        std::thread::sleep(std::time::Duration::from_millis(20));
        limits.prune();
        assert_eq!(limits.remembered(), 0, "replenished entries are forgotten");
        let strict = RateLimits::new(Some(1), None);
        strict.check("busy", None).unwrap();
        strict.prune();
        assert_eq!(strict.remembered(), 1, "a key still limited is kept");
        assert!(strict.check("busy", None).is_err());
    }
}
