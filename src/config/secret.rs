//! [`Secret`]: a setting (API key, token) whose `Debug` never shows its value.

use std::fmt;
use std::str::FromStr;

/// A secret setting (API key, token). Its `Debug` never shows the value (it has no `Display`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself; use only to compare or hash, never to log.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl FromStr for Secret {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            Err("must not be empty".into())
        } else if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Err("must not contain whitespace or control characters".into())
        } else {
            Ok(Self(s.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug() {
        let secret: Secret = "hk_verysecret".parse().unwrap();
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert!(!format!("{:?}", Some(secret)).contains("verysecret"));
    }
}
