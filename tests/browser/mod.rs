//! A real browser for the tests: Debian's headless Chromium, driven over
//! the DevTools protocol (a WebSocket, spoken here with tungstenite). It
//! opens a page, evaluates JavaScript in it, takes screenshots and keeps
//! every console error and uncaught exception the page produced.

#![allow(dead_code)]

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

const CHROMIUM: &str = "/usr/bin/chromium";
/// How long Chromium may take to start and answer.
const PATIENCE: Duration = Duration::from_secs(30);

pub struct Browser {
    /// Always set until dropped.
    child: Option<Child>,
    profile: PathBuf,
    socket: WebSocket<TcpStream>,
    next_id: u64,
    /// Console errors and exceptions, as text, in order.
    errors: Vec<String>,
}

/// A tab, by its DevTools session.
pub struct Tab {
    session: String,
}

impl Browser {
    /// Start Chromium, or say why it cannot be (the test is then SKIPPED).
    pub fn launch() -> Result<Browser, String> {
        if !Path::new(CHROMIUM).exists() {
            return Err(format!(
                "{CHROMIUM} is not installed (Debian: apt-get install chromium)"
            ));
        }
        let profile = std::env::temp_dir().join(format!(
            "fanout-chromium-{}-{}",
            std::process::id(),
            now_nanos()
        ));
        std::fs::create_dir_all(&profile).map_err(|e| e.to_string())?;
        let child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--remote-debugging-port=0",
                "--window-size=1100,2400",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting {CHROMIUM}: {e}"))?;
        let socket = match connect_devtools(&profile) {
            Ok(socket) => socket,
            Err(e) => {
                stop_group(child);
                return Err(e);
            }
        };
        Ok(Browser {
            child: Some(child),
            profile,
            socket,
            next_id: 1,
            errors: Vec::new(),
        })
    }

    /// Open `url` in a new tab, with its console and exceptions watched.
    pub fn open(&mut self, url: &str) -> Tab {
        let target = self.call(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let target_id = target["targetId"].as_str().unwrap().to_string();
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        );
        let tab = Tab {
            session: attached["sessionId"].as_str().unwrap().to_string(),
        };
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            self.call(Some(&tab), domain, json!({}));
        }
        self.call(Some(&tab), "Page.navigate", json!({ "url": url }));
        let loaded = format!(
            "location.href === {} && document.readyState === 'complete'",
            json!(url)
        );
        self.wait_for(&tab, "the page loads", &loaded, PATIENCE, |v| v == true);
        tab
    }

    /// Evaluate `expression` in the tab; its value (JSON).
    pub fn eval(&mut self, tab: &Tab, expression: &str) -> Value {
        let result = self.call(
            Some(tab),
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("evaluating {expression}: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Evaluate until `done` says yes (or panic after `patience`).
    pub fn wait_for(
        &mut self,
        tab: &Tab,
        what: &str,
        expression: &str,
        patience: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let until = Instant::now() + patience;
        loop {
            let value = self.eval(tab, expression);
            if done(&value) {
                return value;
            }
            assert!(
                Instant::now() < until,
                "{what}: still {value} after {patience:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PNG of the page's top `height` pixels (its whole width), written
    /// to `path`.
    pub fn screenshot(&mut self, tab: &Tab, path: &Path, height: u32) {
        let width = self.eval(tab, "document.documentElement.scrollWidth");
        let clip = json!({ "x": 0, "y": 0, "width": width, "height": height, "scale": 1 });
        let shot = self.call(
            Some(tab),
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true, "clip": clip }),
        );
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Console errors and uncaught exceptions seen so far (after letting
    /// the events already sent arrive).
    pub fn errors(&mut self, tab: &Tab) -> Vec<String> {
        self.eval(tab, "1");
        self.errors.clone()
    }

    /// Send one command and wait for its answer, keeping the events that
    /// come before it.
    fn call(&mut self, tab: Option<&Tab>, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(tab) = tab {
            message["sessionId"] = tab.session.clone().into();
        }
        self.socket
            .send(Message::text(message.to_string()))
            .unwrap();
        let until = Instant::now() + PATIENCE;
        loop {
            assert!(Instant::now() < until, "{method}: no answer");
            let text = match self.socket.read().expect("reading DevTools") {
                Message::Text(text) => text,
                _ => continue,
            };
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["id"].as_u64() == Some(id) {
                if let Some(error) = value.get("error") {
                    panic!("{method}: {error}");
                }
                return value["result"].clone();
            }
            self.keep_event(&value);
        }
    }

    fn keep_event(&mut self, event: &Value) {
        let params = &event["params"];
        match event["method"].as_str() {
            Some("Runtime.exceptionThrown") => self
                .errors
                .push(format!("exception: {}", params["exceptionDetails"])),
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => self
                .errors
                .push(format!("console.error: {}", params["args"])),
            Some("Log.entryAdded") if params["entry"]["level"] == "error" => self
                .errors
                .push(format!("log: {}", params["entry"]["text"])),
            _ => {}
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.socket.close(None);
        if let Some(child) = self.child.take() {
            stop_group(child);
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Chromium and the processes it started: asked to quit first (it then
/// reaps its own helpers, so none is left a zombie), then its process
/// group (its own PID) killed for anything still there.
fn stop_group(mut child: Child) {
    let pid = child.id() as i32;
    // SAFETY: signals to the process this test started, and to its group.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above.
    unsafe {
        libc::killpg(pid, libc::SIGKILL);
    }
    let _ = child.wait();
}

/// The browser's DevTools WebSocket, once Chromium says where it is.
fn connect_devtools(profile: &Path) -> Result<WebSocket<TcpStream>, String> {
    let (host, path) = wait_for_endpoint(profile)?;
    let stream = TcpStream::connect(&host).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let (socket, _) = tungstenite::client(format!("ws://{host}{path}"), stream)
        .map_err(|e| format!("DevTools WebSocket: {e}"))?;
    Ok(socket)
}

/// `DevToolsActivePort` in the profile: the port, then the browser's path.
fn wait_for_endpoint(profile: &Path) -> Result<(String, String), String> {
    let file = profile.join("DevToolsActivePort");
    let until = Instant::now() + PATIENCE;
    loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                return Ok((format!("127.0.0.1:{port}"), path.to_string()));
            }
        }
        if Instant::now() > until {
            return Err(format!(
                "Chromium wrote no {} in {PATIENCE:?}",
                file.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Where a test's screenshots go: `FANOUT_SCREENSHOTS` if set (to commit
/// them under results/), else the target directory's scratch space.
pub fn screenshot_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("FANOUT_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}
