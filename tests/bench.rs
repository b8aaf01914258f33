//! `fanout bench` end to end at small scale. The figures themselves are not
//! checked (speed belongs in benchmarks); their relations are: every sample
//! is there, spreads are ordered, every ratio is what its samples say, a
//! ratio on the wrong side of 1 carries its verdict, deliveries add up, the
//! kernel's TCP slab grew by two sockets per connection, and a server
//! started through a wrapper is measured and stopped as a whole tree.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use fanout::bench::churn::{Churn, ChurnSearch};
use fanout::bench::compare::{Better, Compared, Verdict};
use fanout::bench::phase::Side;
use fanout::bench::{BenchResult, ServerResult};
use fanout::load::spread::Spread;

/// Benches wait for the machine's sockets to settle and check the kernel's
/// slab growth: two at once would disturb each other, so they take turns.
static ONE_BENCH_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Run `fanout bench ARGS --out DIR` (one bench at a time); it must
/// succeed. Its stdout.
fn run_bench(args: &[&str], out: &Path) -> String {
    let _turn = ONE_BENCH_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let output = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .arg("bench")
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Run `fanout bench ARGS --out DIR` and parse the result file it wrote.
fn bench(args: &[&str], out: &Path) -> (BenchResult, String) {
    let stdout = run_bench(args, out);
    let written = stdout
        .lines()
        .find_map(|l| l.strip_prefix("written: "))
        .expect("a written: line");
    let text = std::fs::read_to_string(written).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_valid(&json);
    (serde_json::from_value(json).unwrap(), stdout)
}

/// Every bench output validates against results/schema.json.
fn assert_valid(json: &serde_json::Value) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/results/schema.json");
    let schema = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(json)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "not valid against results/schema.json: {errors:?}"
    );
    // The validator is not a yes-man: the same file without its servers fails.
    let mut broken = json.clone();
    broken.as_object_mut().unwrap().remove("servers");
    assert!(!validator.is_valid(&broken));
}

/// The tokio-tungstenite reference server cargo built beside fanout.
fn reference_server() -> PathBuf {
    let fanout = PathBuf::from(env!("CARGO_BIN_EXE_fanout"));
    fanout.parent().unwrap().join("examples/reference_server")
}

/// A small room-only bench (400 connections, one sample, one broadcast)
/// with `more` arguments, written to `out` as `name`.
fn small_room_bench(more: &[&str], name: &str, out: &Path) -> (BenchResult, String) {
    let mut args = vec![
        "--conns",
        "400",
        "--measure",
        "room",
        "--samples",
        "1",
        "--broadcasts",
        "1",
        "--name",
        name,
    ];
    args.extend_from_slice(more);
    bench(&args, out)
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fanout-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn assert_ordered(what: &str, s: &Spread, n: usize) {
    assert_eq!(s.n, n, "{what}: {s:?}");
    assert!(s.min <= s.median && s.median <= s.max, "{what}: {s:?}");
}

/// The relations every comparison must keep, whatever the machine did.
fn assert_consistent(c: &Compared, n: usize) {
    assert_eq!(c.measured_samples.len(), n, "{}", c.what);
    assert_eq!(c.floor_samples.len(), n, "{}", c.what);
    assert_ordered(&c.what, &c.measured, n);
    assert_ordered(&c.what, &c.floor, n);
    let r = &c.ratio;
    assert!((r.median - c.measured.median / c.floor.median).abs() < 1e-9);
    assert!(r.min <= r.median && r.median <= r.max, "{}: {r:?}", c.what);
    // The floor is at least as fast, or the result says it was not.
    let floor_beaten = match c.better {
        Better::Higher => c.measured.median > c.floor.median,
        Better::Lower => c.measured.median < c.floor.median,
    };
    let beaten_in_every_sample = match c.better {
        Better::Higher => c.measured.min > c.floor.max,
        Better::Lower => c.measured.max < c.floor.min,
    };
    let expected = match (floor_beaten, beaten_in_every_sample) {
        (false, _) => Verdict::AtOrBelowFloor,
        (true, false) => Verdict::WithinSpread,
        (true, true) => Verdict::Suspect,
    };
    assert_eq!(r.verdict, expected, "{c:?}");
    assert_eq!(r.suspect.is_some(), expected == Verdict::Suspect);
}

/// The backends this kernel runs: both, or epoll with the reason uring
/// is left out.
fn backends() -> &'static str {
    match fanout::backend::probe(fanout::backend::BackendKind::Uring) {
        Ok(()) => "epoll,uring",
        Err(missing) => {
            eprintln!("SKIPPED uring in the bench test: {missing}");
            "epoll"
        }
    }
}

/// Every backend this kernel can run.
fn every_backend() -> &'static str {
    match fanout::backend::probe(fanout::backend::BackendKind::Uring) {
        Ok(()) => "epoll,uring,tokio,tokio-tpc,tokio-uring",
        Err(missing) => {
            eprintln!("SKIPPED uring and tokio-uring in the soak test: {missing}");
            "epoll,tokio,tokio-tpc"
        }
    }
}

