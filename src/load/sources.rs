//! Source addresses for client sockets. One (source address, destination)
//! pair offers one ephemeral port range (28,232 ports by default), so 500K
//! connections to one server need ~20 loopback source addresses; each socket
//! binds its address with IP_BIND_ADDRESS_NO_PORT and the kernel picks the
//! port at connect time.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Share of a port range a plan fills. The kernel picks each connect's port
/// by probing the range for a free 4-tuple, and the probing cost explodes as
/// the range fills: measured here, 25,000 connections from one address (89 %
/// full) took 14 CPU-seconds of connect() in the kernel and ran at 3,300/s;
/// from two addresses (44 %) 1 CPU-second at 36,000/s. A third keeps well
/// clear of that cliff; loopback addresses cost nothing.
pub const USABLE_SHARE: f64 = 0.35;
/// The first default source: 127.0.0.1 is left to everything else.
const FIRST_DEFAULT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// Parse `A` or `A-B` (inclusive) into the list of addresses.
pub fn parse_range(text: &str) -> Result<Vec<Ipv4Addr>, String> {
    let (first, last) = text.split_once('-').unwrap_or((text, text));
    let parse = |s: &str| {
        s.trim()
            .parse::<Ipv4Addr>()
            .map_err(|_| format!("`{s}` is not an IPv4 address (try 127.0.0.2-127.0.0.60)"))
    };
    let (first, last) = (u32::from(parse(first)?), u32::from(parse(last)?));
    if last < first {
        return Err(format!("source range `{text}` runs backwards"));
    }
    Ok((first..=last).map(Ipv4Addr::from).collect())
}

/// Ports one source address offers per destination, from the kernel's
/// ephemeral range (`net.ipv4.ip_local_port_range`).
pub fn ports_per_source() -> usize {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range");
    let (low, high) = port_range(&text.unwrap_or_default());
    (high + 1 - low) as usize
}

/// The addresses to use for `conns` connections on an empty machine: the
/// given ones if they suffice, else an error saying how many are needed; by
/// default as many loopback addresses from 127.0.0.2 as the port range
/// requires.
pub fn plan(
    conns: usize,
    ports: usize,
    given: Option<Vec<Ipv4Addr>>,
) -> Result<Vec<Ipv4Addr>, String> {
    let space = PortSpace {
        range: ports,
        ..PortSpace::default()
    };
    plan_around(conns, &space, given).map(|plan| plan.sources)
}

/// Sockets that already hold ports on one source address toward the
/// destination: each takes a port the plan cannot use, except TIME_WAIT
/// sockets that connect() may take over (see [`TimeWaitReuse`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Held {
    pub time_wait: usize,
    /// Of the TIME_WAIT sockets, those connect() may reuse now.
    pub time_wait_reusable: usize,
    pub established: usize,
    /// Any other state (SYN_SENT, FIN_WAIT, CLOSE_WAIT, …).
    pub other: usize,
}

impl Held {
    pub fn total(&self) -> usize {
        self.time_wait + self.established + self.other
    }

    /// Ports a new connection cannot take.
    pub fn blocking(&self) -> usize {
        self.total() - self.time_wait_reusable
    }

    /// `25700 TIME_WAIT (25000 reusable), 18 established, 0 other`.
    pub fn states(&self) -> String {
        let reusable = match self.time_wait_reusable {
            0 => String::new(),
            n => format!(" ({n} reusable)"),
        };
        format!(
            "{} TIME_WAIT{reusable}, {} established, {} other",
            self.time_wait, self.established, self.other
        )
    }
}

/// When connect() may take over a port held by a TIME_WAIT socket to the
/// same destination: with TCP timestamps on, `net.ipv4.tcp_tw_reuse` 1
/// (always) or 2 (the default: loopback only), once the socket is older
/// than `net.ipv4.tcp_tw_reuse_delay` (1,000 ms). Measured here: 19,000
/// connections held from one address beside 14,507 TIME_WAIT sockets two
/// seconds old (28,232 ports), TIME_WAIT down to 219 after.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeWaitReuse {
    /// `net.ipv4.tcp_tw_reuse`: 0 never, 1 always, 2 loopback only.
    pub mode: u8,
    pub timestamps: bool,
    /// `net.ipv4.tcp_tw_reuse_delay`, ms (1,000 where the sysctl is absent).
    pub delay_ms: u64,
}

