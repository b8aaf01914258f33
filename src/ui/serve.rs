//! The page's thread: accept, read each request's first line, answer `/`
//! with the page and `/events` with an event stream, and write what
//! queued, all on non-blocking sockets polled every few milliseconds.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use super::{Event, UiCounters, MAX_QUEUED, REPLAY, REPLAY_EVENTS};

/// How long the thread sleeps when nothing happened.
const IDLE: Duration = Duration::from_millis(5);
/// The longest request head read.
const MAX_REQUEST: usize = 4096;

const PAGE: &str = include_str!("page.html");

enum Client {
    /// Its request head is still arriving.
    Reading { stream: TcpStream, head: Vec<u8> },
    /// Bytes to write, then close (the page, or an error).
    Answering {
        stream: TcpStream,
        out: VecDeque<u8>,
    },
    /// An event stream: bytes queued, kept open.
    Streaming {
        stream: TcpStream,
        out: VecDeque<u8>,
    },
}

pub struct Page {
    listener: TcpListener,
    samples: Receiver<Event>,
    counters: Arc<UiCounters>,
    /// What a newcomer is sent first, in the order published.
    recent: VecDeque<Event>,
    /// Of `recent`: frequent samples, and the other events.
    kept_frequent: usize,
    kept_events: usize,
    clients: Vec<Client>,
}

impl Page {
    pub fn new(listener: TcpListener, samples: Receiver<Event>, counters: Arc<UiCounters>) -> Page {
        Page {
            listener,
            samples,
            counters,
            recent: VecDeque::new(),
            kept_frequent: 0,
            kept_events: 0,
            clients: Vec::new(),
        }
    }

    pub fn run(mut self) {
        loop {
            let taken = self.take_samples();
            let busy = self.accept() | self.serve_clients() | (taken > 0);
            // Counted once written (or queued): `Live::settle` reads both.
            self.counters.taken.fetch_add(taken, Relaxed);
            if !busy {
                std::thread::sleep(IDLE);
            }
        }
    }

    fn accept(&mut self) -> bool {
        let mut any = false;
        while let Ok((stream, _)) = self.listener.accept() {
            if stream.set_nonblocking(true).is_ok() {
                self.clients.push(Client::Reading {
                    stream,
                    head: Vec::new(),
                });
                any = true;
            }
        }
        any
    }

    /// New samples: kept for newcomers, queued for every stream. Returns
    /// how many.
    fn take_samples(&mut self) -> u64 {
        let mut taken = 0;
        loop {
            let sample = match self.samples.try_recv() {
                Ok(sample) => sample,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return taken,
            };
            taken += 1;
            let event = format!("data: {}\n\n", sample.json);
            for client in &mut self.clients {
                if let Client::Streaming { out, .. } = client {
                    out.extend(event.as_bytes());
                }
            }
            self.keep(sample);
        }
    }

    /// Keep an event for newcomers: the newest [`REPLAY`] frequent samples
    /// and the newest [`REPLAY_EVENTS`] others.
    fn keep(&mut self, event: Event) {
        let frequent = event.frequent;
        self.recent.push_back(event);
        let (kept, bound) = match frequent {
            true => (&mut self.kept_frequent, REPLAY),
            false => (&mut self.kept_events, REPLAY_EVENTS),
        };
        *kept += 1;
        if *kept > bound {
            *kept -= 1;
            let oldest = self.recent.iter().position(|e| e.frequent == frequent);
            self.recent
                .remove(oldest.expect("more than the bound are kept"));
        }
    }

    fn serve_clients(&mut self) -> bool {
        let mut any = false;
        let clients = std::mem::take(&mut self.clients);
        let mut queued = 0;
        for client in clients {
            if let Some(client) = self.step(client, &mut any) {
                if let Client::Streaming { out, .. } = &client {
                    queued += out.len() as u64;
                }
                self.clients.push(client);
            }
        }
        self.counters.queued_bytes.store(queued, Relaxed);
        any
    }

