//! permessage-deflate (RFC 7692): negotiating it in the upgrade, and the
//! bytes of a compressed message. Sans-io like the rest of `protocol`: the
//! server core, the task backends and the load generator share it.

pub mod codec;
pub mod negotiate;

pub use codec::{Deflater, InflateError, Inflater};
pub use negotiate::{choose, offers, Agreed, Declined, DeflateLimits, DeflateMode};
