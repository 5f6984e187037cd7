//! User identity: the `X-Runtime-User` JWT — HS256 with a secret, or RS256/ES256/EdDSA with a
//! PEM public key or the keys of a JWKS (selected by the token's `kid`, so keys can rotate).
//!
//! The rules follow RFC 8725: the algorithm comes from the key, never from the token (an HS256
//! token is refused when only public keys are configured, so a public key can never serve as an
//! HMAC secret); `alg: none` never verifies; `exp` is required, `nbf` and `iat` are honoured, and
//! a token may not live longer than `HEARTH_JWT_MAX_LIFETIME_S`.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

use super::AuthError;
use crate::config::ServeConfig;

/// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
const LEEWAY_S: u64 = 5;

/// Claims hearth reads from a user JWT.
#[derive(Debug, Clone, Deserialize)]
pub struct UserClaims {
    /// The user's id.
    pub sub: String,
    /// Expiry (Unix seconds); required.
    pub exp: u64,
    /// Issued at (Unix seconds), if the token says.
    #[serde(default)]
    pub iat: Option<u64>,
    /// Organization id or slug.
    #[serde(default)]
    pub org: Option<String>,
}

/// One verification key: its algorithm, and its `kid` when it came from a JWKS.
struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// Verifies user JWTs.
pub struct JwtVerifier {
    keys: Vec<Key>,
    issuer: Option<String>,
    audience: Option<String>,
    max_lifetime_s: u64,
}

impl JwtVerifier {
    /// Builds the verifier from settings; `None` when no key is configured.
    ///
    /// # Errors
    /// A message naming the setting when a key does not parse.
    pub fn from_config(config: &ServeConfig) -> Result<Option<Self>, String> {
        let mut keys = Vec::new();
        if let Some(secret) = &config.auth.jwt_secret {
            if secret.expose().len() < 32 {
                return Err("HEARTH_JWT_SECRET must be at least 32 characters (RFC 7518 asks for a \
                            256-bit key for HS256)"
                    .into());
            }
            let key = DecodingKey::from_secret(secret.expose().as_bytes());
            keys.push(Key { kid: None, alg: Algorithm::HS256, key });
        }
        if let Some(pem) = &config.auth.jwt_public_key {
            let (alg, key) = public_key(pem)?;
            keys.push(Key { kid: None, alg, key });
        }
        if let Some(jwks) = &config.auth.jwt_jwks {
            keys.extend(jwks_keys(jwks)?);
        }
        if keys.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            keys,
            issuer: config.auth.jwt_issuer.clone(),
            audience: config.auth.jwt_audience.clone(),
            max_lifetime_s: config.auth.jwt_max_lifetime_s,
        }))
    }

    /// Verifies a token and returns its claims.
    ///
    /// # Errors
    /// 401 for a malformed, unsigned, wrongly signed, expired, not yet valid, too long-lived or
    /// mis-addressed token, or one whose `kid` names no configured key.
    pub fn verify(&self, token: &str) -> Result<UserClaims, AuthError> {
        let unauthorized =
            |why: &str| AuthError::Unauthorized(format!("invalid X-Runtime-User token: {why}"));
        let header =
            decode_header(token).map_err(|_| unauthorized("malformed or unsigned (alg none is refused)"))?;
        let key = match &header.kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid.as_str()))
                .ok_or_else(|| unauthorized("its `kid` names no configured key"))?,
            None => self.keys.iter().find(|k| k.kid.is_none() && k.alg == header.alg).ok_or_else(|| {
                unauthorized(&format!(
                    "algorithm {:?} is not accepted without a `kid` (configured keys decide the algorithm)",
                    header.alg
                ))
            })?,
        };
        if key.alg != header.alg {
            return Err(unauthorized(&format!("algorithm {:?} does not match its key", header.alg)));
        }
        let mut validation = Validation::new(key.alg);
        let mut required = vec!["exp", "sub"];
        if self.issuer.is_some() {
            required.push("iss");
        }
        if self.audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation.leeway = LEEWAY_S;
        validation.validate_nbf = true;
        match &self.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
        }
        let data = decode::<UserClaims>(token, &key.key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => unauthorized("expired"),
                ErrorKind::ImmatureSignature => unauthorized("not valid yet (`nbf`)"),
                ErrorKind::InvalidSignature => unauthorized("bad signature"),
                ErrorKind::InvalidIssuer => unauthorized("wrong issuer"),
                ErrorKind::InvalidAudience => unauthorized("wrong audience"),
                ErrorKind::MissingRequiredClaim(claim) => unauthorized(&format!("missing claim `{claim}`")),
                _ => unauthorized("could not be verified"),
            }
        })?;
        let claims = data.claims;
        check_lifetime(&claims, now_s(), self.max_lifetime_s).map_err(&unauthorized)?;
        if claims.sub.is_empty() || claims.sub.len() > 256 {
            return Err(unauthorized("`sub` must be 1 to 256 characters"));
        }
        Ok(claims)
    }
}

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Refuses a token issued in the future, or living longer than `max_s` (from its `iat`, and
/// from now for a token without one).
fn check_lifetime(claims: &UserClaims, now: u64, max_s: u64) -> Result<(), &'static str> {
    if let Some(iat) = claims.iat {
        if iat > now.saturating_add(LEEWAY_S) {
            return Err("issued in the future (`iat`)");
        }
        if claims.exp.saturating_sub(iat) > max_s {
            return Err("lives longer than HEARTH_JWT_MAX_LIFETIME_S allows (`exp - iat`)");
        }
    }
    if claims.exp.saturating_sub(now) > max_s.saturating_add(LEEWAY_S) {
        return Err("expires later than HEARTH_JWT_MAX_LIFETIME_S allows");
    }
    Ok(())
}

