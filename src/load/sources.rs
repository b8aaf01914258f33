//! Source addresses for client sockets. One (source address, destination)
//! pair offers one ephemeral port range (28,232 ports by default), so 500K
//! connections to one server need ~20 loopback source addresses; each socket
//! binds its address with IP_BIND_ADDRESS_NO_PORT and the kernel picks the
//! port at connect time.

use std::net::Ipv4Addr;

/// Share of a port range a plan fills. The kernel picks each connect's port
/// by probing the range for a free 4-tuple, and the probing cost explodes as
/// the range fills: measured here, 25,000 connections from one address (89 %
/// full) took 14 CPU-seconds of connect() in the kernel and ran at 3,300/s;
/// from two addresses (44 %) 1 CPU-second at 36,000/s. A third keeps well
/// clear of that cliff; loopback addresses cost nothing.
const USABLE_SHARE: f64 = 0.35;
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
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap_or_else(|_| "32768 60999".into());
    let mut bounds = range
        .split_whitespace()
        .filter_map(|n| n.parse::<usize>().ok());
    match (bounds.next(), bounds.next()) {
        (Some(low), Some(high)) if high >= low => high - low + 1,
        _ => 28_232,
    }
}

/// The addresses to use for `conns` connections: the given ones if they
/// suffice, else an error saying how many are needed; by default as many
/// loopback addresses from 127.0.0.2 as the port range requires.
pub fn plan(
    conns: usize,
    ports: usize,
    given: Option<Vec<Ipv4Addr>>,
) -> Result<Vec<Ipv4Addr>, String> {
    let per_source = ((ports as f64 * USABLE_SHARE) as usize).max(1);
    let needed = conns.div_ceil(per_source).max(1);
    match given {
        Some(addresses) if addresses.len() >= needed => Ok(addresses),
        Some(addresses) => Err(format!(
            "{conns} connections need {needed} source addresses at {per_source} ports each, but --source gives {}; widen it (e.g. 127.0.0.2-127.0.0.{}) or widen net.ipv4.ip_local_port_range",
            addresses.len(),
            1 + needed
        )),
        None => {
            let first = u32::from(FIRST_DEFAULT);
            Ok((first..first + needed as u32).map(Ipv4Addr::from).collect())
        }
    }
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

    #[test]
    fn too_few_given_sources_is_an_error_naming_the_need() {
        let given = parse_range("127.0.0.2-127.0.0.3").unwrap();
        let error = plan(500_000, 28_232, Some(given)).unwrap_err();
        assert!(error.contains("need 51 source addresses"), "{error}");
    }
}
