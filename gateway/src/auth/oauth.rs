//! SASL OAUTHBEARER (RFC 7628, as Kafka uses it): the client sends a JWT,
//! which is accepted only if its signature verifies against a key of the
//! configured JWKS, its algorithm is an asymmetric one that key is for (never
//! `none`, never a shared secret), it is not expired or not yet valid (60 s
//! of clock skew allowed), and its issuer and audience are the configured
//! ones when configured. The principal is `User:<claim>`, the claim
//! configurable (`sub` by default).

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use std::collections::HashMap;
use std::path::PathBuf;

/// OAUTHBEARER settings.
#[derive(Debug, Clone)]
pub struct OauthSettings {
    /// The JWKS file with the keys tokens may be signed with.
    pub jwks_file: PathBuf,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Required `aud` (one of), if set.
    pub audience: Option<String>,
    /// The claim naming the user.
    pub principal_claim: String,
}

/// Errors loading the JWKS.
#[derive(Debug, thiserror::Error)]
pub enum OauthError {
    #[error("{path}: {reason}")]
    Jwks { path: PathBuf, reason: String },
}

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 60;

/// Validates bearer tokens.
pub struct OauthValidator {
    settings: OauthSettings,
    keys: JwkSet,
}

impl OauthValidator {
    /// Loads the JWKS.
    pub fn new(settings: OauthSettings) -> Result<Self, OauthError> {
        let err = |reason: String| OauthError::Jwks {
            path: settings.jwks_file.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&settings.jwks_file).map_err(|e| err(e.to_string()))?;
        let keys: JwkSet = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        if keys.keys.is_empty() {
            return Err(err("no key in the JWKS".into()));
        }
        Ok(Self { settings, keys })
    }

    /// The user name a valid token carries, or why it is refused.
    pub fn validate(&self, token: &str) -> Result<String, String> {
        let header = decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        let asymmetric = matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        );
        if !asymmetric {
            return Err(format!("algorithm {:?} is not accepted", header.alg));
        }
        let jwk = match &header.kid {
            Some(kid) => self.keys.find(kid),
            None if self.keys.keys.len() == 1 => self.keys.keys.first(),
            None => None,
        }
        .ok_or("no key in the JWKS matches the token")?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key: {e}"))?;
        let mut v = Validation::new(header.alg);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp"]);
        match &self.settings.issuer {
            Some(iss) => v.set_issuer(&[iss]),
            None => v.iss = None,
        }
        match &self.settings.audience {
            Some(aud) => v.set_audience(&[aud]),
            None => v.validate_aud = false,
        }
        let data = decode::<HashMap<String, serde_json::Value>>(token, &key, &v)
            .map_err(|e| format!("invalid token: {e}"))?;
        match data.claims.get(&self.settings.principal_claim) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            _ => Err(format!(
                "the token has no `{}` claim",
                self.settings.principal_claim
            )),
        }
    }
}

/// The bearer token of an OAUTHBEARER client-first message
/// (`gs2-header %x01 auth=Bearer <token> *(%x01 key=value) %x01 %x01`).
pub fn bearer_token(message: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(message).ok()?;
    let (_gs2, rest) = s.split_once('\x01')?;
    rest.split('\x01')
        .find_map(|kv| kv.strip_prefix("auth="))
        .and_then(|auth| {
            let (scheme, token) = auth.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_token_is_found_among_extensions() {
        assert_eq!(
            bearer_token(b"n,,\x01auth=Bearer abc.def.ghi\x01ext=1\x01\x01"),
            Some("abc.def.ghi")
        );
        assert_eq!(bearer_token(b"n,,\x01ext=1\x01\x01"), None);
        assert_eq!(bearer_token(b"n,,\x01auth=Basic abc\x01\x01"), None);
        assert_eq!(bearer_token(b"garbage"), None);
    }
}
