//! The floors: what this machine's kernel does with no protocol and no
//! server logic, measured in the same run so every headline figure can be
//! shown as a ratio to it.
//!
//! - connect floor: non-blocking connects (256 in flight per thread) against
//!   plain SO_REUSEPORT acceptors, no handshake: connections per second.
//! - write floor: each acceptor thread writes 32 bytes to every socket it
//!   holds in a tight loop, all threads at once, while the client threads
//!   read them: the time until the last socket has its 32 bytes is one
//!   "bare broadcast" (kernel work on both ends, nothing else), scaled to N.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use serde::{Deserialize, Serialize};

use crate::load::client::connect;
use crate::load::client_shards;
use crate::server::listen;
use crate::server::plan::{self, PlanInput};
use crate::sys;

const IN_FLIGHT: usize = 256;
const GIVE_UP: Duration = Duration::from_secs(120);

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Floors {
    /// Connections used for the floors.
    pub conns: usize,
    pub connect_per_s: f64,
    /// From the first write until every client socket had read its 32
    /// bytes, over `conns` sockets.
    pub write_loop_seconds: f64,
    /// That time per socket.
    pub write_ns_per_socket: f64,
}

impl Floors {
    /// The bare write loop's time for `n` sockets.
    pub fn write_loop_for(&self, n: usize) -> f64 {
        self.write_ns_per_socket * n as f64 / 1e9
    }
}

/// Measure both floors with `conns` connections from `sources`: at the same
/// scale as the run itself (the kernel's costs grow with the socket count),
/// with as many acceptor and client threads, each with a private fd table,
/// as the server and the load generator would use.
pub fn measure(conns: usize, sources: &[Ipv4Addr]) -> anyhow::Result<Floors> {
    let conns = conns.max(1);
    let nofile = sys::nofile_limit()?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let plan = plan::plan(PlanInput {
        cores,
        shards: None,
        max_conns: Some(conns),
        nofile,
        fds_per_shard: Some(nofile),
    })?;
    let accept_threads = plan.shards;
    let (client_threads, _) = client_shards(None, cores, conns, nofile);
    let addr = listen::claim_address("127.0.0.1:0".parse().unwrap())?;
    let accepted = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let start_writes = Arc::new(Barrier::new(accept_threads + 1));
    let writes_done = Arc::new(Barrier::new(accept_threads + 1));
    let listening = Arc::new(Barrier::new(accept_threads + 1));
    let acceptors: Vec<_> = (0..accept_threads)
        .map(|_| {
            let accepted = accepted.clone();
            let done = done.clone();
            let barriers = [listening.clone(), start_writes.clone(), writes_done.clone()];
            std::thread::spawn(move || acceptor(addr, conns, accepted, done, barriers))
        })
        .collect();
    listening.wait();
    let started = Instant::now();
    let clients: Vec<_> = (0..client_threads)
        .map(|id| {
            let share = conns / client_threads + usize::from(id < conns % client_threads);
            let mut sources = sources.to_vec();
            let len = sources.len();
            sources.rotate_left(id % len);
            let done = done.clone();
            let received = received.clone();
            std::thread::spawn(move || client_thread(addr, share, sources, received, done))
        })
        .collect();
    while accepted.load(SeqCst) < conns && started.elapsed() < GIVE_UP {
        std::thread::sleep(Duration::from_micros(200));
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    let got = accepted.load(SeqCst);
    start_writes.wait();
    let write_started = Instant::now();
    while received.load(SeqCst) < got && write_started.elapsed() < GIVE_UP {
        std::thread::sleep(Duration::from_micros(50));
    }
    let write_seconds = write_started.elapsed().as_secs_f64();
    writes_done.wait();
    let per_thread: Vec<io::Result<usize>> = acceptors
        .into_iter()
        .map(|t| t.join().expect("acceptor"))
        .collect();
    done.store(true, SeqCst);
    for client in clients {
        client.join().expect("floor client")?;
    }
    for result in per_thread {
        result?;
    }
    anyhow::ensure!(
        got == conns,
        "floor: only {got} of {conns} connections were accepted in {GIVE_UP:?}"
    );
    Ok(Floors {
        conns,
        connect_per_s: conns as f64 / connect_seconds,
        write_loop_seconds: write_seconds,
        write_ns_per_socket: write_seconds * 1e9 / conns as f64,
    })
}

/// Accept into a private fd table until all connections are in, then (on
/// the barrier) write 32 bytes to each held socket once. `barriers`: all
/// listening, start writing, writes done.
fn acceptor(
    addr: SocketAddr,
    conns: usize,
    accepted: Arc<AtomicUsize>,
    done: Arc<AtomicBool>,
    barriers: [Arc<Barrier>; 3],
) -> io::Result<usize> {
    let [listening, start_writes, writes_done] = barriers;
    let setup = (|| {
        sys::unshare_fd_table()?;
        let listener = listen::reuseport_listener(addr)?;
        let poll = Poll::new()?;
        poll.registry().register(
            &mut SourceFd(&listener.as_raw_fd()),
            Token(0),
            Interest::READABLE,
        )?;
        Ok::<_, io::Error>((listener, poll))
    })();
    listening.wait();
    let (listener, mut poll) = match setup {
        Ok(parts) => parts,
        Err(e) => {
            start_writes.wait();
            writes_done.wait();
            return Err(e);
        }
    };
    let mut held: Vec<TcpStream> = Vec::new();
    let mut events = Events::with_capacity(64);
    let deadline = Instant::now() + GIVE_UP;
    while accepted.load(SeqCst) < conns && Instant::now() < deadline && !done.load(SeqCst) {
        poll.poll(&mut events, Some(Duration::from_millis(1)))?;
        accept_ready(&listener, &mut held, &accepted)?;
    }
    start_writes.wait();
    let message = [0x5Au8; 32];
    for socket in &mut held {
        let _ = socket.write(&message);
    }
    writes_done.wait();
    for socket in &held {
        let _ = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO));
    }
    Ok(held.len())
}

