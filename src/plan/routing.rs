//! A seeded, deterministic simulation of spreading work over M servers by
//! a routing policy — random, round-robin, least-connections, power of two
//! choices — from K routers that do not share state (each knows only what it
//! sent itself, as independent load balancers do). Two kinds of work:
//!
//! - requests: Poisson arrivals at a utilization ρ of M single-server FIFO
//!   queues with exponential service; the figure is the queue an arriving
//!   request finds at its server (what its wait is made of);
//! - long-lived connections: N connections placed, then replaced one at a
//!   time (a random one leaves, a new one arrives); the figure is the
//!   busiest server's count over the mean (what capacity must cover).
//!
//! The same seed gives the same numbers on every machine.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    Random,
    RoundRobin,
    LeastConnections,
    /// Pick two servers at random, send to the one with fewer.
    PowerOfTwo,
}

impl Policy {
    pub const ALL: [Policy; 4] = [
        Policy::Random,
        Policy::RoundRobin,
        Policy::LeastConnections,
        Policy::PowerOfTwo,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Policy::Random => "random",
            Policy::RoundRobin => "round-robin",
            Policy::LeastConnections => "least-connections",
            Policy::PowerOfTwo => "power-of-two",
        }
    }
}

/// SplitMix64: small, fast, and the same sequence everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n ≥ 1).
    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One router: what it has sent to each server and not seen finish.
struct Router {
    known: Vec<u32>,
    next: usize,
}

impl Router {
    fn new(servers: usize, rng: &mut Rng) -> Router {
        Router {
            known: vec![0; servers],
            // Round-robin routers start where they happen to, not in step.
            next: rng.below(servers),
        }
    }

    fn choose(&mut self, policy: Policy, rng: &mut Rng) -> usize {
        let servers = self.known.len();
        match policy {
            Policy::Random => rng.below(servers),
            Policy::RoundRobin => {
                let chosen = self.next;
                self.next = (chosen + 1) % servers;
                chosen
            }
            Policy::LeastConnections => self.least(rng),
            Policy::PowerOfTwo if servers == 1 => 0,
            Policy::PowerOfTwo => {
                let a = rng.below(servers);
                let mut b = rng.below(servers - 1);
                if b >= a {
                    b += 1;
                }
                if self.known[b] < self.known[a] {
                    b
                } else {
                    a
                }
            }
        }
    }

    /// The server this router knows least work on, ties broken at random
    /// (always the first would herd every router onto one server).
    fn least(&self, rng: &mut Rng) -> usize {
        let fewest = *self.known.iter().min().expect("at least one server");
        let tied = self.known.iter().filter(|&&n| n == fewest).count();
        let pick = rng.below(tied);
        self.known
            .iter()
            .enumerate()
            .filter(|(_, &n)| n == fewest)
            .nth(pick)
            .map(|(i, _)| i)
            .expect("pick < tied")
    }
}

/// Percentiles of a sample of counts, exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Distribution {
    pub mean: f64,
    pub median: f64,
    pub p99: f64,
    pub max: f64,
}

