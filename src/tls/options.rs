//! The TLS options `fanout serve` takes (and `fanout bench --tls` passes
//! on), and the setup they make.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use super::{kernel, server_config, Group, Identity, KeyKind, StateKind, TlsSetup};

#[derive(Clone, Debug, clap::Args)]
pub struct TlsOptions {
    /// Speak TLS with this certificate chain (PEM, leaf first): --listen
    /// then serves wss:// (TLS raw TCP with --proto tcp), TLS 1.3 only.
    /// Needs --tls-key.
    #[arg(long, requires = "tls_key", conflicts_with = "tls_self_signed")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Speak TLS with a certificate made at start for localhost, 127.0.0.1
    /// and ::1. Its SHA-256 is printed (`fanout load --tls-pin` takes it);
    /// --tls-write-cert saves it for clients that want a CA file.
    #[arg(long)]
    pub tls_self_signed: bool,

    /// The key type of the self-signed certificate.
    #[arg(long, value_enum, default_value_t = KeyKind::EcdsaP256)]
    pub tls_key_kind: KeyKind,

    /// What an established TLS connection keeps. compact: TLS 1.3's record
    /// layer alone — two traffic secrets, the keys derived from them and
    /// two sequence numbers (KeyUpdate and close_notify handled); rustls:
    /// the whole rustls connection, as a stock rustls server keeps it (the
    /// reference). The handshake is rustls's either way.
    #[arg(long, value_enum, default_value_t = StateKind::Compact)]
    pub tls_state: StateKind,

    /// Key-exchange groups the server accepts, most preferred first
    /// (default: x25519, p256, p384).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub tls_groups: Vec<Group>,

    /// Write the server's certificate (PEM) to this file at start, for
    /// clients that verify against a CA file.
    #[arg(long)]
    pub tls_write_cert: Option<PathBuf>,
}

impl TlsOptions {
    pub fn enabled(&self) -> bool {
        self.tls_cert.is_some() || self.tls_self_signed
    }

    /// The setup every shard shares and the line the server prints about
    /// it; None when TLS is off. `shard_core`: the backend runs the shard
    /// core (epoll, uring), which keeps --tls-state; the task backends keep
    /// rustls's state whatever it says.
    pub fn setup(&self, shard_core: bool) -> anyhow::Result<Option<(Arc<TlsSetup>, String)>> {
        let (identity, origin) = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => (
                Identity::from_pem_files(cert, key)?,
                cert.display().to_string(),
            ),
            _ if self.tls_self_signed => {
                let kind = super::value_name(&self.tls_key_kind);
                (
                    Identity::self_signed(self.tls_key_kind)?,
                    format!("self-signed {kind}"),
                )
            }
            _ => return Ok(None),
        };
        if let Some(path) = &self.tls_write_cert {
            std::fs::write(path, identity.leaf_pem())
                .with_context(|| format!("writing the certificate to {}", path.display()))?;
        }
        let fingerprint = identity.fingerprint();
        let config = server_config(identity, &self.tls_groups, self.tls_state)?;
        let state = match (shard_core, self.tls_state) {
            (true, StateKind::Compact) => "compact state (the record layer alone)",
            (true, StateKind::Rustls) => "rustls's state",
            (false, _) => "rustls's state (tokio-rustls, or rustls over the session task)",
        };
        let groups: Vec<String> = super::groups_or_default(&self.tls_groups)
            .iter()
            .map(super::value_name)
            .collect();
        let kernel = kernel::probe();
        let line = format!(
            "tls 1.3: certificate {origin} sha256 {fingerprint}; key exchange {}; {state} after the handshake; {}",
            groups.join(", "),
            kernel.describe()
        );
        let setup = TlsSetup {
            config,
            state: self.tls_state,
            kernel: kernel.kernel,
        };
        Ok(Some((Arc::new(setup), line)))
    }
}

/// Session resumption on the client: on or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnOff {
    On,
    Off,
}

/// The TLS options of `fanout load` (wss:// and tls:// URLs).
#[derive(Clone, Debug, clap::Args)]
pub struct ClientTlsOptions {
    /// Trust the server certificates this CA file (PEM) vouches for.
    #[arg(long, conflicts_with = "tls_pin")]
    pub tls_ca: Option<PathBuf>,

    /// Trust exactly the server certificate with this SHA-256 (64 hex
    /// digits: the one `fanout serve --tls-self-signed` prints).
    #[arg(long)]
    pub tls_pin: Option<String>,

    /// Resume TLS sessions from the server's tickets (on), or make every
    /// connection do a full handshake (off).
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    pub tls_resume: OnOff,

    /// Key-exchange groups the client offers, most preferred first
    /// (default: x25519, p256, p384).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub tls_groups: Vec<Group>,

    /// What an open wss:// connection keeps on the client: compact (the
    /// record layer only, from the upgrade's answer on) or rustls (its
    /// whole connection).
    #[arg(long, value_enum, default_value_t = StateKind::Compact)]
    pub tls_state: StateKind,
}

/// What a load shard's TLS connections are made from.
#[derive(Debug)]
pub struct ClientSetup {
    pub config: Arc<rustls::ClientConfig>,
    pub state: StateKind,
}

impl ClientTlsOptions {
    /// The client setup for a TLS URL; an error names what is missing.
    pub fn setup(&self) -> anyhow::Result<ClientSetup> {
        let verifier = match (&self.tls_ca, &self.tls_pin) {
            (Some(ca), _) => Trust::Ca(ca.clone()),
            (None, Some(pin)) => Trust::Pin(parse_pin(pin)?),
            (None, None) => anyhow::bail!(
                "wss:// and tls:// need --tls-ca FILE or --tls-pin SHA256 (fanout serve --tls-self-signed prints the certificate's SHA-256)"
            ),
        };
        let config = super::client_config(
            verifier,
            &self.tls_groups,
            self.tls_resume == OnOff::On,
            self.tls_state,
        )?;
        Ok(ClientSetup {
            config,
            state: self.tls_state,
        })
    }
}

/// How the client decides to trust the server.
pub enum Trust {
    Ca(PathBuf),
    Pin([u8; 32]),
}

fn parse_pin(pin: &str) -> anyhow::Result<[u8; 32]> {
    let hex = pin.trim().replace(':', "").to_lowercase();
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect();
    match bytes.and_then(|bytes| <[u8; 32]>::try_from(bytes).ok()) {
        Some(pin) => Ok(pin),
        None => anyhow::bail!("--tls-pin wants a SHA-256 in hex (64 digits), not {pin:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_with_or_without_colons_and_bad_ones_say_why() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_pin(&hex).unwrap(), [0xab; 32]);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_pin(&colons).unwrap(), [0xab; 32]);
        let error = parse_pin("abc").unwrap_err().to_string();
        assert!(error.contains("64 digits"), "{error}");
    }
}