#[test]
fn small_bench_keeps_every_relation() {
    let out = scratch_dir("small");
    let backends = backends();
    let (r, text) = bench(
        &[
            "--conns",
            "2000",
            "--broadcasts",
            "3",
            "--echo-conns",
            "50",
            "--echo-duration",
            "300ms",
            "--churn-rate",
            "500",
            "--churn-duration",
            "300ms",
            "--churn-steps",
            "2",
            "--backends",
            backends,
            "--name",
            "small",
        ],
        &out,
    );
    std::fs::remove_dir_all(&out).unwrap();
    assert!(text.contains("fanout bench — 2,000 connections"), "{text}");
    assert!(r.command.contains("bench") && !r.machine.git_revision.is_empty());
    assert_eq!(r.samples, 3);
    assert_eq!(r.floor_servers.len(), 2, "a room and an echo floor");
    assert!(r.floor_servers.iter().all(|f| f.starts_with("fanout bare")));
    let names: Vec<&str> = r.servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.join(","), backends);
    let n = names.len();

    // Phases: room F + each server ×3, echo closed the same, echo open each
    // server ×3, two churn rates on each server and the best of them again
    // until it has 3 runs; servers rotate every sample.
    let churn_runs: usize = r.servers.iter().map(churn_runs).sum();
    assert_eq!(r.phases.len(), 3 * (1 + n) * 2 + 3 * n + churn_runs);
    let who: Vec<&str> = r.phases.iter().map(|p| p.who()).collect();
    let mut expected_room = Vec::new();
    for sample in 0..3 {
        expected_room.push("floor");
        expected_room.extend((0..n).map(|k| names[(k + sample) % n]));
    }
    assert_eq!(&who[..3 * (1 + n)], &expected_room[..]);
    let floors = r.phases.iter().filter(|p| p.side == Side::Floor).count();
    assert_eq!(floors, 6);
    assert!(r.phases.iter().all(|p| p.settle.settled), "{:?}", r.phases);
    let indices: Vec<usize> = r.phases.iter().map(|p| p.index).collect();
    assert_eq!(indices, (1..=r.phases.len()).collect::<Vec<_>>());

    let mut suspect_count = 0;
    for server in &r.servers {
        assert!(
            server
                .server
                .contains(&format!("fanout serve: {} backend", server.name)),
            "{}",
            server.server
        );
        suspect_count += check_server(server);
    }
    if n > 1 {
        assert!(text.contains("servers side by side"), "{text}");
    }
    assert_eq!(r.suspects.len(), suspect_count);
    let suspect_lines = text.lines().filter(|l| l.starts_with("SUSPECT: ")).count();
    assert_eq!(suspect_lines, suspect_count, "{text}");
    // time_utc is the start: the run's length fits between it and now.
    assert!(r.seconds > 0.0 && r.time_utc <= fanout::bench::utc_now());
}

/// Every relation one server's results must keep; returns its suspects.
fn check_server(r: &ServerResult) -> usize {
    let ramp = r.ramp.as_ref().expect("ramp");
    assert_consistent(ramp, 3);
    let b = r.broadcast.as_ref().expect("broadcast");
    assert_consistent(&b.last_delivery_ms, 9);
    assert_eq!(b.members, 2000);
    // Every broadcast reached every member exactly once, and fanout's own
    // count agrees with the clients'.
    assert_eq!(b.tally.delivered, 3 * 3 * 2000);
    assert_eq!(b.tally.lost() + b.tally.in_flight + b.tally.duplicated, 0);
    assert_eq!(b.server_delivered, Some(b.tally.delivered));
    assert!(b.cross_check.as_deref().unwrap().starts_with("ok"));
    assert_ordered("first delivery", &b.first_delivery_ms, 9);
    assert!(b.first_delivery_ms.median <= b.last_delivery_ms.measured.median);
    let cpu = b.cpu_seconds_per_million.expect("broadcast CPU");
    let reach = r.reach.as_ref().expect("reach");
    assert!(
        reach.complete() && reach.connect_failures.is_empty(),
        "{reach:?}"
    );
    assert_ordered("CPU per million deliveries", &cpu, 3);

    assert_eq!(r.echo.len(), 2);
    let (closed, open) = (&r.echo[0], &r.echo[1]);
    assert_eq!((closed.conns, open.conns), (50, 50));
    assert_consistent(
        closed.vs_floor.as_ref().expect("closed loop has a floor"),
        3,
    );
    assert!(open.vs_floor.is_none() && open.open_loop_rate.is_some());
    assert_ordered("open-loop p99", &open.p99_us, 3);
    assert!(open.send_lag_p99_us.is_some());

    // Memory: a slope over the second half of each measured ramp.
    let m = r.memory.as_ref().expect("memory");
    assert_eq!(m.slopes.len(), 3);
    assert!(m.slopes.iter().all(|s| s.conns == 1000 && s.open == 2000));
    assert_eq!(m.slot_bytes, Some(24));
    let slots = m.slots.as_ref().expect("slab steps");
    assert!(
        slots.per_conn_at_n.min >= 1.0,
        "slots hold every connection"
    );
    if std::fs::read_to_string("/proc/slabinfo").is_ok() {
        assert!(m.kernel_check.starts_with("ok"), "{}", m.kernel_check);
        let tcp = m.tcp_objects_per_conn.unwrap();
        assert!((tcp.median - 2.0).abs() <= 0.1, "{tcp:?}");
    }

    let Some(Churn::Search(churn)) = r.churn.as_ref() else {
        panic!("a churn search: {:?}", r.churn)
    };
    check_churn(churn);
    assert_eq!(churn.steps.len(), 2, "{churn:?}");
    assert!(churn.stopped.contains("after 2 steps"), "{}", churn.stopped);
    // From 500/s: 1,000/s next if 500 was sustained, else 250/s.
    let second = if churn.steps[0].sustained {
        1000.0
    } else {
        250.0
    };
    assert_eq!(churn.steps[1].asked_per_s, second);
    // Suspects are exactly the suspect verdicts.
    let verdicts = [ramp, &b.last_delivery_ms, closed.vs_floor.as_ref().unwrap()];
    verdicts
        .iter()
        .filter(|c| c.ratio.verdict == Verdict::Suspect)
        .count()
}

