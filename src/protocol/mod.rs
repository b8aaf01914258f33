//! Sans-io wire protocols: pure functions over byte slices that never touch a
//! socket. Every backend and (later) the load generator share this code, so a
//! protocol rule is written once and tested once.

pub mod bare;
pub mod frame;
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
