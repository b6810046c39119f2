//! TLS on the Kafka listener (rustls): the certificate chain and key come
//! from PEM files and are read again when the files change (a rotation by
//! cert-manager needs no restart); with a client CA, client certificates
//! are required and verified (mTLS), and the principal is taken from the
//! certificate subject. The internal hops ([`super::internal`]) build their
//! server and client configurations from the same pieces, so their
//! certificates are reloaded the same way.
//!
//! Principal mapping rule (documented in docs/configuration.md): the
//! subject's first Common Name gives `User:<CN>`; a certificate without a
//! CN gives `User:<subject DN>` in RFC 4514 form, as Kafka's default rule.

use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio_rustls::TlsAcceptor;

/// The TLS settings of a listener.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// PEM certificate chain (leaf first).
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates that client certificates must chain to; set:
    /// client certificates are required.
    pub client_ca_file: Option<PathBuf>,
}

/// Errors loading TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// How often the certificate files are looked at for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(5);

/// The certificate and key, reloaded when their files change.
#[derive(Debug)]
struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    loaded: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    stamps: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load_certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| file_error(cert_file, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(cert_file, e))?;
    if certs.is_empty() {
        return Err(file_error(cert_file, "no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| file_error(key_file, e))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| file_error(key_file, e))?;
    Ok(CertifiedKey::new(certs, signing))
}

impl ReloadingCert {
    fn open(cert_file: &Path, key_file: &Path) -> Result<Self, TlsError> {
        let key = load_certified_key(cert_file, key_file)?;
        Ok(Self {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            loaded: RwLock::new(Loaded {
                key: Arc::new(key),
                stamps: (modified(cert_file), modified(key_file)),
                checked: Instant::now(),
            }),
        })
    }

    /// Reloads the files if they changed since the last look (at most
    /// every [`RELOAD_CHECK`]); a broken new pair keeps the old one.
    fn refresh(&self) {
        let due = self
            .loaded
            .read()
            .map(|l| l.checked.elapsed() >= RELOAD_CHECK)
            .unwrap_or(true);
        if !due {
            return;
        }
        let mut l = self.loaded.write().unwrap_or_else(|p| p.into_inner());
        l.checked = Instant::now();
        let stamps = (modified(&self.cert_file), modified(&self.key_file));
        if stamps == l.stamps {
            return;
        }
        match load_certified_key(&self.cert_file, &self.key_file) {
            Ok(k) => {
                tracing::info!(cert = %self.cert_file.display(), "TLS certificate reloaded");
                l.key = Arc::new(k);
                l.stamps = stamps;
            }
            // Possibly caught between the two files' writes: tried again
            // at the next check.
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate not reloaded; keeping the old one")
            }
        }
    }

    /// The pair in use, reloaded first if its files changed.
    fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.refresh();
        self.loaded.read().ok().map(|l| l.key.clone())
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

/// A client certificate (mTLS on an internal hop) is reloaded the same way.
impl ResolvesClientCert for ReloadingCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The CA certificates of a PEM file.
fn load_roots(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| file_error(ca, e))? {
        roots
            .add(c.map_err(|e| file_error(ca, e))?)
            .map_err(|e| file_error(ca, e))?;
    }
    if roots.is_empty() {
        return Err(file_error(ca, "no CA certificate in the file"));
    }
    Ok(roots)
}

/// The server configuration of `s`, offering the ALPN protocols `alpn`
/// (none on the Kafka listener).
pub fn server_config(s: &TlsSettings, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &s.client_ca_file {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(ca)?), provider)
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config =
        builder.with_cert_resolver(Arc::new(ReloadingCert::open(&s.cert_file, &s.key_file)?));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The acceptor for a TLS listener.
pub fn acceptor(s: &TlsSettings) -> Result<TlsAcceptor, TlsError> {
    Ok(TlsAcceptor::from(Arc::new(server_config(s, &[])?)))
}

/// A client configuration that trusts the CAs in `ca_file`, presents the
/// certificate and key of `identity` when set (mTLS; reloaded when the
/// files change), and offers the ALPN protocols `alpn`.
pub fn client_config(
    ca_file: &Path,
    identity: Option<(&Path, &Path)>,
    alpn: &[&[u8]],
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(load_roots(ca_file)?);
    let mut config = match identity {
        Some((cert, key)) => {
            builder.with_client_cert_resolver(Arc::new(ReloadingCert::open(cert, key)?))
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The principal of a verified client certificate (see the module doc).
pub fn certificate_principal(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok().map(str::to_string))
        .unwrap_or_else(|| subject.to_string());
    Some(super::user_principal(&name))
}
