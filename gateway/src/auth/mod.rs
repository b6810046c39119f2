//! Who a connection is: the listener's security protocol, TLS, and SASL
//! authentication, ending in the principal (`User:<name>`) that the ACL
//! authorizer and quotas see.
//!
//! The connection pipeline reads as separate steps (gateway/src/conn.rs):
//! TLS handshake ([`tls`]), then, on SASL listeners, the authentication
//! exchange ([`phase`]) during which only ApiVersions and the SASL APIs are
//! served, then dispatch with the principal.

pub mod internal;
pub mod oauth;
pub mod phase;
pub mod sasl;
pub mod scram;
pub mod tls;

use std::str::FromStr;
use std::sync::Arc;

/// How a listener establishes who its clients are.
#[derive(Clone, Default)]
pub struct Security {
    pub protocol: SecurityProtocol,
    /// Set for SSL and SASL_SSL.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Set for SASL_PLAINTEXT and SASL_SSL.
    pub sasl: Option<Arc<sasl::Authenticator>>,
}

/// The principal of unauthenticated (plaintext) connections, as in Kafka.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// A listener's security protocol, spelled as clients spell
/// `security.protocol` (`KAFSCALE_SECURITY_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// Whether connections are wrapped in TLS.
    pub fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    /// Whether connections must authenticate with SASL first.
    pub fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }

    /// The name as clients spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }
}

impl FromStr for SecurityProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Self::Plaintext,
            Self::Ssl,
            Self::SaslPlaintext,
            Self::SaslSsl,
        ]
        .into_iter()
        .find(|p| p.name().eq_ignore_ascii_case(s))
        .ok_or_else(|| {
            format!("unknown security protocol `{s}` (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)")
        })
    }
}

/// The principal of an authenticated user name.
pub fn user_principal(name: &str) -> String {
    format!("User:{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_parse_as_clients_spell_them() {
        assert_eq!("SASL_SSL".parse(), Ok(SecurityProtocol::SaslSsl));
        assert_eq!(
            "sasl_plaintext".parse(),
            Ok(SecurityProtocol::SaslPlaintext)
        );
        assert!("TLS".parse::<SecurityProtocol>().is_err());
        assert!(SecurityProtocol::SaslSsl.tls() && SecurityProtocol::SaslSsl.sasl());
        assert!(!SecurityProtocol::Ssl.sasl() && SecurityProtocol::Ssl.tls());
    }
}