/// PEM text, or a path to a file holding it.
fn read_inline_or_file(value: &str, looks_inline: bool, setting: &str) -> Result<String, String> {
    if looks_inline {
        return Ok(value.to_owned());
    }
    std::fs::read_to_string(value).map_err(|e| format!("{setting}: cannot read {value}: {e}"))
}

fn public_key(value: &str) -> Result<(Algorithm, DecodingKey), String> {
    let pem = read_inline_or_file(value, value.contains("-----BEGIN"), "HEARTH_JWT_PUBLIC_KEY")?;
    let bytes = pem.as_bytes();
    if let Ok(key) = DecodingKey::from_rsa_pem(bytes) {
        return Ok((Algorithm::RS256, key));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(bytes) {
        return Ok((Algorithm::ES256, key));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(bytes) {
        return Ok((Algorithm::EdDSA, key));
    }
    Err("HEARTH_JWT_PUBLIC_KEY is not an RSA, EC (P-256) or Ed25519 public key in PEM form".into())
}

/// The public keys of a JWKS, each with its `kid` and the algorithm its type implies (an `alg`
/// member, when present, must agree). Symmetric (`oct`) keys are refused: a JWKS publishes
/// public keys.
fn jwks_keys(value: &str) -> Result<Vec<Key>, String> {
    const SETTING: &str = "HEARTH_JWT_JWKS";
    let text = read_inline_or_file(value, value.trim_start().starts_with('{'), SETTING)?;
    let set: JwkSet = serde_json::from_str(&text)
        .map_err(|e| format!("{SETTING} is not a JWKS (`{{\"keys\": [...]}}`): {e}"))?;
    if set.keys.is_empty() {
        return Err(format!("{SETTING} holds no key"));
    }
    let mut keys = Vec::with_capacity(set.keys.len());
    for (i, jwk) in set.keys.iter().enumerate() {
        let at = |why: &str| format!("{SETTING}: key {i}: {why}");
        let kid = jwk.common.key_id.clone().filter(|k| !k.is_empty()).ok_or_else(|| at("has no `kid`"))?;
        if keys.iter().any(|k: &Key| k.kid.as_deref() == Some(kid.as_str())) {
            return Err(at(&format!("`kid` {kid:?} is used twice")));
        }
        let alg = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => Algorithm::EdDSA,
            _ => return Err(at("is not an RSA, EC P-256 or Ed25519 public key")),
        };
        if let Some(stated) = jwk.common.key_algorithm {
            let stated = Algorithm::try_from(stated).map_err(|_| at("its `alg` is not supported"))?;
            let allowed = match alg {
                Algorithm::RS256 => {
                    matches!(stated, Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512)
                }
                other => stated == other,
            };
            if !allowed {
                return Err(at(&format!("its `alg` {stated:?} does not fit its key type")));
            }
            let key = DecodingKey::from_jwk(jwk).map_err(|e| at(&format!("does not parse: {e}")))?;
            keys.push(Key { kid: Some(kid), alg: stated, key });
        } else {
            let key = DecodingKey::from_jwk(jwk).map_err(|e| at(&format!("does not parse: {e}")))?;
            keys.push(Key { kid: Some(kid), alg, key });
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64, iat: Option<u64>) -> UserClaims {
        UserClaims { sub: "u".into(), exp, iat, org: None }
    }

    #[test]
    fn lifetime_is_bounded_from_iat_and_from_now() {
        let now = 1_000_000;
        assert!(check_lifetime(&claims(now + 3600, Some(now)), now, 86_400).is_ok());
        assert!(check_lifetime(&claims(now + 3600, None), now, 86_400).is_ok());
        assert!(check_lifetime(&claims(now + 100_000, Some(now)), now, 86_400).is_err());
        assert!(check_lifetime(&claims(now + 100_000, None), now, 86_400).is_err());
        // Issued long ago but expiring soon: its stated lifetime still counts.
        assert!(check_lifetime(&claims(now + 60, Some(now - 90_000)), now, 86_400).is_err());
        assert!(check_lifetime(&claims(now + 60, Some(now + 600)), now, 86_400).is_err());
    }

    #[test]
    fn a_jwks_needs_kids_and_public_keys() {
        let ed = r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo""#;
        assert!(jwks_keys(&format!(r#"{{"keys":[{ed},"kid":"a"}}]}}"#)).is_ok());
        let missing = jwks_keys(&format!(r#"{{"keys":[{ed}}}]}}"#)).err().unwrap_or_default();
        assert!(missing.contains("no `kid`"), "{missing}");
        let twice = jwks_keys(&format!(r#"{{"keys":[{ed},"kid":"a"}},{ed},"kid":"a"}}]}}"#))
            .err()
            .unwrap_or_default();
        assert!(twice.contains("used twice"), "{twice}");
        let oct = jwks_keys(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"s"}]}"#).err().unwrap_or_default();
        assert!(oct.contains("not an RSA"), "{oct}");
        let wrong_alg =
            jwks_keys(&format!(r#"{{"keys":[{ed},"kid":"a","alg":"HS256"}}]}}"#)).err().unwrap_or_default();
        assert!(wrong_alg.contains("does not fit"), "{wrong_alg}");
        assert!(jwks_keys(r#"{"keys":[]}"#).is_err());
    }
}
