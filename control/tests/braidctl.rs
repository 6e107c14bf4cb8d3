//! `braidctl` against a real control process.

mod common;

use std::process::{Command, Output};

use common::{example, spare_bundle, Server, TempDir};
use serde_json::Value;

const CTL: &str = env!("CARGO_BIN_EXE_braidctl");

fn ctl(s: &Server, args: &[&str]) -> Output {
    Command::new(CTL).arg("--socket").arg(&s.socket).args(args).output().unwrap()
}

#[track_caller]
fn ok(s: &Server, args: &[&str]) -> String {
    let out = ctl(s, args);
    assert!(out.status.success(), "braidctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn cli_round_trip() {
    let dir = TempDir::new("ctl");
    let s = Server::start(dir.path(), &[]);
    let file = dir.path().join("config.json");
    std::fs::write(&file, serde_json::to_string(&example()).unwrap()).unwrap();
    assert_eq!(ok(&s, &["config", "put", file.to_str().unwrap()]), "generation 1\n");
    assert_eq!(ok(&s, &["config", "put", file.to_str().unwrap()]), "unchanged (generation 1)\n");
    let bundle = dir.path().join("spare.json");
    std::fs::write(&bundle, spare_bundle().to_string()).unwrap();
    assert_eq!(ok(&s, &["bundle", "add", bundle.to_str().unwrap()]), "generation 2\n");
    assert_eq!(ok(&s, &["peer", "add", "site-c", "spare"]), "generation 3\n");
    assert_eq!(ok(&s, &["route", "add", "10.3.0.0/16", "site-c"]), "generation 4\n");
    assert!(ok(&s, &["route", "list"]).contains("10.3.0.0/16 -> site-c\n"));
    assert_eq!(ok(&s, &["tunnel", "weight", "to-site-b", "2", "5"]), "generation 5\n");
    assert_eq!(ok(&s, &["nat", "snat", "add", "out", "10.1.0.0/16", "100.64.1.1,100.64.1.2", "--peer", "site-b", "--ports", "20000-30000"]), "generation 6\n");
    assert_eq!(ok(&s, &["nat", "dnat", "add", "web", "100.64.1.1", "tcp", "443", "10.1.0.10", "--internal-port", "8443"]), "generation 7\n");
    assert!(ok(&s, &["nat", "dnat", "list"]).contains("web  100.64.1.1:443/tcp -> 10.1.0.10:8443"));
    assert!(ok(&s, &["nat", "snat", "list"]).contains("out  10.1.0.0/16 -> 100.64.1.1,100.64.1.2 ports 20000-30000 (peer site-b)"));

    let show = ok(&s, &["show"]);
    assert!(show.starts_with("generation 7: no dataplane link"), "{show}");
    assert!(show.contains("bundle: to-site-b\n  peer: site-b\n  mode: bundle  policy: weighted\n"), "{show}");
    assert!(show.contains("  tunnel 2: 192.0.2.1:4502 -> 198.51.100.1:4502 via wan0  spi out 0x1002 in 0x2002  weight 5\n"), "{show}");
    assert!(show.contains("bundle: spare\n  peer: site-c\n"), "{show}");
    assert!(!show.contains("808182838485868788898a8b8c8d8e8f"));
    let json: Value = serde_json::from_str(&ok(&s, &["--json", "show"])).unwrap();
    assert_eq!(json["status"]["generation"], 7);
    assert_eq!(json["bundles"][0]["tunnels"][2]["weight"], 5);
    let status: Value = serde_json::from_str(&ok(&s, &["--json", "status"])).unwrap();
    assert_eq!(status["generation"], 7);

    // --if-match: a change from an older generation is refused; from the
    // running one it applies. `config get` tells the generation on stderr.
    let got = ctl(&s, &["config", "get"]);
    assert_eq!(String::from_utf8_lossy(&got.stderr), "generation 7\n");
    let out = ctl(&s, &["--if-match", "6", "peer", "del", "site-c"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 412"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(ok(&s, &["--if-match", "7", "route", "add", "10.5.0.0/16", "site-c"]), "generation 8\n");
    assert_eq!(ok(&s, &["route", "del", "10.5.0.0/16"]), "generation 9\n");

    // Refusals: non-zero exit, the field and the reason on stderr, nothing changed.
    let out = ctl(&s, &["route", "add", "10.4.1.0/16", "site-c"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HTTP 422: routes[4].prefix: host bits set"), "{err}");
    let out = ctl(&s, &["tunnel", "weight", "to-site-b", "9", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 404"));

    assert_eq!(ok(&s, &["nat", "dnat", "del", "web"]), "generation 10\n");
    assert_eq!(ok(&s, &["nat", "snat", "del", "out"]), "generation 11\n");
    assert_eq!(ok(&s, &["route", "del", "10.3.0.0/16"]), "generation 12\n");
    assert_eq!(ok(&s, &["peer", "del", "site-c"]), "generation 13\n");
    assert_eq!(ok(&s, &["bundle", "del", "spare"]), "generation 14\n");
    let got: Value = serde_json::from_str(&ok(&s, &["config", "get"])).unwrap();
    let mut want = common::shown(&example());
    want["bundles"][0]["tunnels"][2]["weight"] = 5.into();
    assert_eq!(got, want);

    // No server: a clear error.
    let out = Command::new(CTL).args(["--socket", "/nonexistent/braid.sock", "status"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/braid.sock"));
}

#[test]
fn a_closed_pipe_or_a_silly_interval_is_an_error_not_a_panic() {
    let dir = TempDir::new("ctlpipe");
    let s = Server::start(dir.path(), &[]);
    let file = dir.path().join("config.json");
    std::fs::write(&file, example().to_string()).unwrap();
    ok(&s, &["config", "put", file.to_str().unwrap()]);
    for i in 0..300 {
        ok(&s, &["route", "add", &format!("10.{}.{}.0/24", 100 + i / 256, i % 256), "site-b"]);
    }
    // `braidctl route list | head -1`: the reader goes away first.
    let mut child = Command::new(CTL)
        .arg("--socket")
        .arg(&s.socket)
        .args(["route", "list"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(101), "panicked: {}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "{}", String::from_utf8_lossy(&out.stderr));
    for bad in ["inf", "NaN", "-1", "0"] {
        let out = ctl(&s, &["watch", &format!("--interval={bad}")]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "watch --interval {bad}: {err}");
        assert!(err.contains("a positive number of seconds"), "{err}");
    }
}
