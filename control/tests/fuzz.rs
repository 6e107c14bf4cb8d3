//! Property-based fuzzing of the API: random mutations of a valid document
//! (values replaced by values of other types and ranges, fields removed or
//! added, lists grown) and random bytes, sent to a real process. Every
//! answer is 2xx or a 4xx error with a reason; an accepted document is
//! exactly what the library validates, a refused one changes nothing; the
//! process never dies. `PROPTEST_CASES` bounds the run.

mod common;

use std::cell::RefCell;

use braid_config::{Config, Tables};
use braid_control::store::restore_secrets;
use common::{example, Server, TempDir};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::{json, Value};

/// A server with a valid document, and that document with its keys.
fn start(tag: &str) -> (TempDir, RefCell<Server>, RefCell<Config>) {
    let dir = TempDir::new(tag);
    let server = Server::start(dir.path(), &[]);
    assert_eq!(server.req("PUT", "/v1/config", Some(&example())).0, 200);
    let accepted = serde_json::from_value(example()).unwrap();
    (dir, RefCell::new(server), RefCell::new(accepted))
}

fn runner() -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256);
    TestRunner::new(ProptestConfig { cases, ..ProptestConfig::default() })
}

/// Values worth trying anywhere.
fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u64..70_000).prop_map(Value::from),
        prop_oneof![Just(0u64), Just(1), Just(255), Just(256), Just(u32::MAX as u64), Just(u32::MAX as u64 + 1), Just(u64::MAX)].prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            Just("<redacted>"),
            Just(""),
            Just("10.2.0.0/16"),
            Just("10.1.0.0/16"),
            Just("fd00:2::/64"),
            Just("192.0.2.1:4500"),
            Just("192.0.2.1:70000"),
            Just("[2001:db8::1]:4500"),
            Just("02:00:00:00:00:01"),
            Just("ff:ff:ff:ff:ff:ff"),
            Just("site-b"),
            Just("to-site-b"),
            Just("wan0"),
            Just("lan0"),
            Just("100.64.1.1"),
            Just("1024-65535"),
            Just("tcp"),
            Just("weighted"),
            Just("plain"),
        ]
        .prop_map(Value::from),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| Value::from(b.iter().map(|x| format!("{x:02x}")).collect::<String>())),
        "[ -~]{0,12}".prop_map(Value::from),
        Just(json!([])),
        Just(json!({})),
    ]
}

/// One edit of a document.
#[derive(Debug, Clone)]
enum Edit {
    /// Replace the value at the `n`-th node (pre-order) by `v`.
    Replace(usize, Value),
    /// Remove the `n`-th object field.
    Remove(usize),
    /// Add a field to the `n`-th object.
    Add(usize, String, Value),
    /// Duplicate an element of the `n`-th array.
    Duplicate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), any_value()).prop_map(|(n, v)| Edit::Replace(n, v)),
        2 => any::<usize>().prop_map(Edit::Remove),
        1 => (any::<usize>(), prop_oneof![Just("nat".to_string()), Just("weight".to_string()), Just("bogus".to_string()), "[a-z_]{1,8}"], any_value())
            .prop_map(|(n, k, v)| Edit::Add(n, k, v)),
        2 => any::<usize>().prop_map(Edit::Duplicate),
    ]
}

/// Counts nodes of a kind and applies `f` to the `n mod count`-th.
fn at_node(v: &mut Value, want: &dyn Fn(&Value) -> bool, n: usize, f: &mut dyn FnMut(&mut Value)) {
    fn count(v: &Value, want: &dyn Fn(&Value) -> bool) -> usize {
        let inner: usize = match v {
            Value::Array(a) => a.iter().map(|x| count(x, want)).sum(),
            Value::Object(o) => o.values().map(|x| count(x, want)).sum(),
            _ => 0,
        };
        inner + want(v) as usize
    }
    fn visit(v: &mut Value, want: &dyn Fn(&Value) -> bool, k: &mut usize, f: &mut dyn FnMut(&mut Value)) -> bool {
        if want(v) {
            if *k == 0 {
                f(v);
                return true;
            }
            *k -= 1;
        }
        match v {
            Value::Array(a) => a.iter_mut().any(|x| visit(x, want, k, f)),
            Value::Object(o) => o.values_mut().any(|x| visit(x, want, k, f)),
            _ => false,
        }
    }
    let total = count(v, want);
    if total > 0 {
        let mut k = n % total;
        visit(v, want, &mut k, f);
    }
}

