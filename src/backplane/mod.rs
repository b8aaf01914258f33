//! `fanout serve --backplane redis://HOST:PORT [--channel NAME]`: one room
//! across server instances, through Redis pub/sub. A frame published on an
//! instance is delivered to its own members as always and handed to Redis
//! once; every instance delivers what Redis brings from the others to its
//! local members, and never publishes it again. So each member gets each
//! message exactly once, wherever it was published.
//!
//! Two threads, each with its own connection (a subscribed Redis
//! connection takes no other commands): the publisher drains a bounded
//! outbox that shards fill without blocking, pipelining PUBLISH commands;
//! the subscriber reads the channel and hands frames to the hub. Either
//! link reconnects with a doubling backoff when Redis goes away. Local
//! delivery never waits for Redis: while it is away, or when the outbox is
//! full, frames are not published and are counted (`backplane_dropped`).
//! Each message carries its instance's id and a sequence number, so a
//! subscriber that missed messages (its link was down) counts exactly how
//! many (`backplane_missed`).

pub mod redis_server;
pub mod resp;
mod wire;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::protocol::Proto;
use crate::server::hub::{Hub, OtherInstances};
use crate::server::stats::{bump, ShardCounters};
use crate::server::LinkToOthers;
use resp::Value;
use wire::{Envelope, Gaps};

/// Frames waiting for the publisher; past this the newest are dropped.
const OUTBOX: usize = 64 * 1024;
/// PUBLISH commands written before their replies are read.
const PIPELINE: usize = 1024;
/// The first wait before reconnecting, doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A Redis that takes longer than this to answer counts as gone.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the backplane is and what it carries.
#[derive(Clone, Debug)]
pub struct Config {
    pub redis: SocketAddr,
    pub channel: String,
    pub proto: Proto,
}

/// `redis://HOST:PORT` (loopback only) to an address.
pub fn parse_url(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("redis://")
        .ok_or_else(|| format!("--backplane wants redis://HOST:PORT, not {url:?}"))?;
    let host = rest.trim_end_matches('/');
    let addr = std::net::ToSocketAddrs::to_socket_addrs(host)
        .map_err(|e| format!("--backplane {url}: cannot resolve {host:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("--backplane {url}: {host:?} has no address"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "--backplane {url}: {addr} is not a loopback address (fanout talks only to this machine)"
        ));
    }
    Ok(addr)
}

/// The running backplane, as shards see it.
pub struct Backplane {
    outbox: SyncSender<Bytes>,
    /// Where the backplane's threads count (shard 0's counters: there is
    /// one backplane per process).
    hub: Arc<Hub>,
}

impl OtherInstances for Backplane {
    /// A frame published on this instance: to Redis, once. Never waits.
    fn publish(&self, frame: &Bytes) {
        match self.outbox.try_send(frame.clone()) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                bump(&self.counters().backplane_dropped)
            }
        }
    }
}

impl Backplane {
    fn counters(&self) -> &ShardCounters {
        self.hub.counters(0)
    }
}

/// The server's link to the other instances through Redis, started once the
/// hub exists.
pub fn link(config: Config) -> LinkToOthers {
    LinkToOthers {
        describe: format!(
            "backplane redis://{} channel {}",
            config.redis, config.channel
        ),
        start: Box::new(move |hub| Ok(start(config, hub)? as Arc<dyn OtherInstances>)),
    }
}

/// Start both links; the server runs whether or not Redis answers yet.
pub fn start(config: Config, hub: Arc<Hub>) -> io::Result<Arc<Backplane>> {
    let (outbox, frames) = mpsc::sync_channel(OUTBOX);
    let instance = wire::new_instance_id();
    let backplane = Arc::new(Backplane {
        outbox,
        hub: hub.clone(),
    });
    let publisher = Link::new(config.clone(), hub.clone());
    std::thread::Builder::new()
        .name("backplane-pub".into())
        .spawn(move || publisher.publish_forever(frames, instance))?;
    let subscriber = Link::new(config, hub);
    std::thread::Builder::new()
        .name("backplane-sub".into())
        .spawn(move || subscriber.subscribe_forever(instance))?;
    Ok(backplane)
}

/// One connection to Redis and how to get it back.
struct Link {
    config: Config,
    hub: Arc<Hub>,
    backoff: Duration,
}

impl Link {
    fn new(config: Config, hub: Arc<Hub>) -> Link {
        Link {
            config,
            hub,
            backoff: FIRST_BACKOFF,
        }
    }

    fn counters(&self) -> &ShardCounters {
        self.hub.counters(0)
    }

