//! Decides how many shards to run and whether they share one fd table.
//!
//! One fd table holds RLIMIT_NOFILE fds (20000 here, not raisable). A target
//! above that needs threads with private tables, and because SO_REUSEPORT
//! spreads connections by hash, not by room, each shard must have headroom:
//! the plan asks that the expected share plus four standard deviations of the
//! hash's binomial spread fits in one table. A shard that fills anyway stops
//! accepting until one of its connections closes.

use std::fmt;

/// Fds every table holds besides connections: stdio, the signal pipe, spares.
const FIXED_RESERVE: usize = 16;
/// Most shards the plan will propose before saying the target is out of reach.
const MAX_SHARDS: usize = 4096;

/// The fds a backend's shard holds besides its connections; the backend
/// says (`backend::fd_use`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdUse {
    /// Made in the main thread before any shard unshares (a waker, and for
    /// epoll its poll): every fd table holds one set per shard.
    pub in_every_table: usize,
    /// Made by the shard itself (its listener, an io_uring ring): in its own
    /// table only.
    pub own: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdTables {
    /// All shards share the process's table (the usual server).
    Shared,
    /// Each shard calls unshare(CLONE_FILES) and has a table of its own.
    PerShard,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub shards: usize,
    pub fd_tables: FdTables,
    /// Fds one table may hold (RLIMIT_NOFILE, or --fds-per-shard).
    pub table_limit: usize,
    /// Connections one shard accepts before it pauses (private tables only).
    pub conns_per_shard: Option<usize>,
    /// Connections the whole server can hold.
    pub capacity: usize,
    pub max_conns: usize,
    /// Why the shard count differs from what was asked, if it does.
    pub raised_from: Option<usize>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("fd tables of {limit} fds cannot hold {max_conns} connections with at most {MAX_SHARDS} shards")]
    OutOfReach { limit: usize, max_conns: usize },
    #[error("--shards must be at least 1")]
    ZeroShards,
}

/// What the plan is made from.
#[derive(Clone, Copy, Debug)]
pub struct PlanInput {
    pub cores: usize,
    pub shards: Option<usize>,
    pub max_conns: Option<usize>,
    pub nofile: usize,
    pub fds_per_shard: Option<usize>,
    pub fd_use: FdUse,
}

pub fn plan(input: PlanInput) -> Result<Plan, PlanError> {
    let wanted = input.shards.unwrap_or(input.cores.max(1));
    if wanted == 0 {
        return Err(PlanError::ZeroShards);
    }
    let fd_use = input.fd_use;
    let shared_capacity = shared_table_capacity(input.nofile, wanted, fd_use);
    let max_conns = input.max_conns.unwrap_or(shared_capacity);
    if input.fds_per_shard.is_none() && max_conns <= shared_capacity {
        return Ok(Plan {
            shards: wanted,
            fd_tables: FdTables::Shared,
            table_limit: input.nofile,
            conns_per_shard: None,
            capacity: shared_capacity,
            max_conns,
            raised_from: None,
        });
    }
    let limit = input.fds_per_shard.unwrap_or(input.nofile);
    let shards = (wanted..=MAX_SHARDS)
        .find(|&shards| {
            fits(
                max_conns,
                shards,
                private_table_capacity(limit, shards, fd_use),
            )
        })
        .ok_or(PlanError::OutOfReach { limit, max_conns })?;
    let per_shard = private_table_capacity(limit, shards, fd_use);
    Ok(Plan {
        shards,
        fd_tables: FdTables::PerShard,
        table_limit: limit,
        conns_per_shard: Some(per_shard),
        capacity: per_shard * shards,
        max_conns,
        raised_from: (shards != wanted).then_some(wanted),
    })
}

/// Connections one shared table holds: every shard's fds live in it too.
fn shared_table_capacity(limit: usize, shards: usize, fd_use: FdUse) -> usize {
    limit.saturating_sub(FIXED_RESERVE + (fd_use.in_every_table + fd_use.own) * shards)
}

