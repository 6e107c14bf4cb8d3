//! The API over a real Unix socket, against a real `braid-control`
//! process: round trips, redaction, every bad input of issue #5, limits.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{example, secrets, shown, spare_bundle, Server, TempDir};
use serde_json::{json, Value};

fn configured(dir: &TempDir) -> Server {
    let s = Server::start(dir.path(), &[]);
    let (st, v) = s.req("PUT", "/v1/config", Some(&example()));
    assert_eq!((st, &v), (200, &json!({ "generation": 1, "changed": true })));
    s
}

#[test]
fn socket_and_state_are_private() {
    let dir = TempDir::new("private");
    let s = configured(&dir);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&s.socket), 0o600);
    assert_eq!(mode(&s.state.join("config.json")), 0o600);
    assert_eq!(mode(&s.state), 0o700);
}

#[test]
fn empty_start() {
    let dir = TempDir::new("empty");
    let s = Server::start(dir.path(), &[]);
    let (st, v) = s.req("GET", "/v1/status", None);
    assert_eq!(st, 200);
    assert_eq!((v["generation"].as_u64(), v["configured"].as_bool(), &v["dataplane"]), (Some(0), Some(false), &Value::Null));
    assert_eq!(s.req("GET", "/v1/config", None).0, 404);
    assert_eq!(s.req("GET", "/v1/peers", None), (200, json!([])));
    // Lists cannot be edited before there is a document (ports come with it).
    let (st, v) = s.req("POST", "/v1/peers", Some(&json!({ "name": "a", "bundle": "b" })));
    assert_eq!(st, 409, "{v}");
    assert!(v["error"]["reason"].as_str().unwrap().contains("PUT /v1/config"));
    assert_eq!(s.req("GET", "/v1/nope", None).0, 404);
    assert_eq!(s.req("PATCH", "/v1/config", None).0, 405);
}

