//! The listener security settings of `dev` and `gateway`, turned into the
//! gateway's [`Security`]: TLS acceptor, SASL authenticator, and the users
//! created at start (`KAFSCALE_SASL_USERS`, `KAFSCALE_SASL_USERS_FILE`);
//! and the TLS of the internal hops ([`InternalTlsArgs`] for the gateway →
//! worker gRPC, [`HttpArgs`] for the HTTP endpoint), off by default.

use anyhow::Context as _;
use clap::Args;
use kafscale_controlplane::Metadata;
use kafscale_gateway::auth::internal::{TlsConnector, ALPN_H2, ALPN_HTTP1};
use kafscale_gateway::auth::oauth::{JwksSource, OauthSettings, OauthValidator};
use kafscale_gateway::auth::sasl::{Authenticator, SaslMechanism};
use kafscale_gateway::auth::scram::{Mechanism, DEFAULT_ITERATIONS};
use kafscale_gateway::auth::tls::TlsSettings;
use kafscale_gateway::auth::{Security, SecurityProtocol};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// TLS of the internal gateway → worker gRPC (dev, gateway, logworker).
#[derive(Args, Debug, Clone, Default)]
pub struct InternalTlsArgs {
    /// PEM certificate chain of the internal gRPC: served by a worker (TLS on
    /// its gRPC listener), presented by a gateway to workers that require
    /// client certificates. Re-read when the file changes.
    #[arg(long, env = "KAFSCALE_INTERNAL_TLS_CERT_FILE")]
    pub internal_tls_cert_file: Option<PathBuf>,
    /// PEM private key of KAFSCALE_INTERNAL_TLS_CERT_FILE.
    #[arg(long, env = "KAFSCALE_INTERNAL_TLS_KEY_FILE")]
    pub internal_tls_key_file: Option<PathBuf>,
    /// PEM CA certificates of the internal gRPC: a gateway dials workers over
    /// TLS and verifies them against these; a worker requires client
    /// certificates that chain to them (mTLS).
    #[arg(long, env = "KAFSCALE_INTERNAL_TLS_CA_FILE")]
    pub internal_tls_ca_file: Option<PathBuf>,
}

/// The certificate and key files, both or neither.
fn pair<'a>(
    cert: &'a Option<PathBuf>,
    key: &'a Option<PathBuf>,
    names: (&str, &str),
) -> anyhow::Result<Option<(&'a Path, &'a Path)>> {
    match (cert, key) {
        (Some(c), Some(k)) => Ok(Some((c.as_path(), k.as_path()))),
        (None, None) => Ok(None),
        _ => anyhow::bail!("{} and {} are set together", names.0, names.1),
    }
}

impl InternalTlsArgs {
    fn identity(&self) -> anyhow::Result<Option<(&Path, &Path)>> {
        pair(
            &self.internal_tls_cert_file,
            &self.internal_tls_key_file,
            (
                "KAFSCALE_INTERNAL_TLS_CERT_FILE",
                "KAFSCALE_INTERNAL_TLS_KEY_FILE",
            ),
        )
    }

    /// A worker's gRPC acceptor (HTTP/2), requiring client certificates when
    /// a CA is set; `None`: plaintext.
    pub fn server(&self) -> anyhow::Result<Option<TlsAcceptor>> {
        let Some((cert, key)) = self.identity()? else {
            anyhow::ensure!(
                self.internal_tls_ca_file.is_none(),
                "KAFSCALE_INTERNAL_TLS_CA_FILE on a worker needs KAFSCALE_INTERNAL_TLS_CERT_FILE \
                 and KAFSCALE_INTERNAL_TLS_KEY_FILE"
            );
            return Ok(None);
        };
        let config = kafscale_gateway::auth::tls::server_config(
            &TlsSettings {
                cert_file: cert.to_path_buf(),
                key_file: key.to_path_buf(),
                client_ca_file: self.internal_tls_ca_file.clone(),
            },
            &[ALPN_H2],
        )?;
        tracing::info!(
            mtls = self.internal_tls_ca_file.is_some(),
            "internal gRPC over TLS"
        );
        Ok(Some(TlsAcceptor::from(Arc::new(config))))
    }

    /// A gateway's connector to workers; `None`: plaintext.
    pub fn client(&self) -> anyhow::Result<Option<TlsConnector>> {
        let identity = self.identity()?;
        let Some(ca) = &self.internal_tls_ca_file else {
            anyhow::ensure!(
                identity.is_none(),
                "a gateway given KAFSCALE_INTERNAL_TLS_CERT_FILE needs \
                 KAFSCALE_INTERNAL_TLS_CA_FILE to verify workers with"
            );
            return Ok(None);
        };
        Ok(Some(TlsConnector::load(ca, identity)?))
    }
}

