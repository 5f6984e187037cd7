//! User identity: the `X-Runtime-User` JWT (HS256 secret, or an RS256/ES256/EdDSA PEM key).

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

use super::AuthError;
use crate::config::ServeConfig;

/// Claims hearth reads from a user JWT.
#[derive(Debug, Clone, Deserialize)]
pub struct UserClaims {
    /// The user's id.
    pub sub: String,
    /// Expiry (Unix seconds); required.
    pub exp: u64,
    /// Organization id or slug.
    #[serde(default)]
    pub org: Option<String>,
}

/// Verifies user JWTs.
pub struct JwtVerifier {
    keys: Vec<(Algorithm, DecodingKey)>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl JwtVerifier {
    /// Builds the verifier from settings; `None` when no key is configured.
    ///
    /// # Errors
    /// A message naming the setting when a key does not parse.
    pub fn from_config(config: &ServeConfig) -> Result<Option<Self>, String> {
        let mut keys = Vec::new();
        if let Some(secret) = &config.auth.jwt_secret {
            if secret.expose().len() < 16 {
                return Err("HEARTH_JWT_SECRET must be at least 16 characters".into());
            }
            keys.push((Algorithm::HS256, DecodingKey::from_secret(secret.expose().as_bytes())));
        }
        if let Some(pem) = &config.auth.jwt_public_key {
            keys.push(public_key(pem)?);
        }
        if keys.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            keys,
            issuer: config.auth.jwt_issuer.clone(),
            audience: config.auth.jwt_audience.clone(),
        }))
    }

    /// Verifies a token and returns its claims.
    ///
    /// # Errors
    /// 401 for a malformed, unsigned, wrongly signed, expired or mis-addressed token.
    pub fn verify(&self, token: &str) -> Result<UserClaims, AuthError> {
        let unauthorized =
            |why: &str| AuthError::Unauthorized(format!("invalid X-Runtime-User token: {why}"));
        let header =
            decode_header(token).map_err(|_| unauthorized("malformed or unsigned (alg none is refused)"))?;
        let (alg, key) = self
            .keys
            .iter()
            .find(|(alg, _)| *alg == header.alg)
            .ok_or_else(|| unauthorized(&format!("algorithm {:?} is not accepted", header.alg)))?;
        let mut validation = Validation::new(*alg);
        let mut required = vec!["exp", "sub"];
        if self.issuer.is_some() {
            required.push("iss");
        }
        if self.audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation.leeway = 5;
        match &self.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
        }
        let data = decode::<UserClaims>(token, key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => unauthorized("expired"),
                ErrorKind::InvalidSignature => unauthorized("bad signature"),
                ErrorKind::InvalidIssuer => unauthorized("wrong issuer"),
                ErrorKind::InvalidAudience => unauthorized("wrong audience"),
                ErrorKind::MissingRequiredClaim(claim) => unauthorized(&format!("missing claim `{claim}`")),
                _ => unauthorized("could not be verified"),
            }
        })?;
        if data.claims.sub.is_empty() || data.claims.sub.len() > 256 {
            return Err(unauthorized("`sub` must be 1 to 256 characters"));
        }
        Ok(data.claims)
    }
}

fn public_key(value: &str) -> Result<(Algorithm, DecodingKey), String> {
    let pem = if value.contains("-----BEGIN") {
        value.to_owned()
    } else {
        std::fs::read_to_string(value)
            .map_err(|e| format!("HEARTH_JWT_PUBLIC_KEY: cannot read {value}: {e}"))?
    };
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
