//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), server side, and
//! the credentials they verify against.
//!
//! A stored credential is salt, iteration count, StoredKey and ServerKey:
//! enough to check a client's proof and to prove the server knows the
//! credential, never enough to log in (the password and the salted
//! password are never stored). PLAIN checks a password against the same
//! credential by deriving StoredKey from it.

use hmac::{Hmac, KeyInit, Mac};
use kafscale_proto::metadata::v1::ScramCredential;
use sha2::{Digest, Sha256, Sha512};

/// The SCRAM mechanisms, numbered as Kafka's `ScramMechanism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    Sha256 = 1,
    Sha512 = 2,
}

/// Iterations Kafka's tools use by default (and the minimum accepted).
pub const DEFAULT_ITERATIONS: i32 = 4096;
/// The most iterations accepted (Kafka's limit).
pub const MAX_ITERATIONS: i32 = 16384;

impl Mechanism {
    /// The mechanism of Kafka's number (1, 2), if known.
    pub fn from_kafka(n: i8) -> Option<Self> {
        match n {
            1 => Some(Self::Sha256),
            2 => Some(Self::Sha512),
            _ => None,
        }
    }

    /// The SASL mechanism name, e.g. `SCRAM-SHA-256`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "SCRAM-SHA-256",
            Self::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism a SASL name names.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Sha256, Self::Sha512]
            .into_iter()
            .find(|m| m.name() == name)
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        fn run<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
            // HMAC takes keys of any length: this cannot fail.
            let mut m = <M as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        match self {
            Self::Sha256 => run::<Hmac<Sha256>>(key, data),
            Self::Sha512 => run::<Hmac<Sha512>>(key, data),
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => Sha256::digest(data).to_vec(),
            Self::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// `Hi(password, salt, i)`: PBKDF2 with this mechanism's HMAC.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Self::Sha256 => {
                let mut out = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out.to_vec()
            }
            Self::Sha512 => {
                let mut out = [0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out.to_vec()
            }
        }
    }

    /// The credential of `user` from a salted password (what
    /// AlterUserScramCredentials carries).
    pub fn credential_from_salted(
        self,
        user: &str,
        salt: &[u8],
        iterations: i32,
        salted_password: &[u8],
    ) -> ScramCredential {
        let client_key = self.hmac(salted_password, b"Client Key");
        ScramCredential {
            user: user.to_string(),
            mechanism: self as i32,
            salt: salt.to_vec().into(),
            iterations,
            stored_key: self.hash(&client_key).into(),
            server_key: self.hmac(salted_password, b"Server Key").into(),
        }
    }

    /// A fresh credential of `user` for `password` (random salt).
    pub fn credential(self, user: &str, password: &str, iterations: i32) -> ScramCredential {
        let salt: [u8; 24] = rand::random();
        let salted = self.salted_password(password.as_bytes(), &salt, iterations.max(1) as u32);
        self.credential_from_salted(user, &salt, iterations, &salted)
    }

    /// Whether `password` is the one `c` was made from.
    pub fn verify_password(self, c: &ScramCredential, password: &str) -> bool {
        let salted = self.salted_password(password.as_bytes(), &c.salt, c.iterations.max(1) as u32);
        let stored = self.hash(&self.hmac(&salted, b"Client Key"));
        constant_time_eq(&stored, &c.stored_key)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a SCRAM exchange failed (the client sees one generic failure).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("delegation tokens are not supported")]
    TokenAuth,
    #[error("nonce mismatch")]
    Nonce,
    #[error("invalid credentials")]
    InvalidProof,
}

/// A server-side SCRAM exchange after the client's first message.
pub struct ScramServer {
    mechanism: Mechanism,
    user: String,
    /// Whether a stored credential was found (a made-up one is used
    /// otherwise, so an unknown user fails exactly like a wrong password).
    known: bool,
    credential: ScramCredential,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

/// base64 (standard alphabet, padded), as SCRAM uses it.
fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn unb64(s: &str) -> Result<Vec<u8>, ScramError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| ScramError::Malformed("bad base64"))
}

