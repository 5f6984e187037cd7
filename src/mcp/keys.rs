//! The user-assertion signing key: an Ed25519 key from HEARTH_MCP_SIGNING_KEY, or generated on
//! the primary's first start and stored in the database (so replicas and restarts share it);
//! the [`Signer`] that mints assertions with it, and the JWKS that publishes it.
//!
//! An assertion is a JWT (`alg: EdDSA`, `kid`), minted for each HTTP request to a server with
//! `user_assertion: true`: `iss` (HEARTH_MCP_ISSUER), `sub` (the user), `org`, `aud` (the
//! server's URL), `iat`, `exp` = `iat` + [`ASSERTION_TTL_S`], `jti` (unique).

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::db::mcp_signing_keys::{self, StoredKey};
use crate::db::{Db, DbError, now_ms};

/// Lifetime of an assertion, in seconds (the spec's bound is 5 minutes).
pub const ASSERTION_TTL_S: u64 = 120;

/// Why no signing key could be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// HEARTH_MCP_SIGNING_KEY (or a stored key) is not an Ed25519 PKCS#8 key.
    #[error("{0}")]
    Invalid(String),
    /// A replica found no stored key: the primary creates it on its first start.
    #[error(
        "no MCP signing key is stored yet and this node may not write: start the primary first (it creates one), or set HEARTH_MCP_SIGNING_KEY"
    )]
    NoneStored,
    /// Storage failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// An Ed25519 key pair with its key id.
pub struct SigningKey {
    kid: String,
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.kid)
    }
}

impl SigningKey {
    /// A key from PKCS#8 DER (v1, as `openssl genpkey` writes, or v2).
    ///
    /// # Errors
    /// Not an Ed25519 PKCS#8 key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| KeyError::Invalid(format!("not an Ed25519 PKCS#8 private key: {e}")))?;
        let public = pair.public_key().as_ref().to_vec();
        Ok(Self { kid: thumbprint(&public), pkcs8: der.to_vec(), public })
    }

    /// A key from PKCS#8 PEM (HEARTH_MCP_SIGNING_KEY).
    ///
    /// # Errors
    /// A message naming HEARTH_MCP_SIGNING_KEY.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let block = pem::parse(text)
            .map_err(|e| KeyError::Invalid(format!("HEARTH_MCP_SIGNING_KEY: not a PEM block: {e}")))?;
        Self::from_pkcs8(block.contents())
            .map_err(|e| KeyError::Invalid(format!("HEARTH_MCP_SIGNING_KEY: {e}")))
    }

    /// A new random key.
    ///
    /// # Errors
    /// If the system's random source fails.
    pub fn generate() -> Result<Self, KeyError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| KeyError::Invalid("could not generate an Ed25519 key".into()))?;
        Self::from_pkcs8(doc.as_ref())
    }

    /// Its key id: the RFC 7638 JWK thumbprint.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Its public half as a JWK.
    #[must_use]
    pub fn jwk(&self) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(&self.public),
               "kid": self.kid, "use": "sig", "alg": "EdDSA"})
    }
}

/// RFC 7638: SHA-256 over the required members in lexicographic order, base64url.
fn thumbprint(public: &[u8]) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, URL_SAFE_NO_PAD.encode(public));
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(canonical.as_bytes()))
}

/// Loads the signing keys: HEARTH_MCP_SIGNING_KEY when set, else the stored ones — created and
/// stored first when none exists and this node may write. The first key signs; all are published.
///
/// # Errors
/// A bad key, no key on a replica, or a storage failure.
pub async fn load(db: &Db, configured: Option<&str>, may_write: bool) -> Result<Vec<SigningKey>, KeyError> {
    if let Some(pem) = configured {
        return Ok(vec![SigningKey::from_pem(pem)?]);
    }
    let stored = db.read(mcp_signing_keys::list_live_keys).await?;
    let stored = if stored.is_empty() && may_write {
        let key = SigningKey::generate()?;
        let row = StoredKey { kid: key.kid.clone(), private_key: key.pkcs8.clone(), created_at: now_ms() };
        if db.write(move |c| mcp_signing_keys::insert_first_key(c, &row)).await? {
            tracing::info!(kid = %key.kid, "generated the MCP user-assertion signing key and stored it in the database");
        }
        db.read(mcp_signing_keys::list_live_keys).await?
    } else {
        stored
    };
    if stored.is_empty() {
        return Err(KeyError::NoneStored);
    }
    stored.iter().map(|k| SigningKey::from_pkcs8(&k.private_key)).collect()
}