fn accept_ready(
    listener: &TcpListener,
    held: &mut Vec<TcpStream>,
    accepted: &AtomicUsize,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    loop {
        match listener.accept() {
            Ok((socket, _)) => {
                socket.set_nonblocking(true)?;
                held.push(socket);
                accepted.fetch_add(1, SeqCst);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Open `share` connections, `IN_FLIGHT` at a time, then read each one's
/// 32 bytes as they arrive, until `done`; close them with RST.
fn client_thread(
    addr: SocketAddr,
    share: usize,
    sources: Vec<Ipv4Addr>,
    received: Arc<AtomicUsize>,
    done: Arc<AtomicBool>,
) -> io::Result<()> {
    sys::unshare_fd_table()?;
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut sockets: slab::Slab<(TcpStream, bool)> = slab::Slab::with_capacity(share);
    let (mut started, mut connected) = (0, 0);
    let deadline = Instant::now() + GIVE_UP;
    let mut sink = [0u8; 64];
    while !done.load(SeqCst) && Instant::now() < deadline {
        while started < share && started - connected < IN_FLIGHT {
            let source = sources[started % sources.len()];
            let socket = connect(source, addr)?;
            let entry = sockets.vacant_entry();
            let interest = Interest::READABLE | Interest::WRITABLE;
            poll.registry().register(
                &mut SourceFd(&socket.as_raw_fd()),
                Token(entry.key()),
                interest,
            )?;
            entry.insert((socket, false));
            started += 1;
        }
        poll.poll(&mut events, Some(Duration::from_millis(1)))?;
        for event in events.iter() {
            let Some((socket, is_connected)) = sockets.get_mut(event.token().0) else {
                continue;
            };
            if !*is_connected && event.is_writable() {
                if socket.take_error()?.is_some() {
                    return Err(io::Error::other("floor connect failed"));
                }
                if socket.peer_addr().is_ok() {
                    *is_connected = true;
                    connected += 1;
                }
            }
            if event.is_readable() {
                while let Ok(n) = socket.read(&mut sink) {
                    if n == 0 {
                        break;
                    }
                    received.fetch_add(1, SeqCst);
                }
            }
        }
    }
    for (socket, _) in sockets.drain() {
        let _ = socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO));
    }
    Ok(())
}
