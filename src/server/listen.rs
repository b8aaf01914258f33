//! Listening sockets: check the address is free, then give each shard its own
//! SO_REUSEPORT listener on it, so the kernel spreads connections over shards.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Socket, Type};

/// Accept-queue length asked of listen(); the kernel caps it at somaxconn.
const BACKLOG: i32 = 65535;

/// Make sure `addr` is free and resolve port 0 to a concrete port.
///
/// SO_REUSEPORT listeners of the same user share a port silently, so a second
/// fanout (or any reuseport server) on the port would quietly take half our
/// connections. Binding once without SO_REUSEPORT fails with EADDRINUSE in
/// that case, and also when a client socket holds the port.
pub fn claim_address(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into()).map_err(|error| {
        if error.kind() == io::ErrorKind::AddrInUse {
            anyhow::anyhow!("cannot listen on {addr}: address already in use (another server, or a client socket holding that port)")
        } else {
            anyhow::anyhow!("cannot listen on {addr}: {error}")
        }
    })?;
    let local = probe.local_addr()?.as_socket().expect("an inet address");
    Ok(local)
}

/// A non-blocking listener on `addr` that joins the port's reuseport group.
pub fn reuseport_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    // Accepted sockets inherit TCP_NODELAY from the listener (Linux copies
    // the listener's TCP state), which saves a setsockopt per connection.
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}
