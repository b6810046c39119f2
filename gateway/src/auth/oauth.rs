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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the JWKS comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A file, read at start.
    File(PathBuf),
    /// An `http(s)://` URL, fetched at start, every refresh interval, and
    /// when a token names a key id the set does not have.
    Url(String),
}

impl JwksSource {
    /// A URL if `s` starts with `http://` or `https://`, else a file path.
    pub fn parse(s: &str) -> Self {
        if s.starts_with("http://") || s.starts_with("https://") {
            Self::Url(s.to_string())
        } else {
            Self::File(PathBuf::from(s))
        }
    }
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Url(u) => f.write_str(u),
        }
    }
}

/// OAUTHBEARER settings.
#[derive(Debug, Clone)]
pub struct OauthSettings {
    /// The JWKS with the keys tokens may be signed with.
    pub jwks: JwksSource,
    /// How often a JWKS URL is fetched again.
    pub jwks_refresh: Duration,
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
    #[error("JWKS {source_name}: {reason}")]
    Jwks { source_name: String, reason: String },
}

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 60;

/// Least time between two fetches of a JWKS URL caused by unknown key ids
/// (so made-up key ids cannot turn clients into a flood of fetches).
const MIN_UNKNOWN_KID_REFETCH: Duration = Duration::from_secs(10);

/// Longest a JWKS fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Validates bearer tokens.
pub struct OauthValidator {
    settings: OauthSettings,
    keys: std::sync::RwLock<std::sync::Arc<JwkSet>>,
    /// When the JWKS URL was last fetched.
    fetched: std::sync::Mutex<std::time::Instant>,
    http: reqwest::Client,
}

impl OauthValidator {
    /// Loads the JWKS (fetches it, from a URL) and, for a URL, keeps it
    /// fresh every `jwks_refresh` in a background task.
    pub async fn load(settings: OauthSettings) -> Result<std::sync::Arc<Self>, OauthError> {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| OauthError::Jwks {
                source_name: settings.jwks.to_string(),
                reason: e.to_string(),
            })?;
        let keys = read_jwks(&settings.jwks, &http).await?;
        let v = std::sync::Arc::new(Self {
            settings,
            keys: std::sync::RwLock::new(std::sync::Arc::new(keys)),
            fetched: std::sync::Mutex::new(std::time::Instant::now()),
            http,
        });
        if matches!(v.settings.jwks, JwksSource::Url(_)) {
            let weak = std::sync::Arc::downgrade(&v);
            let every = v.settings.jwks_refresh.max(Duration::from_secs(1));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(v) = weak.upgrade() else { return };
                    v.refetch().await;
                }
            });
        }
        Ok(v)
    }

    /// Fetches the JWKS URL again; a failed fetch keeps the keys in use.
    async fn refetch(&self) {
        *self.fetched.lock().unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
        match read_jwks(&self.settings.jwks, &self.http).await {
            Ok(keys) => {
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(keys);
            }
            Err(e) => tracing::warn!(error = %e, "JWKS refresh failed; keeping the previous keys"),
        }
    }

    /// The user name a valid token carries and when the token expires, or
    /// why it is refused. A token whose key id is unknown makes a JWKS URL
    /// be fetched again (at most every 10 s) before it is refused.
    pub async fn validate(&self, token: &str) -> Result<(String, SystemTime), String> {
        let kid = decode_header(token).ok().and_then(|h| h.kid);
        let known = |v: &Self| {
            let keys = v.keys.read().unwrap_or_else(|p| p.into_inner());
            kid.as_deref().is_none_or(|k| keys.find(k).is_some())
        };
        if !known(self) && matches!(self.settings.jwks, JwksSource::Url(_)) {
            let last = *self.fetched.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() >= MIN_UNKNOWN_KID_REFETCH {
                self.refetch().await;
            }
        }
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        self.validate_with(&keys, token)
    }

    fn validate_with(&self, keys: &JwkSet, token: &str) -> Result<(String, SystemTime), String> {
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
            Some(kid) => keys.find(kid),
            None if keys.keys.len() == 1 => keys.keys.first(),
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
        let expires = data
            .claims
            .get("exp")
            .and_then(serde_json::Value::as_u64)
            .map(|s| UNIX_EPOCH + Duration::from_secs(s))
            .ok_or("the token has no numeric `exp` claim")?;
        match data.claims.get(&self.settings.principal_claim) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => Ok((s.clone(), expires)),
            _ => Err(format!(
                "the token has no `{}` claim",
                self.settings.principal_claim
            )),
        }
    }
}

/// Reads a JWKS from its source; it must hold at least one key.
async fn read_jwks(source: &JwksSource, http: &reqwest::Client) -> Result<JwkSet, OauthError> {
    let err = |reason: String| OauthError::Jwks {
        source_name: source.to_string(),
        reason,
    };
    let text = match source {
        JwksSource::File(path) => tokio::fs::read_to_string(path)
            .await
            .map_err(|e| err(e.to_string()))?,
        JwksSource::Url(url) => {
            let resp = http
                .get(url)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(|e| err(e.to_string()))?;
            resp.text().await.map_err(|e| err(e.to_string()))?
        }
    };
    let keys: JwkSet = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    if keys.keys.is_empty() {
        return Err(err("no key in the JWKS".into()));
    }
    Ok(keys)
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
