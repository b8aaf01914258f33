//! TLS for `fanout serve` (wss:// and TLS raw TCP), sans-io like the rest
//! of the shard core: the core hands a connection's ciphertext to
//! [`server::ServerTls`] and gets plaintext and records to send back, in
//! the shard's scratch. rustls does the handshake; after it, a connection
//! keeps either rustls's state or only TLS 1.3's record layer
//! ([`record`]). `docs/tls.md` says what each costs.

pub mod certs;
pub mod conn;
pub mod kernel;
pub mod options;
mod pin;
pub mod record;
pub mod slots;
pub mod tickets;

use std::sync::Arc;

use anyhow::Context;
use rustls::crypto::ring as provider;
use rustls::ServerConfig;

pub use certs::{Identity, KeyKind};
pub use conn::{ClientTls, ServerTls, StateKind, TlsSetup};
pub use options::{ClientSetup, ClientTlsOptions, OnOff, TlsOptions};

/// Why a TLS connection failed; each has its own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Plain HTTP to the TLS port (answered with a 400 that says so).
    PlainHttp,
    /// Bytes that are not a TLS record at all.
    NotTls,
    /// A malformed or out-of-order handshake message or record.
    BadRecord,
    /// Nothing in common: protocol version, cipher suites or groups.
    Incompatible,
    /// A record that failed to decrypt.
    Decrypt,
    /// The peer sent a fatal alert.
    PeerAlert,
    /// Our own bug: the record layer disagreed with rustls.
    Internal,
}

impl Failure {
    pub fn of(error: &rustls::Error) -> Failure {
        use rustls::Error::*;
        match error {
            PeerIncompatible(_) | NoCertificatesPresented => Failure::Incompatible,
            DecryptError => Failure::Decrypt,
            AlertReceived(_) => Failure::PeerAlert,
            _ => Failure::BadRecord,
        }
    }
}

/// Key-exchange groups a server may be limited to (`--tls-groups`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Group {
    X25519,
    P256,
    P384,
}

/// The server's rustls configuration: TLS 1.3 only, the ring provider,
/// stateless session tickets for resumption, the key log that feeds the
/// compact state its secrets.
pub fn server_config(
    identity: Identity,
    groups: &[Group],
    state: StateKind,
) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = provider_with(groups);
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("choosing TLS 1.3")?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)
        .context("the certificate and key do not make a usable pair")?;
    config.ticketer = provider::Ticketer::new().context("making the session ticketer")?;
    config.ignore_client_order = false;
    if state == StateKind::Compact {
        config.enable_secret_extraction = true;
        config.key_log = Arc::new(conn::SecretCapture);
    }
    Ok(Arc::new(config))
}

/// Key-exchange groups when none are given, in the order browsers offer
/// them. (ring's provider puts P-384 first; its P-384 is generic bignum
/// code, about ten times X25519's cost: measured, it made a handshake cost
/// about 1 ms of CPU on each side here.)
const DEFAULT_GROUPS: [Group; 3] = [Group::X25519, Group::P256, Group::P384];

/// The groups given, or the default ones when none are.
pub fn groups_or_default(groups: &[Group]) -> &[Group] {
    match groups.is_empty() {
        true => &DEFAULT_GROUPS[..],
        false => groups,
    }
}

/// A key kind's or a group's name as the command line spells it
/// (`ecdsa-p256`, `x25519`).
pub fn value_name(value: &impl clap::ValueEnum) -> String {
    value
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string())
}

/// The ring provider: `groups` (or [`DEFAULT_GROUPS`]) in order, and the
/// TLS 1.3 suites in the order browsers offer them (AES-128-GCM first).
fn provider_with(groups: &[Group]) -> rustls::crypto::CryptoProvider {
    // ring builds from `.ci/run` with a C compiler alone. rustls 0.23.48
    // deprecates its provider because ring has no post-quantum key
    // exchange (X25519MLKEM768); the classical groups are what the
    // measured figures use.
    #[allow(deprecated)]
    let mut provider = provider::default_provider();
    provider.kx_groups = groups_or_default(groups)
        .iter()
        .map(|group| match group {
            Group::X25519 => provider::kx_group::X25519,
            Group::P256 => provider::kx_group::SECP256R1,
            Group::P384 => provider::kx_group::SECP384R1,
        })
        .collect();
    provider.cipher_suites = vec![
        provider::cipher_suite::TLS13_AES_128_GCM_SHA256,
        provider::cipher_suite::TLS13_AES_256_GCM_SHA384,
        provider::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    provider
}

/// The load generator's rustls configuration: TLS 1.3, the server trusted
/// by CA or by pin, tickets kept for resumption (or not), and the key log
/// that feeds the compact state its secrets.
pub fn client_config(
    trust: options::Trust,
    groups: &[Group],
    resume: bool,
    state: StateKind,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(provider_with(groups));
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("choosing TLS 1.3")?;
    let mut config = match trust {
        options::Trust::Ca(path) => {
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls::pki_types::CertificateDer::pem_file_iter(&path)
                .with_context(|| format!("reading the CA file {}", path.display()))?
            {
                let cert = cert.with_context(|| format!("parsing {}", path.display()))?;
                roots.add(cert).context("adding a CA certificate")?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        options::Trust::Pin(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(pin::Pinned::new(pin, provider)))
            .with_no_client_auth(),
    };
    config.resumption = match resume {
        true => rustls::client::Resumption::store(Arc::new(tickets::TicketStore::default())),
        false => rustls::client::Resumption::disabled(),
    };
    if state == StateKind::Compact {
        config.enable_secret_extraction = true;
        config.key_log = Arc::new(conn::SecretCapture);
    }
    Ok(Arc::new(config))
}
