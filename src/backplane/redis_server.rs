//! A redis-server of our own for the bench and the tests: started on a
//! free loopback port with no persistence (a temporary config given on the
//! command line), asked plain RESP questions, killed when dropped; and
//! [`query`], one question to any Redis (the load agents' coordination).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::resp::{self, Value};

/// How long a fresh redis-server may take to answer PING.
const START_PATIENCE: Duration = Duration::from_secs(10);

pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    /// On a free loopback port. Err(NotFound) when redis-server is not
    /// installed (Debian: apt-get install redis-server).
    pub fn start() -> io::Result<RedisServer> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        RedisServer::start_on(port)
    }

    /// On `port` (again, after a restart).
    pub fn start_on(port: u16) -> io::Result<RedisServer> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let redis = RedisServer { child, port };
        let deadline = Instant::now() + START_PATIENCE;
        while redis.query(&[b"PING"]).is_err() {
            if Instant::now() > deadline {
                return Err(io::Error::other("redis-server never answered PING"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// One command on a fresh connection; its reply.
    pub fn query(&self, args: &[&[u8]]) -> io::Result<Value> {
        query(([127, 0, 0, 1], self.port).into(), args)
    }

    /// Wait (at most `patience`) until `count` connections subscribe to
    /// `channel`; whether they did.
    pub fn wait_for_subscribers(&self, channel: &str, count: i64, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            let reply = self.query(&[b"PUBSUB", b"NUMSUB", channel.as_bytes()]);
            if let Ok(Value::Array(items)) = &reply {
                if items.get(1) == Some(&Value::Integer(count)) {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

/// One command to the Redis at `addr` on a fresh connection; its reply
/// (a Redis error reply is an Err).
pub fn query(addr: SocketAddr, args: &[&[u8]]) -> io::Result<Value> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut command = Vec::new();
    resp::command(&mut command, args);
    stream.write_all(&command)?;
    let mut input = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match resp::parse(&input)? {
            Some((Value::Error(error), _)) => {
                return Err(io::Error::other(format!("redis: {error}")))
            }
            Some((value, _)) => return Ok(value),
            None => {}
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        input.extend_from_slice(&chunk[..n]);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
