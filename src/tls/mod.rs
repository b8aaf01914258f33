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
pub mod record;

use std::sync::Arc;

use anyhow::Context;
use rustls::crypto::ring as provider;
use rustls::ServerConfig;

pub use certs::{Identity, KeyKind};
pub use conn::{ClientTls, ServerTls, StateKind, TlsSetup};
pub use options::TlsOptions;

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
    // ring builds from `.ci/run` with a C compiler alone. rustls 0.23.48
    // deprecates its provider because ring has no post-quantum key
    // exchange (X25519MLKEM768); the classical groups are what the
    // measured figures use.
    #[allow(deprecated)]
    let mut provider = provider::default_provider();
    if !groups.is_empty() {
        provider.kx_groups = groups
            .iter()
            .map(|group| match group {
                Group::X25519 => provider::kx_group::X25519,
                Group::P256 => provider::kx_group::SECP256R1,
                Group::P384 => provider::kx_group::SECP384R1,
            })
            .collect();
    }
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