#[test]
fn crud_round_trips() {
    let dir = TempDir::new("crud");
    let s = configured(&dir);
    let ex = example();
    assert_eq!(s.req("GET", "/v1/config", None), (200, shown(&ex)));
    assert_eq!(s.req("GET", "/v1/ports", None), (200, ex["ports"].clone()));
    // Re-sending the running document changes nothing.
    assert_eq!(s.req("PUT", "/v1/config", Some(&ex)), (200, json!({ "generation": 1, "changed": false })));

    // Bundles.
    assert_eq!(s.req("POST", "/v1/bundles", Some(&spare_bundle())), (201, json!({ "generation": 2, "changed": true })));
    let (st, b) = s.req("GET", "/v1/bundles/spare", None);
    assert_eq!(st, 200);
    assert_eq!(b["tunnels"][0]["key_in"], "<redacted>");
    assert_eq!(b["tunnels"][0]["weight"], 1, "defaults are filled in");
    assert_eq!(s.req("GET", "/v1/bundles", None).1.as_array().unwrap().len(), 2);
    assert_eq!(s.req("POST", "/v1/bundles", Some(&spare_bundle())).0, 409);
    let mut b2 = spare_bundle();
    b2["policy"] = json!("round_robin");
    assert_eq!(s.req("PUT", "/v1/bundles/spare", Some(&b2)).1["generation"], 3);
    assert_eq!(s.req("GET", "/v1/bundles/spare", None).1["policy"], "round_robin");
    assert_eq!(s.req("PUT", "/v1/bundles/other", Some(&b2)).0, 422, "name must match the path");

    // Peers.
    let peer = json!({ "name": "site-c", "bundle": "spare" });
    assert_eq!(s.req("POST", "/v1/peers", Some(&peer)).0, 201);
    assert_eq!(s.req("GET", "/v1/peers/site-c", None), (200, peer.clone()));
    assert_eq!(s.req("GET", "/v1/peers/site-z", None).0, 404);
    // A path parameter that does not decode: 400 with the API's error body.
    for (method, path) in [("GET", "/v1/peers/%FF"), ("DELETE", "/v1/nat/snat/%C3"), ("PUT", "/v1/bundles/%FF/tunnels/0/weight")] {
        let (status, body) = s.req(method, path, Some(&json!({ "weight": 1 })));
        assert_eq!(status, 400, "{method} {path}");
        assert_eq!(body["error"]["field"], "path", "{method} {path}: {body}");
    }

    // Routes: the prefix is the key, percent-encoded in the path.
    let route = json!({ "prefix": "10.3.0.0/16", "peer": "site-c" });
    assert_eq!(s.req("POST", "/v1/routes", Some(&route)).1["generation"], 5);
    assert_eq!(s.req("GET", "/v1/routes/10.3.0.0%2F16", None), (200, route));
    let moved = json!({ "prefix": "10.3.0.0/16", "peer": "site-b" });
    assert_eq!(s.req("PUT", "/v1/routes/10.3.0.0%2F16", Some(&moved)).1["generation"], 6);
    assert_eq!(s.req("GET", "/v1/routes/fd00:2:0::%2F64", None).1["peer"], "site-b", "prefixes compare as prefixes");
    assert_eq!(s.req("DELETE", "/v1/routes/10.3.0.0%2F16", None).1["generation"], 7);
    assert_eq!(s.req("GET", "/v1/routes/10.3.0.0%2F16", None).0, 404);

    // Weights.
    assert_eq!(s.req("PUT", "/v1/bundles/to-site-b/tunnels/3/weight", Some(&json!({ "weight": 9 }))).1["generation"], 8);
    assert_eq!(s.req("GET", "/v1/bundles/to-site-b", None).1["tunnels"][3]["weight"], 9);
    assert_eq!(s.req("PUT", "/v1/bundles/to-site-b/tunnels/4/weight", Some(&json!({ "weight": 9 }))).0, 404);
    let (st, v) = s.req("PUT", "/v1/bundles/to-site-b/tunnels/0/weight", Some(&json!({ "weight": 0 })));
    assert_eq!((st, v["error"]["field"].as_str()), (422, Some("bundles[0].tunnels[0].weight")));

    // NAT.
    let snat = json!({ "name": "out", "match": "10.1.0.0/16", "peer": "site-b", "pool": ["100.64.1.1"] });
    assert_eq!(s.req("POST", "/v1/nat/snat", Some(&snat)).1["generation"], 9);
    assert_eq!(s.req("GET", "/v1/nat/snat/out", None).1["ports"], "1024-65535");
    let dnat = json!({ "name": "web", "external": "100.64.1.1", "protocol": "tcp", "port": 8443, "internal": "10.1.0.10" });
    let (st, v) = s.req("POST", "/v1/nat/dnat", Some(&dnat));
    assert_eq!((st, v["error"]["field"].as_str()), (422, Some("nat.dnat[0].port")), "8443 is inside the SNAT ports");
    let mut snat2 = snat.clone();
    snat2["ports"] = json!("10000-65535");
    assert_eq!(s.req("PUT", "/v1/nat/snat/out", Some(&snat2)).1["generation"], 10);
    assert_eq!(s.req("POST", "/v1/nat/dnat", Some(&dnat)).1["generation"], 11);
    assert_eq!(s.req("GET", "/v1/nat/dnat", None), (200, json!([dnat])));
    assert_eq!(s.req("DELETE", "/v1/nat/dnat/web", None).1["generation"], 12);
    assert_eq!(s.req("DELETE", "/v1/nat/snat/out", None).1["generation"], 13);

    // Deleting what others use is refused, naming the user.
    let (st, v) = s.req("DELETE", "/v1/bundles/spare", None);
    assert_eq!((st, v["error"]["field"].as_str()), (422, Some("peers[1].bundle")), "{v}");
    assert_eq!(s.req("DELETE", "/v1/peers/site-c", None).1["generation"], 14);
    assert_eq!(s.req("DELETE", "/v1/bundles/spare", None).1["generation"], 15);
    assert_eq!(s.req("DELETE", "/v1/bundles/spare", None).0, 404);

    // After all that, the document is the example with one weight changed.
    let mut want = shown(&ex);
    want["bundles"][0]["tunnels"][3]["weight"] = json!(9);
    let (_, got) = s.req("GET", "/v1/config", None);
    assert_eq!(got, want);
    assert_eq!(s.generation(), 15);
}

