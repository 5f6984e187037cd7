//! User JWTs beyond the basics (RFC 8725): `nbf`, a maximum lifetime, keys chosen by `kid` from a
//! JWKS (rotation), the algorithm fixed by the key (no HS256 with a public key), and refused
//! settings (a short HS256 secret, a JWKS key without `kid`).

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::runs::{Api, assert_error, echo, options};
use crate::support::{self, command_in, stderr_of};

/// Two Ed25519 key pairs made for these tests (never used anywhere else).
const KEY_A: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEINspNPneRVzFoxEe/BOy1+kLyJouydDWgkDON9SA8x0p
-----END PRIVATE KEY-----
";
const PUB_A: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEA6mWFCicQ5yV/mk7AWjrpkew6LNS3z6tGojyEfQK5D/o=
-----END PUBLIC KEY-----
";
const X_A: &str = "6mWFCicQ5yV_mk7AWjrpkew6LNS3z6tGojyEfQK5D_o";
const KEY_B: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIANf9aBDY2Ab1SO/vR0oXdjSWniJitcEktmL1D+sIkNV
-----END PRIVATE KEY-----
";
const X_B: &str = "QZlgTezd3k-m9QUUFls-DOoCR61hQBAkW5VuFNT5IPo";

/// A JWKS publishing both keys, as `a` and `b`.
fn jwks() -> String {
    json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "x": X_A, "kid": "a", "use": "sig"},
        {"kty": "OKP", "crv": "Ed25519", "x": X_B, "kid": "b", "alg": "EdDSA"},
    ]})
    .to_string()
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// An EdDSA token signed with `private_pem`, its header naming `kid`.
fn ed_token(private_pem: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_pem(private_pem.as_bytes()).unwrap()).unwrap()
}

fn hs_token(secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn valid(sub: &str) -> Value {
    json!({"sub": sub, "exp": now_s() + 600, "iat": now_s()})
}

async fn assert_refused(api: &Api, token: &str, why: &str, says: &str) {
    let body = assert_error(api.as_user(token).post_run(&echo("x")).await, 401, "invalid_api_key").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(says), "{why}: expected {says:?} in {message:?}");
}

#[tokio::test]
async fn keys_of_a_jwks_are_chosen_by_kid() {
    let hearth = options().env("HEARTH_JWT_JWKS", &jwks()).start().await;
    let api = Api::new(&hearth);
    // Both keys are live at once: a rotation in progress.
    let run = api.as_user(&ed_token(KEY_A, Some("a"), &valid("alice"))).start(&echo("a")).await;
    assert!(run["status"].is_string(), "{run}");
    api.as_user(&ed_token(KEY_B, Some("b"), &valid("bob"))).start(&echo("b")).await;

    assert_refused(&api, &ed_token(KEY_B, Some("a"), &valid("x")), "key b under kid a", "bad signature")
        .await;
    assert_refused(&api, &ed_token(KEY_A, Some("c"), &valid("x")), "unknown kid", "kid").await;
    assert_refused(&api, &ed_token(KEY_A, None, &valid("x")), "no kid", "without a `kid`").await;
}

#[tokio::test]
async fn an_hs256_token_is_refused_when_only_a_public_key_is_configured() {
    let hearth = options().env("HEARTH_JWT_PUBLIC_KEY", PUB_A).start().await;
    let api = Api::new(&hearth);
    api.as_user(&ed_token(KEY_A, None, &valid("alice"))).start(&echo("ok")).await;
    // The classic confusion: the public key's own text used as an HMAC secret.
    let forged = hs_token(PUB_A.as_bytes(), &valid("mallory"));
    assert_refused(&api, &forged, "HS256 signed with the public key", "HS256").await;
}

#[tokio::test]
async fn nbf_and_the_maximum_lifetime_are_enforced() {
    let secret = "jwt-lifetime-test-secret-0123456789abcdef";
    let hearth =
        options().env("HEARTH_JWT_SECRET", secret).env("HEARTH_JWT_MAX_LIFETIME_S", "3600").start().await;
    let api = Api::new(&hearth);
    let now = now_s();
    api.as_user(&hs_token(secret.as_bytes(), &json!({"sub": "u", "exp": now + 3000, "nbf": now - 10})))
        .start(&echo("ok"))
        .await;
    let cases = [
        (json!({"sub": "u", "exp": now + 600, "nbf": now + 300}), "not valid yet"),
        (json!({"sub": "u", "exp": now + 7200}), "HEARTH_JWT_MAX_LIFETIME_S"),
        (json!({"sub": "u", "exp": now + 600, "iat": now - 7200}), "HEARTH_JWT_MAX_LIFETIME_S"),
        (json!({"sub": "u", "exp": now + 600, "iat": now + 300}), "issued in the future"),
    ];
    for (claims, says) in cases {
        assert_refused(&api, &hs_token(secret.as_bytes(), &claims), &claims.to_string(), says).await;
    }
}

#[test]
fn a_short_hs256_secret_or_a_jwks_key_without_kid_stops_start_up() {
    let no_kid = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": X_A}]}).to_string();
    for (setting, value, says) in [
        ("HEARTH_JWT_SECRET", "only-twenty-chars-xx", "HEARTH_JWT_SECRET"),
        ("HEARTH_JWT_JWKS", no_kid.as_str(), "HEARTH_JWT_JWKS: key 0: has no `kid`"),
        ("HEARTH_JWT_JWKS", "/nonexistent/jwks.json", "HEARTH_JWT_JWKS: cannot read"),
    ] {
        let dir = support::data_dir();
        let out = support::run(command_in(dir.path()).env(setting, value).env("PORT", "0").arg("serve"));
        let stderr = stderr_of(&out);
        assert!(!out.status.success(), "{setting}={value}: started anyway:\n{stderr}");
        assert!(stderr.contains(says), "{setting}={value}: expected {says:?} in:\n{stderr}");
        assert!(!stderr.contains("\"listening\""), "{setting}: listened:\n{stderr}");
    }
}
