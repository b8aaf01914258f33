//! `fanout load` options, and the scenario they describe as data: how
//! connections are opened, what they then do, and what stops it.

use std::path::PathBuf;
use std::time::Duration;

use crate::load::balance::Balance;
use crate::load::storm::{parse_backoff, Backoff, StormCause};
use crate::units::{parse_duration, parse_size};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScenarioKind {
    /// Open --conns connections and hold them idle for --duration.
    Hold,
    /// Hold --conns members of /room; one of them publishes --count
    /// messages, each once every member has the one before (then --interval),
    /// or --send-rate per second for --duration; every member records each
    /// delivery.
    Broadcast,
    /// --conns connections on /echo, each sending --size-byte messages,
    /// closed-loop (--window in flight) or open-loop (--send-rate per
    /// connection), for --duration.
    Echo,
    /// Connections that open, exchange one echo and close, at --rate per
    /// second for --duration.
    Churn,
    /// Hold --conns connections, lose them all at once (--storm-cause:
    /// reset by the client, or dropped by the server) and bring each back:
    /// at once, or with --backoff; reports the time until all are back,
    /// the attempts and why they failed, and the curve. Bounded by
    /// --duration.
    Storm,
    /// Hold --conns connections, then open --burst more in one instant
    /// (every client shard issues its share of connect() calls at once)
    /// and hold everything for --duration; reports what the server did
    /// with each: opened, refused with 503, failed by cause, or opened
    /// only after the SYN was sent again (the server's kernel dropped it).
    Burst,
}

impl ScenarioKind {
    /// The server path the scenario needs when the URL names none.
    pub fn default_path(self) -> &'static str {
        match self {
            ScenarioKind::Broadcast => "/room",
            _ => "/echo",
        }
    }
}

#[derive(Clone, Debug, clap::Args)]
pub struct LoadConfig {
    /// What the connections do.
    #[arg(value_enum)]
    pub scenario: ScenarioKind,

    /// Server to load: ws://HOST:PORT/PATH or tcp://HOST:PORT/PATH (loopback
    /// only), or over TLS wss:// and tls:// (with --tls-ca or --tls-pin).
    /// Give it again for more servers (one scheme): connections are
    /// spread over them by --balance and the report counts each server's.
    #[arg(long, default_value = "ws://127.0.0.1:9001")]
    pub url: Vec<String>,

    /// With several --url: how each new connection picks its server. Each
    /// client shard balances its own connections.
    #[arg(long, value_enum, default_value_t = Balance::RoundRobin)]
    pub balance: Balance,

    /// Connections to open and hold (churn opens its own at --rate instead).
    #[arg(long, default_value_t = 1000)]
    pub conns: usize,

    /// Connections opened per second (churn: per second, sustained). Default:
    /// as fast as --inflight allows.
    #[arg(long)]
    pub rate: Option<f64>,

    /// Connection attempts in flight at once, per shard.
    #[arg(long, default_value_t = 256)]
    pub inflight: usize,

    /// Source addresses, e.g. 127.0.0.2-127.0.0.60. Default: as many from
    /// 127.0.0.2 as the ephemeral port range needs for --conns.
    #[arg(long)]
    pub source: Option<String>,

    /// How long to hold, echo, churn, or publish at --send-rate.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Broadcast: messages to publish (with --publish-burst, bursts).
    #[arg(long, default_value_t = 10)]
    pub count: u64,

    /// Broadcast: publish this many messages at once (back to back, in one
    /// turn of the publisher's loop) per broadcast; the next burst waits
    /// until every member has the whole burst. --count bursts are sent.
    #[arg(long)]
    pub publish_burst: Option<u64>,

    /// Broadcast: pause between one message reaching every member and the
    /// next being published (so broadcasts never overlap).
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    pub interval: Duration,

    /// Broadcast: publish this many messages per second for --duration
    /// (sustained mode: open loop, messages overlap). Echo: messages per
    /// second per connection, open-loop, latency measured from when each was
    /// due.
    #[arg(long)]
    pub send_rate: Option<f64>,

    /// Broadcast: longest wait for a message to reach every member (in
    /// sustained mode, for everything in flight after the last publish). The
    /// wait also ends after 10 s without any new delivery. What has not
    /// arrived then is reported as in flight (open members) or lost.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub drain: Duration,

    /// Echo, closed-loop: messages in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub window: usize,

    /// Message size in bytes (at least 16: sequence number and timestamp).
    #[arg(long, default_value = "32", value_parser = parse_size)]
    pub size: usize,