/// The HTTP endpoint (`/metrics`, `/healthz`, `/readyz`, control API) and
/// its TLS (every subcommand that serves).
#[derive(Args, Debug, Clone, Default)]
pub struct HttpArgs {
    /// HTTP listen address for /metrics, /healthz, /readyz and the control API.
    #[arg(long, env = "KAFSCALE_HTTP_ADDR", default_value = "0.0.0.0:9093")]
    pub http_addr: String,
    /// PEM certificate chain of the HTTP endpoint; set: it serves HTTPS
    /// only. Re-read when the file changes.
    #[arg(long, env = "KAFSCALE_HTTP_TLS_CERT_FILE")]
    pub http_tls_cert_file: Option<PathBuf>,
    /// PEM private key of KAFSCALE_HTTP_TLS_CERT_FILE.
    #[arg(long, env = "KAFSCALE_HTTP_TLS_KEY_FILE")]
    pub http_tls_key_file: Option<PathBuf>,
}

impl HttpArgs {
    /// The HTTPS acceptor (HTTP/2 and HTTP/1.1); `None`: plain HTTP.
    pub fn acceptor(&self) -> anyhow::Result<Option<TlsAcceptor>> {
        let Some((cert, key)) = pair(
            &self.http_tls_cert_file,
            &self.http_tls_key_file,
            ("KAFSCALE_HTTP_TLS_CERT_FILE", "KAFSCALE_HTTP_TLS_KEY_FILE"),
        )?
        else {
            return Ok(None);
        };
        let config = kafscale_gateway::auth::tls::server_config(
            &TlsSettings {
                cert_file: cert.to_path_buf(),
                key_file: key.to_path_buf(),
                client_ca_file: None,
            },
            &[ALPN_H2, ALPN_HTTP1],
        )?;
        Ok(Some(TlsAcceptor::from(Arc::new(config))))
    }
}

/// Listener security (dev and gateway).
#[derive(Args, Debug, Clone)]
pub struct SecurityArgs {
    /// Listener security protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (as clients spell security.protocol).
    #[arg(long, env = "KAFSCALE_SECURITY_PROTOCOL", default_value = "PLAINTEXT")]
    pub security_protocol: SecurityProtocol,
    /// SASL mechanisms offered on SASL listeners, comma-separated.
    #[arg(
        long,
        env = "KAFSCALE_SASL_ENABLED_MECHANISMS",
        default_value = "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
    )]
    pub sasl_enabled_mechanisms: String,
    /// PEM certificate chain of the listener (SSL, SASL_SSL); re-read when the file changes.
    #[arg(long, env = "KAFSCALE_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the listener (SSL, SASL_SSL); re-read when the file changes.
    #[arg(long, env = "KAFSCALE_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificates; set: client certificates are required and must chain to them (mTLS).
    #[arg(long, env = "KAFSCALE_TLS_CLIENT_CA_FILE")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Users created at start when absent, `name:password,...` (SCRAM-SHA-256 and -512 credentials).
    #[arg(long, env = "KAFSCALE_SASL_USERS", hide_env_values = true)]
    pub sasl_users: Option<String>,
    /// The same as KAFSCALE_SASL_USERS from a file (one `name:password` per line or comma-separated).
    #[arg(long, env = "KAFSCALE_SASL_USERS_FILE")]
    pub sasl_users_file: Option<PathBuf>,
    /// JWKS with the keys OAUTHBEARER tokens are signed with, a file path or an
    /// http(s) URL (needed to enable OAUTHBEARER).
    #[arg(long, env = "KAFSCALE_OAUTHBEARER_JWKS")]
    pub oauthbearer_jwks: Option<String>,
    /// How often a JWKS URL is fetched again (also on an unknown key id, at most every 10 s).
    #[arg(
        long,
        env = "KAFSCALE_OAUTHBEARER_JWKS_REFRESH_MS",
        default_value_t = 3_600_000
    )]
    pub oauthbearer_jwks_refresh_ms: u64,
    /// Required issuer (`iss`) of OAUTHBEARER tokens.
    #[arg(long, env = "KAFSCALE_OAUTHBEARER_ISSUER")]
    pub oauthbearer_issuer: Option<String>,
    /// Required audience (`aud`) of OAUTHBEARER tokens.
    #[arg(long, env = "KAFSCALE_OAUTHBEARER_AUDIENCE")]
    pub oauthbearer_audience: Option<String>,
    /// The token claim that names the user.
    #[arg(
        long,
        env = "KAFSCALE_OAUTHBEARER_PRINCIPAL_CLAIM",
        default_value = "sub"
    )]
    pub oauthbearer_principal_claim: String,
    /// Longest SASL session before the client must re-authenticate (KIP-368,
    /// Kafka's `connections.max.reauth.ms`), shortened to an OAUTHBEARER
    /// token's expiry; 0: sessions never expire.
    #[arg(long, env = "KAFSCALE_CONNECTIONS_MAX_REAUTH_MS", default_value_t = 0)]
    pub connections_max_reauth_ms: u64,
}

/// `name:password` pairs, comma- or newline-separated.
fn parse_users(s: &str) -> anyhow::Result<Vec<(String, String)>> {
    s.split([',', '\n'])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, password) = e
                .split_once(':')
                .with_context(|| "a SASL user is `name:password`")?;
            anyhow::ensure!(!name.is_empty(), "a SASL user needs a name");
            Ok((name.to_string(), password.to_string()))
        })
        .collect()
}