    fn connect(&mut self) -> io::Result<TcpStream> {
        let stream = TcpStream::connect_timeout(&self.config.redis, REPLY_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        Ok(stream)
    }

    /// The link is down: count it once, and wait before the next try.
    fn went_down(&mut self, was_up: &mut bool) {
        if std::mem::take(was_up) {
            bump(&self.counters().backplane_outages);
        }
        std::thread::sleep(self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Publish every frame the shards hand over, until the server exits.
    /// While Redis is away the frames are dropped (counted), so that the
    /// instance never holds a backlog for it.
    fn publish_forever(mut self, frames: Receiver<Bytes>, instance: u64) {
        let mut sequence = 0u64;
        let mut was_up = true;
        loop {
            let mut redis = match self.connect() {
                Ok(redis) => redis,
                Err(_) => {
                    let lost = frames.try_iter().count() as u64;
                    self.counters().backplane_dropped.fetch_add(lost, Relaxed);
                    if self.hub.shutting_down() {
                        return;
                    }
                    self.went_down(&mut was_up);
                    continue;
                }
            };
            (was_up, self.backoff) = (true, FIRST_BACKOFF);
            loop {
                let Ok(first) = frames.recv() else {
                    return; // the server is gone
                };
                let batch: Vec<Bytes> = std::iter::once(first)
                    .chain(frames.try_iter().take(PIPELINE - 1))
                    .collect();
                let mut commands = Vec::new();
                for frame in &batch {
                    sequence += 1;
                    let envelope = Envelope {
                        instance,
                        sequence,
                        proto: self.config.proto,
                    };
                    let message = envelope.wrap(frame);
                    let channel = self.config.channel.as_bytes();
                    resp::command(&mut commands, &[b"PUBLISH", channel, &message]);
                }
                if redis.write_all(&commands).is_err() || !read_replies(&mut redis, batch.len()) {
                    // Unconfirmed counts as not published, and the numbers
                    // are given again, so subscribers see no gap for them.
                    // (Had Redis published one before the link failed, a
                    // subscriber got it and the next message reuses its
                    // number: still no gap, one drop counted too many.)
                    let lost = batch.len() as u64;
                    sequence -= lost;
                    self.counters().backplane_dropped.fetch_add(lost, Relaxed);
                    break;
                }
                let sent = batch.len() as u64;
                self.counters().backplane_published.fetch_add(sent, Relaxed);
            }
        }
    }

    /// Deliver what other instances publish, until the server exits.
    fn subscribe_forever(mut self, instance: u64) {
        let mut gaps = Gaps::default();
        let mut was_up = true;
        loop {
            if self.hub.shutting_down() {
                return;
            }
            if let Ok(redis) = self.connect() {
                (was_up, self.backoff) = (true, FIRST_BACKOFF);
                // Reading until the link fails; then count the outage.
                let _ = self.read_channel(redis, instance, &mut gaps);
            }
            self.went_down(&mut was_up);
        }
    }

    fn read_channel(&self, mut redis: TcpStream, instance: u64, gaps: &mut Gaps) -> io::Result<()> {
        let mut subscribe = Vec::new();
        resp::command(
            &mut subscribe,
            &[b"SUBSCRIBE", self.config.channel.as_bytes()],
        );
        redis.write_all(&subscribe)?;
        // A subscribed link is quiet when nobody publishes: no read timeout.
        redis.set_read_timeout(None)?;
        let mut input = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            while let Some((value, used)) = resp::parse(&input)? {
                input.drain(..used);
                self.on_pushed(value, instance, gaps)?;
            }
            let n = redis.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            input.extend_from_slice(&chunk[..n]);
        }
    }

    /// One pushed value: a message from another instance goes to the local
    /// members; our own (Redis sends it back too) is already delivered.
    fn on_pushed(&self, value: Value, instance: u64, gaps: &mut Gaps) -> io::Result<()> {
        let Value::Array(items) = value else {
            return Err(io::Error::other("redis: a push that is not an array"));
        };
        let (Some(Value::Bulk(Some(kind))), Some(Value::Bulk(Some(payload)))) =
            (items.first(), items.get(2))
        else {
            return Ok(()); // a subscribe confirmation
        };
        if kind != b"message" {
            return Ok(());
        }
        let Some((envelope, frame)) = Envelope::open(payload) else {
            bump(&self.counters().backplane_rejected);
            return Ok(());
        };
        if envelope.instance == instance {
            return Ok(());
        }
        if envelope.proto != self.config.proto {
            bump(&self.counters().backplane_rejected);
            return Ok(());
        }
        let missed = gaps.missed_before(envelope.instance, envelope.sequence);
        self.counters().backplane_missed.fetch_add(missed, Relaxed);
        bump(&self.counters().backplane_received);
        self.hub
            .deliver_from_elsewhere(Bytes::copy_from_slice(frame));
        Ok(())
    }
}

/// Read `count` PUBLISH replies (integers); false if the link failed.
fn read_replies(redis: &mut TcpStream, count: usize) -> bool {
    let mut input = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut read = 0;
    while read < count {
        match resp::parse(&input) {
            Ok(Some((Value::Integer(_), used))) => {
                input.drain(..used);
                read += 1;
                continue;
            }
            Ok(Some(_)) | Err(_) => return false,
            Ok(None) => {}
        }
        match redis.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => input.extend_from_slice(&chunk[..n]),
        }
    }
    true
}
