//! The fuzzers' corpus, replayed on the stable toolchain: every input
//! cargo-fuzz kept (fuzz/corpus/<target>/, the seeds and what the runs
//! found) goes through the same checks the fuzz targets run
//! (`fanout::protocol::fuzzing`), so a regression on any input the fuzzers
//! ever reached fails `cargo test`. No crash may be committed.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{} fails its check", path.display());
        inputs += 1;
    }
    assert!(inputs > 0, "{} is empty", dir.display());
}

#[test]
fn frames_corpus() {
    replay("frames", fanout::protocol::fuzzing::frames);
}

#[test]
fn handshake_corpus() {
    replay("handshake", fanout::protocol::fuzzing::handshake);
}

#[test]
fn tcp_corpus() {
    replay("tcp", fanout::protocol::fuzzing::tcp_messages);
}

#[test]
fn session_corpus() {
    replay("session", fanout::protocol::fuzzing::session);
}

#[test]
fn no_crash_is_committed() {
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/artifacts");
    let crashes: Vec<String> = walk(&artifacts);
    assert!(crashes.is_empty(), "crashes to fix: {crashes:?}");
}

fn walk(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| match e.path().is_dir() {
            true => walk(&e.path()),
            false => vec![e.path().display().to_string()],
        })
        .collect()
}
