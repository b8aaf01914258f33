//! The async socket as the session task needs it, whatever the runtime:
//! tokio's and tokio-uring's sockets implement it, and [`super::metered`]
//! wraps one to count its bytes.

use std::future::Future;
use std::io;
use std::net::Shutdown;

use bytes::Bytes;

/// Bytes a read asks for at least.
const READ_CHUNK: usize = 4096;

/// Make room in `buf` for a read of at least a quarter of [`READ_CHUNK`]
/// (growing it by a chunk when it has less), for a transport to read into.
pub fn room_to_read(buf: &mut Vec<u8>) {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}

/// An async socket as the session task needs it. Reads and writes take
/// `&self` so that a read can stay pending while the task writes.
pub trait Transport {
    /// Wait for bytes and append them to `buf` (growing it as needed);
    /// `Ok(0)` means the peer has finished sending.
    fn read(&self, buf: Vec<u8>) -> impl Future<Output = (io::Result<usize>, Vec<u8>)>;
    /// Write all of `bytes`.
    fn write_all(&self, bytes: Bytes) -> impl Future<Output = io::Result<()>>;
    fn shutdown(&self, how: Shutdown);
}