/// A SCRAM `saslname` decoded (`=2C` is `,` and `=3D` is `=`).
fn decode_saslname(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in user name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The user a client-first message names (to look its credential up).
pub fn client_first_user(message: &[u8]) -> Result<String, ScramError> {
    let (_, bare) = split_client_first(message)?;
    let user = attribute(bare, 'n').ok_or(ScramError::Malformed("no user name"))?;
    decode_saslname(user)
}

/// (gs2 header, client-first-bare).
fn split_client_first(message: &[u8]) -> Result<(&str, &str), ScramError> {
    let s = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    // gs2-header = cbind-flag "," [authzid] ","
    let mut parts = s.splitn(3, ',');
    let flag = parts.next().unwrap_or_default();
    let _authzid = parts.next().ok_or(ScramError::Malformed("no gs2 header"))?;
    let bare = parts.next().ok_or(ScramError::Malformed("no gs2 header"))?;
    match flag {
        "n" | "y" => {}
        f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
        _ => return Err(ScramError::Malformed("bad channel binding flag")),
    }
    Ok((&s[..s.len() - bare.len()], bare))
}

/// The value of attribute `name` in a comma-separated SCRAM message.
fn attribute(message: &str, name: char) -> Option<&str> {
    message.split(',').find_map(|a| {
        let mut c = a.chars();
        (c.next() == Some(name) && c.next() == Some('=')).then(|| &a[2..])
    })
}

impl ScramServer {
    /// Starts an exchange from the client's first message; `credential` is
    /// the stored one of the user it names, if any. Returns the server's
    /// first message to send.
    pub fn start(
        mechanism: Mechanism,
        client_first: &[u8],
        credential: Option<ScramCredential>,
    ) -> Result<(Self, Vec<u8>), ScramError> {
        let (_, bare) = split_client_first(client_first)?;
        let user =
            decode_saslname(attribute(bare, 'n').ok_or(ScramError::Malformed("no user name"))?)?;
        let client_nonce = attribute(bare, 'r').ok_or(ScramError::Malformed("no nonce"))?;
        if client_nonce.is_empty() || bare.split(',').any(|a| a.starts_with("m=")) {
            return Err(ScramError::Malformed("bad nonce or mandatory extension"));
        }
        if attribute(bare, 't').is_some() || bare.contains("tokenauth=true") {
            return Err(ScramError::TokenAuth);
        }
        let known = credential.is_some();
        let credential = credential
            .filter(|c| c.mechanism == mechanism as i32)
            .unwrap_or_else(|| mechanism.credential(&user, &b64(&rand::random::<[u8; 16]>()), 1));
        let server_nonce = b64(&rand::random::<[u8; 24]>());
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            b64(&credential.salt),
            if known {
                credential.iterations
            } else {
                DEFAULT_ITERATIONS
            }
        );
        let server = Self {
            mechanism,
            user,
            known,
            credential,
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok((server, server_first.into_bytes()))
    }

    /// The exchange's mechanism.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The user the exchange authenticates.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Checks the client's final message; on success returns the server's
    /// final message (its signature) to send.
    pub fn finish(self, client_final: &[u8]) -> Result<Vec<u8>, ScramError> {
        let s =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = s
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        // Kafka accepts a final nonce that ends with the server's nonce:
        // librdkafka sends its client nonce again in front of it. What
        // matters (no replay) is that our fresh nonce is there.
        if !attribute(without_proof, 'r').is_some_and(|n| n.ends_with(&self.nonce)) {
            return Err(ScramError::Nonce);
        }
        let binding = attribute(without_proof, 'c').ok_or(ScramError::Malformed("no binding"))?;
        let binding = unb64(binding)?;
        if binding != b"n,,"
            && binding != b"y,,"
            && !binding.starts_with(b"n,a=")
            && !binding.starts_with(b"y,a=")
        {
            return Err(ScramError::ChannelBinding);
        }
        let proof = unb64(proof)?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let m = self.mechanism;
        let client_signature = m.hmac(&self.credential.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err(ScramError::InvalidProof);
        }
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        if !self.known || !constant_time_eq(&m.hash(&client_key), &self.credential.stored_key) {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = m.hmac(&self.credential.server_key, auth_message.as_bytes());
        Ok(format!("v={}", b64(&server_signature)).into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SCRAM client, as RFC 5802 describes it, to drive the server.
    fn client_final(
        m: Mechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> (String, Vec<u8>) {
        let nonce = attribute(server_first, 'r').unwrap();
        let salt = unb64(attribute(server_first, 's').unwrap()).unwrap();
        let iterations: u32 = attribute(server_first, 'i').unwrap().parse().unwrap();
        let salted = m.salted_password(password.as_bytes(), &salt, iterations);
        let client_key = m.hmac(&salted, b"Client Key");
        let stored_key = m.hash(&client_key);
        let without_proof = format!("c={},r={nonce}", b64(b"n,,"));
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = m.hmac(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = m.hmac(&salted, b"Server Key");
        let expected_server_final = format!("v={}", b64(&m.hmac(&server_key, auth.as_bytes())));
        (
            format!("{without_proof},p={}", b64(&proof)),
            expected_server_final.into_bytes(),
        )
    }

    fn exchange(
        m: Mechanism,
        stored: Option<ScramCredential>,
        password: &str,
    ) -> Result<(), ScramError> {
        let bare = "n=al=2Cice,r=fyko+d2lbbFgONRv9qkxdawL";
        let (server, first) = ScramServer::start(m, format!("n,,{bare}").as_bytes(), stored)?;
        assert_eq!(server.user(), "al,ice");
        let first = String::from_utf8(first).unwrap();
        assert!(first.starts_with("r=fyko+d2lbbFgONRv9qkxdawL"));
        let (fin, expected) = client_final(m, password, bare, &first);
        let server_final = server.finish(fin.as_bytes())?;
        assert_eq!(
            server_final, expected,
            "the server proves it knows the credential"
        );
        Ok(())
    }

    #[test]
    fn the_right_password_authenticates_and_others_do_not() {
        for m in [Mechanism::Sha256, Mechanism::Sha512] {
            let c = m.credential("al,ice", "pencil", DEFAULT_ITERATIONS);
            assert_eq!(exchange(m, Some(c.clone()), "pencil"), Ok(()));
            assert_eq!(
                exchange(m, Some(c.clone()), "pen"),
                Err(ScramError::InvalidProof)
            );
            assert_eq!(exchange(m, None, "pencil"), Err(ScramError::InvalidProof));
            assert!(m.verify_password(&c, "pencil"));
            assert!(!m.verify_password(&c, "Pencil"));
        }
    }

    #[test]
    fn rfc7677_test_vector_derives_the_same_keys() {
        // RFC 7677 §3: user "user", password "pencil", salt and iterations
        // from its server-first message.
        let salt = unb64("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let m = Mechanism::Sha256;
        let salted = m.salted_password(b"pencil", &salt, 4096);
        let c = m.credential_from_salted("user", &salt, 4096, &salted);
        let bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first =
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let server = ScramServer {
            mechanism: m,
            user: "user".into(),
            known: true,
            credential: c,
            client_first_bare: bare.into(),
            server_first: server_first.into(),
            nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
        };
        let fin = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            server.finish(fin.as_bytes()).unwrap(),
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec()
        );
    }

    #[test]
    fn a_final_nonce_must_end_with_the_servers_nonce() {
        let m = Mechanism::Sha256;
        let c = m.credential("u", "p", DEFAULT_ITERATIONS);
        let (server, first) = ScramServer::start(m, b"n,,n=u,r=abc", Some(c)).unwrap();
        let first = String::from_utf8(first).unwrap();
        let nonce = attribute(&first, 'r').unwrap().to_string();
        // Another nonce (a replay of an older exchange) is refused.
        let fin = format!("c=biws,r=abcXYZ,p={}", b64(&[0u8; 32]));
        assert_eq!(server.finish(fin.as_bytes()), Err(ScramError::Nonce));
        // librdkafka's form (client nonce, then the whole server nonce)
        // gets as far as the proof.
        let (server, first) = ScramServer::start(
            m,
            b"n,,n=u,r=abc",
            Some(m.credential("u", "p", DEFAULT_ITERATIONS)),
        )
        .unwrap();
        let first = String::from_utf8(first).unwrap();
        let nonce2 = attribute(&first, 'r').unwrap();
        assert_ne!(nonce2, nonce, "every exchange has a fresh nonce");
        let fin = format!("c=biws,r=abc{nonce2},p={}", b64(&[0u8; 32]));
        assert_eq!(server.finish(fin.as_bytes()), Err(ScramError::InvalidProof));
    }

    #[test]
    fn malformed_and_unsupported_first_messages_are_refused() {
        let m = Mechanism::Sha256;
        for bad in [
            &b"garbage"[..],
            b"p=tls-unique,,n=u,r=x",
            b"n,,r=x",
            b"n,,n=u",
            b"n,,n=u=,r=x",
            b"\xff,,n=u,r=x",
        ] {
            assert!(ScramServer::start(m, bad, None).is_err(), "{bad:?}");
        }
        assert!(matches!(
            ScramServer::start(m, b"n,,n=u,r=x,tokenauth=true", None),
            Err(ScramError::TokenAuth)
        ));
    }
}
