//! The gateway authenticates (issue 12): TLS with certificates made here,
//! SASL PLAIN and SCRAM against credentials in the metadata store, client
//! certificates mapped to principals that the ACL authorizer sees. Clients
//! are real: librdkafka through kcat, and kafka-python.

mod common;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A CA, the listener's certificate, and client certificates, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// Writes a CA (`ca`) with a server certificate for localhost and
    /// 127.0.0.1 (`server`) and client certificates `alice` and `mallory`,
    /// and a second, untrusted CA with a client certificate `rogue`.
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Self::ca("kafscale test CA");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write CA");
        let write =
            |name: &str, cn: &str, sans: Vec<String>, issuer: &CertifiedIssuer<'_, KeyPair>| {
                let key = KeyPair::generate().expect("key");
                let mut params = CertificateParams::new(sans).expect("params");
                params.distinguished_name.push(DnType::CommonName, cn);
                params
                    .distinguished_name
                    .push(DnType::OrganizationName, "KafScale tests");
                let cert = params.signed_by(&key, issuer).expect("sign");
                std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).expect("write");
                std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem())
                    .expect("write key");
            };
        write(
            "server",
            "localhost",
            vec!["localhost".into(), "127.0.0.1".into()],
            &ca,
        );
        write("alice", "alice", Vec::new(), &ca);
        write("mallory", "mallory", Vec::new(), &ca);
        let rogue_ca = Self::ca("someone else's CA");
        write("rogue", "alice", Vec::new(), &rogue_ca);
        Self { dir }
    }

    /// Replaces the server's certificate and key with ones issued by a new
    /// CA, written as `ca2.pem`.
    fn rotate_server_certificate(&self) {
        let ca = Self::ca("kafscale test CA, rotated");
        std::fs::write(self.path("ca2.pem"), ca.pem()).expect("write CA");
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &ca).expect("sign");
        // Key first: the gateway keeps the old pair while the two disagree.
        std::fs::write(self.path("server.key"), key.serialize_pem()).expect("write key");
        std::fs::write(self.path("server.pem"), cert.pem()).expect("write cert");
    }

    fn ca(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn arg(&self, file: &str) -> String {
        self.path(file).display().to_string()
    }

    /// The environment of a TLS listener; with client certificates
    /// required if `mtls`.
    fn server_env(&self, opts: DevOptions, mtls: bool) -> DevOptions {
        let opts = opts
            .env("KAFSCALE_TLS_CERT_FILE", self.arg("server.pem"))
            .env("KAFSCALE_TLS_KEY_FILE", self.arg("server.key"));
        if mtls {
            opts.env("KAFSCALE_TLS_CLIENT_CA_FILE", self.arg("ca.pem"))
        } else {
            opts
        }
    }
}

/// kcat's `-X` settings for the listener.
fn kcat_args<'a>(bootstrap: &'a str, settings: &'a [String]) -> Vec<&'a str> {
    let mut args = vec!["-b", bootstrap, "-m", "10"];
    for s in settings {
        args.push("-X");
        args.push(s);
    }
    args
}

fn sasl_ssl(pki: &Pki, mechanism: &str, user: &str, password: &str) -> Vec<String> {
    vec![
        "security.protocol=SASL_SSL".into(),
        format!("sasl.mechanisms={mechanism}"),
        format!("sasl.username={user}"),
        format!("sasl.password={password}"),
        format!("ssl.ca.location={}", pki.arg("ca.pem")),
    ]
}

/// `kafscale_gateway_authentications_total{mechanism,outcome}` in a scrape.
fn authentications(scrape: &str, mechanism: &str, outcome: &str) -> f64 {
    metric_value(
        scrape,
        "kafscale_gateway_authentications_total",
        &format!("mechanism=\"{mechanism}\",outcome=\"{outcome}\""),
    )
}