/// Concurrent edits: a change sent with `If-Match` (the generation it was
/// made from) is refused with 412 once another change came first, instead
/// of undoing it (found by review: a PUT of a document read before
/// another client's POST removed that client's peer).
#[test]
fn a_change_from_an_old_generation_is_refused_with_if_match() {
    let dir = TempDir::new("ifmatch");
    let s = configured(&dir);
    let read = s.client().get("/v1/config").unwrap();
    let generation: u64 = read.header("x-braid-generation").unwrap().parse().unwrap();
    let doc = read.json().unwrap();
    // Another client adds a peer.
    assert_eq!(s.req("POST", "/v1/bundles", Some(&spare_bundle())).0, 201);
    // The first sends its document back, from the old generation: 412,
    // the other's bundle still there.
    let mut c = s.client();
    c.if_match = Some(generation);
    let r = c.request("PUT", "/v1/config", Some(&serde_json::to_vec(&doc).unwrap())).unwrap();
    assert_eq!(r.status, 412, "{}", r.text());
    assert_eq!(r.json().unwrap()["error"]["field"], "If-Match");
    assert_eq!(s.req("GET", "/v1/bundles/spare", None).0, 200);
    let r = c.request("DELETE", "/v1/bundles/spare", None).unwrap();
    assert_eq!(r.status, 412);
    // From the current generation: done.
    c.if_match = Some(generation + 1);
    assert_eq!(c.request("DELETE", "/v1/bundles/spare", None).unwrap().status, 200);
    // Not a number: 400; `*`: any generation.
    let raw = |v: &str| {
        let mut st = std::os::unix::net::UnixStream::connect(&s.socket).unwrap();
        use std::io::{Read, Write};
        write!(st, "DELETE /v1/peers/none HTTP/1.1\r\nHost: x\r\nConnection: close\r\nIf-Match: {v}\r\n\r\n").unwrap();
        let mut out = String::new();
        st.read_to_string(&mut out).unwrap();
        out
    };
    assert!(raw("soon").starts_with("HTTP/1.1 400"), "{}", raw("soon"));
    assert!(raw("*").starts_with("HTTP/1.1 404"), "any generation, then no such peer");
}

#[test]
fn keys_are_never_shown_and_redacted_keys_are_kept() {
    let dir = TempDir::new("redact");
    let s = configured(&dir);
    assert_eq!(s.req("POST", "/v1/bundles", Some(&spare_bundle())).0, 201);
    let mut all = secrets(&example());
    all.extend(secrets(&json!({ "bundles": [spare_bundle()] })));
    let shown: Vec<String> = ["/v1/config", "/v1/bundles", "/v1/bundles/spare", "/v1/bundles/to-site-b", "/v1/status", "/metrics"]
        .iter()
        .map(|p| s.client().get(p).unwrap().text())
        .collect();
    for text in &shown {
        for k in &all {
            assert!(!text.contains(k.as_str()), "a key is shown: {text}");
        }
    }

    // GET, edit, PUT back: the redacted keys stand for the stored ones.
    let (_, mut doc) = s.req("GET", "/v1/config", None);
    doc["bundles"][0]["tunnels"][0]["weight"] = json!(5);
    assert_eq!(s.req("PUT", "/v1/config", Some(&doc)).1["generation"], 3);
    let state = s.state_file();
    for k in &all {
        assert!(state.contains(k.as_str()), "the stored keys are kept");
    }
    // A placeholder for an SA that is not stored (new SPI) is refused.
    doc["bundles"][0]["tunnels"][0]["spi_in"] = json!(9999);
    let (st, v) = s.req("PUT", "/v1/config", Some(&doc));
    assert_eq!((st, v["error"]["field"].as_str()), (422, Some("bundles[0].tunnels[0].key_in")), "{v}");
    // A new key for a tunnel is taken, and still not shown.
    let mut b = spare_bundle();
    b["tunnels"][0]["key_out"] = json!("00112233445566778899aabbccddeeff");
    assert_eq!(s.req("PUT", "/v1/bundles/spare", Some(&b)).0, 200);
    assert!(s.state_file().contains("00112233445566778899aabbccddeeff"));
    assert!(!s.client().get("/v1/bundles/spare").unwrap().text().contains("00112233445566778899aabbccddeeff"));
    // Refusals do not show keys either.
    let mut bad = spare_bundle();
    bad["tunnels"][0]["key_out"] = json!("00112233445566778899aabbccddee");
    let r = s.client().request("PUT", "/v1/bundles/spare", Some(&serde_json::to_vec(&bad).unwrap())).unwrap();
    assert_eq!(r.status, 422);
    assert!(!r.text().contains("00112233445566778899aabbccddee"), "{}", r.text());
    // Nor does the log.
    let log = s.log_text();
    for k in all.iter().chain(["00112233445566778899aabbccddeeff".to_string()].iter()) {
        assert!(!log.contains(k.as_str()), "the log shows a key: {log}");
    }
}