impl TimeWaitReuse {
    /// This machine's.
    pub fn read() -> TimeWaitReuse {
        let number =
            |path: &str| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
        TimeWaitReuse {
            mode: number("/proc/sys/net/ipv4/tcp_tw_reuse").unwrap_or(0) as u8,
            timestamps: number("/proc/sys/net/ipv4/tcp_timestamps").unwrap_or(0) != 0,
            delay_ms: number("/proc/sys/net/ipv4/tcp_tw_reuse_delay").unwrap_or(1000),
        }
    }

    /// May a TIME_WAIT socket `local` → `remote`, `age_ms` old, be taken over?
    fn allows(&self, local: Ipv4Addr, remote: Ipv4Addr, age_ms: u64) -> bool {
        let applies = match self.mode {
            1 => true,
            2 => local.is_loopback() || remote.is_loopback(),
            _ => false,
        };
        applies && self.timestamps && age_ms >= self.delay_ms
    }
}

/// How long a socket stays in TIME_WAIT on Linux (TCP_TIMEWAIT_LEN).
const TIME_WAIT_MS: u64 = 60_000;

/// The ports a plan can use: the ephemeral range, the reserved ports in
/// it, and what already holds ports toward the destination, per source.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PortSpace {
    pub range: usize,
    /// Ports of the range in net.ipv4.ip_local_reserved_ports.
    pub reserved: usize,
    /// Ports of the range a listener holds, on any address: connect()
    /// never picks a port a socket was bound to explicitly, whatever the
    /// source address, so each is lost to every address.
    pub listening: usize,
    pub held: BTreeMap<Ipv4Addr, Held>,
    /// Where the connections go, for the plan's words.
    pub destination: Option<SocketAddrV4>,
}

impl PortSpace {
    /// This machine's, toward `destination` (or, for `fanout doctor`
    /// without a server, toward anywhere).
    pub fn read(destination: Option<SocketAddrV4>) -> PortSpace {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let range = port_range(&read("/proc/sys/net/ipv4/ip_local_port_range"));
        let tcp = read("/proc/net/tcp");
        PortSpace {
            range: (range.1 + 1 - range.0) as usize,
            reserved: reserved_in(range, &read("/proc/sys/net/ipv4/ip_local_reserved_ports")),
            listening: listening_in(range, &[&tcp, &read("/proc/net/tcp6")]),
            held: held_on(&tcp, destination, TimeWaitReuse::read()),
            destination,
        }
    }

    /// Ports a plan may fill on `source`: its share of the range, less the
    /// reserved ports, the listeners' and the ports already held.
    pub fn usable(&self, source: Ipv4Addr) -> usize {
        let share = (self.range as f64 * USABLE_SHARE) as usize;
        let held = self.held.get(&source).map_or(0, Held::blocking);
        share.saturating_sub(self.reserved + self.listening + held)
    }
}

/// The sources chosen, and what the plan had to go around.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourcePlan {
    pub sources: Vec<Ipv4Addr>,
    /// "127.0.0.2: 25,718 ports toward 127.0.0.1:9001 held (…); …".
    pub notes: Vec<String>,
}

/// Like [`plan`], counting what is really free: reserved ports and the
/// sockets (TIME_WAIT included) that already hold ports on each source
/// toward the destination. The default skips sources with no room.
pub fn plan_around(
    conns: usize,
    space: &PortSpace,
    given: Option<Vec<Ipv4Addr>>,
) -> Result<SourcePlan, String> {
    let mut notes = held_notes(space);
    let share = ((space.range as f64 * USABLE_SHARE) as usize).max(1);
    match given {
        Some(addresses) => {
            let room: usize = addresses.iter().map(|a| space.usable(*a)).sum();
            if room >= conns {
                return Ok(SourcePlan {
                    sources: addresses,
                    notes,
                });
            }
            let needed = conns.div_ceil(share).max(1);
            let busy = if notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", notes.join("; "))
            };
            Err(format!(
                "{conns} connections need room on about {needed} source addresses at {share} ports each, but --source gives {} with room for {room}{busy}; widen it (e.g. 127.0.0.2-127.0.0.{}), widen net.ipv4.ip_local_port_range, or wait for TIME_WAIT to pass (60 s; with net.ipv4.tcp_tw_reuse 2, the default, connect() takes over a loopback TIME_WAIT once it is a second old)",
                addresses.len(),
                1 + needed + addresses.len()
            ))
        }
        None => {
            let mut sources = Vec::new();
            let mut room = 0;
            let mut skipped = Vec::new();
            let mut next = u32::from(FIRST_DEFAULT);
            while room < conns.max(1) {
                let address = Ipv4Addr::from(next);
                next += 1;
                match space.usable(address) {
                    0 => skipped.push(address),
                    usable => {
                        room += usable;
                        sources.push(address);
                    }
                }
                if next > u32::from(LAST_DEFAULT) {
                    return Err(format!(
                        "{conns} connections do not fit the loopback source addresses 127.0.0.2–{LAST_DEFAULT}: give --source, or widen net.ipv4.ip_local_port_range"
                    ));
                }
            }
            if !notes.is_empty() || !skipped.is_empty() {
                notes.push(format!(
                    "using {}{}",
                    span(&sources),
                    if skipped.is_empty() {
                        String::new()
                    } else {
                        format!(", skipping {} (no room)", span(&skipped))
                    }
                ));
            }
            Ok(SourcePlan { sources, notes })
        }
    }
}