impl SecurityArgs {
    /// The listener's security; creates the configured users first.
    pub async fn build(
        &self,
        meta: &Metadata,
        authentications: prometheus::IntCounterVec,
    ) -> anyhow::Result<Security> {
        let protocol = self.security_protocol;
        let tls = if protocol.tls() {
            let (Some(cert_file), Some(key_file)) = (&self.tls_cert_file, &self.tls_key_file)
            else {
                anyhow::bail!(
                    "{} needs KAFSCALE_TLS_CERT_FILE and KAFSCALE_TLS_KEY_FILE",
                    protocol.name()
                );
            };
            Some(kafscale_gateway::auth::tls::acceptor(&TlsSettings {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
                client_ca_file: self.tls_client_ca_file.clone(),
            })?)
        } else {
            None
        };
        self.create_users(meta).await?;
        let sasl = if protocol.sasl() {
            let mechanisms = SaslMechanism::parse_list(&self.sasl_enabled_mechanisms)
                .map_err(anyhow::Error::msg)?;
            anyhow::ensure!(
                !mechanisms.is_empty(),
                "KAFSCALE_SASL_ENABLED_MECHANISMS names no mechanism"
            );
            let oauth = mechanisms.contains(&SaslMechanism::OAuthBearer);
            let mut auth = Authenticator::new(meta.clone(), mechanisms, authentications)
                .with_max_reauth(Some(std::time::Duration::from_millis(
                    self.connections_max_reauth_ms,
                )));
            if oauth {
                let Some(jwks) = &self.oauthbearer_jwks else {
                    anyhow::bail!("OAUTHBEARER needs KAFSCALE_OAUTHBEARER_JWKS");
                };
                auth = auth.with_oauth(
                    OauthValidator::load(OauthSettings {
                        jwks: JwksSource::parse(jwks),
                        jwks_refresh: std::time::Duration::from_millis(
                            self.oauthbearer_jwks_refresh_ms,
                        ),
                        issuer: self.oauthbearer_issuer.clone(),
                        audience: self.oauthbearer_audience.clone(),
                        principal_claim: self.oauthbearer_principal_claim.clone(),
                    })
                    .await?,
                );
            }
            Some(Arc::new(auth))
        } else {
            None
        };
        tracing::info!(protocol = protocol.name(), "Kafka listener security");
        Ok(Security {
            protocol,
            tls,
            sasl,
        })
    }

    /// Creates each configured user's SCRAM-SHA-256 and -512 credentials
    /// where absent (an existing credential, perhaps changed through the
    /// API since, is kept).
    async fn create_users(&self, meta: &Metadata) -> anyhow::Result<()> {
        let mut users = Vec::new();
        if let Some(s) = &self.sasl_users {
            users.extend(parse_users(s)?);
        }
        if let Some(f) = &self.sasl_users_file {
            let s =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            users.extend(parse_users(&s)?);
        }
        for (name, password) in users {
            for m in [Mechanism::Sha256, Mechanism::Sha512] {
                let c = m.credential(&name, &password, DEFAULT_ITERATIONS);
                if meta.create_scram_credential(&c).await? {
                    tracing::info!(user = %name, mechanism = m.name(), "SASL user created");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_parse_from_both_forms() {
        let u = parse_users("admin:s3cret, alice:a:b\nbob:x").expect("parses");
        assert_eq!(
            u,
            vec![
                ("admin".to_string(), "s3cret".to_string()),
                ("alice".to_string(), "a:b".to_string()),
                ("bob".to_string(), "x".to_string())
            ]
        );
        assert!(parse_users("nopassword").is_err());
        assert!(parse_users(":x").is_err());
    }

    #[test]
    fn internal_tls_settings_are_checked_per_role() {
        let path = |p: &str| Some(PathBuf::from(p));
        let none = InternalTlsArgs::default();
        assert!(none.server().expect("plaintext worker").is_none());
        assert!(none.client().expect("plaintext gateway").is_none());
        // A certificate without its key (or the other way round).
        let half = InternalTlsArgs {
            internal_tls_cert_file: path("cert.pem"),
            ..Default::default()
        };
        assert!(half.server().is_err() && half.client().is_err());
        // A worker cannot require client certificates without serving TLS.
        let ca_only = InternalTlsArgs {
            internal_tls_ca_file: path("ca.pem"),
            ..Default::default()
        };
        assert!(ca_only.server().is_err());
        // A gateway cannot verify workers without a CA.
        let no_ca = InternalTlsArgs {
            internal_tls_cert_file: path("cert.pem"),
            internal_tls_key_file: path("key.pem"),
            ..Default::default()
        };
        assert!(no_ca.client().is_err());
        let http = HttpArgs {
            http_addr: "127.0.0.1:0".into(),
            http_tls_key_file: path("key.pem"),
            ..Default::default()
        };
        assert!(http.acceptor().is_err());
    }
}