/// Connections one private table holds: the inherited fds of all shards,
/// plus this shard's own.
fn private_table_capacity(limit: usize, shards: usize, fd_use: FdUse) -> usize {
    limit.saturating_sub(FIXED_RESERVE + fd_use.in_every_table * shards + fd_use.own)
}

/// Will `shards` shards of `capacity` each take `conns` hashed connections
/// without any of them overflowing (mean + 4 sigma of the binomial share)?
fn fits(conns: usize, shards: usize, capacity: usize) -> bool {
    if capacity == 0 {
        return false;
    }
    let p = 1.0 / shards as f64;
    let mean = conns as f64 * p;
    let sigma = (conns as f64 * p * (1.0 - p)).sqrt();
    mean + 4.0 * sigma + 1.0 <= capacity as f64
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.fd_tables {
            FdTables::Shared if self.shards == 1 => write!(
                f,
                "1 shard in one fd table of {} fds; capacity {} connections",
                self.table_limit, self.capacity
            )?,
            FdTables::Shared => write!(
                f,
                "{} shards sharing one fd table of {} fds; capacity {} connections",
                self.shards, self.table_limit, self.capacity
            )?,
            FdTables::PerShard => write!(
                f,
                "{} shards, each with a private fd table of {} fds holding up to {} connections; capacity {} for the {} asked",
                self.shards,
                self.table_limit,
                self.conns_per_shard.unwrap_or(0),
                self.capacity,
                self.max_conns
            )?,
        }
        if let Some(wanted) = self.raised_from {
            write!(
                f,
                " (raised from {wanted} shards: one fd table holds {} fds, and SO_REUSEPORT spreads connections by hash, so each shard keeps headroom)",
                self.table_limit
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(max_conns: Option<usize>) -> PlanInput {
        PlanInput {
            cores: 2,
            shards: None,
            max_conns,
            nofile: 20000,
            fds_per_shard: None,
            fd_use: EPOLL,
        }
    }

    /// A poll and a waker made before unsharing, a listener made after.
    const EPOLL: FdUse = FdUse {
        in_every_table: 2,
        own: 1,
    };

    #[test]
    fn default_is_one_shared_table_with_a_shard_per_core() {
        let plan = plan(input(None)).unwrap();
        assert_eq!(plan.shards, 2);
        assert_eq!(plan.fd_tables, FdTables::Shared);
        assert_eq!(plan.capacity, 20000 - 16 - 6);
        assert_eq!(plan.raised_from, None);
    }

    #[test]
    fn half_a_million_needs_private_tables_with_headroom() {
        let plan = plan(input(Some(500_000))).unwrap();
        assert_eq!(plan.fd_tables, FdTables::PerShard);
        assert_eq!(plan.raised_from, Some(2));
        let per_shard = plan.conns_per_shard.unwrap();
        // Expected share plus headroom must fit in one table.
        let share = 500_000 / plan.shards;
        assert!(share + 4 * (share as f64).sqrt() as usize <= per_shard);
        // And one shard fewer would not have fitted.
        let fewer = plan.shards - 1;
        assert!(!fits(
            500_000,
            fewer,
            private_table_capacity(20000, fewer, EPOLL)
        ));
        assert!(plan.capacity >= 500_000);
        assert!(plan.to_string().contains("raised from 2 shards"));
    }

    #[test]
    fn test_knob_forces_private_tables() {
        let mut small = input(Some(120));
        small.fds_per_shard = Some(64);
        let plan = plan(small).unwrap();
        assert_eq!(plan.fd_tables, FdTables::PerShard);
        let per_shard = plan.conns_per_shard.unwrap();
        assert!(per_shard < 120, "one shard must not hold them all");
        assert!(plan.capacity >= 120);
    }

    #[test]
    fn unreachable_targets_and_zero_shards_are_errors() {
        let mut tiny = input(Some(1_000_000));
        tiny.fds_per_shard = Some(20);
        assert!(matches!(plan(tiny), Err(PlanError::OutOfReach { .. })));
        let mut zero = input(None);
        zero.shards = Some(0);
        assert_eq!(plan(zero), Err(PlanError::ZeroShards));
    }
}
