//! SASL mechanisms and one connection's exchange: PLAIN and SCRAM-SHA-256/512
//! against the SCRAM credentials in the metadata store.
//!
//! Guarantees: a user is authenticated only by a proof (SCRAM) or password
//! (PLAIN) that matches a stored credential; an unknown user fails exactly
//! like a wrong password; failures are counted and, per source address,
//! rate-limited (past the limit an address's attempts fail at once, without
//! looking at the credentials).

use super::scram::{self, ScramServer};
use dashmap::DashMap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use kafscale_controlplane::Metadata;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant, SystemTime};

/// A SASL mechanism the gateway can enable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    Scram(scram::Mechanism),
    OAuthBearer,
}

impl SaslMechanism {
    /// The mechanism's SASL name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::Scram(m) => m.name(),
            Self::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// The mechanism a SASL name names, if supported.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "PLAIN" => return Some(Self::Plain),
            "OAUTHBEARER" => return Some(Self::OAuthBearer),
            _ => {}
        }
        scram::Mechanism::from_name(name).map(Self::Scram)
    }

    /// Parses `KAFSCALE_SASL_ENABLED_MECHANISMS` (comma-separated names).
    pub fn parse_list(s: &str) -> Result<Vec<Self>, String> {
        s.split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| {
                Self::from_name(n).ok_or_else(|| {
                    format!(
                        "unsupported SASL mechanism `{n}` (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)"
                    )
                })
            })
            .collect()
    }
}

/// Where an exchange stands between two client tokens.
pub enum Exchange {
    /// Waiting for the first token of `mechanism`.
    Start(SaslMechanism),
    /// SCRAM: the server's first message was sent.
    ScramFinal(Box<ScramServer>),
}

/// What to do after a client token.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes and wait for the next token.
    Continue(Vec<u8>),
    /// Authenticated as `user`; send these (final) bytes. `expires`: when
    /// the credential itself stops being valid (an OAUTHBEARER token).
    Done {
        user: String,
        reply: Vec<u8>,
        expires: Option<SystemTime>,
    },
    /// Refused; the message is for the client (nothing secret in it).
    Failed(String),
}

/// Authenticates SASL exchanges of one gateway.
pub struct Authenticator {
    meta: Metadata,
    enabled: Vec<SaslMechanism>,
    failures: DefaultKeyedRateLimiter<IpAddr>,
    /// Addresses that failed too often, until when they are refused.
    blocked: DashMap<IpAddr, Instant>,
    metrics: prometheus::IntCounterVec,
    oauth: Option<std::sync::Arc<super::oauth::OauthValidator>>,
    /// Longest session before re-authentication (KIP-368); none: sessions
    /// never expire.
    max_reauth: Option<Duration>,
}

/// How long an address that failed too often is refused.
const BLOCKED_FOR: Duration = Duration::from_secs(10);

/// Addresses tracked before the oldest entries are forgotten.
const TRACKED_ADDRESSES: usize = 10_000;

/// Failed authentications an address may have before it is refused at
/// once: a burst of this many, refilled at one per second.
const FAILURE_BURST: u32 = 20;

impl Authenticator {
    /// An authenticator for `enabled` mechanisms, counting outcomes into
    /// `metrics` (`kafscale_gateway_authentications_total{mechanism,outcome}`).
    pub fn new(
        meta: Metadata,
        enabled: Vec<SaslMechanism>,
        metrics: prometheus::IntCounterVec,
    ) -> Self {
        let burst = NonZeroU32::new(FAILURE_BURST).unwrap_or(NonZeroU32::MIN);
        Self {
            meta,
            enabled,
            failures: RateLimiter::keyed(Quota::per_second(NonZeroU32::MIN).allow_burst(burst)),
            blocked: DashMap::new(),
            metrics,
            oauth: None,
            max_reauth: None,
        }
    }

    /// The same authenticator ending sessions after `max` (Kafka's
    /// `connections.max.reauth.ms`): clients re-authenticate in time, or
    /// their connection is closed.
    pub fn with_max_reauth(mut self, max: Option<Duration>) -> Self {
        self.max_reauth = max.filter(|d| !d.is_zero());
        self
    }

    /// How long a session established now lasts: the re-authentication
    /// period, shortened to the credential's own expiry; none without a
    /// period (as Kafka, which then ignores token expiry too).
    pub fn session_lifetime(&self, credential_expires: Option<SystemTime>) -> Option<Duration> {
        let max = self.max_reauth?;
        let left = credential_expires.map(|t| {
            t.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        });
        Some(left.map_or(max, |l| l.min(max)))
    }

    /// The same authenticator validating OAUTHBEARER tokens with `oauth`.
    pub fn with_oauth(mut self, oauth: std::sync::Arc<super::oauth::OauthValidator>) -> Self {
        self.oauth = Some(oauth);
        self
    }

    /// The enabled mechanisms, in the configured order.
    pub fn enabled(&self) -> &[SaslMechanism] {
        &self.enabled
    }

    /// Starts an exchange of the mechanism `name`, if enabled.
    pub fn start(&self, name: &str) -> Option<Exchange> {
        SaslMechanism::from_name(name)
            .filter(|m| self.enabled.contains(m))
            .map(Exchange::Start)
    }