    /// What fills a message after its 16-byte header. zeros: the smallest
    /// to make and check (it compresses to almost nothing); json: JSON-like
    /// records (ids, names, prices) cut from a 256 KiB text made at start,
    /// each message from a different place in it — compresses like real
    /// traffic; the report states its entropy and how far it deflates.
    #[arg(long, value_enum, default_value_t = crate::load::payload::Fill::Zeros)]
    pub payload: crate::load::payload::Fill,

    /// Offer permessage-deflate as browsers do (`permessage-deflate;
    /// client_max_window_bits`), and compress what is sent and inflate what
    /// arrives as the server agrees. ws:// and wss:// only.
    #[arg(long)]
    pub deflate: bool,

    /// Client event loops. Default: one per core, more when --conns needs
    /// more fd tables.
    #[arg(long)]
    pub shards: Option<usize>,

    /// Churn: cycles in flight at once per client shard; arrivals beyond it
    /// are counted as dropped, not opened (an open-loop generator with
    /// bounded concurrency). Default: what one fd table holds.
    #[arg(long)]
    pub max_inflight: Option<usize>,

    /// Burst: connections to open in one instant once --conns are held.
    #[arg(long)]
    pub burst: Option<usize>,

    /// Storm: how the connections are lost.
    #[arg(long, value_enum, default_value_t = StormCause::Reset)]
    pub storm_cause: StormCause,

    /// Storm: reconnect after an exponential backoff with full jitter,
    /// BASE,MAX (e.g. 100ms,10s): attempt k waits a random time up to
    /// BASE×2^k, at most MAX. Default: every attempt at once.
    #[arg(long, value_parser = parse_backoff)]
    pub backoff: Option<Backoff>,

    /// Run as one of --agents load agents that meet in this Redis
    /// (redis://HOST:PORT): each opens its share of --conns from a common
    /// start, and the first merges everyone's counts and histograms.
    #[arg(long, requires = "agents", value_parser = crate::backplane::parse_url)]
    pub coordinator: Option<std::net::SocketAddr>,

    /// How many agents make up the load (with --coordinator).
    #[arg(long, requires = "coordinator")]
    pub agents: Option<usize>,

    /// The name the agents of one load share (with --coordinator), so that
    /// two loads do not meet.
    #[arg(long, default_value = "load", requires = "coordinator")]
    pub run: String,

    /// Set when this run is one agent of several (its seat taken).
    #[arg(skip)]
    pub seat: Option<(crate::load::agents::Coordination, crate::load::agents::Seat)>,

    /// Stop opening connections at the first one that fails; the ramp ends
    /// once every attempt in flight has finished (`fanout ceiling` ramps
    /// this way to find where a limit gives).
    #[arg(long)]
    pub until_failure: bool,

    /// A connection not open (TCP + upgrade) by then counts as a timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    #[command(flatten)]
    pub tls: crate::tls::ClientTlsOptions,

    /// Also write the report as JSON to this file (schema: docs/load-report.md).
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Draw a live progress line even when stderr is not a terminal.
    #[arg(long, hide = true)]
    pub progress: bool,

    #[command(flatten)]
    pub ui: crate::ui::UiArgs,

    /// A live page this load reports to instead of one of its own (a
    /// bench's or a ceiling's): its samples go there, its end is theirs.
    #[arg(skip)]
    pub live: Option<crate::ui::Live>,
}

const BURST_NEEDS_SIZE: &str =
    "burst needs --burst K (connections to open in one instant), K at least 1";
const PUBLISH_BURST_ALONE: &str =
    "--publish-burst belongs to broadcast without --send-rate (bursts one after another)";

/// How the opening of connections is paced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// This many per second, spread evenly over the shards.
    Rate(f64),
    /// As fast as possible with at most this many attempts in flight per shard.
    AsFast { inflight: usize },
}

/// How a broadcast's messages are published.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Publish {
    /// One at a time: each once every member has the one before (or the
    /// drain bound passed), then a pause of `gap`. Broadcasts never overlap,
    /// so each one's figures are its own. With `burst` above 1, each
    /// broadcast is that many messages published back to back.
    OneAtATime { gap: Duration, burst: u64 },
    /// Open loop at this many messages per second: sustained load.
    Rate(f64),
}

