//! Certificates made in the test (rcgen), written as PEM files.

use super::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A directory of PEM files: CAs and the certificates they issued.
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    /// An empty directory.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A self-signed CA with subject CN `cn`, written as `<name>.pem`.
    pub fn ca(&self, name: &str, cn: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        let ca =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        std::fs::write(self.path(&format!("{name}.pem")), ca.pem()).expect("write CA");
        ca
    }

    /// A certificate for 127.0.0.1 and localhost with subject CN `cn`,
    /// issued by `issuer`, written as `<name>.pem` and `<name>.key`.
    pub fn issue(&self, name: &str, cn: &str, issuer: &CertifiedIssuer<'_, KeyPair>) {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, issuer).expect("sign");
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).expect("write");
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).expect("write key");
    }

    /// The path of `file`.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// The path of `file`, as a setting's value.
    pub fn arg(&self, file: &str) -> String {
        self.path(file).display().to_string()
    }
}

impl DevOptions {
    /// TLS on dev's internal gRPC, mutual, with the certificate `<cert>` of
    /// the CA `ca.pem`, and on its HTTP endpoint with `<http>` (probed over
    /// HTTPS trusting `ca.pem`).
    pub fn internal_and_http_tls(self, pki: &TestPki, cert: &str, http: &str) -> Self {
        self.env(
            "KAFSCALE_INTERNAL_TLS_CERT_FILE",
            pki.arg(&format!("{cert}.pem")),
        )
        .env(
            "KAFSCALE_INTERNAL_TLS_KEY_FILE",
            pki.arg(&format!("{cert}.key")),
        )
        .env("KAFSCALE_INTERNAL_TLS_CA_FILE", pki.arg("ca.pem"))
        .env(
            "KAFSCALE_HTTP_TLS_CERT_FILE",
            pki.arg(&format!("{http}.pem")),
        )
        .env(
            "KAFSCALE_HTTP_TLS_KEY_FILE",
            pki.arg(&format!("{http}.key")),
        )
        .https_ca(pki.path("ca.pem"))
    }
}