    /// Whether `ip` may still try to authenticate (it has not failed too
    /// often lately).
    pub fn may_try(&self, ip: IpAddr) -> bool {
        match self.blocked.get(&ip).map(|until| *until) {
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                self.blocked.remove(&ip);
                true
            }
            None => true,
        }
    }

    /// Counts a failure of `ip`; past its budget, blocks it for a while.
    fn failed(&self, ip: IpAddr) {
        if self.failures.check_key(&ip).is_err() {
            tracing::warn!(%ip, "too many failed authentications: refusing the address for a while");
            self.blocked.insert(ip, Instant::now() + BLOCKED_FOR);
        }
        if self.failures.len() > TRACKED_ADDRESSES {
            self.failures.retain_recent();
        }
        if self.blocked.len() > TRACKED_ADDRESSES {
            let now = Instant::now();
            self.blocked.retain(|_, until| *until > now);
        }
    }

    /// Takes the client's next token; returns the exchange's next state
    /// (none once finished) and what to answer.
    pub async fn step(&self, ex: Exchange, token: &[u8], ip: IpAddr) -> (Option<Exchange>, Step) {
        let (mechanism, next, step) = match ex {
            Exchange::Start(SaslMechanism::Plain) => {
                (SaslMechanism::Plain, None, self.plain(token).await)
            }
            Exchange::Start(SaslMechanism::OAuthBearer) => (
                SaslMechanism::OAuthBearer,
                None,
                self.oauthbearer(token).await,
            ),
            Exchange::Start(m @ SaslMechanism::Scram(s)) => {
                match self.scram_first(s, token).await {
                    Ok((server, reply)) => (
                        m,
                        Some(Exchange::ScramFinal(Box::new(server))),
                        Step::Continue(reply),
                    ),
                    Err(msg) => (m, None, Step::Failed(msg)),
                }
            }
            Exchange::ScramFinal(server) => {
                let m = SaslMechanism::Scram(server.mechanism());
                let user = server.user().to_string();
                let step = match server.finish(token) {
                    Ok(reply) => Step::Done {
                        user,
                        reply,
                        expires: None,
                    },
                    Err(e) => Step::Failed(failure_message(m, &e.to_string())),
                };
                (m, None, step)
            }
        };
        match &step {
            Step::Continue(_) => {}
            Step::Done { .. } => self.count(mechanism, "success"),
            Step::Failed(_) => {
                self.count(mechanism, "failure");
                self.failed(ip);
            }
        }
        (next, step)
    }

    fn count(&self, m: SaslMechanism, outcome: &str) {
        self.metrics.with_label_values(&[m.name(), outcome]).inc();
    }

    async fn plain(&self, token: &[u8]) -> Step {
        let m = SaslMechanism::Plain;
        // authzid NUL authcid NUL password
        let mut parts = token.split(|b| *b == 0);
        let (Some(authzid), Some(user), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Step::Failed(failure_message(m, "malformed PLAIN token"));
        };
        let (Ok(authzid), Ok(user), Ok(password)) = (
            std::str::from_utf8(authzid),
            std::str::from_utf8(user),
            std::str::from_utf8(password),
        ) else {
            return Step::Failed(failure_message(m, "PLAIN token is not UTF-8"));
        };
        if !authzid.is_empty() && authzid != user {
            return Step::Failed(failure_message(m, "authorization id differs from the user"));
        }
        // The same credentials SCRAM uses: SHA-512's if stored, else SHA-256's.
        for s in [scram::Mechanism::Sha512, scram::Mechanism::Sha256] {
            match self.meta.scram_credential(user, s as i32).await {
                Ok(Some(c)) => {
                    return if s.verify_password(&c, password) {
                        Step::Done {
                            user: user.to_string(),
                            reply: Vec::new(),
                            expires: None,
                        }
                    } else {
                        Step::Failed(failure_message(m, "invalid credentials"))
                    };
                }
                Ok(None) => {}
                Err(e) => return Step::Failed(format!("credentials unavailable: {e}")),
            }
        }
        Step::Failed(failure_message(m, "invalid credentials"))
    }

    async fn oauthbearer(&self, token: &[u8]) -> Step {
        let m = SaslMechanism::OAuthBearer;
        let Some(oauth) = &self.oauth else {
            return Step::Failed(failure_message(m, "no JWKS configured"));
        };
        let Some(bearer) = super::oauth::bearer_token(token) else {
            return Step::Failed(failure_message(m, "no bearer token"));
        };
        match oauth.validate(bearer).await {
            Ok((user, expires)) => Step::Done {
                user,
                reply: Vec::new(),
                expires: Some(expires),
            },
            Err(why) => Step::Failed(failure_message(m, &why)),
        }
    }

    async fn scram_first(
        &self,
        m: scram::Mechanism,
        token: &[u8],
    ) -> Result<(ScramServer, Vec<u8>), String> {
        let user = scram::client_first_user(token)
            .map_err(|e| failure_message(SaslMechanism::Scram(m), &e.to_string()))?;
        let stored = self
            .meta
            .scram_credential(&user, m as i32)
            .await
            .map_err(|e| format!("credentials unavailable: {e}"))?;
        ScramServer::start(m, token, stored)
            .map_err(|e| failure_message(SaslMechanism::Scram(m), &e.to_string()))
    }
}

/// Kafka's wording for a failed authentication.
fn failure_message(m: SaslMechanism, why: &str) -> String {
    format!(
        "Authentication failed during authentication due to invalid credentials with SASL mechanism {} ({why})",
        m.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enabled_mechanisms_parse_and_unknown_ones_are_refused() {
        assert_eq!(
            SaslMechanism::parse_list("PLAIN, SCRAM-SHA-512"),
            Ok(vec![
                SaslMechanism::Plain,
                SaslMechanism::Scram(scram::Mechanism::Sha512)
            ])
        );
        assert!(SaslMechanism::parse_list("PLAIN,GSSAPI").is_err());
    }
}