/// Phases of a server's churn search.
fn churn_runs(server: &ServerResult) -> usize {
    match server.churn.as_ref() {
        Some(Churn::Search(search)) => search.steps.iter().map(|s| s.runs.len()).sum(),
        _ => 0,
    }
}

/// Relations every churn search keeps.
fn check_churn(churn: &ChurnSearch) {
    for step in &churn.steps {
        for run in &step.runs {
            let c = &run.churn;
            // Open loop: never more cycles than were due (one per shard may
            // be due at the very start), and every arrival accounted for.
            assert_eq!(c.target_rate_per_s, step.asked_per_s);
            assert!(c.completed as f64 <= c.target_rate_per_s * c.seconds + 64.0);
            assert_eq!(
                c.arrivals,
                c.completed + c.dropped + c.failed + c.in_flight_at_end
            );
            assert_eq!(churn.bounds.missed(c), run.missed);
            assert!(run.client_cpu_share > 0.0 && run.client_cpu_share <= 1.0);
        }
        let all_met = step.runs.iter().all(|r| r.missed.is_empty());
        assert_eq!(step.sustained, all_met);
    }
    let best = churn
        .steps
        .iter()
        .filter(|s| s.sustained)
        .map(|s| s.asked_per_s);
    assert_eq!(churn.sustained_per_s, best.reduce(f64::max));
    assert_eq!(churn.heroku_dynos, churn.sustained_per_s.map(|r| r / 160.0));
}

#[test]
fn a_churn_bound_nothing_meets_halves_the_rate_down_to_the_floor_and_says_so() {
    let out = scratch_dir("churn-none");
    let (r, text) = bench(
        &[
            "--measure",
            "churn",
            "--churn-rate",
            "400",
            "--churn-duration",
            "200ms",
            // No setup is that fast: every rate misses.
            "--churn-max-p99",
            "0ms",
            "--name",
            "churn-none",
        ],
        &out,
    );
    std::fs::remove_dir_all(&out).unwrap();
    let Some(Churn::Search(churn)) = r.servers[0].churn.as_ref() else {
        panic!("a churn search: {:?}", r.servers[0].churn)
    };
    check_churn(churn);
    let asked: Vec<f64> = churn.steps.iter().map(|s| s.asked_per_s).collect();
    assert_eq!(asked, [400.0, 200.0, 100.0, 50.0]);
    assert!(churn
        .steps
        .iter()
        .all(|s| s.runs.len() == 1 && s.runs[0].missed.iter().any(|m| m.starts_with("setup p99"))));
    assert_eq!(churn.sustained_per_s, None);
    assert_eq!(churn.first_missed_per_s, Some(50.0));
    assert_eq!(churn.stopped, "no rate sustained, down to 50/s");
    assert!(
        text.contains("churn     no rate sustained; missed from 50/s"),
        "{text}"
    );
    // 4 phases of the 6 allowed.
    assert_eq!(r.phases.len(), 4);
}

#[test]
fn a_server_behind_a_wrapper_joins_the_table_and_is_measured_and_stopped_as_a_tree() {
    let reference = reference_server();
    let dir = scratch_dir("wrapper");
    let pid_file = dir.join("server.pid");
    // Not `exec`: the shell stays, the server is its child.
    let script = dir.join("wrapper.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\"{}\" \"$@\" &\necho $! >> \"{}\"\nwait\n",
            reference.display(),
            pid_file.display()
        ),
    )
    .unwrap();
    let command = format!("sh {}", script.display());
    // fanout's epoll backend and the wrapped server, in one run and table.
    let (r, text) = small_room_bench(
        &[
            "--backends",
            "epoll",
            "--server-cmd",
            &format!("ref={command}"),
        ],
        "wrapper",
        &dir,
    );
    let pids = std::fs::read_to_string(&pid_file).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let names: Vec<&str> = r.servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["epoll", "ref"]);
    assert_eq!(r.servers[1].server, command);
    assert!(
        text.contains("servers side by side") && text.contains("== ref: sh "),
        "{text}"
    );
    let m = r.servers[1].memory.as_ref().unwrap();
    // tokio-tungstenite's buffers make each connection tens of KB; a bench
    // that measured only the shell would see next to nothing.
    assert!(m.rss_per_conn.median > 1_000.0, "{:?}", m.rss_per_conn);
    assert!(m.heap_per_conn.is_none() && m.slots.is_none());
    let fanout = r.servers[0].memory.as_ref().unwrap();
    assert!(fanout.heap_per_conn.is_some() && fanout.slot_bytes == Some(24));
    for pid in pids.split_whitespace() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(") ")
            .map(|(_, rest)| &rest[..1])
            .unwrap_or("gone");
        assert!(
            state == "gone" || state == "Z",
            "the wrapped server {pid} outlived the bench: {stat}"
        );
    }
}

