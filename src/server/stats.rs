//! Server counters. Each shard bumps its own (cache-line aligned, relaxed
//! atomics, never contended); the main thread sums snapshots when asked
//! (SIGUSR1) and at exit, and prints them as one `stats {json}` line.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// Declares the per-shard counters and their summed snapshot in one place.
macro_rules! counters {
    ($( $(#[doc = $doc:literal])* $name:ident ),* $(,)?) => {
        /// One shard's counters.
        #[derive(Default, Debug)]
        #[repr(align(64))]
        pub struct ShardCounters {
            $( $(#[doc = $doc])* pub $name: AtomicU64, )*
        }

        /// Counters summed over shards.
        #[derive(Default, Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq, Eq, schemars::JsonSchema)]
        #[serde(default)] // files written before a counter existed still read
        pub struct Totals {
            $( $(#[doc = $doc])* pub $name: u64, )*
        }

        impl Totals {
            pub fn add(&mut self, shard: &ShardCounters) {
                $( self.$name += shard.$name.load(Relaxed); )*
            }

            /// Every counter as (name, its doc comment, value), in order.
            pub fn fields(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$( (stringify!($name), concat!($($doc, "\n"),*), self.$name), )*]
            }
        }
    };
}

counters! {
    /// Connections accepted.
    accepted,
    /// Connections closed, for any reason.
    closed,
    /// Handshakes (or TCP hellos) that succeeded.
    upgraded,
    /// Handshakes refused with an HTTP error (or unknown TCP hello).
    rejected,
    /// Of those, refused with 503 because --max-conns connections were
    /// admitted already.
    rejected_over_capacity,
    /// Of those, refused with 503 because the shard's --accept-rate bucket
    /// was empty.
    rejected_accept_rate,
    /// Of those, refused with 503 because the server had begun to drain
    /// (the first SIGINT or SIGTERM): go to another instance.
    rejected_draining,
    /// Connections closed for not finishing their handshake in time.
    handshake_timeouts,
    /// Connections closed for breaking the protocol (1002, 1007, 1009).
    protocol_errors,
    /// Of those, closed with 1007: invalid UTF-8 in a text message.
    invalid_payload_closes,
    /// Of those, closed with 1009: a message over --max-message.
    too_big_closes,
    /// Connections whose client started the close handshake.
    peer_closes,
    /// Room members closed with 1008 for exceeding --max-backlog.
    backlog_closes,
    /// Room members closed with 1013 (try again later) because the room's
    /// queued bytes passed --max-backlog-total, the furthest behind first.
    overload_closes,
    /// Times accepting paused because the fd table was full (EMFILE/ENFILE).
    accept_pauses_fd_limit,
    /// Times accepting paused because the shard held its planned maximum.
    accept_pauses_full,
    /// Bytes read from clients' sockets (handshakes and frames alike).
    bytes_received,
    /// Bytes written to clients' sockets (responses, frames, closes).
    bytes_sent,
    /// Messages echoed back.
    echoed,
    /// Times reading from an echo client paused because it was not reading
    /// its replies (backpressure instead of an unbounded queue).
    read_pauses,
    /// Messages published to the room.
    published,
    /// Room frames handed to members (written or queued).
    delivered,
    /// Connections told to go (1001; TCP: our FIN) by the drain that the
    /// first SIGINT or SIGTERM starts.
    drain_goodbyes,
    /// Of those, closed cleanly: the client answered the close or hung up
    /// before --close-timeout.
    drain_clean,
    /// Open connections the drain dropped: told but silent until
    /// --close-timeout, failed, or still open when the server stopped (a
    /// second signal, or the end of --drain-time plus --close-timeout).
    drain_cut,
    /// WebSocket pings sent to clients silent for --ping-interval.
    pings_sent,
    /// Connections closed for not answering a ping within --ping-interval.
    ping_timeouts,
    /// Connections closed for sending nothing for --idle-timeout.
    idle_timeouts,
    /// Room frames this instance handed to Redis (--backplane), counted by
    /// the backplane's threads on shard 0.
    backplane_published,
    /// Room frames from other instances delivered to the local members.
    backplane_received,
    /// Room frames never published to Redis: it was away, or the outbox
    /// was full (local members got them all the same).
    backplane_dropped,
    /// Frames other instances published that this one never received (its
    /// link was down), counted from their sequence numbers.
    backplane_missed,
    /// Messages on the channel that were not fanout frames of this
    /// server's protocol, ignored.
    backplane_rejected,
    /// Times a link to Redis (publishing or subscribed) went down.
    backplane_outages,
    /// Event-loop wake-ups; a spinning loop shows here.
    wakeups,
    /// Reads that found no receive buffer (io_uring's buffer ring had run
    /// dry) and were issued again; the bytes waited in the socket. Always 0
    /// under epoll.
    recv_buffer_shortages,
    /// Bytes queued for this shard's room members as of its last delivery
    /// (a gauge).
    room_backlog_bytes,
    /// Slots in the shards' connection slabs (a gauge: whole chunks of
    /// `chunked_slab::CHUNK_SLOTS`, allocated as connections come and freed
    /// as they go).
    conn_slots,
    /// Bytes of receive buffers given to io_uring's buffer ring (a gauge:
    /// a shard starts with a few and gives more when a read finds none).
    /// Always 0 under epoll, which reads into one scratch buffer a shard.
    recv_buffer_bytes,
    /// Upgrades that agreed on permessage-deflate (--deflate).
    deflate_agreed,
    /// permessage-deflate offers declined for an unknown, repeated or
    /// invalid parameter (the connection goes on uncompressed).
    deflate_declined_parameters,
    /// Offers declined for server_max_window_bits=8, which zlib cannot
    /// honour for raw DEFLATE.
    deflate_declined_window,
    /// Acceptable offers declined because per-connection codecs held the
    /// shard's share of --deflate-memory.
    deflate_declined_memory,
    /// Messages the server compressed (shared: once per room message and
    /// shard, however many members; per-connection: once per member).
    deflate_compressed,
    /// Compressed messages the server inflated.
    deflate_inflated,
    /// Connections closed with 1002 for RSV1 without having agreed on
    /// permessage-deflate.
    deflate_unnegotiated_rsv1,
    /// Connections closed with 1002 for RSV1 on a continuation or control frame.
    deflate_misplaced_rsv1,
    /// Connections closed with 1007 for a compressed message that is not
    /// DEFLATE data.
    deflate_corrupt,
    /// Connections closed with 1009 for a compressed message that inflates
    /// past --max-message (stopped while inflating).
    deflate_too_big,
    /// Estimated bytes of per-connection codecs held (a gauge; zlib-rs's
    /// layout, see docs/deflate.md).
    deflate_codec_bytes,
    /// TLS handshakes completed.
    tls_handshakes,
    /// Of those, resumed from a session ticket.
    tls_resumed,
    /// TLS connections that sent plain HTTP (a ws:// client at the wss://
    /// port): answered with 400 and closed.
    tls_plain_http,
    /// TLS connections whose first bytes were not a TLS record: a
    /// decode_error alert, closed.
    tls_not_tls,
    /// TLS connections closed for a malformed or unexpected handshake
    /// message or record (a truncated or garbage ClientHello, ...).
    tls_bad_records,
    /// TLS handshakes with nothing in common (a client without TLS 1.3, or
    /// without our cipher suites or groups): an alert, closed.
    tls_incompatible,
    /// TLS connections closed for a record that failed to decrypt
    /// (bad_record_mac).
    tls_decrypt_errors,
    /// TLS connections closed by a fatal alert from the client.
    tls_peer_alerts,
    /// TLS handshakes cut at the handshake deadline (also counted in
    /// handshake_timeouts).
    tls_handshake_stalls,
    /// Clients that hung up or reset during the TLS handshake.
    tls_handshakes_vanished,
    /// close_notify alerts received.
    tls_close_notifies,
    /// KeyUpdate messages received (each answered when asked).
    tls_key_updates,
    /// The record layer disagreed with rustls's keys (a fanout bug; always 0).
    tls_internal_errors,
}

pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

/// A connection closed for breaking the protocol with `code`.
pub fn count_violation(counters: &ShardCounters, code: u16) {
    bump(&counters.protocol_errors);
    match code {
        crate::protocol::close_code::INVALID_PAYLOAD => bump(&counters.invalid_payload_closes),
        crate::protocol::close_code::MESSAGE_TOO_BIG => bump(&counters.too_big_closes),
        _ => {}
    }
}

/// A TLS connection failed for `failure`.
pub fn count_tls_failure(counters: &ShardCounters, failure: crate::tls::Failure) {
    use crate::tls::Failure;
    let counter = match failure {
        Failure::PlainHttp => &counters.tls_plain_http,
        Failure::NotTls => &counters.tls_not_tls,
        Failure::BadRecord => &counters.tls_bad_records,
        Failure::Incompatible => &counters.tls_incompatible,
        Failure::Decrypt => &counters.tls_decrypt_errors,
        Failure::PeerAlert => &counters.tls_peer_alerts,
        Failure::Internal => &counters.tls_internal_errors,
    };
    bump(counter);
}

impl Totals {
    /// Connections the server closed, by the close code it sent (TCP: the
    /// same reasons, closed with a FIN): derived from the counters of
    /// their reasons, so nothing is counted twice on the hot path.
    pub fn closes_by_code(&self) -> [(u16, u64); 6] {
        use crate::protocol::close_code::*;
        let other_violations =
            self.protocol_errors - self.invalid_payload_closes - self.too_big_closes;
        [
            (GOING_AWAY, self.drain_goodbyes + self.idle_timeouts),
            (PROTOCOL_ERROR, other_violations),
            (INVALID_PAYLOAD, self.invalid_payload_closes),
            (POLICY_VIOLATION, self.backlog_closes),
            (MESSAGE_TOO_BIG, self.too_big_closes),
            (TRY_AGAIN_LATER, self.overload_closes),
        ]
    }
}

/// What the `stats` line reports: counters plus process memory.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Snapshot {
    /// Connections open now (accepted − closed).
    pub open: u64,
    /// The same, shard by shard: how SO_REUSEPORT spread them.
    pub open_per_shard: Vec<u64>,
    #[serde(flatten)]
    pub totals: Totals,
    /// Resident set size of the process (VmRSS).
    pub rss_bytes: u64,
    /// Bytes the allocator has handed out and not yet taken back (jemalloc).
    pub heap_allocated_bytes: u64,
    /// Bytes of physical memory the allocator holds (jemalloc).
    pub heap_resident_bytes: u64,
    /// With TLS: whether the kernel offered kernel TLS (`unavailable`: it
    /// refused the `tls` ULP). Records are sealed in user space either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_kernel: Option<crate::tls::kernel::KernelTls>,
}

impl Snapshot {
    pub fn take<'a>(shards: impl Iterator<Item = &'a ShardCounters>) -> Snapshot {
        let mut totals = Totals::default();
        let mut open_per_shard = Vec::new();
        for shard in shards {
            let before = totals;
            totals.add(shard);
            open_per_shard
                .push((totals.accepted - before.accepted) - (totals.closed - before.closed));
        }
        let (heap_allocated_bytes, heap_resident_bytes) = crate::allocator::heap_bytes();
        Snapshot {
            open: totals.accepted - totals.closed,
            open_per_shard,
            totals,
            rss_bytes: crate::sys::resident_bytes().unwrap_or(0),
            heap_allocated_bytes,
            heap_resident_bytes,
            tls_kernel: None,
        }
    }
}
