//! `fanout bare`: the floor server. It runs the same process skeleton as
//! `fanout serve` (the same shard plan, fd tables, SO_REUSEPORT listeners
//! and accept backlog, the same hub carrying frames between shards) and
//! does the least a server can do for each measured job, so a figure
//! measured against it is a floor `fanout serve` cannot beat by
//! construction:
//!
//! - accept: register for reading, write one greeting byte (the client
//!   counts a connection open when it has read it, as it does a 101);
//! - echo floor: write back exactly the bytes read, no parsing;
//! - room floor: hand the bytes read to every shard, which writes them to
//!   each of its connections with one `writev` per connection per turn.
//!
//! It never queues: a write the socket does not take whole is not a floor
//! any more, so the shard stops with an error and the process exits non-zero
//! (the bench then reports the floor as failed, never as a figure).

use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::backend::epoll::{self, WAKER};
use crate::protocol::bare::GREETING;
use crate::server::hub::{Hub, Wake};
use crate::server::stats::{bump, ShardCounters};

const LISTENER: Token = Token(usize::MAX);
const SCRATCH_LEN: usize = 64 * 1024;

/// Which job's floor to serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FloorRoute {
    /// Bytes read from any connection go to every connection.
    Room,
    /// Bytes read go back to their sender.
    Echo,
}

#[derive(Clone, Debug, clap::Args)]
pub struct BareConfig {
    /// Address to listen on. Port 0 picks a free port; the `ready` line names it.
    #[arg(long, default_value = "127.0.0.1:9002")]
    pub listen: SocketAddr,

    /// The floor to serve.
    #[arg(long, value_enum, default_value_t = FloorRoute::Room)]
    pub route: FloorRoute,

    /// As `fanout serve --shards`: the same plan is made from the same options.
    #[arg(long)]
    pub shards: Option<usize>,

    /// As `fanout serve --max-conns`.
    #[arg(long)]
    pub max_conns: Option<usize>,
}

pub fn bare(config: BareConfig) -> anyhow::Result<()> {
    let plan = crate::server::plan_for(config.shards, config.max_conns, None, epoll::FD_USE)?;
    let banner = format!(
        "fanout bare: {} floor (greeting byte, then raw bytes {}); {plan}",
        format!("{:?}", config.route).to_lowercase(),
        match config.route {
            FloorRoute::Room => "to every connection",
            FloorRoute::Echo => "back to the sender",
        }
    );
    let route = config.route;
    crate::server::run_shards(
        &plan,
        config.listen,
        crate::server::Services::default(),
        banner,
        prepare,
        move |poll, start, id, hub| FloorShard::new(id, poll, start.claim()?, route, hub)?.run(),
    )
}

/// The floor's event loop is epoll's: the same poll and waker.
fn prepare() -> io::Result<(Poll, Box<dyn Wake>)> {
    let (prepared, waker) = epoll::prepare()?;
    Ok((prepared.poll, waker))
}

struct FloorShard {
    id: usize,
    poll: Poll,
    listener: mio::net::TcpListener,
    route: FloorRoute,
    hub: Arc<Hub>,
    conns: Slab<TcpStream>,
    scratch: Vec<u8>,
    /// Bytes this shard's connections sent to the room during this turn.
    published: Vec<Bytes>,
    /// Frames to write to this shard's connections this turn.
    frames: Vec<Bytes>,
}

impl FloorShard {
    fn new(
        id: usize,
        poll: Poll,
        listener: TcpListener,
        route: FloorRoute,
        hub: Arc<Hub>,
    ) -> io::Result<FloorShard> {
        let mut listener = mio::net::TcpListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(FloorShard {
            id,
            poll,
            listener,
            route,
            hub,
            conns: Slab::new(),
            scratch: vec![0; SCRATCH_LEN],
            published: Vec::new(),
            frames: Vec::new(),
        })
    }