/// A server that cannot hold N here (the reference server with 256 fds) is
/// measured for what it held and shown with where and why it stopped.
#[test]
fn a_server_that_cannot_hold_n_is_shown_where_it_stopped() {
    let reference = reference_server();
    let dir = scratch_dir("short");
    let script = dir.join("limited.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nulimit -n 256\nexec \"{}\" \"$@\"\n",
            reference.display()
        ),
    )
    .unwrap();
    let server_cmd = format!("small=sh {}", script.display());
    let (r, text) = small_room_bench(&["--server-cmd", &server_cmd], "short", &dir);
    std::fs::remove_dir_all(&dir).unwrap();
    let reach = r.servers[0].reach.as_ref().expect("reach");
    assert!(!reach.complete() && reach.held.median < 256.0, "{reach:?}");
    assert!(
        reach.connect_failures.values().sum::<u64>() > 0,
        "{reach:?}"
    );
    assert!(text.contains("STOPPED SHORT: held"), "{text}");
    // Its broadcast went to the members it held, and all of them got it.
    let b = r.servers[0].broadcast.as_ref().unwrap();
    assert_eq!(b.members as f64, reach.held.median);
    assert_eq!(b.tally.delivered, b.members);
}

#[test]
fn bad_options_are_refused_before_anything_starts() {
    for (args, says, status) in [
        (&["--conns", "0"][..], "--conns", 2),
        (&["--samples", "0"], "--samples", 2),
        (&["--conns", "100000000"], "cannot be reached here", 1),
        (
            &["--backends", "epoll,epoll"],
            "two servers are named epoll",
            2,
        ),
        (
            &["--server-cmd", "a=x", "--server-cmd", "a=y"],
            "two servers are named a",
            2,
        ),
        (&["--server-cmd", "ref="], "the command is empty", 2),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_fanout"))
            .arg("bench")
            .args(args)
            .arg("--no-write")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(status), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        // Refused before the first phase.
        assert!(!stderr.contains("[1/"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_measured_run_gives_the_same_plan_every_time_and_a_report_with_every_series() {
    let out = scratch_dir("plan");
    let (result, stdout) = small_room_bench(&[], "plan-source", &out);
    let written = stdout
        .lines()
        .find_map(|l| l.strip_prefix("written: "))
        .unwrap()
        .to_string();
    let plan = |json: &Path| {
        let output = Command::new(env!("CARGO_BIN_EXE_fanout"))
            .args(["plan", "--users", "3000000", "--msgs-per-user", "0.5"])
            .args(["--routers", "4", "--from", &written, "--json"])
            .arg(json)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(output.status.success(), "{text}");
        (text, std::fs::read_to_string(json).unwrap())
    };
    let (text, first) = plan(&out.join("plan1.json"));
    let (_, second) = plan(&out.join("plan2.json"));
    // The same but for the command line, which names each output file.
    let without_command = |json: &str| {
        let mut value: serde_json::Value = serde_json::from_str(json).unwrap();
        let command = value.as_object_mut().unwrap().remove("command").unwrap();
        assert!(command.as_str().unwrap().contains("plan --users 3000000"));
        value
    };
    let p = without_command(&first);
    assert_eq!(
        p,
        without_command(&second),
        "the same seed must give the same plan"
    );

    // The memory line is the measured figures' arithmetic.
    let server = &result.servers[0];
    let memory = server.memory.as_ref().unwrap();
    let per_conn = memory.rss_per_conn.median + memory.kernel_per_socket.median;
    let imbalance = p["demand"]["imbalance"].as_f64().unwrap();
    let expected = result.machine.memory_bytes as f64 * 0.8 / per_conn / imbalance;
    let held = p["fleet"]["constraints"][0]["per_machine"]
        .as_f64()
        .unwrap();
    assert!((held - expected).abs() < 1.0, "{held} vs {expected}");
    assert!(imbalance >= 1.0);
    // The fleet is the largest constraint, named.
    let constraints = p["fleet"]["constraints"].as_array().unwrap();
    assert_eq!(constraints.len(), 3, "memory, accept, deliveries");
    let most = constraints
        .iter()
        .map(|c| c["machines"].as_u64().unwrap())
        .max()
        .unwrap();
    assert_eq!(p["fleet"]["machines"].as_u64(), Some(most));
    assert!(
        text.contains(&format!("machines: {most} — bound by")),
        "{text}"
    );
    // Both router counts, every policy; requests at 10–110 %.
    assert_eq!(p["connections"].as_array().unwrap().len(), 2 * 4);
    assert_eq!(p["requests"].as_array().unwrap().len(), 2 * 11 * 4);
    assert!(
        text.contains("power-of-two") && text.contains("N+1"),
        "{text}"
    );

    // The run's folder, with the plans and a ceiling beside it, as a report.
    let folder = Path::new(&written).parent().unwrap();
    for name in ["plan1.json", "plan2.json"] {
        std::fs::rename(out.join(name), folder.join(name)).unwrap();
    }
    let ceiling = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/results/2026-11-29-vm/ceiling-tokio.json"
    );
    std::fs::copy(ceiling, folder.join("ceiling-tokio.json")).unwrap();
    std::fs::write(folder.join("notes.json"), "[1, 2]").unwrap();
    let report = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .arg("report")
        .arg(folder)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&report.stdout).to_string();
    assert!(
        report.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&report.stderr)
    );
    assert!(
        said.contains("from 1 bench, 1 ceiling and 2 plan files"),
        "{said}"
    );
    assert!(said.contains("not read (earlier layouts): notes"), "{said}");
    let dir = folder.join("report");
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let server = &result.servers[0].name;
    assert!(md.contains(&format!("| | {server} |")), "{md}");
    assert!(md.contains("| held | 400 |"), "{md}");
    // Every plot the report links is there, parses as SVG, names its
    // file, and shows every series it should.
    let linked: Vec<&str> = md
        .lines()
        .filter_map(|l| l.strip_prefix("![")?.split_once("](")?.1.strip_suffix(')'))
        .collect();
    assert!(linked.len() >= 7, "{linked:?}");
    for name in &linked {
        let svg = std::fs::read_to_string(dir.join(name)).unwrap();
        usvg::Tree::from_str(&svg, &usvg::Options::default())
            .unwrap_or_else(|e| panic!("{name} does not parse: {e}"));
        assert!(
            svg.contains(".json") || svg.contains("1 bench files"),
            "{name} names no source"
        );
        let series: &[&str] = match *name {
            n if n.ends_with("-routing.svg") => &[
                "random, 1 router(s)",
                "round-robin, 4 router(s)",
                "least-connections, 1 router(s)",
                "power-of-two, 4 router(s)",
            ],
            "ceiling-ramps.svg" => &["ceiling-tokio"],
            _ => &[server.as_str()],
        };
        let texts: Vec<&str> = svg
            .split("</text>")
            .filter_map(|chunk| Some(chunk.rsplit_once('>')?.1.trim()))
            .collect();
        for s in series {
            assert!(texts.contains(s), "{name} lacks the series {s}: {texts:?}");
        }
    }

    // The folder's parent as a results root: its README.md is generated,
    // listing every file with its command, linking the report, and
    // carrying the folder's notes under its heading.
    std::fs::write(folder.join("notes.md"), "## What it means\n\nSmall.\n").unwrap();
    let index = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .arg("report")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        index.status.success(),
        "{}",
        String::from_utf8_lossy(&index.stderr)
    );
    let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
    let folder_name = folder.file_name().unwrap().to_string_lossy();
    assert!(readme.contains(&format!("## {folder_name}")), "{readme}");
    assert!(
        readme.contains(&format!("({folder_name}/report/report.md)")),
        "{readme}"
    );
    assert!(readme.contains("### What it means\n\nSmall."), "{readme}");
    assert!(readme.contains("| plan1.json | plan | `"), "{readme}");
    assert!(
        readme.contains("| plan-source.json | bench, 400 connections"),
        "{readme}"
    );
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn a_plan_from_something_else_is_a_clear_error() {
    let fanout = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_fanout"))
            .arg("plan")
            .args(args)
            .output()
            .unwrap()
    };
    let not_a_result =
        std::env::temp_dir().join(format!("fanout-plan-{}.json", std::process::id()));
    std::fs::write(&not_a_result, "{\"url\": \"ws://x\"}").unwrap();
    let path = not_a_result.to_str().unwrap();
    let output = fanout(&["--users", "10", "--from", path]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is not a fanout bench result"), "{stderr}");
    let output = fanout(&["--users", "0", "--from", path]);
    assert_eq!(output.status.code(), Some(2));
    let output = fanout(&["--users", "10", "--headroom", "1.5", "--from", path]);
    assert_eq!(output.status.code(), Some(2));
    std::fs::remove_file(&not_a_result).unwrap();
}

#[test]
fn a_sweep_runs_each_size_and_fits_the_growth() {
    let out = scratch_dir("sweep");
    let stdout = run_bench(
        &[
            "--sweep",
            "300,600",
            "--measure",
            "room",
            "--samples",
            "1",
            "--broadcasts",
            "1",
            "--name",
            "sw",
        ],
        &out,
    );
    let written: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("written: "))
        .collect();
    assert_eq!(written.len(), 3, "{stdout}");
    assert!(written[0].ends_with("sw-300.json") && written[1].ends_with("sw-600.json"));
    for run in &written[..2] {
        let json = serde_json::from_str(&std::fs::read_to_string(run).unwrap()).unwrap();
        assert_valid(&json);
    }
    let sweep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(written[2]).unwrap()).unwrap();
    std::fs::remove_dir_all(&out).unwrap();
    let server = &sweep["servers"][0];
    let sizes: Vec<u64> = server["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["conns"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [300, 600]);
    // Two sizes held in full: a line through both, exactly.
    for fitted in ["memory", "broadcast_last"] {
        let fit = &server[fitted];
        assert_eq!(fit["points"], 2, "{fitted}: {fit}");
        assert!(
            (fit["r2"].as_f64().unwrap() - 1.0).abs() < 1e-9,
            "{fitted}: {fit}"
        );
    }
    assert!(stdout.contains("sweep: "), "{stdout}");
    assert!(stdout.contains("B × N"), "{stdout}");
}