/// The last loopback address the default plan may take.
const LAST_DEFAULT: Ipv4Addr = Ipv4Addr::new(127, 255, 255, 254);

fn held_notes(space: &PortSpace) -> Vec<String> {
    let toward = space
        .destination
        .map_or(String::new(), |d| format!(" toward {d}"));
    let mut notes = Vec::new();
    if space.reserved > 0 {
        notes.push(format!(
            "{} ports of the range reserved (net.ipv4.ip_local_reserved_ports)",
            space.reserved
        ));
    }
    if space.listening > 0 {
        notes.push(format!(
            "{} ports of the range held by listeners (lost to every address)",
            space.listening
        ));
    }
    let held = space
        .held
        .iter()
        .filter(|(_, held)| held.total() > 0)
        .map(|(address, held)| {
            format!(
                "{address}: {} ports{toward} held ({})",
                held.total(),
                held.states()
            )
        });
    notes.extend(held);
    notes
}

/// `127.0.0.2–127.0.0.4`, or one address.
fn span(addresses: &[Ipv4Addr]) -> String {
    match (addresses.first(), addresses.last()) {
        (Some(first), Some(last)) if first != last => format!("{first}–{last}"),
        (Some(first), _) => first.to_string(),
        _ => "none".into(),
    }
}

/// `32768 60999` → (32768, 60999); the kernel default when unreadable.
pub fn port_range(text: &str) -> (u32, u32) {
    let mut bounds = text.split_whitespace().filter_map(|n| n.parse().ok());
    match (bounds.next(), bounds.next()) {
        (Some(low), Some(high)) if high >= low => (low, high),
        _ => (32768, 60999),
    }
}

/// Reserved ports (`8080,9000-9100`) inside the range.
pub fn reserved_in(range: (u32, u32), text: &str) -> usize {
    reserved_ranges(text)
        .into_iter()
        .map(|(a, b)| {
            let (low, high) = (a.max(range.0), b.min(range.1));
            (high + 1).saturating_sub(low) as usize
        })
        .sum()
}

/// The ranges of `net.ipv4.ip_local_reserved_ports` (`8080,9000-9100`).
pub fn reserved_ranges(text: &str) -> Vec<(u32, u32)> {
    text.trim()
        .split(',')
        .filter(|part| !part.trim().is_empty())
        .filter_map(|part| {
            let (a, b) = part
                .trim()
                .split_once('-')
                .unwrap_or((part.trim(), part.trim()));
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect()
}

/// Distinct ports inside `range` that listening sockets hold, from the text
/// of /proc/net/tcp and /proc/net/tcp6 (a listener on `[::]` takes its
/// port from IPv4 connects too).
pub fn listening_in(range: (u32, u32), tables: &[&str]) -> usize {
    let ports: std::collections::BTreeSet<u32> = tables
        .iter()
        .flat_map(|table| table.lines().skip(1))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(3) != Some(&"0A") {
                return None;
            }
            let (_, port) = fields.get(1)?.rsplit_once(':')?;
            u32::from_str_radix(port, 16).ok()
        })
        .filter(|port| (range.0..=range.1).contains(port))
        .collect();
    ports.len()
}

/// Sockets from each local IPv4 address, by state, from the text of
/// /proc/net/tcp (addresses and ports in the kernel's hex): toward
/// `destination`, or toward anywhere (listeners left out).
pub fn held_on(
    table: &str,
    destination: Option<SocketAddrV4>,
    reuse: TimeWaitReuse,
) -> BTreeMap<Ipv4Addr, Held> {
    let mut held: BTreeMap<Ipv4Addr, Held> = BTreeMap::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(remote), Some(state)) =
            (fields.get(1), fields.get(2), fields.get(3))
        else {
            continue;
        };
        let (Some(local), Some(remote)) = (hex_address(local), hex_address(remote)) else {
            continue;
        };
        let wanted = match destination {
            Some(destination) => remote == destination,
            None => *state != "0A",
        };
        if !wanted {
            continue;
        }
        let entry = held.entry(*local.ip()).or_default();
        match *state {
            "06" => {
                entry.time_wait += 1;
                let age_ms = fields.get(5).map_or(0, |timer| time_wait_age_ms(timer));
                if reuse.allows(*local.ip(), *remote.ip(), age_ms) {
                    entry.time_wait_reusable += 1;
                }
            }
            "01" => entry.established += 1,
            _ => entry.other += 1,
        }
    }
    held
}

