//! WebSocket close status codes (RFC 6455 §7.4.1) that fanout sends or checks; the
//! TCP protocol reuses their numbers for the same endings.

pub const NORMAL: u16 = 1000;
pub const GOING_AWAY: u16 = 1001;
pub const PROTOCOL_ERROR: u16 = 1002;
pub const INVALID_PAYLOAD: u16 = 1007;
pub const POLICY_VIOLATION: u16 = 1008;
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// The server is overloaded: the client should try again later.
pub const TRY_AGAIN_LATER: u16 = 1013;

/// Codes a peer may put on the wire: registered ones and the 3000–4999
/// ranges. 1004–1006 and 1015 are reserved and must never be sent.
pub fn is_valid_on_wire(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}
