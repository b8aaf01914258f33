//! permessage-deflate on the server, whatever the backend: the options
//! `fanout serve` takes, what the session reports for the counters, and
//! the memory budget per-connection codecs are held to.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::protocol::deflate::{Declined, DeflateLimits, DeflateMode};
use crate::protocol::frame::FrameError;
use crate::protocol::message::Violation;
use crate::server::stats::{bump, ShardCounters};
use crate::units::parse_size;

#[derive(Clone, Debug, clap::Args)]
pub struct DeflateOptions {
    /// permessage-deflate (RFC 7692) for clients that offer it. off: decline
    /// (frames go uncompressed; nothing changes). shared: no context
    /// takeover either way, so a room message is compressed once per shard
    /// and the same frame goes to every member that agreed, and an idle
    /// connection keeps no compressor. per-connection: context takeover
    /// both ways, a compressor and an inflater per connection (~400 KB at
    /// full windows), as most servers do by default.
    #[arg(long, value_enum, default_value_t = DeflateMode::Off)]
    pub deflate: DeflateMode,

    /// The largest LZ77 window the server compresses with, in bits (9–15):
    /// a client's server_max_window_bits may lower it, never raise it.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u8).range(9..=15))]
    pub deflate_server_window_bits: u8,

    /// The window the server asks clients to compress with, in bits
    /// (8–15), when their offer lets it choose (client_max_window_bits):
    /// the inflater a per-connection codec keeps is that size.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u8).range(8..=15))]
    pub deflate_client_window_bits: u8,

    /// Most memory per-connection codecs may hold across the server (each
    /// counted by zlib-rs's layout: 416,768 B at full windows,
    /// `docs/deflate.md`), each shard its share; past
    /// it, offers are declined and the connection goes on uncompressed
    /// (counted as deflate_declined_memory). Default: no limit.
    #[arg(long, value_parser = parse_size)]
    pub deflate_memory: Option<usize>,
}

impl DeflateOptions {
    /// The server's line about it, when on.
    pub fn banner_line(&self) -> Option<String> {
        let mode = match self.deflate {
            DeflateMode::Off => return None,
            DeflateMode::Shared => {
                "shared (no context takeover either way; a room message compressed once per shard)"
            }
            DeflateMode::PerConnection => {
                "per-connection (context takeover both ways; a codec per connection)"
            }
        };
        let memory = self.deflate_memory.map_or("no limit".to_string(), |bytes| {
            format!("codecs held to {bytes} B")
        });
        Some(format!(
            "permessage-deflate: {mode}; windows up to 2^{} (server) and 2^{} (asked of clients); {memory}",
            self.deflate_server_window_bits, self.deflate_client_window_bits
        ))
    }

    pub fn settings(&self) -> DeflateSettings {
        DeflateSettings {
            mode: self.deflate,
            limits: DeflateLimits {
                server_max_window_bits: self.deflate_server_window_bits,
                client_max_window_bits: self.deflate_client_window_bits,
            },
            memory: self.deflate_memory.map(|bytes| bytes as u64),
        }
    }
}

/// What the shards read of the deflate options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeflateSettings {
    pub mode: DeflateMode,
    pub limits: DeflateLimits,
    /// --deflate-memory, across the server.
    pub memory: Option<u64>,
}

impl DeflateSettings {
    pub const OFF: DeflateSettings = DeflateSettings {
        mode: DeflateMode::Off,
        limits: DeflateLimits {
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        },
        memory: None,
    };
}

/// Something about permessage-deflate the session reports, for the counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeflateEvent {
    /// An upgrade agreed on it.
    Agreed,
    /// An offer was declined for this.
    Declined(Declined),
    /// An acceptable offer was declined: the codec budget is spent.
    OverBudget,
    /// A message was compressed / inflated.
    Compressed,
    Inflated,
    /// A compressed message (or a frame claiming to be one) broke the
    /// protocol this way; the close code is counted apart.
    Broken(Violation),
}

/// Count a deflate event on a shard.
pub fn count(counters: &ShardCounters, event: &DeflateEvent) {
    let counter = match event {
        DeflateEvent::Agreed => &counters.deflate_agreed,
        DeflateEvent::Declined(Declined::WindowTooSmall(_)) => &counters.deflate_declined_window,
        DeflateEvent::Declined(_) => &counters.deflate_declined_parameters,
        DeflateEvent::OverBudget => &counters.deflate_declined_memory,
        DeflateEvent::Compressed => &counters.deflate_compressed,
        DeflateEvent::Inflated => &counters.deflate_inflated,
        DeflateEvent::Broken(violation) => match violation {
            Violation::Frame(FrameError::CompressionNotNegotiated) => {
                &counters.deflate_unnegotiated_rsv1
            }
            Violation::Frame(FrameError::CompressedControl) | Violation::CompressedContinuation => {
                &counters.deflate_misplaced_rsv1
            }
            Violation::CorruptCompressed => &counters.deflate_corrupt,
            Violation::MessageTooBig => &counters.deflate_too_big,
            _ => return,
        },
    };
    bump(counter);
}

/// Whether a violation is about compression (a [`DeflateEvent::Broken`]).
pub fn is_about_compression(violation: Violation) -> bool {
    matches!(
        violation,
        Violation::Frame(FrameError::CompressionNotNegotiated | FrameError::CompressedControl)
            | Violation::CompressedContinuation
            | Violation::CorruptCompressed
    )
}

/// Hold `bytes` of a per-connection codec against a shard's `share` of
/// --deflate-memory, in its `deflate_codec_bytes` gauge. Returns false (and
/// holds nothing) when they do not fit.
pub fn reserve(gauge: &AtomicU64, share: Option<u64>, bytes: u64) -> bool {
    let Some(share) = share else {
        gauge.fetch_add(bytes, Relaxed);
        return true;
    };
    gauge
        .fetch_update(Relaxed, Relaxed, |held| {
            (held + bytes <= share).then_some(held + bytes)
        })
        .is_ok()
}

/// A codec holding `bytes` is gone.
pub fn release(gauge: &AtomicU64, bytes: u64) {
    gauge.fetch_sub(bytes, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_holds_what_fits_and_gives_it_back() {
        let gauge = AtomicU64::new(0);
        assert!(reserve(&gauge, Some(100), 60));
        assert!(!reserve(&gauge, Some(100), 60));
        assert_eq!(gauge.load(Relaxed), 60);
        release(&gauge, 60);
        assert!(reserve(&gauge, Some(100), 100));
        assert!(reserve(&gauge, None, 1_000));
        assert_eq!(gauge.load(Relaxed), 1_100);
    }
}