    fn counters(&self) -> &ShardCounters {
        self.hub.counters(self.id)
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        while !self.hub.leaving() {
            match self.poll.poll(&mut events, None) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            bump(&self.counters().wakeups);
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all()?,
                    WAKER => {}
                    Token(key) => self.on_readable(key, event.is_read_closed())?,
                }
            }
            self.hub.serve_flush_request(self.id);
            self.deliver_room_frames()?;
        }
        let open = self.conns.len() as u64;
        self.counters().closed.fetch_add(open, Relaxed);
        Ok(())
    }

    fn accept_all(&mut self) -> io::Result<()> {
        loop {
            let (mut socket, _) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => return Err(floor_broken("accept", e)),
            };
            bump(&self.counters().accepted);
            let entry = self.conns.vacant_entry();
            self.poll
                .registry()
                .register(&mut socket, Token(entry.key()), Interest::READABLE)?;
            if self.route == FloorRoute::Room {
                self.hub.join_room(self.id);
            }
            let key = entry.key();
            entry.insert(socket);
            self.write_to(key, &[IoSlice::new(&[GREETING])])?;
        }
    }

    /// Read what has arrived. As in `fanout serve`, a short read means the
    /// socket is empty (edge-triggered: more data brings a new event), so
    /// there is no extra read to see EAGAIN — unless the peer also hung up.
    fn on_readable(&mut self, key: usize, read_closed: bool) -> io::Result<()> {
        loop {
            let Some(socket) = self.conns.get_mut(key) else {
                return Ok(());
            };
            let n = match socket.read(&mut self.scratch) {
                Ok(0) => {
                    self.close(key);
                    return Ok(());
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(key);
                    return Ok(());
                }
            };
            match self.route {
                FloorRoute::Echo => {
                    bump(&self.counters().echoed);
                    let bytes = std::mem::take(&mut self.scratch);
                    let written = self.write_to(key, &[IoSlice::new(&bytes[..n])]);
                    self.scratch = bytes;
                    written?;
                }
                FloorRoute::Room => {
                    bump(&self.counters().published);
                    self.published
                        .push(Bytes::copy_from_slice(&self.scratch[..n]));
                }
            }
            if n < self.scratch.len() && !read_closed {
                return Ok(());
            }
        }
    }

    /// Hand this turn's room bytes to the other shards, then write them and
    /// what other shards sent us to every connection here.
    fn deliver_room_frames(&mut self) -> io::Result<()> {
        let mut frames = std::mem::take(&mut self.frames);
        self.hub.exchange(self.id, &mut self.published, &mut frames);
        if !frames.is_empty() {
            let slices: Vec<IoSlice> = frames.iter().map(|f| IoSlice::new(f)).collect();
            let mut gone = Vec::new();
            for (key, socket) in self.conns.iter_mut() {
                if !write_whole(socket, &slices)? {
                    gone.push(key);
                }
            }
            let delivered = (self.conns.len() - gone.len()) * frames.len();
            self.counters()
                .delivered
                .fetch_add(delivered as u64, Relaxed);
            for key in gone {
                self.close(key);
            }
        }
        frames.clear();
        self.frames = frames;
        Ok(())
    }

    /// Write to connection `key`, closing it if its peer has gone.
    fn write_to(&mut self, key: usize, slices: &[IoSlice]) -> io::Result<()> {
        let Some(socket) = self.conns.get_mut(key) else {
            return Ok(());
        };
        if !write_whole(socket, slices)? {
            self.close(key);
        }
        Ok(())
    }

    fn close(&mut self, key: usize) {
        if let Some(mut socket) = self.conns.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut socket);
            bump(&self.counters().closed);
            if self.route == FloorRoute::Room {
                self.hub.leave_room(self.id);
            }
        }
    }
}

/// One `writev` of `slices`. Ok(false): the peer has gone (reset, broken
/// pipe). A write the socket does not take whole breaks the floor.
fn write_whole(socket: &mut TcpStream, slices: &[IoSlice]) -> io::Result<bool> {
    let wanted: usize = slices.iter().map(|s| s.len()).sum();
    match socket.write_vectored(slices) {
        Ok(n) if n == wanted => Ok(true),
        Ok(n) => Err(floor_broken(
            "write",
            io::Error::other(format!("the socket took {n} of {wanted} bytes")),
        )),
        Err(e) if is_peer_gone(&e) => Ok(false),
        Err(e) => Err(floor_broken("write", e)),
    }
}

fn is_peer_gone(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}

fn floor_broken(what: &str, error: io::Error) -> io::Error {
    io::Error::other(format!(
        "the floor is broken: {what} failed ({error}); a floor server never queues or retries, so its figures would not be a floor"
    ))
}