/// What open connections do.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Work {
    Hold,
    /// One member publishes `count` messages.
    Broadcast {
        count: u64,
        publish: Publish,
        /// Longest wait for a message (or the last, sustained) to arrive.
        drain: Duration,
    },
    /// Each connection echoes: open-loop at `rate` per second, or closed-loop
    /// with `window` messages in flight.
    Echo {
        open_loop_rate: Option<f64>,
        window: usize,
    },
    /// Open, echo once, close; new connections at `rate` per second, at
    /// most `max_inflight` cycles at once per shard (0: the fd table's room,
    /// set when the run is planned).
    Churn {
        rate: f64,
        max_inflight: usize,
    },
    /// Lose every connection at once and bring each back (`load::storm`).
    Storm {
        cause: StormCause,
        backoff: Option<Backoff>,
    },
    /// Open `size` more connections in one instant (`load::burst`).
    Burst {
        size: usize,
    },
}

/// A load as data: opening × work × stop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scenario {
    pub conns: usize,
    pub open: Pace,
    pub work: Work,
    /// How long the work runs (broadcast in count mode: until delivered).
    pub duration: Duration,
    pub size: usize,
    /// What fills a message after its header.
    pub fill: crate::load::payload::Fill,
    /// Offer permessage-deflate.
    pub deflate: bool,
}

impl LoadConfig {
    /// The options `fanout load KIND --url URL` would have (clap's
    /// defaults), for callers such as the bench that then set fields as
    /// typed values.
    pub fn defaults(kind: ScenarioKind, url: &str) -> LoadConfig {
        use clap::{Parser, ValueEnum};
        #[derive(Parser)]
        struct Args {
            #[command(flatten)]
            load: LoadConfig,
        }
        let name = kind.to_possible_value().expect("every kind has a name");
        let mut config = Args::parse_from(["load", name.get_name()]).load;
        config.url = vec![url.to_string()];
        config
    }

    /// Where and how many load agents meet, if this is one of them.
    pub fn coordination(&self) -> Result<Option<crate::load::agents::Coordination>, String> {
        let (Some(redis), Some(agents)) = (self.coordinator, self.agents) else {
            return Ok(None);
        };
        if agents == 0 || agents > self.conns {
            return Err("--agents must be between 1 and --conns".into());
        }
        Ok(Some(crate::load::agents::Coordination {
            redis,
            run: self.run.clone(),
            agents,
        }))
    }

    pub fn scenario(&self) -> Result<Scenario, String> {
        if self.conns == 0 {
            return Err("--conns must be at least 1".into());
        }
        if self.rate.is_some_and(|r| r <= 0.0) || self.send_rate.is_some_and(|r| r <= 0.0) {
            return Err("rates must be positive".into());
        }
        let open = match self.rate {
            Some(rate) if self.scenario != ScenarioKind::Churn => Pace::Rate(rate),
            _ => Pace::AsFast {
                inflight: self.inflight.max(1),
            },
        };
        let work = match self.scenario {
            ScenarioKind::Hold => Work::Hold,
            ScenarioKind::Broadcast => match self.send_rate {
                Some(rate) => Work::Broadcast {
                    count: (rate * self.duration.as_secs_f64()).ceil().max(1.0) as u64,
                    publish: Publish::Rate(rate),
                    drain: self.drain,
                },
                None => {
                    let burst = self.publish_burst.unwrap_or(1);
                    Work::Broadcast {
                        count: self.count.max(1) * burst,
                        publish: Publish::OneAtATime {
                            gap: self.interval,
                            burst,
                        },
                        drain: self.drain,
                    }
                }
            },
            ScenarioKind::Echo => Work::Echo {
                open_loop_rate: self.send_rate,
                window: self.window.max(1),
            },
            ScenarioKind::Churn => Work::Churn {
                rate: self
                    .rate
                    .ok_or("churn needs --rate (new connections per second)")?,
                max_inflight: self.max_inflight.unwrap_or(0),
            },
            ScenarioKind::Storm => Work::Storm {
                cause: self.storm_cause,
                backoff: self.backoff,
            },
            ScenarioKind::Burst => match self.burst {
                Some(size) if size > 0 => Work::Burst { size },
                _ => return Err(BURST_NEEDS_SIZE.into()),
            },
        };
        if self.publish_burst == Some(0) {
            return Err("--publish-burst must be at least 1".into());
        }
        let bursts = self.scenario == ScenarioKind::Broadcast && self.send_rate.is_none();
        if self.publish_burst.is_some() && !bursts {
            return Err(PUBLISH_BURST_ALONE.into());
        }
        if self.burst.is_some() && self.scenario != ScenarioKind::Burst {
            return Err(
                "--burst belongs to the burst scenario (fanout load burst --burst K)".into(),
            );
        }
        Ok(Scenario {
            conns: self.conns,
            open,
            work,
            duration: self.duration,
            size: self.size.max(crate::load::payload::HEADER_LEN),
            fill: self.payload,
            deflate: self.deflate,
        })
    }
}