fn distribution(mut sample: Vec<f64>) -> Distribution {
    if sample.is_empty() {
        return Distribution::default();
    }
    sample.sort_by(f64::total_cmp);
    let at = |q: f64| sample[((sample.len() - 1) as f64 * q).round() as usize];
    Distribution {
        mean: sample.iter().sum::<f64>() / sample.len() as f64,
        median: at(0.5),
        p99: at(0.99),
        max: at(1.0),
    }
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct RequestSetup {
    pub policy: Policy,
    pub servers: usize,
    pub routers: usize,
    /// Offered load ÷ total service capacity (above 1 the queues grow).
    pub utilization: f64,
    /// Requests simulated (the first tenth warm up and are not counted).
    pub requests: u64,
    pub seed: u64,
}

/// Requests: the queue each arriving request finds at its server.
pub fn simulate_requests(setup: &RequestSetup) -> Distribution {
    let servers = setup.servers.max(1);
    let mut rng = Rng::new(setup.seed);
    let mut routers: Vec<Router> = (0..setup.routers.max(1))
        .map(|_| Router::new(servers, &mut rng))
        .collect();
    // Each queue holds the router of each request, oldest first.
    let mut queues = vec![std::collections::VecDeque::<u32>::new(); servers];
    let arrival_rate = setup.utilization * servers as f64;
    // Uniformized: every server "completes" at rate 1, an idle one's
    // completion is a no-op; exact for exponential service.
    let total_rate = arrival_rate + servers as f64;
    let warmup = setup.requests / 10;
    let mut seen = Vec::with_capacity((setup.requests - warmup) as usize);
    let mut arrived = 0;
    while arrived < setup.requests {
        if rng.unit() * total_rate < arrival_rate {
            let r = rng.below(routers.len());
            let server = routers[r].choose(setup.policy, &mut rng);
            if arrived >= warmup {
                seen.push(queues[server].len() as f64);
            }
            queues[server].push_back(r as u32);
            routers[r].known[server] += 1;
            arrived += 1;
        } else {
            let server = rng.below(servers);
            if let Some(r) = queues[server].pop_front() {
                routers[r as usize].known[server] -= 1;
            }
        }
    }
    distribution(seen)
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct ConnectionSetup {
    pub policy: Policy,
    pub servers: usize,
    pub routers: usize,
    /// Connections open at once.
    pub conns: u64,
    /// Replacements after the first placement (one leaves, one arrives).
    pub replacements: u64,
    pub seed: u64,
}

/// Long-lived connections: the busiest server over the mean.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Imbalance {
    /// Right after all N were placed (everyone reconnecting at once).
    pub after_placement: f64,
    /// Sampled a hundred times while connections come and go.
    pub over_time: Distribution,
}

pub fn simulate_connections(setup: &ConnectionSetup) -> Imbalance {
    let servers = setup.servers.max(1);
    let mut rng = Rng::new(setup.seed);
    let mut fleet = Fleet {
        routers: (0..setup.routers.max(1))
            .map(|_| Router::new(servers, &mut rng))
            .collect(),
        counts: vec![0; servers],
        open: Vec::with_capacity(setup.conns as usize),
        policy: setup.policy,
    };
    for _ in 0..setup.conns {
        fleet.arrive(&mut rng);
    }
    let mean = setup.conns as f64 / servers as f64;
    let after_placement = fleet.busiest() / mean;
    let every = (setup.replacements / 100).max(1);
    let mut samples = Vec::new();
    for step in 0..setup.replacements {
        fleet.leave(&mut rng);
        fleet.arrive(&mut rng);
        if (step + 1) % every == 0 {
            samples.push(fleet.busiest() / mean);
        }
    }
    Imbalance {
        after_placement,
        over_time: distribution(samples),
    }
}

/// Open connections: where each is, and which router placed it.
struct Fleet {
    routers: Vec<Router>,
    counts: Vec<u64>,
    open: Vec<(u32, u32)>,
    policy: Policy,
}

impl Fleet {
    fn arrive(&mut self, rng: &mut Rng) {
        let r = rng.below(self.routers.len());
        let server = self.routers[r].choose(self.policy, rng);
        self.routers[r].known[server] += 1;
        self.counts[server] += 1;
        self.open.push((server as u32, r as u32));
    }

    /// A random open connection closes; the router that placed it sees it
    /// close (a proxy does), no other router does.
    fn leave(&mut self, rng: &mut Rng) {
        if self.open.is_empty() {
            return;
        }
        let (server, router) = self.open.swap_remove(rng.below(self.open.len()));
        self.counts[server as usize] -= 1;
        self.routers[router as usize].known[server as usize] -= 1;
    }

    fn busiest(&self) -> f64 {
        self.counts.iter().copied().max().unwrap_or(0) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests(policy: Policy, routers: usize, utilization: f64, seed: u64) -> Distribution {
        simulate_requests(&RequestSetup {
            policy,
            servers: 10,
            routers,
            utilization,
            requests: 200_000,
            seed,
        })
    }

    fn connections(policy: Policy, routers: usize) -> Imbalance {
        simulate_connections(&ConnectionSetup {
            policy,
            servers: 10,
            routers,
            conns: 2_000,
            replacements: 20_000,
            seed: 7,
        })
    }

    #[test]
    fn the_same_seed_gives_the_same_numbers_and_another_seed_does_not() {
        for policy in Policy::ALL {
            assert_eq!(requests(policy, 3, 0.8, 1), requests(policy, 3, 0.8, 1));
            assert_eq!(connections(policy, 3), connections(policy, 3));
        }
        assert_ne!(
            requests(Policy::Random, 1, 0.8, 1),
            requests(Policy::Random, 1, 0.8, 2)
        );
    }

    #[test]
    fn at_90_percent_random_queues_longest_then_round_robin_then_two_choices() {
        let random = requests(Policy::Random, 1, 0.9, 11);
        let round_robin = requests(Policy::RoundRobin, 1, 0.9, 11);
        let two = requests(Policy::PowerOfTwo, 1, 0.9, 11);
        let least = requests(Policy::LeastConnections, 1, 0.9, 11);
        assert!(random.max > round_robin.max, "{random:?} {round_robin:?}");
        assert!(round_robin.max > two.max, "{round_robin:?} {two:?}");
        assert!(random.p99 > round_robin.p99 && round_robin.p99 > two.p99);
        assert!(two.p99 >= least.p99, "{two:?} {least:?}");
        // Random routing is M/M/1 per server: mean queue found ρ/(1-ρ) = 9.
        assert!((random.mean - 9.0).abs() < 1.5, "{random:?}");
    }

    #[test]
    fn least_connections_from_many_uncoordinated_routers_degrades_toward_random() {
        let p99 = |routers| requests(Policy::LeastConnections, routers, 0.9, 5).p99;
        let by_routers: Vec<f64> = [1, 10, 100, 1000].into_iter().map(p99).collect();
        assert!(
            by_routers.windows(2).all(|w| w[0] <= w[1]),
            "{by_routers:?}"
        );
        let random = requests(Policy::Random, 1, 0.9, 5).p99;
        assert!(by_routers[3] > 4.0 * by_routers[0], "{by_routers:?}");
        assert!(by_routers[3] > 0.75 * random, "{by_routers:?} vs {random}");
    }

    #[test]
    fn above_full_utilization_queues_grow_without_bound() {
        let over = requests(Policy::LeastConnections, 1, 1.1, 3);
        let under = requests(Policy::LeastConnections, 1, 0.7, 3);
        assert!(over.mean > 50.0 * under.mean.max(0.1), "{over:?} {under:?}");
    }

    #[test]
    fn connection_counts_stay_balanced_only_with_feedback() {
        let random = connections(Policy::Random, 1);
        let two = connections(Policy::PowerOfTwo, 1);
        let least = connections(Policy::LeastConnections, 1);
        assert!(
            random.over_time.p99 > two.over_time.p99,
            "{random:?} {two:?}"
        );
        assert!(two.over_time.p99 >= least.over_time.p99);
        // One router placing everything by least-connections is exact.
        assert!(least.after_placement <= 1.0 + 1e-9, "{least:?}");
        assert!(random.after_placement > 1.05, "{random:?}");
    }
}