/// The claims of an assertion.
#[derive(Debug, Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    org: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    jti: String,
}

/// Mints user assertions and publishes the keys that verify them.
pub struct Signer {
    keys: Vec<SigningKey>,
    encoding: jsonwebtoken::EncodingKey,
    header: jsonwebtoken::Header,
    issuer: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer(iss {}, keys {:?})", self.issuer, self.keys)
    }
}

impl Signer {
    /// A signer with `keys` (the first signs; none: nothing to sign with).
    #[must_use]
    pub fn new(keys: Vec<SigningKey>, issuer: String) -> Option<Self> {
        let first = keys.first()?;
        let encoding = jsonwebtoken::EncodingKey::from_ed_der(&first.pkcs8);
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(first.kid.clone());
        Some(Self { keys, encoding, header, issuer })
    }

    /// A fresh assertion that hearth vouches for `user` of `org` to the server at `audience`.
    ///
    /// # Errors
    /// If signing fails (a key that loaded always signs).
    pub fn assertion(
        &self,
        user: &str,
        org: &str,
        audience: &str,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let iat = u64::try_from(now_ms() / 1000).unwrap_or_default();
        let claims = Claims {
            iss: &self.issuer,
            sub: user,
            org,
            aud: audience,
            iat,
            exp: iat + ASSERTION_TTL_S,
            jti: uuid::Uuid::now_v7().simple().to_string(),
        };
        jsonwebtoken::encode(&self.header, &claims, &self.encoding)
    }

    /// `GET /.well-known/jwks.json`: every published key.
    #[must_use]
    pub fn jwks(&self) -> Value {
        json!({"keys": self.keys.iter().map(SigningKey::jwk).collect::<Vec<_>>()})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl genpkey -algorithm ed25519` output (a throwaway test key; PKCS#8 v1).
    const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEILGY6fprH4VzKVnDZiVKVHllX42IPUnsbnnHgcnA5Ojq\n-----END PRIVATE KEY-----";

    #[test]
    fn an_assertion_verifies_with_the_published_key() {
        let key = SigningKey::from_pem(PEM).unwrap();
        let kid = key.kid().to_owned();
        let signer = Signer::new(vec![key], "hearth-test".into()).unwrap();
        let token = signer.assertion("alice", "org_1", "http://127.0.0.1:9/mcp").unwrap();
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(signer.jwks()).unwrap();
        let jwk = jwks.find(&kid).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        validation.set_audience(&["http://127.0.0.1:9/mcp"]);
        validation.set_issuer(&["hearth-test"]);
        let data = jsonwebtoken::decode::<Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
            &validation,
        )
        .unwrap();
        assert_eq!(data.claims["sub"], "alice");
        assert_eq!(data.claims["org"], "org_1");
        let ttl = data.claims["exp"].as_u64().unwrap() - data.claims["iat"].as_u64().unwrap();
        assert!(ttl <= 300, "exp is at most 5 minutes after iat");
        let other = signer.assertion("alice", "org_1", "http://127.0.0.1:9/mcp").unwrap();
        let other: Value = jsonwebtoken::dangerous::insecure_decode(&other).unwrap().claims;
        assert_ne!(other["jti"], data.claims["jti"]);
    }

    #[test]
    fn the_kid_is_the_rfc7638_thumbprint() {
        // RFC 8037 appendix A.3: the thumbprint of its example Ed25519 key.
        let public = URL_SAFE_NO_PAD.decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").unwrap();
        assert_eq!(thumbprint(&public), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn bad_keys_name_the_setting() {
        let err =
            SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----").unwrap_err();
        assert!(err.to_string().starts_with("HEARTH_MCP_SIGNING_KEY:"), "{err}");
    }

    fn migrated() -> (tempfile::TempDir, Db) {
        let (dir, db) = crate::db::open_temp();
        let conn = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
        crate::db::migrate::migrate_to(&conn, None).unwrap();
        (dir, db)
    }

    #[tokio::test]
    async fn a_generated_key_is_stored_once_and_reused() {
        let (_dir, db) = migrated();
        let first = load(&db, None, true).await.unwrap();
        let again = load(&db, None, true).await.unwrap();
        assert_eq!(first[0].kid(), again[0].kid());
        assert_eq!(load(&db, None, false).await.unwrap()[0].kid(), first[0].kid());
        let (_dir2, empty) = migrated();
        assert!(matches!(load(&empty, None, false).await, Err(KeyError::NoneStored)));
    }
}