    /// One client's turn; None when it is done or dropped.
    fn step(&self, client: Client, any: &mut bool) -> Option<Client> {
        match client {
            Client::Reading {
                mut stream,
                mut head,
            } => {
                let mut buf = [0u8; 1024];
                match stream.read(&mut buf) {
                    Ok(0) => None,
                    Ok(n) => {
                        *any = true;
                        head.extend_from_slice(&buf[..n]);
                        match head.windows(4).any(|w| w == b"\r\n\r\n") {
                            true => Some(self.answer(stream, &head)),
                            false if head.len() > MAX_REQUEST => None,
                            false => Some(Client::Reading { stream, head }),
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        Some(Client::Reading { stream, head })
                    }
                    Err(_) => None,
                }
            }
            Client::Answering {
                mut stream,
                mut out,
            } => match write_some(&mut stream, &mut out, any) {
                Ok(()) if out.is_empty() => None,
                Ok(()) => Some(Client::Answering { stream, out }),
                Err(()) => None,
            },
            Client::Streaming {
                mut stream,
                mut out,
            } => {
                if out.len() > MAX_QUEUED {
                    self.counters.dropped_clients.fetch_add(1, Relaxed);
                    return None;
                }
                match write_some(&mut stream, &mut out, any) {
                    Ok(()) => Some(Client::Streaming { stream, out }),
                    Err(()) => None,
                }
            }
        }
    }

    /// What a complete request gets: the page, the event stream, or 404.
    fn answer(&self, stream: TcpStream, head: &[u8]) -> Client {
        let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
        let path = std::str::from_utf8(line)
            .ok()
            .and_then(|line| line.strip_prefix("GET "))
            .and_then(|rest| rest.split(' ').next());
        let mut out = VecDeque::new();
        match path {
            Some("/events") => {
                self.counters.clients.fetch_add(1, Relaxed);
                out.extend(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n");
                for event in &self.recent {
                    out.extend(format!("data: {}\n\n", event.json).as_bytes());
                }
                Client::Streaming { stream, out }
            }
            Some("/") => {
                out.extend(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PAGE}",
                        PAGE.len()
                    )
                    .as_bytes(),
                );
                Client::Answering { stream, out }
            }
            _ => {
                out.extend(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                Client::Answering { stream, out }
            }
        }
    }
}

/// Write what the socket takes now. Err: the client is gone.
fn write_some(stream: &mut TcpStream, out: &mut VecDeque<u8>, any: &mut bool) -> Result<(), ()> {
    while !out.is_empty() {
        let (front, _) = out.as_slices();
        match stream.write(front) {
            Ok(0) => return Err(()),
            Ok(n) => {
                *any = true;
                out.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(_) => return Err(()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::start;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpStream;
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::{Duration, Instant};

    fn get(addr: std::net::SocketAddr, path: &str) -> TcpStream {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        stream
    }

    /// A client that never reads is dropped once its queue passes the
    /// bound; publishing never waits for it; a reading client still gets
    /// every sample's event, in order.
    #[test]
    fn a_client_that_never_reads_costs_the_publisher_nothing() {
        let (live, addr) = start("127.0.0.1:0".parse().unwrap()).unwrap();
        let _stalled = get(addr, "/events");
        let reader = get(addr, "/events");
        let deadline = Instant::now() + Duration::from_secs(10);
        while live.counters().clients.load(Relaxed) < 2 {
            assert!(Instant::now() < deadline, "the clients were never served");
            std::thread::sleep(Duration::from_millis(5));
        }
        // The reader reads as the samples come, on its own thread.
        let reading = std::thread::spawn(move || {
            let mut received = 0u64;
            let mut last_seq = -1i64;
            for line in BufReader::new(reader).lines() {
                let line = line.unwrap();
                let Some(data) = line.strip_prefix("data: ") else {
                    continue;
                };
                let sample: serde_json::Value = serde_json::from_str(data).unwrap();
                let Some(seq) = sample["seq"].as_i64() else {
                    return received; // "last"
                };
                assert!(seq > last_seq, "events out of order");
                last_seq = seq;
                received += 1;
            }
            panic!("the stream ended before the last sample");
        });
        let padding = "x".repeat(1000);
        let mut sent = 0u64;
        // Far more than the stalled client's queue and socket can hold.
        while live.counters().dropped_clients.load(Relaxed) == 0 {
            assert!(
                Instant::now() < deadline,
                "the stalled client was never dropped"
            );
            live.publish(&serde_json::json!({ "seq": sent, "pad": padding }));
            sent += 1;
            if sent.is_multiple_of(64) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        std::thread::sleep(Duration::from_millis(50)); // room in the channel
        live.publish(&serde_json::json!({ "seq": "last" }));
        let received = reading.join().unwrap();
        let dropped = live.counters().dropped_samples.load(Relaxed);
        assert_eq!(
            received + dropped,
            sent,
            "every sample reached the reader or was counted dropped"
        );
    }

    #[test]
    fn the_page_and_an_unknown_path() {
        let (_live, addr) = start("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut get(addr, "/"), &mut text).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\n")
                && text.contains("new EventSource(\"/events\")")
        );
        let mut text = String::new();
        std::io::Read::read_to_string(&mut get(addr, "/nope"), &mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 "), "{text}");
    }
}
