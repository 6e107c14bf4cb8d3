//! A real `braid-control` process per test, on a Unix socket in a private
//! temporary directory, and helpers to talk to it.
#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use braid_control::client::{Client, Endpoint};
use serde_json::Value;

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!("braid-ctl-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running control process, killed (and reaped) when dropped.
pub struct Server {
    pub child: Child,
    pub socket: PathBuf,
    pub state: PathBuf,
    pub log: PathBuf,
}

pub const BIN: &str = env!("CARGO_BIN_EXE_braid-control");

impl Server {
    /// Starts `braid-control` with its socket and state under `dir`, plus
    /// `extra` arguments, and waits until it answers.
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        let socket = dir.join("api.sock");
        let state = dir.join("state");
        static N: AtomicU32 = AtomicU32::new(0);
        let log = dir.join(format!("control-{}.log", N.fetch_add(1, Ordering::Relaxed)));
        let child = Command::new(BIN)
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(&state)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("starting braid-control");
        let mut s = Server { child, socket, state, log };
        s.wait_ready();
        s
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.client().get("/v1/status") {
                if r.status == 200 {
                    return;
                }
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("braid-control exited ({st}): {}", self.log_text());
            }
            assert!(Instant::now() < deadline, "braid-control did not answer: {}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn client(&self) -> Client {
        let mut c = Client::new(Endpoint::Unix(self.socket.clone()));
        c.timeout = Duration::from_secs(60);
        c
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Still running?
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// JSON request; the status and the body as JSON (Null if empty).
    pub fn req(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
        self.raw(method, path, bytes.as_deref())
    }

    pub fn raw(&self, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Value) {
        let r = self.client().request(method, path, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let v = if r.body.is_empty() { Value::Null } else { r.json().unwrap_or_else(|e| panic!("{method} {path}: {e}")) };
        (r.status, v)
    }

    pub fn generation(&self) -> u64 {
        let (s, v) = self.req("GET", "/v1/status", None);
        assert_eq!(s, 200);
        v["generation"].as_u64().unwrap()
    }

    /// The persisted state file's text.
    pub fn state_file(&self) -> String {
        std::fs::read_to_string(self.state.join("config.json")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first ```json block of docs/config.md (the example document).
pub fn example() -> Value {
    json_block("## Example")
}

/// The first ```json block after `heading` in docs/config.md.
pub fn json_block(heading: &str) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/config.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let sec = doc.find(heading).unwrap_or_else(|| panic!("{heading} in docs/config.md"));
    let start = sec + doc[sec..].find("```json\n").unwrap() + 8;
    let len = doc[start..].find("```").unwrap();
    serde_json::from_str(&doc[start..start + len]).unwrap()
}

/// The document as the API shows it: defaults spelled out, keys redacted.
pub fn shown(doc: &Value) -> Value {
    let c: braid_config::Config = serde_json::from_value(doc.clone()).expect("a Config");
    redacted(&serde_json::to_value(&c).unwrap())
}

/// Every key and salt string of a document.
pub fn secrets(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for b in doc["bundles"].as_array().into_iter().flatten() {
        for t in b["tunnels"].as_array().into_iter().flatten() {
            for k in ["key_out", "key_in", "salt_out", "salt_in"] {
                out.push(t[k].as_str().unwrap().to_string());
            }
        }
    }
    out
}

/// The document with every key and salt shown as the API shows them.
pub fn redacted(doc: &Value) -> Value {
    let mut d = doc.clone();
    for b in d["bundles"].as_array_mut().into_iter().flatten() {
        for t in b["tunnels"].as_array_mut().into_iter().flatten() {
            for k in ["key_out", "key_in", "salt_out", "salt_in"] {
                t[k] = Value::from("<redacted>");
            }
        }
    }
    d
}

/// A second bundle on the example's WAN port.
pub fn spare_bundle() -> Value {
    serde_json::json!({
        "name": "spare",
        "tunnels": [{
            "wan_port": "wan0",
            "local": "192.0.2.1:4600",
            "remote": "198.51.100.2:4600",
            "spi_out": 5000,
            "spi_in": 6000,
            "key_out": "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
            "key_in": "e0e1e2e3e4e5e6e7e8e9eaebecedeeef",
            "salt_out": "c0c1c2c3",
            "salt_in": "d0d1d2d3"
        }]
    })
}