/// `fanout bench --slo TARGET` on a small ladder; the result file.
fn slo_run(target: &str, name: &str) -> (serde_json::Value, String) {
    let out = scratch_dir(name);
    let stdout = run_bench(
        &[
            "--slo",
            target,
            "--slo-start",
            "200",
            "--conns",
            "800",
            "--samples",
            "1",
            "--name",
            name,
        ],
        &out,
    );
    let written = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("written: "))
        .expect("written lines");
    assert!(written.ends_with(&format!("{name}-slo.json")), "{stdout}");
    let json = serde_json::from_str(&std::fs::read_to_string(written).unwrap()).unwrap();
    std::fs::remove_dir_all(&out).unwrap();
    (json, stdout)
}

#[test]
fn an_slo_every_step_meets_climbs_the_whole_ladder() {
    let (r, text) = slo_run("broadcast p95<=60s", "slo-easy");
    let sizes: Vec<u64> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["conns"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [200, 400, 800]);
    let verdict = &r["verdicts"][0];
    assert_eq!(verdict["largest_met"], 800);
    assert!(verdict["first_missed"].is_null());
    // Every step had at least 20 broadcasts for its p95.
    assert!(r["broadcasts_per_step"].as_u64().unwrap() >= 20);
    assert!(text.contains("never missed"), "{text}");
}

