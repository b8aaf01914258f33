//! fanout: how many sockets can this box hold, what does each one cost, and
//! how fast can it talk to all of them?
//!
//! - [`protocol`]: sans-io WebSocket and raw-TCP codecs, shared by everything.
//! - [`server`]: the shard core (connections, sessions, the room, deadlines,
//!   free of I/O), the hub, the shard plan, the process skeleton.
//! - [`backend`]: the event loops under the core, I/O only (epoll via mio).
//! - [`serve`]: `fanout serve` — options, plan, backend, shards.
//! - [`process`]: a server as a child process, for the bench and the tests.
//! - [`load`]: `fanout load` — the client side: many connections, paced
//!   scenarios, latency histograms, the report.
//! - [`bench`]: `fanout bench` — the main job: floors, server child,
//!   memory at 0 and N, broadcast, echo, churn, results/.
//! - [`doctor`]: `fanout doctor` — every limit between this machine and N
//!   connections, judged before a run.
//! - [`ceiling`]: `fanout ceiling` — ramp until something gives, and name
//!   the limit with evidence.
//! - [`plan`]: `fanout plan` — fleet sizing from a bench result, with a
//!   seeded routing simulation.
//! - [`report`]: `fanout report` — Markdown tables and SVG plots from a
//!   results folder.
//! - [`tls`]: wss:// and TLS raw TCP, sans-io: rustls's handshake, then
//!   TLS 1.3's record layer in about 250 bytes a connection.
//! - [`chunked_slab`]: connection state in fixed-size chunks, for the server
//!   core and the load generator.
//! - [`allocator`]: jemalloc's figures and the cache flush before reading
//!   them, for the server and the load generator.
//! - [`sys`]: the raw Linux calls (fd tables, limits).
//! - [`usage`]: the command-line error every subcommand can raise.
//! - [`netstat`]: the kernel's TCP counters, the evidence behind an outlier.

#[macro_use]
pub mod sys;

pub mod allocator;
pub mod backend;
pub mod backplane;
pub mod bench;
pub mod ceiling;
pub mod chunked_slab;
pub mod cli;
pub mod doctor;
pub mod json;
pub mod load;
pub mod netstat;
pub mod plan;
pub mod process;
pub mod protocol;
pub mod report;
pub mod serve;
pub mod server;
pub mod side_table;
pub mod tls;
pub mod ui;
pub mod units;
pub mod usage;
