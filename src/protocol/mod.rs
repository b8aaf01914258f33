//! Sans-io wire protocols: pure functions over byte slices that never touch a
//! socket. Every backend and (later) the load generator share this code, so a
//! protocol rule is written once and tested once.

pub mod bare;
pub mod close_code;
pub mod deflate;
pub mod frame;
pub mod fuzzing;
pub mod handshake;
pub mod message;
pub mod tcp;

/// What a connection asked to do: the two behaviours of the benchmark protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Every data message goes back to its sender.
    Echo,
    /// Every data message goes to every current member of the one room.
    Room,
}

impl Route {
    /// The route for a request path (`/echo`, `/room`); a query string is ignored.
    pub fn from_path(path: &str) -> Option<Route> {
        let path = path.split('?').next().unwrap_or(path);
        match path {
            "/echo" => Some(Route::Echo),
            "/room" => Some(Route::Room),
            _ => None,
        }
    }
}

/// Which wire protocol a server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Proto {
    /// WebSocket (RFC 6455): `GET /echo` and `GET /room`.
    Ws,
    /// Length-prefixed raw TCP (docs/tcp-framing.md): a hello names the route.
    Tcp,
}