#[test]
fn an_slo_no_step_meets_stops_at_the_first_and_says_so() {
    let (r, text) = slo_run("broadcast p95<=0ms", "slo-impossible");
    assert_eq!(
        r["steps"].as_array().unwrap().len(),
        1,
        "dropped after missing"
    );
    let verdict = &r["verdicts"][0];
    assert!(verdict["largest_met"].is_null());
    assert_eq!(verdict["first_missed"][0], 200);
    assert!(verdict["first_missed"][1].as_f64().unwrap() > 0.0);
    assert!(text.contains("met it at no N tried"), "{text}");
}

/// `--storm` adds the reconnect storm: both policies, every run on its own
/// server, each run's attempts accounted for and its curve ending with
/// every connection back.
#[test]
fn the_storm_bench_runs_both_policies_and_accounts_for_every_attempt() {
    let out = scratch_dir("storm");
    let (r, text) = bench(
        &[
            "--measure",
            "room",
            "--storm",
            "--conns",
            "300",
            "--samples",
            "2",
            "--broadcasts",
            "1",
            "--storm-backoff",
            "10ms,200ms",
            "--name",
            "storm",
        ],
        &out,
    );
    std::fs::remove_dir_all(&out).unwrap();
    let storm = r.servers[0].storm.as_ref().expect("a storm");
    assert_eq!(storm.conns, 300);
    assert_eq!(storm.policies.len(), 2);
    assert_eq!(storm.policies[0].reconnect, "at once");
    assert!(storm.policies[1].reconnect.contains("base 10ms, max 200ms"));
    for policy in &storm.policies {
        assert_eq!(policy.runs.len(), 2);
        assert_eq!(policy.runs_not_back, 0);
        assert_eq!(policy.all_back_s.unwrap().n, 2);
        for run in &policy.runs {
            let s = &run.storm;
            assert_eq!((s.lost, s.back), (300, 300));
            assert_eq!(s.attempts, s.back + s.failed_attempts);
            assert_eq!(s.curve.last().unwrap()[1], 300.0);
            assert!(
                run.server_cpu_seconds >= 0.0,
                "CPU ticks of 10 ms: may be 0 at this size"
            );
        }
    }
    assert!(
        text.contains("storm     300 connections reset, reconnecting at once: all back in"),
        "{text}"
    );
    // 2 room samples (server + floor) and 2 × 2 storm runs.
    assert_eq!(
        r.phases
            .iter()
            .filter(|p| p.job.starts_with("storm"))
            .count(),
        4
    );
}

/// The 30-second soak on every backend: cycles of a broadcast room, echo
/// and churn together and then a storm; after each, every connection is
/// closed, every fd table back at its size, the machine's sockets back,
/// memory not growing, and no delivery lost or duplicated.
#[test]
fn a_30_second_soak_on_every_backend_leaks_nothing_and_loses_nothing() {
    let out = scratch_dir("soak");
    let (r, text) = bench(
        &[
            "--soak",
            "30s",
            "--soak-cycle",
            "4s",
            "--conns",
            "400",
            "--backends",
            every_backend(),
            "--name",
            "soak",
        ],
        &out,
    );
    std::fs::remove_dir_all(&out).unwrap();
    assert_eq!(r.servers.len(), every_backend().split(',').count());
    for s in &r.servers {
        let soak = s.soak.as_ref().expect("a soak");
        assert!(
            soak.cycles.len() >= 2,
            "{}: {} cycles",
            s.name,
            soak.cycles.len()
        );
        assert!(soak.leaks.is_empty(), "{}: {:?}", s.name, soak.leaks);
        assert_eq!((soak.lost, soak.duplicated), (0, 0), "{}", s.name);
        assert!(!soak.before.fd_tables.is_empty());
        for c in &soak.cycles {
            assert!(
                c.published > 0 && c.delivered >= c.published * 200,
                "{}: {c:?}",
                s.name
            );
            assert!(c.echoed > 0 && c.churn_completed > 0, "{}: {c:?}", s.name);
            assert!(c.storm_all_back_s.is_some(), "{}: {c:?}", s.name);
            assert_eq!(c.after.open, 0);
            assert_eq!(c.after.fd_tables, soak.before.fd_tables);
        }
        assert!(
            soak.rss_curve.len() >= 20,
            "{}: {} RSS samples",
            s.name,
            soak.rss_curve.len()
        );
        assert!(
            s.broadcast.is_none() && s.echo.is_empty(),
            "the soak runs alone"
        );
    }
    assert!(
        text.contains("nothing leaked; 0 deliveries lost, 0 duplicated"),
        "{text}"
    );
}

