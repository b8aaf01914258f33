//! The server's identity: a certificate chain and its key, read from PEM
//! files or made up on the spot (`--tls-self-signed`), and the SHA-256 of
//! the leaf certificate, which a client can pin instead of trusting a CA.

use std::path::Path;

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate chain (leaf first) and the leaf's private key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// The key a self-signed certificate is made with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyKind {
    /// ECDSA over P-256: small, fast to sign (what most fleets use).
    EcdsaP256,
    /// Ed25519.
    Ed25519,
    /// RSA-2048 with PKCS#1 v1.5 SHA-256 signatures: what much of the web
    /// still serves, and the most expensive to sign with.
    Rsa2048,
}

impl Identity {
    /// Read a PEM chain (leaf first) and a PEM private key (PKCS#8, PKCS#1
    /// or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> anyhow::Result<Identity> {
        let chain = CertificateDer::pem_file_iter(cert)
            .with_context(|| format!("reading the certificate {}", cert.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("parsing the certificate {}", cert.display()))?;
        if chain.is_empty() {
            bail!("{} holds no PEM certificate", cert.display());
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("reading a PEM private key from {}", key.display()))?;
        Ok(Identity { chain, key })
    }

    /// A fresh self-signed certificate for `localhost`, 127.0.0.1 and ::1.
    pub fn self_signed(kind: KeyKind) -> anyhow::Result<Identity> {
        let key = match kind {
            KeyKind::EcdsaP256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
            KeyKind::Ed25519 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?,
            KeyKind::Rsa2048 => rsa_2048().context("generating an RSA-2048 key")?,
        };
        let names = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
        let cert = rcgen::CertificateParams::new(names)
            .and_then(|params| params.self_signed(&key))
            .context("signing the certificate")?;
        Ok(Identity {
            chain: vec![cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        })
    }

    /// The SHA-256 of the leaf certificate's DER, in lowercase hex.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.chain[0])
    }

    /// The leaf certificate as PEM, for a client to trust.
    pub fn leaf_pem(&self) -> String {
        let body = base64_lines(&self.chain[0]);
        format!("-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n")
    }
}

/// A fresh RSA-2048 key pair. ring signs with RSA but cannot make a key,
/// so the `rsa` crate makes it (it only generates here: ring does every
/// signature).
fn rsa_2048() -> anyhow::Result<rcgen::KeyPair> {
    use rsa::pkcs8::EncodePrivateKey;
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)?;
    let der = key.to_pkcs8_der()?;
    let der = PrivatePkcs8KeyDer::from(der.as_bytes().to_vec());
    Ok(rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &der,
        &rcgen::PKCS_RSA_SHA256,
    )?)
}

/// The SHA-256 of a certificate's DER, in lowercase hex.
pub fn fingerprint(cert: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Standard base64 in lines of 64 characters, each ending in a newline.
fn base64_lines(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            let c = match i <= chunk.len() {
                true => ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char,
                false => '=',
            };
            text.push(c);
        }
    }
    let mut lines = String::new();
    for line in text.as_bytes().chunks(64) {
        lines.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        lines.push('\n');
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        let cases: [(&[u8], &str); 4] = [
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (input, output) in cases {
            assert_eq!(base64_lines(input), format!("{output}\n"));
        }
    }

    #[test]
    fn a_self_signed_identity_reads_back_from_its_own_pem() {
        let identity = Identity::self_signed(KeyKind::EcdsaP256).unwrap();
        let back = CertificateDer::from_pem_slice(identity.leaf_pem().as_bytes()).unwrap();
        assert_eq!(back, identity.chain[0]);
        assert_eq!(identity.fingerprint().len(), 64);
    }

    #[test]
    fn every_key_kind_makes_a_pair_rustls_accepts() {
        for kind in [KeyKind::EcdsaP256, KeyKind::Ed25519, KeyKind::Rsa2048] {
            let identity = Identity::self_signed(kind).unwrap();
            let config = crate::tls::server_config(identity, &[], crate::tls::StateKind::Compact);
            assert!(config.is_ok(), "{kind:?}: {:?}", config.err());
        }
    }
}
