//! The one error every subcommand can raise about its command line, kept
//! below them all so that `cli` only parses and dispatches.

/// A mistake in the command line found after parsing (an impossible
/// combination of values): reported like clap's own errors, exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
