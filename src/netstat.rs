//! The kernel's TCP counters (`/proc/net/netstat` TcpExt, `/proc/net/snmp`
//! Tcp), read before and after a load run or a bench phase: the evidence
//! that explains an outlier. A run whose counters show drops, overflows or
//! retransmits is flagged, the report says which counter moved, and the
//! well-known causes are named.

use std::collections::BTreeMap;

/// Counters kept in the results: name (`TcpExt.X` or `Tcp.X`) → value.
pub type Counters = BTreeMap<String, i64>;

/// Counters that mean packets or connections were dropped, retried or
/// refused: any rise flags the phase.
const TROUBLE: [&str; 15] = [
    "TcpExt.ListenOverflows",
    "TcpExt.ListenDrops",
    "TcpExt.TCPBacklogDrop",
    "TcpExt.TCPTimeouts",
    "TcpExt.TCPSynRetrans",
    "TcpExt.TCPAbortOnMemory",
    "TcpExt.TCPReqQFullDrop",
    "TcpExt.TCPReqQFullDoCookies",
    "TcpExt.SyncookiesSent",
    "TcpExt.TCPMemoryPressures",
    "TcpExt.TCPRcvQDrop",
    "TcpExt.TCPZeroWindowDrop",
    "TcpExt.PruneCalled",
    "Tcp.RetransSegs",
    "Tcp.InErrs",
];

/// Counters that explain trouble without being trouble themselves: a
/// retransmit that is a tail-loss probe (the receiver was slow to ACK on a
/// busy machine) is not a lost packet.
const CONTEXT: [&str; 4] = [
    "TcpExt.TCPLossProbes",
    "TcpExt.TCPLossProbeRecovery",
    "TcpExt.TCPDSACKRecv",
    "TcpExt.TCPSpuriousRTOs",
];

/// Counters kept for what they show of the work itself: connections
/// opened, resets, segments and ACKs.
const ACTIVITY: [&str; 16] = [
    "TcpExt.TCPAbortOnTimeout",
    "TcpExt.TCPAbortOnData",
    "TcpExt.TCPAbortOnClose",
    "TcpExt.TCPLostRetransmit",
    "TcpExt.DelayedACKs",
    "TcpExt.TCPPureAcks",
    "TcpExt.TCPHPAcks",
    "TcpExt.TCPAutoCorking",
    "TcpExt.TCPOrigDataSent",
    "Tcp.InSegs",
    "Tcp.OutSegs",
    "Tcp.ActiveOpens",
    "Tcp.PassiveOpens",
    "Tcp.AttemptFails",
    "Tcp.EstabResets",
    "Tcp.OutRsts",
];

/// The kept counters now (those this kernel has): trouble, context, activity.
pub fn read() -> Counters {
    let mut all = Counters::new();
    for path in ["/proc/net/netstat", "/proc/net/snmp"] {
        if let Ok(text) = std::fs::read_to_string(path) {
            all.extend(parse(&text));
        }
    }
    all.retain(|name, _| {
        let name = name.as_str();
        TROUBLE.contains(&name) || CONTEXT.contains(&name) || ACTIVITY.contains(&name)
    });
    all
}

