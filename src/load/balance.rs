//! Spreading clients over several servers (`fanout load --url A --url B
//! --balance …`). Each client shard balances its own connections with what
//! it knows — its own connections to each server, open or opening — as a
//! client-side load balancer does; the report counts what each server got.

/// How each new connection picks its server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Balance {
    /// In turn.
    #[default]
    RoundRobin,
    /// Uniformly at random.
    Random,
    /// The server this shard holds the fewest connections to.
    LeastConn,
    /// Power of two choices: two servers at random, the one with fewer.
    P2c,
}

impl Balance {
    pub fn name(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round-robin",
            Balance::Random => "random",
            Balance::LeastConn => "least-conn",
            Balance::P2c => "p2c",
        }
    }
}

/// One shard's balancer: the policy and its connections per server.
#[derive(Debug)]
pub struct Balancer {
    policy: Balance,
    /// Connections open or opening to each server.
    load: Vec<u32>,
    turn: usize,
}

impl Balancer {
    /// `first` staggers the shards' round-robin turns.
    pub fn new(policy: Balance, servers: usize, first: usize) -> Balancer {
        Balancer {
            policy,
            load: vec![0; servers],
            turn: first,
        }
    }

    /// The server for the next connection; `random` draws uniform u64s.
    pub fn pick(&mut self, mut random: impl FnMut() -> u64) -> usize {
        let n = self.load.len();
        let server = match self.policy {
            _ if n == 1 => 0,
            Balance::RoundRobin => self.turn % n,
            Balance::Random => (random() % n as u64) as usize,
            Balance::LeastConn => (0..n)
                .map(|step| (self.turn + step) % n)
                .min_by_key(|&server| self.load[server])
                .unwrap_or(0),
            Balance::P2c => {
                let first = (random() % n as u64) as usize;
                let second = (first + 1 + (random() % (n as u64 - 1)) as usize) % n;
                match self.load[second] < self.load[first] {
                    true => second,
                    false => first,
                }
            }
        };
        self.turn = self.turn.wrapping_add(1);
        self.load[server] += 1;
        server
    }

    /// A connection to `server` is gone (failed or closed).
    pub fn left(&mut self, server: usize) {
        self.load[server] = self.load[server].saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(policy: Balance, picks: usize, leave_from: Option<usize>) -> Vec<u32> {
        let mut balancer = Balancer::new(policy, 3, 0);
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut random = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for i in 0..picks {
            let server = balancer.pick(&mut random);
            if leave_from == Some(server) && i % 2 == 0 {
                balancer.left(server);
            }
        }
        balancer.load
    }

    #[test]
    fn round_robin_and_least_conn_are_even_and_random_ones_nearly() {
        assert_eq!(spread(Balance::RoundRobin, 300, None), vec![100, 100, 100]);
        assert_eq!(spread(Balance::LeastConn, 300, None), vec![100, 100, 100]);
        for policy in [Balance::Random, Balance::P2c] {
            let load = spread(policy, 3000, None);
            assert!(
                load.iter().all(|&n| (800..1200).contains(&n)),
                "{policy:?} {load:?}"
            );
        }
        // p2c keeps it tighter than random.
        let p2c = spread(Balance::P2c, 3000, None);
        assert!(
            p2c.iter().max().unwrap() - p2c.iter().min().unwrap() <= 3,
            "{p2c:?}"
        );
    }

    #[test]
    fn least_conn_refills_a_server_whose_connections_left() {
        // Server 0 loses every other connection it gets: least-conn sends
        // it more; round-robin does not care.
        let least = spread(Balance::LeastConn, 300, Some(0));
        let max = *least.iter().max().unwrap();
        assert!(least.iter().all(|&n| max - n <= 1), "{least:?}");
        let turns = spread(Balance::RoundRobin, 300, Some(0));
        assert_eq!((turns[1], turns[2]), (100, 100));
        assert!(turns[0] < 100);
    }
}
