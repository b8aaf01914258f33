//! The floor wire (`fanout bare`, `bare://` in `fanout load`): the least a
//! server can do for each measured job, so that its time is a floor the real
//! server cannot beat. Documented in `docs/protocol.md`.
//!
//! On accept the server writes one greeting byte; the client counts the
//! connection open when it has read it (as a WebSocket client does when it
//! has read the 101). After that the server never parses: an echo floor
//! writes back exactly the bytes it read, a room floor writes the bytes it
//! read from any connection to every connection. Clients frame their
//! messages with the raw-TCP length prefix (`protocol::tcp`), so a forwarded
//! byte stream is still a stream of whole messages.

/// The byte a floor server writes to every connection it accepts.
pub const GREETING: u8 = b'*';
