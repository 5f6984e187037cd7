//! Credential secrets: generation, hashing (SHA-256) and constant-time comparison.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of database API keys.
pub const API_KEY_PREFIX: &str = "hk_";
/// Prefix of generated admin tokens.
pub const ADMIN_TOKEN_PREFIX: &str = "hadm_";
/// Prefix of worker tokens.
pub const WORKER_TOKEN_PREFIX: &str = "hwk_";

/// A new secret: `prefix` followed by 32 random bytes in hex (256 bits of entropy).
#[must_use]
pub fn generate(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// The SHA-256 of a secret: what the database stores instead of it.
#[must_use]
pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares two byte strings in time independent of where they differ.
#[must_use]
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// The first characters of a secret, safe to show in lists (`hk_1a2b3c4d`).
#[must_use]
pub fn display_prefix(secret: &str) -> String {
    secret.chars().take(11).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_unique_and_prefixed() {
        let a = generate(API_KEY_PREFIX);
        let b = generate(API_KEY_PREFIX);
        assert_ne!(a, b);
        assert!(a.starts_with("hk_") && a.len() == 3 + 64);
    }

    #[test]
    fn comparison_and_hashing() {
        assert!(constant_time_eq(&hash("x"), &hash("x")));
        assert!(!constant_time_eq(&hash("x"), &hash("y")));
        assert!(!constant_time_eq(b"ab", b"abc"));
    }
}
