//! Sizing a fleet from one measured machine: for each constraint — memory
//! for the connections held, accepting everyone back after a restart,
//! delivering their messages — the demand, what one machine measured, and
//! the machines it takes at the stated headroom. The most machines wins and
//! is named. Pure: the figures come in, the plan goes out.

use serde::Serialize;

use crate::doctor::checks::MEMORY_SHARE;

/// What the bench measured on one machine, for one server.
#[derive(Clone, Debug, Serialize)]
pub struct Measured {
    /// The server measured (`epoll`, `uring`, …).
    pub server: String,
    /// The result file it came from.
    pub from: String,
    /// The machine, in words.
    pub machine: String,
    pub memory_bytes: u64,
    /// Server user space per connection (RSS of its process tree).
    pub user_bytes_per_conn: f64,
    /// Kernel memory per socket (one socket per connection on a server).
    pub kernel_bytes_per_socket: f64,
    /// Connections per second the server accepted during the ramp (with the
    /// client on the same machine: a lower bound).
    pub accept_per_s: Option<f64>,
    /// Room deliveries per second, one broadcast at a time.
    pub deliveries_per_s: Option<f64>,
}

/// What the fleet must carry.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Demand {
    pub users: u64,
    /// Messages each user receives per second.
    pub msgs_per_user_per_s: f64,
    /// Every user back within this many seconds after a restart of the fleet.
    pub reconnect_window_s: f64,
    /// Share of each measured capacity kept free (0.2: plan to 80 %).
    pub headroom: f64,
    /// The busiest machine's connections over the mean, from the routing
    /// simulation (1.0: perfectly even).
    pub imbalance: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Constraint {
    pub name: &'static str,
    /// Fleet-wide demand, in `unit`.
    pub demand: f64,
    pub unit: &'static str,
    /// What one machine does, measured (before headroom).
    pub per_machine: f64,
    /// Machines this constraint alone needs.
    pub machines: u64,
    /// How the figure was derived.
    pub basis: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Fleet {
    pub machines: u64,
    /// The constraint that needs the most machines.
    pub binding: &'static str,
    pub constraints: Vec<Constraint>,
    /// Each constraint's utilization at `machines` (of measured capacity).
    pub utilization: Vec<(&'static str, f64)>,
}

/// Heroku's documented router limit, for context: new connections per
/// second per dyno.
pub const HEROKU_CONNECTIONS_PER_S: f64 = 160.0;

pub fn size(m: &Measured, d: &Demand) -> Fleet {
    let usable = d.headroom.clamp(0.0, 0.95);
    let per_conn = m.user_bytes_per_conn + m.kernel_bytes_per_socket;
    let held = m.memory_bytes as f64 * MEMORY_SHARE / per_conn.max(1.0) / d.imbalance.max(1.0);
    let mut constraints = vec![constraint(
        "memory (connections held)",
        d.users as f64,
        "connections",
        held,
        usable,
        format!(
            "{:.0} % of {:.1} GiB ÷ ({:.0} B user + {:.0} B kernel per connection) ÷ {:.3} imbalance",
            MEMORY_SHARE * 100.0,
            m.memory_bytes as f64 / (1u64 << 30) as f64,
            m.user_bytes_per_conn,
            m.kernel_bytes_per_socket,
            d.imbalance
        ),
    )];
    if let Some(rate) = m.accept_per_s {
        constraints.push(constraint(
            "accept rate (everyone back after a restart)",
            d.users as f64 / d.reconnect_window_s.max(1e-3),
            "connections/s",
            rate,
            usable,
            format!(
                "{} users within {} s; the ramp's rate measured here, client on the same machine",
                d.users, d.reconnect_window_s
            ),
        ));
    }
    if let (Some(rate), true) = (m.deliveries_per_s, d.msgs_per_user_per_s > 0.0) {
        constraints.push(constraint(
            "deliveries (messages to users)",
            d.users as f64 * d.msgs_per_user_per_s,
            "deliveries/s",
            rate,
            usable,
            format!(
                "{} users × {} messages/s; one broadcast at a time to every member, measured",
                d.users, d.msgs_per_user_per_s
            ),
        ));
    }
    let binding = constraints
        .iter()
        .max_by_key(|c| c.machines)
        .expect("memory is always a constraint");
    let machines = binding.machines;
    let binding = binding.name;
    let utilization = constraints
        .iter()
        .map(|c| (c.name, c.demand / (c.per_machine * machines as f64)))
        .collect();
    Fleet {
        machines,
        binding,
        constraints,
        utilization,
    }
}

fn constraint(
    name: &'static str,
    demand: f64,
    unit: &'static str,
    per_machine: f64,
    headroom: f64,
    basis: String,
) -> Constraint {
    let planned = per_machine * (1.0 - headroom);
    Constraint {
        name,
        demand,
        unit,
        per_machine,
        machines: ((demand / planned.max(1e-9)).ceil() as u64).max(1),
        basis,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured() -> Measured {
        Measured {
            server: "epoll".into(),
            from: "x.json".into(),
            machine: "vm".into(),
            memory_bytes: 16 << 30,
            user_bytes_per_conn: 100.0,
            kernel_bytes_per_socket: 4_000.0,
            accept_per_s: Some(200_000.0),
            deliveries_per_s: Some(1_000_000.0),
        }
    }

    fn demand(users: u64) -> Demand {
        Demand {
            users,
            msgs_per_user_per_s: 0.1,
            reconnect_window_s: 60.0,
            headroom: 0.2,
            imbalance: 1.0,
        }
    }

    #[test]
    fn memory_binds_when_users_are_many_and_quiet() {
        let fleet = size(&measured(), &demand(10_000_000));
        // 16 GiB × 0.8 ÷ 4100 B ≈ 3.35M per machine, 2.68M at 80 %: 4 machines.
        assert_eq!(fleet.machines, 4);
        assert_eq!(fleet.binding, "memory (connections held)");
        let memory = fleet.utilization[0].1;
        assert!(memory < 0.8 && memory > 0.7, "{memory}");
    }

    #[test]
    fn a_short_reconnect_window_makes_accepting_bind() {
        let mut d = demand(10_000_000);
        d.reconnect_window_s = 10.0;
        let fleet = size(&measured(), &d);
        // 1M connections/s ÷ (200K × 0.8) = 6.25 → 7 machines.
        assert_eq!(fleet.binding, "accept rate (everyone back after a restart)");
        assert_eq!(fleet.machines, 7);
    }

    #[test]
    fn chatty_users_make_deliveries_bind_and_imbalance_costs_memory() {
        let mut d = demand(1_000_000);
        d.msgs_per_user_per_s = 10.0;
        let fleet = size(&measured(), &d);
        assert_eq!(fleet.binding, "deliveries (messages to users)");
        assert_eq!(fleet.machines, 13);

        let even = size(&measured(), &demand(10_000_000)).constraints[0].per_machine;
        let mut uneven = demand(10_000_000);
        uneven.imbalance = 1.25;
        let skewed = size(&measured(), &uneven).constraints[0].per_machine;
        assert!((even / skewed - 1.25).abs() < 1e-9);
    }
}
