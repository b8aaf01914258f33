//! The live page of `fanout load --ui` (issue 26, started): its address is
//! said at start, its event stream carries the run's samples as it goes
//! (the ramp, then the work, connections open rising to N) and then the
//! report, and the page itself is served from the binary.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use common::*;

every_backend! {
    fn a_load_serves_its_samples_and_its_report_live(backend: Backend) {
        let server = Server::start(backend, &[]);
        let mut load = Command::new(env!("CARGO_BIN_EXE_fanout"))
            .args(["load", "broadcast", "--url", &server.url("/room")])
            .args(["--conns", "300", "--count", "3", "--ui", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("fanout load starts");
        let mut stderr = BufReader::new(load.stderr.take().unwrap());
        let mut line = String::new();
        let url = loop {
            line.clear();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "no `ui` line");
            if let Some(url) = line.trim().strip_prefix("ui http://") {
                break url.trim_end_matches('/').to_string();
            }
        };
        let mut events = TcpStream::connect(&url).unwrap();
        events.set_read_timeout(Some(PATIENCE)).unwrap();
        events.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (mut stages, mut most_open, mut report) = (Vec::new(), 0, None);
        for line in BufReader::new(events).lines() {
            let Ok(line) = line else { break };
            let Some(data) = line.strip_prefix("data: ") else { continue };
            let sample: serde_json::Value = serde_json::from_str(data).unwrap();
            let stage = sample["stage"].as_str().unwrap().to_string();
            if stage == "done" {
                report = sample["report"].as_str().map(str::to_string);
                break;
            }
            most_open = most_open.max(sample["open"].as_u64().unwrap());
            if stages.last() != Some(&stage) {
                stages.push(stage);
            }
        }
        let status = load.wait().unwrap();
        assert!(status.success());
        assert_eq!(stages.last().map(String::as_str), Some("work"), "{stages:?}");
        assert_eq!(most_open, 300);
        let report = report.expect("the report came last");
        assert!(report.contains("broadcast 3 messages"), "{report}");
        let mut stdout = String::new();
        load.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
        assert!(stdout.contains("broadcast 3 messages"));
    }
}

#[test]
fn the_page_is_served_from_the_binary() {
    let (_live, addr) = fanout::ui::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut page = String::new();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    stream.read_to_string(&mut page).unwrap();
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(page.contains("<canvas id=\"open\"") && page.contains("new EventSource(\"/events\")"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no network fetch"
    );
}