/// A TIME_WAIT socket's age from its timer field (`03:00000F2A`: the
/// TIME_WAIT timer, 0xF2A hundredths of a second until it expires).
fn time_wait_age_ms(timer: &str) -> u64 {
    let left = timer
        .split_once(':')
        .and_then(|(_, when)| u64::from_str_radix(when, 16).ok())
        .map_or(TIME_WAIT_MS, |hundredths| hundredths * 10);
    TIME_WAIT_MS.saturating_sub(left)
}

/// `0100007F:2329` → 127.0.0.1:9001 (the address as the kernel's u32 in
/// host byte order, the port in hex).
fn hex_address(text: &str) -> Option<SocketAddrV4> {
    let (address, port) = text.split_once(':')?;
    let address = u32::from_str_radix(address, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddrV4::new(
        Ipv4Addr::from(address.to_ne_bytes()),
        port,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_inclusively() {
        let list = parse_range("127.0.0.2-127.0.0.4").unwrap();
        assert_eq!(
            list,
            vec![
                Ipv4Addr::new(127, 0, 0, 2),
                Ipv4Addr::new(127, 0, 0, 3),
                Ipv4Addr::new(127, 0, 0, 4)
            ]
        );
        assert_eq!(parse_range("127.0.0.9").unwrap().len(), 1);
        assert_eq!(parse_range("127.0.0.255-127.0.1.1").unwrap().len(), 3);
        assert!(parse_range("127.0.0.5-127.0.0.2").is_err());
        assert!(parse_range("localhost").is_err());
    }

    #[test]
    fn default_plan_keeps_each_port_range_a_third_full() {
        let sources = plan(500_000, 28_232, None).unwrap();
        assert_eq!(sources[0], FIRST_DEFAULT);
        let per_source = (28_232.0 * USABLE_SHARE) as usize;
        assert!(sources.len() * per_source >= 500_000);
        assert!((sources.len() - 1) * per_source < 500_000);
        assert_eq!(sources.len(), 51);
        assert_eq!(plan(10, 28_232, None).unwrap().len(), 1);
    }

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2329 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0
   1: 0200007F:9C40 0100007F:2329 06 00000000:00000000 03:00000F2A 00000000     0        0 0 3 0
   2: 0200007F:9C41 0100007F:2329 06 00000000:00000000 03:00000F2A 00000000     0        0 0 3 0
   3: 0200007F:9C42 0100007F:2329 01 00000000:00000000 00:00000000 00000000     0        0 7 1 0
   4: 0300007F:9C40 0100007F:2329 08 00000000:00000000 00:00000000 00000000     0        0 8 1 0
   5: 0200007F:9C43 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 9 1 0
";

    const NO_REUSE: TimeWaitReuse = TimeWaitReuse {
        mode: 0,
        timestamps: true,
        delay_ms: 1000,
    };

    #[test]
    fn held_ports_are_counted_per_source_toward_one_destination() {
        let server = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9001);
        let held = held_on(TCP, Some(server), NO_REUSE);
        let two = held[&Ipv4Addr::new(127, 0, 0, 2)];
        assert_eq!((two.time_wait, two.established, two.other), (2, 1, 0));
        assert_eq!(held[&Ipv4Addr::new(127, 0, 0, 3)].other, 1);
        // The listener and the socket toward port 8080 are not counted.
        assert_eq!(held.len(), 2);
        assert_eq!(two.time_wait_reusable, 0);
        assert_eq!(two.blocking(), 3);
    }

    #[test]
    fn time_wait_older_than_the_reuse_delay_is_reusable_toward_loopback() {
        // 0xF2A hundredths left of 60 s: 21.18 s old; 0x1720: 0.8 s old.
        assert_eq!(time_wait_age_ms("03:00000F2A"), 21_180);
        assert_eq!(time_wait_age_ms("03:00001720"), 800);
        let young = TCP.replacen(
            "06 00000000:00000000 03:00000F2A",
            "06 00000000:00000000 03:00001720",
            1,
        );
        let server = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9001);
        let default = TimeWaitReuse {
            mode: 2,
            ..NO_REUSE
        };
        let two = held_on(&young, Some(server), default)[&Ipv4Addr::new(127, 0, 0, 2)];
        // Two TIME_WAIT: the 21 s old one is reusable, the 0.8 s old one not yet.
        assert_eq!((two.time_wait, two.time_wait_reusable), (2, 1));
        assert_eq!(two.blocking(), 2);
        assert_eq!(
            two.states(),
            "2 TIME_WAIT (1 reusable), 1 established, 0 other"
        );
        // Mode 2 is loopback only; mode 1 everywhere; no timestamps, never.
        let remote = Ipv4Addr::new(10, 0, 0, 5);
        let outside = Ipv4Addr::new(10, 0, 0, 9);
        assert!(!default.allows(outside, remote, 5_000));
        assert!(default.allows(outside, Ipv4Addr::LOCALHOST, 5_000));
        let always = TimeWaitReuse {
            mode: 1,
            ..NO_REUSE
        };
        assert!(always.allows(outside, remote, 5_000));
        let no_timestamps = TimeWaitReuse {
            timestamps: false,
            ..always
        };
        assert!(!no_timestamps.allows(outside, remote, 5_000));
    }

    #[test]
    fn listeners_in_the_range_count_once_per_port_on_any_address() {
        let tcp6 =
            "  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:9C41 00000000000000000000000000000000:0000 0A 0
   1: 00000000000000000000000000000000:9C40 00000000000000000000000000000000:0000 0A 0
";
        // 0x2329 = 9001 is outside the range; 0x9C40 = 40000 is held by a
        // TIME_WAIT socket in /proc/net/tcp and by a listener in tcp6.
        assert_eq!(listening_in((32768, 60999), &[TCP, tcp6]), 2);
        assert_eq!(listening_in((32768, 60999), &[TCP]), 0);
        assert_eq!(listening_in((9000, 9001), &[TCP, tcp6]), 1);
    }

    #[test]
    fn reserved_ports_and_listeners_shrink_every_address_and_are_named() {
        let space = PortSpace {
            range: 1_000,
            reserved: 100,
            listening: 50,
            ..PortSpace::default()
        };
        // A share of 350, less 150 lost on every address.
        assert_eq!(space.usable(FIRST_DEFAULT), 200);
        let plan = plan_around(500, &space, None).unwrap();
        assert_eq!(plan.sources.len(), 3);
        let notes = plan.notes.join("; ");
        assert!(
            notes.contains("100 ports of the range reserved")
                && notes
                    .contains("50 ports of the range held by listeners (lost to every address)"),
            "{notes}"
        );
    }

    #[test]
    fn reserved_ports_count_only_inside_the_range() {
        assert_eq!(reserved_in((32768, 60999), ""), 0);
        assert_eq!(
            reserved_in((32768, 60999), "8080,40000-40099,60990-61010\n"),
            110
        );
    }

    #[test]
    fn a_plan_goes_around_held_ports_and_says_so() {
        let server = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9001);
        let mut held = BTreeMap::new();
        let busy = Held {
            time_wait_reusable: 0,
            time_wait: 25_700,
            established: 18,
            other: 0,
        };
        held.insert(FIRST_DEFAULT, busy);
        let space = PortSpace {
            range: 28_232,
            reserved: 0,
            listening: 0,
            held,
            destination: Some(server),
        };
        // 127.0.0.2 has no room left in its share: skipped, named.
        let plan = plan_around(15_000, &space, None).unwrap();
        assert_eq!(plan.sources[0], Ipv4Addr::new(127, 0, 0, 3));
        assert_eq!(plan.sources.len(), 2);
        let notes = plan.notes.join("; ");
        assert!(notes.contains("127.0.0.2: 25718 ports toward 127.0.0.1:9001 held (25700 TIME_WAIT, 18 established, 0 other)"), "{notes}");
        assert!(
            notes.contains("using 127.0.0.3–127.0.0.4, skipping 127.0.0.2 (no room)"),
            "{notes}"
        );
        // Given only the busy address: an error that names why.
        let error = plan_around(100, &space, Some(vec![FIRST_DEFAULT])).unwrap_err();
        assert!(
            error.contains("25700 TIME_WAIT") && error.contains("room for 0"),
            "{error}"
        );
    }

    #[test]
    fn too_few_given_sources_is_an_error_naming_the_need() {
        let given = parse_range("127.0.0.2-127.0.0.3").unwrap();
        let error = plan(500_000, 28_232, Some(given)).unwrap_err();
        assert!(
            error.contains("need room on about 51 source addresses"),
            "{error}"
        );
    }
}