/// One bad request: what is sent, and the refusal expected.
struct Bad {
    what: &'static str,
    method: &'static str,
    path: &'static str,
    body: Vec<u8>,
    status: u16,
    field: Option<&'static str>,
    reason: &'static str,
}

fn tunnel(v: &mut Value) -> &mut Value {
    &mut v["bundles"][0]["tunnels"][0]
}

fn edited(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v = example();
    edit(&mut v);
    serde_json::to_vec(&v).unwrap()
}

fn bad_inputs() -> Vec<Bad> {
    let b = |what, method, path, body: Vec<u8>, status, field, reason| Bad { what, method, path, body, status, field, reason };
    let ten_mb = {
        let mut v = b"{\"name\": \"".to_vec();
        v.resize(10 << 20, b'a');
        v
    };
    vec![
        b("malformed JSON", "PUT", "/v1/config", b"{\"ports\": [".to_vec(), 400, Some("ports"), "EOF while parsing"),
        b("not JSON at all", "POST", "/v1/peers", b"name=x".to_vec(), 400, None, "at line 1 column"),
        b("trailing garbage", "POST", "/v1/peers", b"{\"name\":\"x\",\"bundle\":\"to-site-b\"} x".to_vec(), 400, None, "trailing"),
        b("wrong type", "PUT", "/v1/config", edited(|v| tunnel(v)["spi_in"] = json!("8192")), 422, Some("bundles[0].tunnels[0].spi_in"), "invalid type"),
        b("negative SPI", "PUT", "/v1/config", edited(|v| tunnel(v)["spi_in"] = json!(-1)), 422, Some("bundles[0].tunnels[0].spi_in"), "invalid value"),
        b("wrong type in a list entry", "POST", "/v1/routes", br#"{"prefix": 10, "peer": "site-b"}"#.to_vec(), 422, Some("prefix"), "invalid type"),
        b("unknown field", "PUT", "/v1/config", edited(|v| tunnel(v)["kye_in"] = json!("00")), 422, Some("bundles[0].tunnels[0].kye_in"), "unknown field `kye_in`"),
        b("unknown field in a list entry", "POST", "/v1/peers", br#"{"name": "x", "bundle": "to-site-b", "color": 1}"#.to_vec(), 422, Some("color"), "unknown field"),
        b("missing field", "POST", "/v1/peers", br#"{"name": "x"}"#.to_vec(), 422, None, "missing field `bundle`"),
        b("out-of-range UDP port", "PUT", "/v1/config", edited(|v| tunnel(v)["local"] = json!("192.0.2.1:70000")), 422, Some("bundles[0].tunnels[0].local"), "not a socket address"),
        b("UDP port 0", "PUT", "/v1/config", edited(|v| tunnel(v)["remote"] = json!("198.51.100.1:0")), 422, Some("bundles[0].tunnels[0].remote"), "port 0"),
        b("out-of-range DNAT port", "POST", "/v1/nat/dnat", br#"{"name": "d", "external": "100.64.1.1", "protocol": "udp", "port": 70000, "internal": "10.1.0.5"}"#.to_vec(), 422, Some("nat.dnat[0].port"), "outside 1..=65535"),
        b("empty SNAT port range", "POST", "/v1/nat/snat", br#"{"name": "s", "match": "10.1.0.0/16", "pool": ["100.64.1.1"], "ports": "2000-1000"}"#.to_vec(), 422, Some("nat.snat[0].ports"), "empty"),
        b("duplicate route", "PUT", "/v1/config", edited(|v| v["routes"].as_array_mut().unwrap().push(json!({ "prefix": "10.2.5.0/24", "peer": "site-b" }))), 422, Some("routes[3].prefix"), "already routed by routes[1]"),
        b("duplicate route by POST", "POST", "/v1/routes", br#"{"prefix": "10.2.0.0/16", "peer": "site-b"}"#.to_vec(), 409, Some("prefix"), "exists"),
        b("route with host bits", "POST", "/v1/routes", br#"{"prefix": "10.7.1.0/16", "peer": "site-b"}"#.to_vec(), 422, Some("routes[3].prefix"), "host bits"),
        b("overlapping SNAT", "PUT", "/v1/config", edited(|v| v["nat"] = json!({ "snat": [
            { "name": "a", "match": "10.1.0.0/16", "pool": ["100.64.1.1"] },
            { "name": "b", "match": "10.1.2.0/24", "peer": "site-b", "pool": ["100.64.1.2"] } ] })), 422, Some("nat.snat[1].match"), "overlaps"),
        b("duplicate spi_in", "PUT", "/v1/config", edited(|v| v["bundles"][0]["tunnels"][1]["spi_in"] = json!(8192)), 422, Some("bundles[0].tunnels[1].spi_in"), "already the spi_in"),
        b("duplicate spi_in across bundles", "POST", "/v1/bundles", {
            let mut x = spare_bundle();
            x["tunnels"][0]["spi_in"] = json!(8195);
            serde_json::to_vec(&x).unwrap()
        }, 422, Some("bundles[1].tunnels[0].spi_in"), "already the spi_in of bundles[0].tunnels[3]"),
        b("key of 15 bytes", "PUT", "/v1/config", edited(|v| tunnel(v)["key_in"] = json!("00".repeat(15))), 422, Some("bundles[0].tunnels[0].key_in"), "expected 16 or 32 bytes of hex, got 15"),
        b("key of 24 bytes", "POST", "/v1/bundles", {
            let mut x = spare_bundle();
            x["tunnels"][0]["key_out"] = json!("11".repeat(24));
            serde_json::to_vec(&x).unwrap()
        }, 422, Some("bundles[1].tunnels[0].key_out"), "got 24"),
        b("salt of 3 bytes", "PUT", "/v1/config", edited(|v| tunnel(v)["salt_out"] = json!("a0a1a2")), 422, Some("bundles[0].tunnels[0].salt_out"), "expected 4 bytes"),
        b("SNAT pool of the wrong family", "POST", "/v1/nat/snat", br#"{"name": "s", "match": "10.1.0.0/16", "pool": ["fd00::1"]}"#.to_vec(), 422, Some("nat.snat[0].pool[0]"), "IPv6"),
        b("a 10 MB body", "POST", "/v1/peers", ten_mb.clone(), 413, None, "over the limit"),
        b("a 10 MB body as a document", "PUT", "/v1/config", ten_mb, 422, Some("name"), "unknown field `name`"),
        b("a document over 64 MiB", "PUT", "/v1/config", vec![b' '; (64 << 20) + 1], 413, None, "over the limit"),
        b("peer of a missing bundle", "POST", "/v1/peers", br#"{"name": "x", "bundle": "nope"}"#.to_vec(), 422, Some("peers[1].bundle"), "no bundle named"),
        b("changing a name by PUT", "PUT", "/v1/peers/site-b", br#"{"name": "site-x", "bundle": "to-site-b"}"#.to_vec(), 422, Some("name"), "does not match"),
        b("weight as a string", "PUT", "/v1/bundles/to-site-b/tunnels/0/weight", br#"{"weight": "3"}"#.to_vec(), 422, Some("weight"), "invalid type"),
        b("tunnel index not a number", "PUT", "/v1/bundles/to-site-b/tunnels/x/weight", br#"{"weight": 3}"#.to_vec(), 400, Some("index"), "not a tunnel index"),
    ]
}

#[test]
fn bad_inputs_are_refused_whole_and_the_process_stays_up() {
    let dir = TempDir::new("bad");
    let mut s = configured(&dir);
    let before = s.req("GET", "/v1/config", None);
    let state_before = s.state_file();
    for bad in bad_inputs() {
        let r = s.client().request(bad.method, bad.path, Some(&bad.body)).unwrap_or_else(|e| panic!("{}: {e}", bad.what));
        let v = r.json().unwrap_or_else(|e| panic!("{}: {e}", bad.what));
        assert_eq!(r.status, bad.status, "{}: {v}", bad.what);
        assert_eq!(v["error"]["field"].as_str(), bad.field, "{}: {v}", bad.what);
        let reason = v["error"]["reason"].as_str().unwrap();
        assert!(reason.contains(bad.reason), "{}: {reason:?} lacks {:?}", bad.what, bad.reason);
        assert!(s.running(), "{}: the process died", bad.what);
        assert_eq!(s.req("GET", "/v1/config", None), before, "{}: something changed", bad.what);
        assert_eq!(s.state_file(), state_before, "{}: the stored state changed", bad.what);
        assert_eq!(s.generation(), 1, "{}", bad.what);
    }
}

#[test]
fn a_thousand_concurrent_requests() {
    let dir = TempDir::new("flood");
    let mut s = configured(&dir);
    let n = 1000;
    let results: Vec<(u16, bool)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let c = s.client();
                scope.spawn(move || {
                    if i % 2 == 0 {
                        let r = json!({ "prefix": format!("10.{}.{}.0/24", 100 + i / 256, i % 256), "peer": "site-b" });
                        let r = c.request("POST", "/v1/routes", Some(&serde_json::to_vec(&r).unwrap())).unwrap();
                        (r.status, true)
                    } else {
                        (c.get("/v1/status").unwrap().status, false)
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created = results.iter().filter(|(st, post)| *post && *st == 201).count();
    for (st, post) in &results {
        assert!(matches!((st, post), (201, true) | (200, false) | (503, _)), "unexpected status {st}");
    }
    assert!(s.running());
    assert!(created > 0, "no POST got through");
    // Each accepted POST made exactly one generation; nothing else changed.
    assert_eq!(s.generation(), 1 + created as u64);
    assert_eq!(s.req("GET", "/v1/routes", None).1.as_array().unwrap().len(), 3 + created);
    let refused = results.iter().filter(|(st, _)| *st == 503).count();
    eprintln!("{created} routes created, {refused} requests answered 503");
}

#[test]
fn tcp_needs_a_token() {
    let dir = TempDir::new("tcp");
    // No token file: refused at start.
    let out = std::process::Command::new(common::BIN)
        .args(["--listen", "127.0.0.1:0", "--socket"])
        .arg(dir.path().join("x.sock"))
        .arg("--state-dir")
        .arg(dir.path().join("st"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token-file"));

    let token = dir.path().join("token");
    std::fs::write(&token, "correct-horse-battery-staple\n").unwrap();
    let s = Server::start(dir.path(), &["--listen", "127.0.0.1:0", "--token-file", token.to_str().unwrap()]);
    let log = s.log_text();
    let addr = log.lines().find_map(|l| l.strip_prefix("braid-control: API on tcp ")).expect("tcp address").split(' ').next().unwrap().to_string();
    let mut c = braid_control::client::Client::new(braid_control::client::Endpoint::Tcp(addr));
    assert_eq!(c.get("/v1/status").unwrap().status, 401);
    c.token = Some("wrong-horse-battery-staple".into());
    assert_eq!(c.get("/v1/status").unwrap().status, 401);
    c.token = Some("correct-horse-battery-staple".into());
    assert_eq!(c.get("/v1/status").unwrap().status, 200);
    let r = c.request("PUT", "/v1/config", Some(&serde_json::to_vec(&example()).unwrap())).unwrap();
    assert_eq!(r.status, 200);
    // The Unix socket needs no token.
    assert_eq!(s.generation(), 1);
}

#[test]
fn over_the_concurrency_limit_requests_get_503() {
    use std::io::{Read, Write};
    let dir = TempDir::new("busy");
    let mut s = Server::start(dir.path(), &["--max-concurrent", "1"]);
    // A client that sends half a body holds the only slot...
    let mut slow = std::os::unix::net::UnixStream::connect(&s.socket).unwrap();
    slow.write_all(b"PUT /v1/config HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"ports\"").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    // ...so the next request waits its turn, then is told to retry.
    let t0 = std::time::Instant::now();
    let r = s.client().get("/v1/status").unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(t0.elapsed() >= braid_control::api::QUEUE_WAIT);
    assert!(r.json().unwrap()["error"]["reason"].as_str().unwrap().contains("too many requests"));
    // The slow body is cut off after BODY_TIMEOUT (408); then all is well.
    let mut answer = String::new();
    slow.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(s.client().get("/v1/status").unwrap().status, 200);
    assert!(s.running());
    assert_eq!(s.generation(), 0);
}