/// `--measure overload` with a room budget the broadcast must pass: the
/// server's memory is read idle, with its members, at the peak and after;
/// the members furthest behind are shed with 1013, never with 1008.
#[test]
fn the_overload_bench_reads_the_peak_and_sheds_past_the_room_budget() {
    let out = scratch_dir("overload");
    let (r, text) = bench(
        &[
            "--measure",
            "overload",
            "--conns",
            "500",
            "--samples",
            "2",
            "--overload-rate",
            "1000",
            "--overload-size",
            "64KiB",
            "--overload-duration",
            "2s",
            "--serve-arg=--max-backlog-total=16KiB",
            // One delivery pass can carry more than the default 4 MiB per
            // member (64 KiB frames, as many as arrived that turn), which
            // is 1008's business; out of its way, only the budget sheds.
            "--serve-arg=--max-backlog=1GiB",
            "--name",
            "overload",
        ],
        &out,
    );
    std::fs::remove_dir_all(&out).unwrap();
    let o = r.servers[0].overload.as_ref().expect("an overload section");
    assert_eq!((o.members, o.runs.len()), (500, 2));
    for run in &o.runs {
        assert!(run.idle_rss_bytes > 0 && run.with_members_rss_bytes > 0);
        assert!(run.peak_rss_bytes >= run.with_members_rss_bytes);
        assert!(
            run.overload_closes > 0,
            "32 GB/s asked against a 16 KiB budget: {run:?}"
        );
        assert_eq!(run.backlog_closes, 0);
    }
    assert!(
        r.servers[0].server.contains("fanout serve"),
        "{}",
        r.servers[0].server
    );
    assert!(
        text.contains("overload  500 members, 1000/s × 65536 B for 2 s: peak"),
        "{text}"
    );
}

/// `--measure backplane`: the same broadcast to one instance, then over
/// three sharing the room through a redis-server the bench starts; every
/// member has every message once either way, and the backplane's counts
/// add up (the publisher's instance hands each message to Redis once, the
/// two others receive it).
#[test]
fn the_backplane_bench_compares_one_instance_with_three_through_redis() {
    if std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED the_backplane_bench: redis-server is not installed (Debian: apt-get install redis-server)");
        return;
    }
    let out = scratch_dir("backplane");
    let (r, text) = bench(
        &[
            "--measure",
            "backplane",
            "--backends",
            "epoll",
            "--conns",
            "300",
            "--samples",
            "2",
            "--broadcasts",
            "5",
            "--name",
            "backplane",
        ],
        &out,
    );
    std::fs::remove_dir_all(&out).unwrap();
    let b = r.servers[0]
        .backplane
        .as_ref()
        .expect("a backplane section");
    assert_eq!((b.members, b.messages, b.setups.len()), (300, 5, 2));
    let (alone, across) = (&b.setups[0], &b.setups[1]);
    assert_eq!((alone.instances, alone.through_redis), (1, false));
    assert_eq!((across.instances, across.through_redis), (3, true));
    for run in alone.runs.iter().chain(&across.runs) {
        assert_eq!((run.missing, run.duplicated), (0, 0), "{run:?}");
        assert_eq!(run.members_per_instance.iter().sum::<u64>(), 300);
    }
    for run in &alone.runs {
        assert_eq!(run.backplane_published + run.backplane_received, 0);
    }
    for run in &across.runs {
        assert_eq!(run.members_per_instance, [100, 100, 100]);
        assert_eq!((run.backplane_published, run.backplane_received), (5, 10));
        assert_eq!(run.backplane_dropped + run.backplane_missed, 0);
    }
    assert!(
        text.contains("backplane 300 members, 3 instances through redis"),
        "{text}"
    );
}

/// `--tls`: each backend plain and over TLS in one run, the TLS server's
/// line in its result, every member reached over wss://, and the table of
/// ratios TLS ÷ plain.
#[test]
fn the_tls_bench_measures_each_backend_plain_and_over_tls_side_by_side() {
    let out = scratch_dir("tls");
    let (result, stdout) = small_room_bench(&["--tls", "--backends", "epoll"], "tls", &out);
    let names: Vec<&str> = result.servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["epoll", "epoll+tls"]);
    let secure = &result.servers[1];
    assert!(
        secure.server.contains("tls 1.3") && secure.server.contains("compact"),
        "{}",
        secure.server
    );
    let broadcast = secure.broadcast.as_ref().expect("the room over wss://");
    assert_eq!(
        (broadcast.tally.delivered, broadcast.tally.missing),
        (400, 0)
    );
    assert!(stdout.contains("TLS ÷ plain"), "{stdout}");
    let ratio_line = stdout
        .lines()
        .find(|l| l.starts_with("broadcast last delivery, ms") && l.trim_end().ends_with('×'))
        .expect("a ratio for the last delivery");
    assert!(ratio_line.contains('×'), "{ratio_line}");
    std::fs::remove_dir_all(out).unwrap();
}