/// `Prefix: names…` / `Prefix: values…` line pairs → `Prefix.name` → value.
fn parse(text: &str) -> Counters {
    let mut counters = Counters::new();
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let (Some((prefix, names)), Some((_, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(value) = value.parse::<i64>() {
                counters.insert(format!("{prefix}.{name}"), value);
            }
        }
    }
    counters
}

/// What changed from `before` to `after` (unchanged counters left out).
pub fn delta(before: &Counters, after: &Counters) -> Counters {
    after
        .iter()
        .map(|(name, value)| {
            (
                name.clone(),
                value - before.get(name).copied().unwrap_or(*value),
            )
        })
        .filter(|(_, change)| *change != 0)
        .collect()
}

/// The trouble in a phase's deltas, e.g. `["ListenOverflows +12"]`, and
/// when there is any, the counters that explain it (`TCPLossProbes +12`).
pub fn trouble(delta: &Counters) -> Vec<String> {
    let rises = |names: &[&str]| -> Vec<String> {
        names
            .iter()
            .filter_map(|name| {
                let change = *delta.get(*name)?;
                let short = name.split_once('.').map_or(*name, |(_, n)| n);
                (change > 0).then(|| format!("{short} +{change}"))
            })
            .collect()
    };
    let mut found = rises(&TROUBLE);
    if !found.is_empty() {
        found.extend(rises(&CONTEXT).into_iter().map(|c| format!("({c})")));
    }
    found
}

/// What the usual troublemakers mean, for a report's warnings.
pub fn explain(delta: &Counters) -> Vec<String> {
    let rose = |names: &[&str]| names.iter().any(|n| delta.get(*n).is_some_and(|v| *v > 0));
    let mut causes = Vec::new();
    if rose(&[
        "TcpExt.TCPMemoryPressures",
        "TcpExt.PruneCalled",
        "TcpExt.TCPRcvQDrop",
    ]) {
        causes.push("TCP memory pressure: the sockets' buffers together passed net.ipv4.tcp_mem, so the kernel dropped received data and TCP is retransmitting it (late, not lost); fewer bytes in flight, or a larger tcp_mem, avoids it".to_string());
    }
    if rose(&["TcpExt.ListenOverflows", "TcpExt.ListenDrops"]) {
        causes.push("the accept queue overflowed (net.core.somaxconn, or a server that did not accept fast enough): those connections waited for a SYN or ACK retry, a second or more".to_string());
    }
    if rose(&[
        "TcpExt.TCPReqQFullDrop",
        "TcpExt.TCPReqQFullDoCookies",
        "TcpExt.SyncookiesSent",
    ]) {
        causes.push("the SYN queue filled (net.ipv4.tcp_max_syn_backlog): connections were dropped or answered with SYN cookies".to_string());
    }
    if rose(&["TcpExt.TCPBacklogDrop"]) {
        causes.push("packets were dropped because a socket's backlog was full while its owner held it (a busy receiving thread)".to_string());
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    const NETSTAT: &str = "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPTimeouts\nTcpExt: 0 5 5 1\nIpExt: InNoRoutes\nIpExt: 3\n";

    #[test]
    fn parses_header_and_value_lines_in_pairs() {
        let counters = parse(NETSTAT);
        assert_eq!(counters.get("TcpExt.ListenOverflows"), Some(&5));
        assert_eq!(counters.get("TcpExt.TCPTimeouts"), Some(&1));
        assert_eq!(counters.get("IpExt.InNoRoutes"), Some(&3));
    }

    #[test]
    fn a_rise_in_a_drop_counter_is_trouble_and_a_rise_in_opens_is_not() {
        let before = parse(NETSTAT);
        let mut after = before.clone();
        after.insert("TcpExt.ListenOverflows".into(), 17);
        after.insert("Tcp.ActiveOpens".into(), 1000);
        let mut before = before;
        before.insert("Tcp.ActiveOpens".into(), 0);
        let change = delta(&before, &after);
        assert_eq!(change.get("TcpExt.ListenOverflows"), Some(&12));
        assert_eq!(change.get("Tcp.ActiveOpens"), Some(&1000));
        assert!(!change.contains_key("TcpExt.TCPTimeouts"));
        assert_eq!(trouble(&change), vec!["ListenOverflows +12".to_string()]);
    }

    #[test]
    fn retransmits_come_with_what_explains_them() {
        let before = Counters::from([
            ("Tcp.RetransSegs".to_string(), 0),
            ("TcpExt.TCPLossProbes".to_string(), 0),
        ]);
        let quiet = Counters::from([
            ("Tcp.RetransSegs".to_string(), 0),
            ("TcpExt.TCPLossProbes".to_string(), 3),
        ]);
        // A probe alone is context, not trouble.
        assert!(trouble(&delta(&before, &quiet)).is_empty());
        let probes = Counters::from([
            ("Tcp.RetransSegs".to_string(), 40),
            ("TcpExt.TCPLossProbes".to_string(), 40),
        ]);
        assert_eq!(
            trouble(&delta(&before, &probes)),
            vec![
                "RetransSegs +40".to_string(),
                "(TCPLossProbes +40)".to_string()
            ]
        );
    }

    #[test]
    fn known_troublemakers_are_named() {
        let pressure = Counters::from([("TcpExt.TCPRcvQDrop".to_string(), 900)]);
        assert!(explain(&pressure)[0].contains("tcp_mem"));
        let overflow = Counters::from([("TcpExt.ListenOverflows".to_string(), 3)]);
        assert!(explain(&overflow)[0].contains("somaxconn"));
        assert!(explain(&Counters::from([("Tcp.ActiveOpens".to_string(), 9)])).is_empty());
    }

    #[test]
    fn this_kernel_has_the_counters() {
        let now = read();
        assert!(now.contains_key("TcpExt.ListenOverflows"), "{now:?}");
        assert!(now.contains_key("Tcp.RetransSegs"), "{now:?}");
    }
}