/// Produces `lines` (`key=value`) to `topic`, then reads them back.
async fn round_trip(bootstrap: &str, produce: &[String], consume: &[String], topic: &str) {
    let lines = "k1=v1\nk2=v2\nk3=v3\n";
    let mut p = kcat_args(bootstrap, produce);
    p.extend(["-P", "-t", topic, "-K", "="]);
    let out = run_kcat(&p, Some(lines)).await;
    assert!(out.ok, "produce failed:\n{}", out.stderr);
    let mut c = kcat_args(bootstrap, consume);
    c.extend(["-C", "-t", topic, "-o", "beginning", "-e", "-f", "%k=%s\n"]);
    let out = run_kcat(&c, None).await;
    assert!(out.ok, "consume failed:\n{}", out.stderr);
    assert_eq!(out.stdout, lines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_authenticates_over_sasl_ssl_with_scram_and_plain_and_bad_credentials_see_nothing(
) {
    let pki = Pki::new();
    let server = DevServer::start(
        pki.server_env(DevOptions::default(), false)
            .env("KAFSCALE_SECURITY_PROTOCOL", "SASL_SSL")
            .env(
                "KAFSCALE_SASL_USERS",
                "alice:alice-secret,admin:admin-secret",
            ),
    )
    .await;
    let b = server.bootstrap();
    let topic = unique_name("sasl-ssl");
    round_trip(
        &b,
        &sasl_ssl(&pki, "SCRAM-SHA-512", "alice", "alice-secret"),
        &sasl_ssl(&pki, "PLAIN", "alice", "alice-secret"),
        &topic,
    )
    .await;
    for (mechanism, user, password) in [
        ("SCRAM-SHA-512", "alice", "wrong"),
        ("SCRAM-SHA-256", "nobody", "alice-secret"),
        ("PLAIN", "alice", "wrong"),
    ] {
        let settings = sasl_ssl(&pki, mechanism, user, password);
        let mut args = kcat_args(&b, &settings);
        args.extend(["-C", "-t", &topic, "-o", "beginning", "-e"]);
        let out = run_kcat(&args, None).await;
        assert!(
            !out.ok && out.stdout.is_empty(),
            "{mechanism} {user}/{password} read data:\n{}",
            out.stdout
        );
        assert!(
            out.stderr.contains("Authentication failed"),
            "{mechanism} {user}/{password}: no authentication error:\n{}",
            out.stderr
        );
    }
    let scrape = server.metrics().await;
    let auth = |m: &str, o: &str| authentications(&scrape, m, o);
    assert!(auth("SCRAM-SHA-512", "success") >= 1.0, "{scrape}");
    assert!(auth("PLAIN", "success") >= 1.0);
    assert!(auth("SCRAM-SHA-512", "failure") >= 1.0);
    assert!(auth("SCRAM-SHA-256", "failure") >= 1.0);
    assert!(auth("PLAIN", "failure") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_scram_sha_256_and_the_credentials_api_over_sasl_plaintext() {
    let server = DevServer::start(
        DevOptions::default()
            .env("KAFSCALE_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
            .env("KAFSCALE_SASL_USERS", "admin:admin-secret"),
    )
    .await;
    run_kafka_python_check("sasl_check.py", &server, &[]).await;
    // kafka-python reports refusals as bootstrap failures: the broker's
    // counters show they were authentication failures.
    let scrape = server.metrics().await;
    for m in ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] {
        assert!(
            authentications(&scrape, m, "failure") >= 1.0,
            "no {m} failure counted:\n{scrape}"
        );
    }
}

/// Writes a request frame of `body` (after the length) and returns what the
/// gateway answers before closing (nothing, if it closes at once).
async fn raw_exchange(addr: std::net::SocketAddr, frame: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(frame).await.expect("write");
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the gateway did not close the connection");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_authentication_only_the_sasl_apis_are_served() {
    let server = DevServer::start(
        DevOptions::default()
            .env("KAFSCALE_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
            .env("KAFSCALE_SASL_USERS", "admin:admin-secret"),
    )
    .await;
    // Metadata v0 (no topics) without authenticating: closed, unanswered.
    let mut metadata = Vec::new();
    let body: &[u8] = &[0, 3, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0, 0, 0, 0];
    metadata.extend_from_slice(&(body.len() as u32).to_be_bytes());
    metadata.extend_from_slice(body);
    assert!(raw_exchange(server.kafka_addr(), &metadata)
        .await
        .is_empty());
    // A 100 MiB SASL token is refused by its length, before it is read.
    let started = std::time::Instant::now();
    let huge = (100u32 << 20).to_be_bytes();
    assert!(raw_exchange(server.kafka_addr(), &huge).await.is_empty());
    assert!(started.elapsed() < Duration::from_secs(5));
    // An unsupported mechanism: UNSUPPORTED_SASL_MECHANISM, then closed.
    let mut hs = vec![0, 17, 0, 1, 0, 0, 0, 7, 0xff, 0xff, 0, 6];
    hs.extend_from_slice(b"GSSAPI");
    let mut frame = (hs.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&hs);
    let answer = raw_exchange(server.kafka_addr(), &frame).await;
    // length, correlation id 7, error code 33
    assert!(answer.len() >= 10, "{answer:?}");
    assert_eq!(&answer[4..8], &7i32.to_be_bytes());
    assert_eq!(&answer[8..10], &33i16.to_be_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_and_their_subject_is_the_principal() {
    let pki = Pki::new();
    let server = DevServer::start(
        pki.server_env(DevOptions::default(), true)
            .env("KAFSCALE_SECURITY_PROTOCOL", "SSL")
            .env("KAFSCALE_AUTHORIZER", "acl")
            .env("KAFSCALE_SUPER_USERS", "User:alice"),
    )
    .await;
    let b = server.bootstrap();
    let ssl = |who: &str| -> Vec<String> {
        let mut s = vec![
            "security.protocol=SSL".to_string(),
            format!("ssl.ca.location={}", pki.arg("ca.pem")),
        ];
        if !who.is_empty() {
            s.push(format!(
                "ssl.certificate.location={}",
                pki.arg(&format!("{who}.pem"))
            ));
            s.push(format!(
                "ssl.key.location={}",
                pki.arg(&format!("{who}.key"))
            ));
        }
        s
    };
    // alice (a super user by her certificate's CN) produces and consumes.
    let topic = unique_name("mtls");
    round_trip(&b, &ssl("alice"), &ssl("alice"), &topic).await;
    // mallory's certificate is valid, but User:mallory may do nothing.
    let settings = ssl("mallory");
    let mut args = kcat_args(&b, &settings);
    args.extend(["-P", "-t", &topic]);
    let out = run_kcat(&args, Some("x\n")).await;
    assert!(
        !out.ok && out.stderr.contains("authorization failed"),
        "mallory could write:\n{}",
        out.stderr
    );
    // A certificate from another CA, and none at all: no TLS session.
    for who in ["rogue", ""] {
        let settings = ssl(who);
        let mut args = kcat_args(&b, &settings);
        args.push("-L");
        let out = run_kcat(&args, None).await;
        assert!(!out.ok, "{who:?} listed metadata:\n{}", out.stdout);
    }
    // The same through kafka-python (Python's ssl module).
    let dir = pki.dir.path().display().to_string();
    run_kafka_python_check("ssl_check.py", &server, &["--dir", &dir]).await;
    let scrape = server.metrics().await;
    assert!(
        authentications(&scrape, "TLS", "failure") >= 2.0,
        "{scrape}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_without_a_restart_and_garbage_handshakes_are_dropped() {
    let pki = Pki::new();
    let server = DevServer::start(
        pki.server_env(DevOptions::default(), false)
            .env("KAFSCALE_SECURITY_PROTOCOL", "SSL"),
    )
    .await;
    let b = server.bootstrap();
    let list = |ca: &str| {
        let settings = vec![
            "security.protocol=SSL".to_string(),
            format!("ssl.ca.location={}", pki.arg(ca)),
        ];
        let b = b.clone();
        async move {
            let mut args = kcat_args(&b, &settings);
            args.push("-L");
            run_kcat(&args, None).await
        }
    };
    assert!(list("ca.pem").await.ok, "kcat lists metadata over SSL");
    // Not TLS at all: the connection is closed, the listener keeps serving.
    let junk = b"GET / HTTP/1.0\r\n\r\n";
    assert!(raw_exchange(server.kafka_addr(), junk).await.len() < 64);
    assert!(
        list("ca.pem").await.ok,
        "the listener still serves after garbage"
    );
    // cert-manager writes a new pair: within the reload interval the new
    // certificate is served, and a client trusting only the old CA fails.
    pki.rotate_server_certificate();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if list("ca2.pem").await.ok {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rotated certificate was never served:\n{}",
            server.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        !list("ca.pem").await.ok,
        "the old certificate is still served"
    );
}

/// A JWKS with one P-256 key (`kid` k1), and tokens signed with it or not.
struct Tokens {
    jwks: tempfile::NamedTempFile,
    good: String,
    bad: Vec<String>,
}

fn b64url(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn tokens() -> Tokens {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let sign = |key: &KeyPair, claims: serde_json::Value| {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k1".into());
        encode(
            &header,
            &claims,
            &EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).expect("key"),
        )
        .expect("sign")
    };
    let claims = |sub: &str, iss: &str, exp: u64| serde_json::json!({"sub": sub, "iss": iss, "aud": "kafscale", "exp": exp});
    let key = KeyPair::generate().expect("key");
    let other = KeyPair::generate().expect("key");
    let point = key.public_key_raw();
    let jwks = serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
        "x": b64url(&point[1..33]), "y": b64url(&point[33..65]),
    }]});
    let file = tempfile::NamedTempFile::new().expect("jwks file");
    std::fs::write(file.path(), jwks.to_string()).expect("write jwks");
    let issuer = "https://issuer.test";
    let unsigned = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","kid":"k1"}"#),
        b64url(claims("carol", issuer, now + 600).to_string().as_bytes())
    );
    Tokens {
        jwks: file,
        good: sign(&key, claims("carol", issuer, now + 600)),
        bad: vec![
            sign(&key, claims("carol", issuer, now - 600)),
            sign(&key, claims("carol", "https://elsewhere.test", now + 600)),
            sign(&other, claims("carol", issuer, now + 600)),
            unsigned,
        ],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauthbearer_accepts_valid_jwts_and_refuses_expired_foreign_and_unsigned_ones() {
    let t = tokens();
    let server = DevServer::start(
        DevOptions::default()
            .env("KAFSCALE_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
            .env(
                "KAFSCALE_SASL_ENABLED_MECHANISMS",
                "OAUTHBEARER,SCRAM-SHA-512",
            )
            .env("KAFSCALE_OAUTHBEARER_JWKS", t.jwks.path().display())
            .env("KAFSCALE_OAUTHBEARER_ISSUER", "https://issuer.test")
            .env("KAFSCALE_OAUTHBEARER_AUDIENCE", "kafscale"),
    )
    .await;
    let mut args = vec!["--good", t.good.as_str()];
    for b in &t.bad {
        args.extend(["--bad", b.as_str()]);
    }
    run_kafka_python_check("oauth_check.py", &server, &args).await;
    let scrape = server.metrics().await;
    assert!(
        authentications(&scrape, "OAUTHBEARER", "success") >= 2.0,
        "{scrape}"
    );
    assert!(
        authentications(&scrape, "OAUTHBEARER", "failure") >= 4.0,
        "{scrape}"
    );
}

/// A raw connection authenticated with PLAIN (handshake v1, authenticate
/// v2); returns the session lifetime the gateway announced.
async fn plain_login(conn: &mut RawConn, user: &str, password: &str) -> (i16, i64) {
    use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
    let mut hs = SaslHandshakeRequest::default();
    hs.mechanism = kafka_protocol::protocol::StrBytes::from_static_str("PLAIN");
    let resp = conn.request(1, &hs).await;
    assert_eq!(resp.error_code, 0, "{resp:?}");
    let mut auth = SaslAuthenticateRequest::default();
    auth.auth_bytes = format!("\0{user}\0{password}").into_bytes().into();
    let resp = conn.request(2, &auth).await;
    (resp.error_code, resp.session_lifetime_ms)
}

/// Metadata v1 for no topics; `None` if the gateway closed the connection.
async fn metadata_answered(conn: &mut RawConn) -> bool {
    let mut req = kafka_protocol::messages::MetadataRequest::default();
    req.topics = Some(Vec::new());
    let frame = encode_request(conn.next_correlation_id(), 1, &req);
    let mut framed = (frame.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&frame);
    conn.write_raw(&framed).await.is_ok() && conn.read_frame().await.is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_unless_re_authenticated_and_revoked_users_are_cut_off() {
    const LIFETIME_MS: i64 = 2_000;
    let server = DevServer::start(
        DevOptions::default()
            .env("KAFSCALE_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
            .env("KAFSCALE_SASL_USERS", "admin:admin-secret,bob:bob-secret")
            .env("KAFSCALE_CONNECTIONS_MAX_REAUTH_MS", LIFETIME_MS),
    )
    .await;
    let addr = server.kafka_addr();

    // A session announces its lifetime and ends with it.
    let mut lapsed = RawConn::connect(addr).await;
    let (code, lifetime) = plain_login(&mut lapsed, "bob", "bob-secret").await;
    assert_eq!(code, 0);
    assert!(lifetime > 0 && lifetime <= LIFETIME_MS, "{lifetime}");
    assert!(metadata_answered(&mut lapsed).await);

    // One that re-authenticates in time carries on past the first lifetime.
    let mut renewed = RawConn::connect(addr).await;
    assert_eq!(plain_login(&mut renewed, "bob", "bob-secret").await.0, 0);
    tokio::time::sleep(Duration::from_millis(LIFETIME_MS as u64 / 2)).await;
    let (code, lifetime) = plain_login(&mut renewed, "bob", "bob-secret").await;
    assert_eq!(code, 0, "re-authentication");
    assert!(lifetime > 0);
    tokio::time::sleep(Duration::from_millis(LIFETIME_MS as u64 * 3 / 4)).await;
    assert!(
        metadata_answered(&mut renewed).await,
        "re-authenticated session was closed"
    );
    assert!(
        !metadata_answered(&mut lapsed).await,
        "expired session still served"
    );

    // Re-authenticating as someone else is refused, and the connection closed.
    let (code, _) = plain_login(&mut renewed, "admin", "admin-secret").await;
    assert_eq!(code, 58, "SASL_AUTHENTICATION_FAILED");
    renewed
        .expect_closed("re-authentication as another principal")
        .await;

    // librdkafka re-authenticates on its own (KIP-368) and keeps producing.
    let topic = unique_name("reauth");
    let bob = [
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanisms", "PLAIN"),
        ("sasl.username", "bob"),
        ("sasl.password", "bob-secret"),
        ("message.timeout.ms", "6000"),
    ];
    let producer = producer(&server.bootstrap(), &bob);
    let before = authentications(&server.metrics().await, "PLAIN", "success");
    let started = std::time::Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_millis(LIFETIME_MS as u64 * 3) {
        producer
            .send(
                rdkafka::producer::FutureRecord::<(), _>::to(&topic).payload("still here"),
                Duration::from_secs(5),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce {sent} failed: {e}"));
        sent += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = authentications(&server.metrics().await, "PLAIN", "success");
    assert!(
        after - before >= 3.0,
        "{} authentications in three session lifetimes",
        after - before
    );

    // Revoking bob's credentials cuts off his established connections
    // within a lifetime: re-authentication fails and new ones are refused.
    let mut admin = RawConn::connect(addr).await;
    assert_eq!(plain_login(&mut admin, "admin", "admin-secret").await.0, 0);
    let mut req = kafka_protocol::messages::AlterUserScramCredentialsRequest::default();
    for mechanism in [1, 2] {
        let mut d = kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialDeletion::default();
        d.name = kafka_protocol::protocol::StrBytes::from_static_str("bob");
        d.mechanism = mechanism;
        req.deletions.push(d);
    }
    let resp = admin.request(0, &req).await;
    assert!(resp.results.iter().all(|r| r.error_code == 0), "{resp:?}");
    tokio::time::sleep(Duration::from_millis(LIFETIME_MS as u64 + 500)).await;
    let refused = producer
        .send(
            rdkafka::producer::FutureRecord::<(), _>::to(&topic).payload("revoked"),
            Duration::from_secs(5),
        )
        .await;
    assert!(refused.is_err(), "a revoked user's produce was accepted");
    assert!(authentications(&server.metrics().await, "PLAIN", "failure") >= 1.0);
}

/// Hands librdkafka a signed OAUTHBEARER token (its built-in unsecured
/// tokens are unsigned, which the gateway refuses).
struct TokenContext {
    token: String,
}

impl rdkafka::ClientContext for TokenContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        let lifetime_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64
            + 600_000;
        Ok(rdkafka::client::OAuthToken {
            token: self.token.clone(),
            principal_name: "carol".into(),
            lifetime_ms,
        })
    }
}

impl rdkafka::consumer::ConsumerContext for TokenContext {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rdkafka_crate_produces_and_consumes_over_sasl_ssl_with_scram_plain_and_oauthbearer() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::Message;
    let pki = Pki::new();
    let t = tokens();
    let server = DevServer::start(
        pki.server_env(DevOptions::default(), false)
            .env("KAFSCALE_SECURITY_PROTOCOL", "SASL_SSL")
            .env(
                "KAFSCALE_SASL_ENABLED_MECHANISMS",
                "SCRAM-SHA-512,PLAIN,OAUTHBEARER",
            )
            .env("KAFSCALE_SASL_USERS", "alice:alice-secret")
            .env("KAFSCALE_OAUTHBEARER_JWKS", t.jwks.path().display())
            .env("KAFSCALE_OAUTHBEARER_ISSUER", "https://issuer.test")
            .env("KAFSCALE_OAUTHBEARER_AUDIENCE", "kafscale"),
    )
    .await;
    let config = |mechanism: &str, user: &str, password: &str| {
        let mut c = client_config(&server.bootstrap(), &[]);
        c.set("security.protocol", "SASL_SSL")
            .set("ssl.ca.location", pki.arg("ca.pem"))
            .set("sasl.mechanisms", mechanism);
        if mechanism != "OAUTHBEARER" {
            c.set("sasl.username", user).set("sasl.password", password);
        }
        c
    };
    let context = || TokenContext {
        token: t.good.clone(),
    };
    for (mechanism, user, password) in [
        ("SCRAM-SHA-512", "alice", "alice-secret"),
        ("PLAIN", "alice", "alice-secret"),
        ("OAUTHBEARER", "carol", ""),
    ] {
        let topic = unique_name("rdkafka-sasl-ssl");
        let mut pc = config(mechanism, user, password);
        pc.set("message.timeout.ms", "10000");
        let producer: FutureProducer<TokenContext> =
            pc.create_with_context(context()).expect("producer");
        for i in 0..10 {
            let value = format!("{mechanism}-{i}");
            producer
                .send(
                    FutureRecord::<(), _>::to(&topic)
                        .partition(0)
                        .payload(&value),
                    Duration::from_secs(10),
                )
                .await
                .unwrap_or_else(|(e, _)| panic!("{mechanism}: produce: {e}"));
        }
        let mut cc = config(mechanism, user, password);
        cc.set("group.id", unique_name("g"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false");
        let consumer: BaseConsumer<TokenContext> =
            cc.create_with_context(context()).expect("consumer");
        consumer.subscribe(&[&topic]).expect("subscribe");
        let mut got = Vec::new();
        let started = std::time::Instant::now();
        while got.len() < 10 && started.elapsed() < Duration::from_secs(30) {
            if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                let m = m.unwrap_or_else(|e| panic!("{mechanism}: consume: {e}"));
                got.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string());
            }
        }
        let want: Vec<String> = (0..10).map(|i| format!("{mechanism}-{i}")).collect();
        assert_eq!(got, want, "{mechanism}");
    }
    // A wrong password gets nothing through.
    let mut pc = config("SCRAM-SHA-512", "alice", "wrong");
    pc.set("message.timeout.ms", "3000");
    let producer: FutureProducer<TokenContext> =
        pc.create_with_context(context()).expect("producer");
    let refused = producer
        .send(
            FutureRecord::<(), _>::to("anything").payload("x"),
            Duration::from_secs(5),
        )
        .await;
    assert!(refused.is_err(), "a wrong password produced");
    let scrape = server.metrics().await;
    for m in ["SCRAM-SHA-512", "PLAIN", "OAUTHBEARER"] {
        assert!(
            authentications(&scrape, m, "success") >= 2.0,
            "{m}: {scrape}"
        );
    }
    assert!(authentications(&scrape, "SCRAM-SHA-512", "failure") >= 1.0);
}

/// An ES256 key's JWK with key id `kid`.
fn jwk(key: &KeyPair, kid: &str) -> serde_json::Value {
    let point = key.public_key_raw();
    serde_json::json!({
        "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
        "x": b64url(&point[1..33]), "y": b64url(&point[33..65]),
    })
}

/// A token for `sub` signed by `key` as `kid`, valid for ten minutes.
fn signed(key: &KeyPair, kid: &str, sub: &str) -> String {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 600;
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    encode(
        &header,
        &serde_json::json!({"sub": sub, "exp": exp}),
        &EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).expect("key"),
    )
    .expect("sign")
}

/// Serves whatever JWKS `jwks` holds at `http://<addr>/jwks.json`.
async fn serve_jwks(jwks: std::sync::Arc<std::sync::Mutex<String>>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let body = jwks.lock().expect("jwks").clone();
            tokio::spawn(async move {
                let mut req = [0u8; 4096];
                let _ = s.read(&mut req).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

/// Whether an OAUTHBEARER login with `token` succeeds on a raw connection.
async fn bearer_login(addr: std::net::SocketAddr, token: &str) -> bool {
    use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
    let mut conn = RawConn::connect(addr).await;
    let mut hs = SaslHandshakeRequest::default();
    hs.mechanism = kafka_protocol::protocol::StrBytes::from_static_str("OAUTHBEARER");
    assert_eq!(conn.request(1, &hs).await.error_code, 0);
    let mut auth = SaslAuthenticateRequest::default();
    auth.auth_bytes = format!("n,,\x01auth=Bearer {token}\x01\x01")
        .into_bytes()
        .into();
    conn.request(2, &auth).await.error_code == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_url_is_fetched_and_its_key_rotation_followed_without_a_restart() {
    let (old, new) = (
        KeyPair::generate().expect("key"),
        KeyPair::generate().expect("key"),
    );
    let jwks = std::sync::Arc::new(std::sync::Mutex::new(
        serde_json::json!({"keys": [jwk(&old, "old")]}).to_string(),
    ));
    let http = serve_jwks(jwks.clone()).await;
    let server = DevServer::start(
        DevOptions::default()
            .env("KAFSCALE_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
            .env("KAFSCALE_SASL_ENABLED_MECHANISMS", "OAUTHBEARER")
            .env(
                "KAFSCALE_OAUTHBEARER_JWKS",
                format!("http://{http}/jwks.json"),
            )
            .env("KAFSCALE_OAUTHBEARER_JWKS_REFRESH_MS", 500),
    )
    .await;
    let addr = server.kafka_addr();
    assert!(bearer_login(addr, &signed(&old, "old", "carol")).await);
    assert!(!bearer_login(addr, &signed(&new, "new", "carol")).await);
    // The identity provider rotates its key: the old one is retired.
    *jwks.lock().expect("jwks") = serde_json::json!({"keys": [jwk(&new, "new")]}).to_string();
    eventually(
        "the rotated key is accepted",
        Duration::from_secs(20),
        async || bearer_login(addr, &signed(&new, "new", "carol")).await,
    )
    .await;
    assert!(!bearer_login(addr, &signed(&old, "old", "carol")).await);
}