/// `--tls --measure handshakes,storm,churn`: what a connection costs the
/// server to open, plain and over TLS with every handshake full or resumed,
/// for each certificate and key exchange asked; the storm and the churn
/// with and without resumption. Each run's server made the certificate asked for, counted
/// the handshakes its clients did, and resumed only when they could.
#[test]
fn the_tls_bench_measures_handshakes_full_and_resumed_and_the_storm_both_ways() {
    let out = scratch_dir("tls-handshakes");
    let (r, text) = bench(
        &[
            "--tls",
            "--backends",
            "epoll",
            "--measure",
            "handshakes,storm,churn",
            "--churn-steps",
            "1",
            "--churn-rate",
            "200",
            "--conns",
            "200",
            "--samples",
            "1",
            "--handshake-rate",
            "200",
            "--churn-duration",
            "1s",
            "--tls-variants",
            "ecdsa-p256/x25519,rsa2048/p256",
            "--storm-backoff",
            "10ms,200ms",
            "--name",
            "tls-handshakes",
        ],
        &out,
    );
    std::fs::remove_dir_all(&out).unwrap();
    let plain = r.servers[0].handshakes.as_ref().expect("plain handshakes");
    let kinds: Vec<&str> = plain.kinds.iter().map(|k| k.kind.as_str()).collect();
    assert_eq!(kinds, ["plain"]);
    assert_eq!(plain.kinds[0].runs[0].server_handshakes, None);
    let secure = r.servers[1].handshakes.as_ref().expect("TLS handshakes");
    let kinds: Vec<&str> = secure.kinds.iter().map(|k| k.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "ecdsa-p256/x25519 full",
            "ecdsa-p256/x25519 resumed",
            "rsa2048/p256 full",
            "rsa2048/p256 resumed"
        ]
    );
    for kind in &secure.kinds {
        let run = &kind.runs[0];
        let (key, group) = kind
            .kind
            .split_once(' ')
            .unwrap()
            .0
            .split_once('/')
            .unwrap();
        let tls = run.server_tls.as_deref().unwrap();
        assert!(
            tls.contains(&format!("self-signed {key} "))
                && tls.contains(&format!("key exchange {group};")),
            "{}: {tls}",
            kind.kind
        );
        let churn = &run.churn;
        assert!(churn.completed > 0 && churn.failed == 0, "{churn:?}");
        let handshakes = run.server_handshakes.unwrap();
        let resumed = run.server_resumed.unwrap();
        assert!(handshakes >= churn.completed, "{}: {run:?}", kind.kind);
        match kind.kind.ends_with(" full") {
            true => assert_eq!(resumed, 0, "{}", kind.kind),
            // The first connections, before a ticket came back, are full.
            false => assert!(resumed * 2 > handshakes, "{}: {run:?}", kind.kind),
        }
        // A figure exactly when some run's server CPU reached a clock tick.
        let measurable = kind.runs.iter().any(|r| r.server_cpu_seconds > 0.0);
        match kind.cycles_per_server_cpu_s {
            Some(per_cpu) => assert!(measurable && per_cpu.median > 0.0, "{}", kind.kind),
            None => assert!(!measurable, "{}", kind.kind),
        }
    }
    assert_eq!(secure.resumed_over_full().len(), 2);
    assert!(
        text.contains("rsa2048/p256: resumed ÷ full, per server CPU-second:"),
        "{text}"
    );
    let plain_storm = r.servers[0].storm.as_ref().expect("a plain storm");
    assert_eq!(plain_storm.policies.len(), 2);
    assert!(plain_storm.policies.iter().all(|p| p.resumption.is_none()));
    let storm = r.servers[1].storm.as_ref().expect("a storm over TLS");
    let resumptions: Vec<Option<bool>> = storm.policies.iter().map(|p| p.resumption).collect();
    assert_eq!(
        resumptions,
        [Some(true), Some(false), Some(true), Some(false)]
    );
    for policy in &storm.policies {
        let run = &policy.runs[0];
        assert_eq!((run.storm.lost, run.storm.back), (200, 200), "{policy:?}");
    }
    assert!(
        text.contains("reconnecting at once, every TLS handshake full: all back in"),
        "{text}"
    );
    // Churn over TLS twice: resuming, and with every handshake full.
    assert!(r.servers[0].churn.is_some() && r.servers[0].churn_full_tls.is_none());
    assert!(r.servers[1].churn.is_some() && r.servers[1].churn_full_tls.is_some());
    assert!(
        text.contains("churn over TLS, every handshake full (--tls-resume off):"),
        "{text}"
    );
    // Its setup p99 ratio compares different rates, and the table says so.
    assert!(text.contains("compares different loads"), "{text}");
    // 1 + 4 handshake phases, 2 + 4 storm phases, 1 + 1 + 1 churn phases.
    let jobs = |prefix: &str| {
        r.phases
            .iter()
            .filter(|p| p.job.starts_with(prefix))
            .count()
    };
    assert_eq!((jobs("handshakes"), jobs("storm")), (5, 6));
    assert_eq!((jobs("churn 200"), jobs("churn, full TLS, 200")), (2, 1));
}

/// Ctrl-C (SIGINT) in the middle of a phase: the bench exits 130 and the
/// server it had started (here the floor, `fanout bare`, in a process
/// group of its own, which Ctrl-C does not reach) does not outlive it.
#[test]
fn ctrl_c_during_a_phase_leaves_no_server_running() {
    use std::io::{BufRead, BufReader};
    let mut bench = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args([
            "bench",
            "--backends",
            "epoll",
            "--conns",
            "2000",
            "--samples",
            "1",
        ])
        .args(["--measure", "room", "--broadcasts", "100", "--no-write"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(bench.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("(room, floor sample 1)") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the bench ended early"
        );
    }
    let bench_pid = bench.id();
    let is_our_server = |pid: &u32| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1));
        String::from_utf8_lossy(&cmdline).contains("bare")
            && parent == Some(bench_pid.to_string().as_str())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let server = loop {
        if let Some(pid) = fanout::process::pids().find(is_our_server) {
            break pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no server process found"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // SAFETY: SIGINT to the bench this test started.
    unsafe { libc::kill(bench_pid as i32, libc::SIGINT) };
    let status = bench.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
    assert!(
        rest.contains("killed the 1 server(s) it had running"),
        "{rest}"
    );
    // Gone, or a zombie no one has reaped yet: not running either way.
    let running = |pid: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        !matches!(state, None | Some("Z") | Some("X"))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while running(server) {
        assert!(
            std::time::Instant::now() < deadline,
            "server {server} outlived the bench"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
