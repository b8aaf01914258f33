//! Kernel memory: the slab total from /proc/meminfo and the caches a socket
//! lives in from /proc/slabinfo (readable as root), sampled at two points of
//! a ramp. Slab counts are approximate at small scale (SLUB counts objects
//! in per-CPU slabs as in use), which is why per-socket figures are slopes
//! over many thousands of sockets.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::machine::meminfo_kib;

/// Slab caches that grow with TCP sockets; io_kiocb holds io_uring's
/// requests, one per armed multishot recv.
const SOCKET_CACHES: [&str; 8] = [
    "TCP",
    "sock_inode_cache",
    "filp",
    "dentry",
    "eventpoll_epi",
    "eventpoll_pwq",
    "tcp_bind_bucket",
    "io_kiocb",
];

#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Slab {
    /// /proc/meminfo Slab.
    pub total_bytes: u64,
    /// Bytes in use per socket-related cache (active objects × object size),
    /// when /proc/slabinfo is readable.
    pub caches: BTreeMap<String, u64>,
    /// Objects in use per socket-related cache.
    pub objects: BTreeMap<String, u64>,
}

/// Objects in the TCP cache now (one per IPv4 TCP socket, plus SLUB's
/// per-CPU slack), if /proc/slabinfo is readable.
pub fn tcp_objects() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/slabinfo").ok()?;
    parse_slabinfo(&text).get("TCP").map(|cache| cache.objects)
}

pub fn sample() -> Slab {
    let caches = std::fs::read_to_string("/proc/slabinfo")
        .map(|text| parse_slabinfo(&text))
        .unwrap_or_default();
    Slab {
        total_bytes: meminfo_kib("Slab") * 1024,
        caches: caches
            .iter()
            .map(|(name, c)| (name.clone(), c.objects * c.object_size))
            .collect(),
        objects: caches
            .iter()
            .map(|(name, c)| (name.clone(), c.objects))
            .collect(),
    }
}

struct Cache {
    objects: u64,
    object_size: u64,
}

fn parse_slabinfo(text: &str) -> BTreeMap<String, Cache> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let name = fields.next()?;
            if !SOCKET_CACHES.contains(&name) {
                return None;
            }
            let objects: u64 = fields.next()?.parse().ok()?;
            let _total = fields.next()?;
            let object_size: u64 = fields.next()?.parse().ok()?;
            Some((
                name.to_string(),
                Cache {
                    objects,
                    object_size,
                },
            ))
        })
        .collect()
}

/// Per-cache growth from `before` to `after`.
pub fn growth(before: &Slab, after: &Slab) -> BTreeMap<String, i64> {
    after
        .caches
        .iter()
        .map(|(name, bytes)| {
            let base = before.caches.get(name).copied().unwrap_or(0);
            (name.clone(), *bytes as i64 - base as i64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_socket_caches() {
        let text = "slabinfo - version: 2.1\n# name <active_objs> ...\nTCP 104 156 2368 13 8 : tunables 0 0 0 : slabdata 12 12 0\nfilp 630 630 192 21 1 : tunables 0 0 0 : slabdata 30 30 0\nkmalloc-64 1 1 64 1 1\n";
        let caches = parse_slabinfo(text);
        let tcp = &caches["TCP"];
        assert_eq!((tcp.objects, tcp.object_size), (104, 2368));
        assert_eq!(
            caches["filp"].objects * caches["filp"].object_size,
            630 * 192
        );
        assert!(!caches.contains_key("kmalloc-64"));
    }

    #[test]
    fn growth_is_per_cache() {
        let before = Slab {
            caches: [("TCP".to_string(), 100)].into(),
            ..Slab::default()
        };
        let after = Slab {
            caches: [("TCP".to_string(), 350)].into(),
            ..Slab::default()
        };
        assert_eq!(growth(&before, &after).get("TCP"), Some(&250));
    }
}