fn apply(doc: &mut Value, e: &Edit) {
    match e {
        Edit::Replace(n, new) => at_node(doc, &|_| true, *n, &mut |v| *v = new.clone()),
        Edit::Remove(n) => at_node(doc, &|v| v.as_object().is_some_and(|o| !o.is_empty()), *n, &mut |v| {
            let o = v.as_object_mut().unwrap();
            let k = o.keys().nth(*n % o.len()).unwrap().clone();
            o.remove(&k);
        }),
        Edit::Add(n, key, new) => at_node(doc, &|v| v.is_object(), *n, &mut |v| {
            v.as_object_mut().unwrap().insert(key.clone(), new.clone());
        }),
        Edit::Duplicate(n) => at_node(doc, &|v| v.as_array().is_some_and(|a| !a.is_empty()), *n, &mut |v| {
            let a = v.as_array_mut().unwrap();
            let x = a[*n % a.len()].clone();
            a.push(x);
        }),
    }
}

/// What the library says about a candidate, given the stored document.
fn oracle(candidate: &Value, stored: &Config) -> Result<Config, ()> {
    let mut c: Config = serde_json::from_value(candidate.clone()).map_err(|_| ())?;
    restore_secrets(&mut c, Some(stored)).map_err(|_| ())?;
    Tables::from_config(&c).map_err(|_| ())?;
    Ok(c)
}

#[test]
fn mutated_documents() {
    let (_dir, server, accepted) = start("fuzz-doc");
    let strategy = (proptest::collection::vec(edit(), 1..4), any::<bool>());
    let result = runner().run(&strategy, |(edits, redact)| {
        let mut server = server.borrow_mut();
        let mut doc = example();
        if redact {
            doc = common::redacted(&doc);
        }
        for e in &edits {
            apply(&mut doc, e);
        }
        let before = server.req("GET", "/v1/config", None);
        let generation = server.generation();
        let (st, body) = server.req("PUT", "/v1/config", Some(&doc));
        prop_assert!(server.running(), "the process died on {doc}");
        let expected = oracle(&doc, &accepted.borrow());
        match expected {
            Ok(c) => {
                prop_assert_eq!(st, 200, "{} refused: {}", doc, body);
                let changed = c != *accepted.borrow();
                prop_assert_eq!(&body, &json!({ "generation": generation + changed as u64, "changed": changed }));
                *accepted.borrow_mut() = c;
            }
            Err(()) => {
                prop_assert!(st == 400 || st == 422, "{} answered {}: {}", doc, st, body);
                let reason = body["error"]["reason"].as_str().unwrap_or_default();
                prop_assert!(!reason.is_empty(), "{}", body);
                prop_assert_eq!(server.req("GET", "/v1/config", None), before);
                prop_assert_eq!(server.generation(), generation);
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn random_bytes_anywhere() {
    let (_dir, server, _) = start("fuzz-bytes");
    let strategy = (
        prop_oneof![Just("GET"), Just("PUT"), Just("POST"), Just("DELETE"), Just("PATCH")],
        prop_oneof![
            Just("/v1/config"), Just("/v1/peers"), Just("/v1/peers/site-b"), Just("/v1/bundles"), Just("/v1/bundles/to-site-b"),
            Just("/v1/bundles/to-site-b/tunnels/0/weight"), Just("/v1/routes"), Just("/v1/routes/10.2.0.0%2F16"),
            Just("/v1/nat/snat"), Just("/v1/nat/dnat"), Just("/v1/nat/dnat/x"), Just("/v1/ports"), Just("/v1/status"), Just("/metrics"),
        ],
        proptest::collection::vec(any::<u8>(), 0..300),
    );
    let result = runner().run(&strategy, |(method, path, body)| {
        let mut server = server.borrow_mut();
        let generation = server.generation();
        let before = server.state_file();
        let r = server.client().request(method, path, Some(&body)).unwrap();
        prop_assert!(server.running());
        prop_assert!(r.status < 500, "{} {} answered {}: {}", method, path, r.status, r.text());
        if !r.is_success() && path != "/metrics" {
            let v = r.json().unwrap();
            prop_assert!(v["error"]["reason"].is_string(), "{}", v);
        }
        if !(r.is_success() && method != "GET") {
            prop_assert_eq!(server.generation(), generation);
            prop_assert_eq!(server.state_file(), before);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
