//! The configuration model against `docs/config.md`: the documented example
//! validates, and every documented rule refuses what it should, naming the
//! field.

use core::net::{Ipv4Addr, Ipv6Addr};

use braid_config::{
    BundleMode, Config, ConfigError, NextHop, PortRole, Tables, TunnelRef, FRAME_OVERHEAD_V4,
};
use braid_tunnel::balancer::Policy;
use braid_tunnel::crypto::AesGcmKey;
use braid_tunnel::sa::Spi;
use serde_json::{json, Value};

/// The first ```json block of docs/config.md.
fn doc_example() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/config.md");
    let doc = std::fs::read_to_string(path).expect("docs/config.md");
    let start = doc.find("```json\n").expect("a ```json block") + "```json\n".len();
    let len = doc[start..].find("```").expect("end of the json block");
    doc[start..start + len].to_string()
}

fn example_value() -> Value {
    serde_json::from_str(&doc_example()).expect("the example is JSON")
}

fn tables_of(v: Value) -> Result<Tables, ConfigError> {
    let config: Config = serde_json::from_value(v).expect("parses");
    Tables::from_config(&config)
}

/// Applies `edit` to the example and expects validation to fail on `field`
/// with a reason containing `reason`.
#[track_caller]
fn refused(edit: impl FnOnce(&mut Value), field: &str, reason: &str) {
    let mut v = example_value();
    edit(&mut v);
    let e = tables_of(v).expect_err("should be refused");
    assert_eq!(e.field(), Some(field), "error: {e}");
    let msg = e.to_string();
    assert!(msg.starts_with(&format!("{field}: ")), "error: {msg}");
    assert!(msg.contains(reason), "error {msg:?} lacks {reason:?}");
}

#[track_caller]
fn accepted(edit: impl FnOnce(&mut Value)) -> Tables {
    let mut v = example_value();
    edit(&mut v);
    tables_of(v).expect("should validate")
}

fn tunnel(v: &mut Value, b: usize, t: usize) -> &mut Value {
    &mut v["bundles"][b]["tunnels"][t]
}

fn as_array(v: &mut Value) -> &mut Vec<Value> {
    v.as_array_mut().expect("an array")
}

// ---------------------------------------------------------------------------
// The example, parsing, round trips.

#[test]
fn doc_example_parses_and_validates() {
    let config = Config::from_json_str(&doc_example()).unwrap();
    let t = Tables::from_config(&config).unwrap();

    assert_eq!(t.ports.len(), 2);
    let lan = &t.ports[0];
    assert_eq!((lan.name.as_str(), lan.role), ("lan0", PortRole::Lan));
    assert_eq!(lan.mac, [2, 0, 0, 0, 0, 1]);
    assert_eq!(lan.next_hop, NextHop::Mac([2, 0, 0, 0, 1, 1]));
    assert_eq!(
        lan.ipv6.unwrap().addr,
        "fd00:1::1".parse::<Ipv6Addr>().unwrap()
    );
    let wan = &t.ports[1];
    assert_eq!(
        (wan.role, wan.mtu, wan.device.as_str()),
        (PortRole::Wan, 1500, "0000:03:00.0")
    );
    assert_eq!(wan.ipv4.unwrap().addr, Ipv4Addr::new(192, 0, 2, 1));
    assert_eq!(wan.ipv4.unwrap().prefix_len, 24);
    assert_eq!(
        t.ports_with_role(PortRole::Wan)
            .map(|(i, _)| i)
            .collect::<Vec<_>>(),
        vec![1]
    );

    assert_eq!(t.peers.len(), 1);
    assert_eq!(t.peers[0].bundle, 0);
    let b = &t.bundles[0];
    assert_eq!(b.mode, BundleMode::Bundle);
    assert_eq!(b.policy, Policy::Weighted);
    assert_eq!(b.peer, Some(0));
    assert_eq!(b.max_frame, 1500 - FRAME_OVERHEAD_V4);
    assert_eq!(b.max_frame, 1435);
    assert_eq!(b.tunnels.len(), 4);
    let weights: Vec<u32> = b.tunnels.iter().map(|t| t.weight).collect();
    assert_eq!(weights, vec![2, 2, 1, 1]);
    let t0 = &b.tunnels[0];
    assert_eq!(t0.wan_port, 1);
    assert_eq!(t0.local, "192.0.2.1:4500".parse::<std::net::SocketAddr>().unwrap());
    assert_eq!(
        t0.remote,
        "198.51.100.1:4500".parse::<std::net::SocketAddr>().unwrap()
    );
    assert_eq!(t0.sa_out.spi, Spi(4096));
    assert_eq!(t0.sa_in.spi, Spi(8192));
    assert_eq!(t0.sa_out.salt, [0xa0, 0xa1, 0xa2, 0xa3]);
    match &t0.sa_out.key {
        AesGcmKey::Aes256(k) => assert_eq!(k[..4], [0, 1, 2, 3]),
        other => panic!("expected AES-256, got {other:?}"),
    }
    assert!(matches!(b.tunnels[2].sa_in.key, AesGcmKey::Aes128(_)));
    assert_eq!(b.tunnels[3].rate, 100_000_000 / 8);
    assert_eq!(b.tunnels[3].path_params().rate, 12_500_000);
    assert_eq!(b.tunnels[0].path_params().weight, 2);

    assert_eq!(t.routes.len(), 3);
    assert_eq!(t.routes.lookup_v4(Ipv4Addr::new(10, 2, 5, 9)), Some(0));
    assert_eq!(t.routes.lookup_v4(Ipv4Addr::new(10, 2, 9, 9)), Some(0));
    assert_eq!(t.routes.lookup_v4(Ipv4Addr::new(10, 3, 0, 1)), None);
    assert_eq!(t.routes.lookup_v6("fd00:2::7".parse().unwrap()), Some(0));
    assert_eq!(t.routes.lookup_v6("fd00:3::7".parse().unwrap()), None);

    assert_eq!(
        t.tunnel_by_spi_in(Spi(8194)),
        Some(TunnelRef {
            bundle: 0,
            tunnel: 2
        })
    );
    assert_eq!(t.tunnel_by_spi_in(Spi(4096)), None);
    let r = t
        .tunnel_by_local(1, "192.0.2.1:4503".parse().unwrap())
        .unwrap();
    assert_eq!(
        r,
        TunnelRef {
            bundle: 0,
            tunnel: 3
        }
    );
    assert_eq!(t.tunnel(r).sa_in.spi, Spi(8195));
    assert_eq!(
        t.tunnel_by_local(0, "192.0.2.1:4503".parse().unwrap()),
        None
    );
    assert_eq!(
        t.tunnel_by_local(1, "192.0.2.1:4504".parse().unwrap()),
        None
    );

    assert_eq!(t.options.replay_window, 4096);
    assert_eq!(t.options.hold.ceiling, 100_000_000);
    assert_eq!(t.options.hold.floor, 1_000_000);
    assert_eq!(t.options.liveness.interval, 100_000_000);
}

#[test]
fn defaults_fill_in() {
    let t = accepted(|v| {
        let p = v["ports"][1].as_object_mut().unwrap();
        p.remove("mtu");
        let b = v["bundles"][0].as_object_mut().unwrap();
        b.remove("mode");
        b.remove("policy");
        tunnel(v, 0, 0).as_object_mut().unwrap().remove("weight");
        v.as_object_mut().unwrap().remove("tunnel");
    });
    assert_eq!(t.ports[1].mtu, 1500);
    assert_eq!(t.bundles[0].mode, BundleMode::Bundle);
    assert_eq!(t.bundles[0].policy, Policy::Weighted);
    assert_eq!(t.bundles[0].tunnels[0].weight, 1);
    assert_eq!(t.bundles[0].tunnels[0].rate, 0);
    assert_eq!(t.options.replay_window, 4096);
    assert_eq!(t.options.hold, braid_tunnel::reorder::HoldConfig::default());
    assert_eq!(
        t.options.liveness,
        braid_tunnel::liveness::LivenessConfig::default()
    );
}

#[test]
fn other_modes_and_policies() {
    let t = accepted(|v| {
        v["bundles"][0]["mode"] = json!("plain");
        v["bundles"][0]["policy"] = json!("earliest_arrival");
    });
    assert_eq!(t.bundles[0].mode, BundleMode::Plain);
    assert_eq!(t.bundles[0].policy, Policy::EarliestArrival);
    let t = accepted(|v| v["bundles"][0]["policy"] = json!("round_robin"));
    assert_eq!(t.bundles[0].policy, Policy::RoundRobin);
}

#[test]
fn json_round_trip_keeps_everything() {
    let config = Config::from_json_str(&doc_example()).unwrap();
    let text = config.to_json_pretty();
    assert_eq!(Config::from_json_str(&text).unwrap(), config);
    // Defaults are spelled out; keys are included.
    assert!(text.contains("\"probe_interval_ms\": 100"), "{text}");
    assert!(text.contains("\"weight\": 1"), "{text}");
    assert!(text.contains("808182838485868788898a8b8c8d8e8f"), "{text}");
    assert!(!text.contains("max_frame"), "{text}");
}

#[test]
fn debug_never_shows_keys() {
    let config = Config::from_json_str(&doc_example()).unwrap();
    let tables = Tables::from_config(&config).unwrap();
    for text in [format!("{config:?}"), format!("{tables:?}")] {
        assert!(!text.contains("808182838485868788898a8b8c8d8e8f"));
        assert!(!text.contains("[128, 129"));
    }
}

#[test]
fn load_reads_a_file() {
    let path = std::env::temp_dir().join(format!("braid-config-test-{}.json", std::process::id()));
    std::fs::write(&path, doc_example()).unwrap();
    let loaded = Config::load(&path);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        loaded.unwrap(),
        Config::from_json_str(&doc_example()).unwrap()
    );

    let e = Config::load("/nonexistent/braid.json").unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }));
    assert!(e.to_string().contains("/nonexistent/braid.json"), "{e}");
}

// ---------------------------------------------------------------------------
// Parsing rules.

#[track_caller]
fn parse_refused(edit: impl FnOnce(&mut Value), reason: &str) {
    let mut v = example_value();
    edit(&mut v);
    let e = Config::from_json_str(&v.to_string()).expect_err("should not parse");
    assert!(matches!(e, ConfigError::Parse(_)));
    assert!(e.to_string().contains(reason), "error {e} lacks {reason:?}");
    assert_eq!(e.field(), None);
}

#[test]
fn unknown_fields_are_refused_everywhere() {
    parse_refused(|v| v["colour"] = json!("blue"), "unknown field `colour`");
    parse_refused(
        |v| v["ports"][0]["speed"] = json!(10),
        "unknown field `speed`",
    );
    parse_refused(|v| v["peers"][0]["x"] = json!(1), "unknown field `x`");
    parse_refused(|v| v["bundles"][0]["x"] = json!(1), "unknown field `x`");
    parse_refused(|v| tunnel(v, 0, 1)["spi"] = json!(1), "unknown field `spi`");
    parse_refused(
        |v| v["routes"][0]["via"] = json!("x"),
        "unknown field `via`",
    );
    parse_refused(
        |v| v["tunnel"]["replay"] = json!(1),
        "unknown field `replay`",
    );
}

#[test]
fn missing_fields_and_wrong_types_are_refused() {
    parse_refused(
        |v| drop(tunnel(v, 0, 0).as_object_mut().unwrap().remove("key_in")),
        "missing field `key_in`",
    );
    parse_refused(
        |v| drop(v.as_object_mut().unwrap().remove("ports")),
        "missing field `ports`",
    );
    parse_refused(|v| tunnel(v, 0, 0)["spi_in"] = json!(-1), "invalid value");
    parse_refused(|v| v["ports"][0]["mtu"] = json!("1500"), "invalid type");
    parse_refused(
        |v| v["ports"][0]["role"] = json!("dmz"),
        "unknown variant `dmz`",
    );
    parse_refused(
        |v| v["bundles"][0]["policy"] = json!("random"),
        "unknown variant `random`",
    );
    parse_refused(
        |v| v["bundles"][0]["mode"] = json!("tap"),
        "unknown variant `tap`",
    );
    assert!(matches!(
        Config::from_json_str("{"),
        Err(ConfigError::Parse(_))
    ));
}

// ---------------------------------------------------------------------------
// Ports.

#[test]
fn needs_a_lan_and_a_wan_port() {
    refused(|v| v["ports"][0]["role"] = json!("wan"), "ports", "LAN");
    refused(|v| v["ports"][1]["role"] = json!("lan"), "ports", "WAN");
    refused(|v| v["ports"] = json!([]), "ports", "LAN");
    // `n` more WAN ports, with kernel taps or not.
    fn more_wans(v: &mut Value, n: usize, taps: bool) {
        let wan = v["ports"][1].clone();
        for i in 0..n {
            let mut w = wan.clone();
            w["name"] = json!(format!("w{i}"));
            w["device"] = json!(format!("net_null{}", 10 + i));
            if taps {
                w["kernel_tap"] = json!(format!("tap{i}"));
            }
            as_array(&mut v["ports"]).push(w);
        }
    }
    refused(|v| more_wans(v, 40, false), "ports", "at most 32");
    // Each kernel tap is a DPDK port too: 18 ports and 16 taps.
    refused(|v| more_wans(v, 16, true), "ports", "at most 32");
    refused(
        |v| {
            let mut lan2 = v["ports"][0].clone();
            lan2["name"] = json!("lan1");
            lan2["device"] = json!("net_null9");
            as_array(&mut v["ports"]).push(lan2);
        },
        "ports",
        "one LAN port per gateway",
    );
}

#[test]
fn port_names_are_unique_and_non_empty() {
    refused(
        |v| v["ports"][1]["name"] = json!("lan0"),
        "ports[1].name",
        "duplicate name \"lan0\" (also ports[0])",
    );
    refused(
        |v| v["ports"][0]["name"] = json!(""),
        "ports[0].name",
        "empty",
    );
}

#[test]
fn names_are_short_and_plain() {
    let longest = "n".repeat(braid_config::tables::MAX_NAME_LEN);
    let t = accepted(|v| {
        v["bundles"][0]["name"] = json!(longest.clone());
        v["peers"][0]["bundle"] = json!(longest.clone());
        v["ports"][0]["name"] = json!(longest.clone());
    });
    assert_eq!((t.bundles[0].name.as_str(), t.ports[0].name.as_str()), (longest.as_str(), longest.as_str()));
    refused(|v| v["bundles"][0]["name"] = json!(format!("{longest}n")), "bundles[0].name", "at most 32");
    refused(|v| v["ports"][0]["name"] = json!(format!("{longest}n")), "ports[0].name", "at most 32");
    refused(|v| v["peers"][0]["name"] = json!("a/b"), "peers[0].name", "'/'");
    refused(|v| v["bundles"][0]["name"] = json!("a\u{0}b"), "bundles[0].name", "control characters");
    refused(|v| v["ports"][0]["name"] = json!("lan\n"), "ports[0].name", "control characters");
}

#[test]
fn port_devices_are_unique_and_non_empty() {
    refused(
        |v| v["ports"][1]["device"] = json!("net_memif0"),
        "ports[1].device",
        "already ports[0]",
    );
    refused(
        |v| v["ports"][1]["device"] = json!(""),
        "ports[1].device",
        "empty",
    );
}

#[test]
fn port_macs_are_unicast_macs() {
    refused(
        |v| v["ports"][0]["mac"] = json!("02:00:00:00:01"),
        "ports[0].mac",
        "not a MAC",
    );
    refused(
        |v| v["ports"][0]["mac"] = json!("02-00-00-00-00-01"),
        "ports[0].mac",
        "not a MAC",
    );
    refused(
        |v| v["ports"][0]["mac"] = json!("01:00:5e:00:00:01"),
        "ports[0].mac",
        "multicast",
    );
    refused(
        |v| v["ports"][0]["mac"] = json!("00:00:00:00:00:00"),
        "ports[0].mac",
        "all-zero",
    );
    refused(
        |v| v["ports"][1]["next_hop_mac"] = json!("ff:ff:ff:ff:ff:ff"),
        "ports[1].next_hop_mac",
        "broadcast",
    );
    refused(
        |v| v["ports"][1]["next_hop_mac"] = json!("gg:00:00:00:00:01"),
        "ports[1].next_hop_mac",
        "not a MAC",
    );
}

/// A WAN port's next hop by address (ARP / ND), instead of a MAC.
#[test]
fn wan_next_hop_by_address() {
    let wan_by_ip = |ip: &'static str| {
        move |v: &mut Value| {
            let p = v["ports"][1].as_object_mut().unwrap();
            p.remove("next_hop_mac");
            p.insert("next_hop".into(), json!(ip));
        }
    };
    let t = accepted(wan_by_ip("192.0.2.254"));
    assert_eq!(t.ports[1].next_hop, NextHop::Ip("192.0.2.254".parse().unwrap()));
    assert_eq!(t.ports[0].next_hop, NextHop::Mac([2, 0, 0, 0, 1, 1]));
    // IPv6, with an ipv6 address on the port.
    let t = accepted(|v| {
        wan_by_ip("2001:db8:2::fe")(v);
        v["ports"][1]["ipv6"] = json!("2001:db8:2::1/64");
    });
    assert_eq!(t.ports[1].next_hop, NextHop::Ip("2001:db8:2::fe".parse().unwrap()));
    // A link-local router (as IPv6 routers advertise themselves): on the
    // link whatever the port's prefix; it needs an IPv6 address on the
    // port all the same (braid speaks IPv6 there from its link-local one).
    let t = accepted(|v| {
        wan_by_ip("fe80::1")(v);
        v["ports"][1]["ipv6"] = json!("2001:db8:2::1/64");
    });
    assert_eq!(t.ports[1].next_hop, NextHop::Ip("fe80::1".parse().unwrap()));
    refused(wan_by_ip("fe80::1"), "ports[1].next_hop", "no ipv6 address");
    // Its own link-local address (that of the port's MAC) is no next hop.
    let own = braid_config::link_local(t.ports[1].mac).to_string();
    refused(
        move |v| {
            v["ports"][1]["ipv6"] = json!("2001:db8:2::1/64");
            let p = v["ports"][1].as_object_mut().unwrap();
            p.remove("next_hop_mac");
            p.insert("next_hop".into(), json!(own));
        },
        "ports[1].next_hop",
        "own address",
    );
    // The document round-trips without a next_hop_mac.
    let mut v = example_value();
    wan_by_ip("192.0.2.254")(&mut v);
    let c = Config::from_json_str(&v.to_string()).unwrap();
    let again: Value = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert!(again["ports"][1].get("next_hop_mac").is_none());
    assert_eq!(again["ports"][1]["next_hop"], json!("192.0.2.254"));

    refused(wan_by_ip("198.51.100.1"), "ports[1].next_hop", "outside the port's subnet");
    refused(wan_by_ip("192.0.2.1"), "ports[1].next_hop", "own address");
    refused(wan_by_ip("224.0.0.1"), "ports[1].next_hop", "not a unicast");
    refused(wan_by_ip("192.0.2.300"), "ports[1].next_hop", "not an IP address");
    refused(wan_by_ip("2001:db8:2::fe"), "ports[1].next_hop", "no ipv6 address");
    refused(
        |v| {
            wan_by_ip("2001:db8:3::fe")(v);
            v["ports"][1]["ipv6"] = json!("2001:db8:2::1/64");
        },
        "ports[1].next_hop",
        "outside the port's subnet",
    );
    refused(
        |v| v["ports"][1]["next_hop"] = json!("192.0.2.254"),
        "ports[1].next_hop",
        "not both",
    );
    refused(
        |v| {
            v["ports"][1].as_object_mut().unwrap().remove("next_hop_mac");
        },
        "ports[1].next_hop_mac",
        "needs next_hop_mac or next_hop",
    );
    // A LAN port without a static neighbour resolves its hosts (it needs
    // an address to ask from), through a router for the rest if given.
    refused(
        |v| {
            let p = v["ports"][0].as_object_mut().unwrap();
            p.remove("next_hop_mac");
            p.remove("ipv4");
            p.remove("ipv6");
        },
        "ports[0].next_hop_mac",
        "an ipv4/ipv6 address to resolve its hosts from",
    );
    let t = accepted(|v| {
        let p = v["ports"][0].as_object_mut().unwrap();
        p.remove("next_hop_mac");
        p.insert("ipv4".into(), json!("10.1.0.1/24"));
    });
    assert_eq!(t.ports[0].next_hop, NextHop::OnLink);
    let t = accepted(|v| {
        let p = v["ports"][0].as_object_mut().unwrap();
        p.remove("next_hop_mac");
        p.insert("ipv4".into(), json!("10.1.0.1/24"));
        p.insert("next_hop".into(), json!("10.1.0.254"));
    });
    assert_eq!(t.ports[0].next_hop, NextHop::Ip("10.1.0.254".parse().unwrap()));
    refused(
        |v| {
            let p = v["ports"][0].as_object_mut().unwrap();
            p.insert("ipv4".into(), json!("10.1.0.1/24"));
            p.insert("next_hop".into(), json!("10.1.0.254"));
        },
        "ports[0].next_hop",
        "not both",
    );
}

#[test]
fn port_addresses_parse_and_match_their_family() {
    refused(
        |v| v["ports"][0]["ipv4"] = json!("10.1.0.1"),
        "ports[0].ipv4",
        "address/length",
    );
    refused(
        |v| v["ports"][0]["ipv4"] = json!("10.1.0.300/16"),
        "ports[0].ipv4",
        "not an IPv4 or IPv6 address",
    );
    refused(
        |v| v["ports"][0]["ipv4"] = json!("10.1.0.1/33"),
        "ports[0].ipv4",
        "longer than 32",
    );
    refused(
        |v| v["ports"][0]["ipv4"] = json!("fd00::1/64"),
        "ports[0].ipv4",
        "not an IPv4 address",
    );
    refused(
        |v| v["ports"][0]["ipv4"] = json!("224.0.0.1/4"),
        "ports[0].ipv4",
        "not a unicast",
    );
    // Addresses a router never sends from: its ICMP errors would be
    // dropped as martians (or as link-scope).
    for bad in ["127.0.0.1/8", "0.1.2.3/8"] {
        refused(|v| v["ports"][0]["ipv4"] = json!(bad), "ports[0].ipv4", "not an address a router sends from");
    }
    for bad in ["::1/128", "fe80::5/64"] {
        refused(|v| v["ports"][0]["ipv6"] = json!(bad), "ports[0].ipv6", "a global or unique local address");
    }
    refused(
        |v| v["ports"][0]["ipv6"] = json!("10.1.0.1/16"),
        "ports[0].ipv6",
        "not an IPv6 address",
    );
    refused(
        |v| v["ports"][0]["ipv6"] = json!("fd00::1/129"),
        "ports[0].ipv6",
        "longer than 128",
    );
    refused(
        |v| v["ports"][0]["ipv6"] = json!("::/0"),
        "ports[0].ipv6",
        "not a unicast",
    );
    // An interface address keeps its host bits.
    let t = accepted(|v| v["ports"][0]["ipv4"] = json!("10.1.2.3/16"));
    assert_eq!(t.ports[0].ipv4.unwrap().addr, Ipv4Addr::new(10, 1, 2, 3));
    let t = accepted(|v| drop(v["ports"][0].as_object_mut().unwrap().remove("ipv4")));
    assert_eq!(t.ports[0].ipv4, None);
}

#[test]
fn port_mtu_is_in_range() {
    refused(
        |v| v["ports"][0]["mtu"] = json!(575),
        "ports[0].mtu",
        "576..=9600",
    );
    refused(
        |v| v["ports"][1]["mtu"] = json!(9601),
        "ports[1].mtu",
        "576..=9600",
    );
    refused(
        |v| v["ports"][1]["mtu"] = json!(0),
        "ports[1].mtu",
        "576..=9600",
    );
    let t = accepted(|v| v["ports"][1]["mtu"] = json!(9600));
    assert_eq!(t.bundles[0].max_frame, 9600 - 65);
    let t = accepted(|v| v["ports"][1]["mtu"] = json!(576));
    assert_eq!(t.bundles[0].max_frame, 576 - 65);
    // An IPv6 link carries 1280 bytes (RFC 8200 section 5).
    refused(
        |v| {
            v["ports"][0]["ipv6"] = json!("fd00:1::fe/64");
            v["ports"][0]["mtu"] = json!(1279);
        },
        "ports[0].mtu",
        "at least 1280",
    );
    accepted(|v| {
        v["ports"][0]["ipv6"] = json!("fd00:1::fe/64");
        v["ports"][0]["mtu"] = json!(1280);
    });
}

#[test]
fn kernel_taps_are_interface_names_used_once() {
    let t = accepted(|v| {
        v["ports"][0]["kernel_tap"] = json!("braid-lan");
        v["ports"][1]["kernel_tap"] = json!("braid.wan_0");
    });
    assert_eq!(t.ports[0].kernel_tap.as_deref(), Some("braid-lan"));
    assert_eq!(t.ports[1].kernel_tap.as_deref(), Some("braid.wan_0"));
    assert_eq!(accepted(|_| {}).ports[0].kernel_tap, None);
    refused(|v| v["ports"][0]["kernel_tap"] = json!(""), "ports[0].kernel_tap", "1 to 15 characters");
    refused(|v| v["ports"][0]["kernel_tap"] = json!("a-very-long-name"), "ports[0].kernel_tap", "1 to 15 characters");
    refused(|v| v["ports"][0]["kernel_tap"] = json!("tap 0"), "ports[0].kernel_tap", "letters, digits");
    refused(|v| v["ports"][0]["kernel_tap"] = json!("tap/0"), "ports[0].kernel_tap", "letters, digits");
    refused(|v| v["ports"][0]["kernel_tap"] = json!(".."), "ports[0].kernel_tap", "letters, digits");
    refused(
        |v| {
            v["ports"][0]["kernel_tap"] = json!("braid0");
            v["ports"][1]["kernel_tap"] = json!("braid0");
        },
        "ports[1].kernel_tap",
        "already ports[0]",
    );
}

// ---------------------------------------------------------------------------
// Peers and bundles.

#[test]
fn peer_names_are_unique_and_non_empty() {
    refused(
        |v| as_array(&mut v["peers"]).push(json!({ "name": "site-b", "bundle": "to-site-b" })),
        "peers[1].name",
        "duplicate name \"site-b\"",
    );
    refused(
        |v| v["peers"][0]["name"] = json!(""),
        "peers[0].name",
        "empty",
    );
}

#[test]
fn peer_bundle_exists() {
    refused(
        |v| v["peers"][0]["bundle"] = json!("to-site-c"),
        "peers[0].bundle",
        "no bundle named \"to-site-c\"",
    );
}

#[test]
fn a_bundle_serves_one_peer() {
    refused(
        |v| as_array(&mut v["peers"]).push(json!({ "name": "site-c", "bundle": "to-site-b" })),
        "peers[1].bundle",
        "already used by peers[0]",
    );
}

/// A second bundle, used by no peer, with one tunnel on local port 4600.
fn add_spare_bundle(v: &mut Value) {
    let mut t = tunnel(v, 0, 0).clone();
    t["local"] = json!("192.0.2.1:4600");
    t["spi_out"] = json!(5000);
    t["spi_in"] = json!(9000);
    // Its own nonces: a key and salt pair is never used twice.
    t["salt_out"] = json!("e0e1e2e3");
    t["salt_in"] = json!("f0f1f2f3");
    as_array(&mut v["bundles"]).push(json!({ "name": "spare", "tunnels": [t] }));
}

#[test]
fn a_key_and_salt_pair_is_used_once() {
    // Copied onto another tunnel, or used for both directions: each
    // tunnel numbers its packets from 1, so the GCM nonces would repeat.
    let copy = |v: &mut Value| {
        let (k, s) = (tunnel(v, 0, 0)["key_out"].clone(), tunnel(v, 0, 0)["salt_out"].clone());
        tunnel(v, 0, 2)["key_out"] = k;
        tunnel(v, 0, 2)["salt_out"] = s;
    };
    refused(copy, "bundles[0].tunnels[2].salt_out", "are the same as bundles[0].tunnels[0].key_out and salt_out");
    refused(
        |v| {
            let (k, s) = (tunnel(v, 0, 1)["key_out"].clone(), tunnel(v, 0, 1)["salt_out"].clone());
            tunnel(v, 0, 1)["key_in"] = k;
            tunnel(v, 0, 1)["salt_in"] = s;
        },
        "bundles[0].tunnels[1].salt_in",
        "bundles[0].tunnels[1].key_in and salt_in are the same as bundles[0].tunnels[1].key_out and salt_out",
    );
    // Written another way, the same bytes.
    refused(
        |v| {
            let (k, s) = (tunnel(v, 0, 0)["key_in"].as_str().unwrap().to_uppercase(), tunnel(v, 0, 0)["salt_in"].clone());
            add_spare_bundle(v);
            tunnel(v, 1, 0)["key_in"] = json!(format!("0x{k}"));
            tunnel(v, 1, 0)["salt_in"] = s;
        },
        "bundles[1].tunnels[0].salt_in",
        "the same as bundles[0].tunnels[0].key_in and salt_in",
    );
    // The same key with another salt: other nonces, fine.
    accepted(|v| {
        let k = tunnel(v, 0, 0)["key_out"].clone();
        tunnel(v, 0, 1)["key_out"] = k;
    });
}

#[test]
fn bundle_names_are_unique_and_non_empty() {
    refused(
        |v| {
            add_spare_bundle(v);
            v["bundles"][1]["name"] = json!("to-site-b");
        },
        "bundles[1].name",
        "duplicate name \"to-site-b\" (also bundles[0])",
    );
    refused(
        |v| v["bundles"][0]["name"] = json!(""),
        "bundles[0].name",
        "empty",
    );
    let t = accepted(add_spare_bundle);
    assert_eq!(t.bundles[1].peer, None);
}

#[test]
fn a_bundle_has_tunnels() {
    refused(
        |v| v["bundles"][0]["tunnels"] = json!([]),
        "bundles[0].tunnels",
        "at least one tunnel",
    );
}

#[test]
fn keepalive_defaults_to_20_s_and_is_bounded() {
    let t = accepted(|_| {});
    assert_eq!(t.bundles[0].keepalive_secs, 20);
    let t = accepted(|v| v["bundles"][0]["keepalive_secs"] = json!(0));
    assert_eq!(t.bundles[0].keepalive_secs, 0, "0 turns keepalives off");
    let t = accepted(|v| v["bundles"][0]["keepalive_secs"] = json!(3600));
    assert_eq!(t.bundles[0].keepalive_secs, 3600);
    refused(
        |v| v["bundles"][0]["keepalive_secs"] = json!(3601),
        "bundles[0].keepalive_secs",
        "maximum of 3600",
    );
    let mut v = example_value();
    v["bundles"][0]["keepalive_secs"] = json!(-1);
    assert!(serde_json::from_value::<Config>(v).is_err(), "negative");
}

#[test]
fn outer_fragmentation_is_off_by_default_and_for_plain_mode_only() {
    let t = accepted(|_| {});
    assert!(!t.bundles[0].outer_fragmentation);
    let t = accepted(|v| {
        v["bundles"][0]["mode"] = json!("plain");
        v["bundles"][0]["outer_fragmentation"] = json!(true);
    });
    assert!(t.bundles[0].outer_fragmentation);
    refused(
        |v| {
            v["bundles"][0]["mode"] = json!("bundle");
            v["bundles"][0]["outer_fragmentation"] = json!(true);
        },
        "bundles[0].outer_fragmentation",
        "plain mode only",
    );
    // Off is not written back (documents stay as they were).
    let c: Config = serde_json::from_value(example_value()).unwrap();
    assert!(!serde_json::to_string(&c).unwrap().contains("outer_fragmentation"));
}

#[test]
fn max_frame_fits_the_smallest_mtu() {
    refused(
        |v| v["bundles"][0]["max_frame"] = json!(255),
        "bundles[0].max_frame",
        "minimum of 256",
    );
    refused(
        |v| v["bundles"][0]["max_frame"] = json!(1436),
        "bundles[0].max_frame",
        "1500 - 65",
    );
    let t = accepted(|v| v["bundles"][0]["max_frame"] = json!(1435));
    assert_eq!(t.bundles[0].max_frame, 1435);
    let t = accepted(|v| v["bundles"][0]["max_frame"] = json!(256));
    assert_eq!(t.bundles[0].max_frame, 256);

    // The smallest MTU among the bundle's WAN ports bounds it.
    let second_wan = |v: &mut Value| {
        let mut p = v["ports"][1].clone();
        p["name"] = json!("wan1");
        p["device"] = json!("0000:04:00.0");
        p["ipv4"] = json!("203.0.113.1/24");
        p["mtu"] = json!(1400);
        as_array(&mut v["ports"]).push(p);
        tunnel(v, 0, 3)["wan_port"] = json!("wan1");
        tunnel(v, 0, 3)["local"] = json!("203.0.113.1:4500");
    };
    let t = accepted(second_wan);
    assert_eq!(t.bundles[0].max_frame, 1400 - 65);
    assert_eq!(t.bundles[0].tunnels[3].wan_port, 2);
    refused(
        |v| {
            second_wan(v);
            v["bundles"][0]["max_frame"] = json!(1400);
        },
        "bundles[0].max_frame",
        "1400 - 65",
    );
}

// ---------------------------------------------------------------------------
// Tunnels.

#[test]
fn tunnel_wan_port_exists_is_wan_and_has_ipv4() {
    refused(
        |v| tunnel(v, 0, 2)["wan_port"] = json!("wan9"),
        "bundles[0].tunnels[2].wan_port",
        "no port named \"wan9\"",
    );
    refused(
        |v| tunnel(v, 0, 2)["wan_port"] = json!("lan0"),
        "bundles[0].tunnels[2].wan_port",
        "expected wan",
    );
    refused(
        |v| drop(v["ports"][1].as_object_mut().unwrap().remove("ipv4")),
        "bundles[0].tunnels[0].wan_port",
        "no ipv4 address",
    );
}

#[test]
fn tunnel_local_is_the_ports_ipv4_socket() {
    refused(
        |v| tunnel(v, 0, 1)["local"] = json!("192.0.2.1"),
        "bundles[0].tunnels[1].local",
        "not a socket address",
    );
    refused(
        |v| tunnel(v, 0, 1)["local"] = json!("[2001:db8::1]:4500"),
        "bundles[0].tunnels[1].wan_port",
        "port \"wan0\" has no ipv6 address to send from",
    );
    refused(
        |v| tunnel(v, 0, 1)["local"] = json!("192.0.2.9:4501"),
        "bundles[0].tunnels[1].local",
        "not the ipv4 address of port \"wan0\" (192.0.2.1)",
    );
    refused(
        |v| tunnel(v, 0, 1)["local"] = json!("192.0.2.1:0"),
        "bundles[0].tunnels[1].local",
        "port 0",
    );
}

#[test]
fn tunnel_remote_is_a_unicast_ipv4_socket() {
    refused(
        |v| tunnel(v, 0, 3)["remote"] = json!("peer:4500"),
        "bundles[0].tunnels[3].remote",
        "not a socket address",
    );
    refused(
        |v| tunnel(v, 0, 3)["remote"] = json!("[2001:db8::2]:4500"),
        "bundles[0].tunnels[3].remote",
        "not the same IP version",
    );
    refused(
        |v| tunnel(v, 0, 3)["remote"] = json!("198.51.100.1:0"),
        "bundles[0].tunnels[3].remote",
        "port 0",
    );
    refused(
        |v| tunnel(v, 0, 3)["remote"] = json!("239.1.1.1:4500"),
        "bundles[0].tunnels[3].remote",
        "not a unicast",
    );
    refused(
        |v| tunnel(v, 0, 3)["remote"] = json!("255.255.255.255:4500"),
        "bundles[0].tunnels[3].remote",
        "not a unicast",
    );
    refused(
        |v| tunnel(v, 0, 3)["remote"] = json!("0.0.0.0:4500"),
        "bundles[0].tunnels[3].remote",
        "not a unicast",
    );
}

/// The example's WAN port with an IPv6 address too, and its tunnel `t`
/// over IPv6.
fn v6_tunnel(v: &mut Value, t: usize) {
    v["ports"][1]["ipv6"] = json!("2001:db8:a::1/64");
    tunnel(v, 0, t)["local"] = json!(format!("[2001:db8:a::1]:{}", 4500 + t));
    tunnel(v, 0, t)["remote"] = json!(format!("[2001:db8:b::1]:{}", 4500 + t));
}

#[test]
fn tunnels_over_ipv6() {
    // One tunnel over IPv6 next to IPv4 ones: the bundle's frames fit the
    // IPv6 tunnel's 20 more bytes of headers.
    let t = accepted(|v| v6_tunnel(v, 1));
    let b = &t.bundles[0];
    assert_eq!(b.tunnels[1].local, "[2001:db8:a::1]:4501".parse().unwrap());
    assert_eq!(b.tunnels[1].remote, "[2001:db8:b::1]:4501".parse().unwrap());
    assert_eq!(b.max_frame, 1500 - braid_config::FRAME_OVERHEAD_V6);
    assert_eq!(braid_config::FRAME_OVERHEAD_V6, FRAME_OVERHEAD_V4 + 20);
    assert_eq!(t.tunnel_by_local(1, "[2001:db8:a::1]:4501".parse().unwrap()), Some(TunnelRef { bundle: 0, tunnel: 1 }));
    refused(
        |v| {
            v6_tunnel(v, 1);
            tunnel(v, 0, 1)["remote"] = json!("198.51.100.1:4501");
        },
        "bundles[0].tunnels[1].remote",
        "not the same IP version",
    );
    refused(
        |v| {
            v6_tunnel(v, 1);
            tunnel(v, 0, 1)["local"] = json!("[2001:db8:a::9]:4501");
        },
        "bundles[0].tunnels[1].local",
        "not the ipv6 address of port \"wan0\" (2001:db8:a::1)",
    );
    refused(
        |v| {
            v6_tunnel(v, 1);
            tunnel(v, 0, 1)["remote"] = json!("[fe80::1]:4501");
        },
        "bundles[0].tunnels[1].remote",
        "not a unicast address",
    );
    refused(
        |v| {
            v6_tunnel(v, 1);
            tunnel(v, 0, 1)["local"] = json!("[2001:db8:a::1%1]:4501");
        },
        "bundles[0].tunnels[1].local",
        "no scope id",
    );
    refused(
        |v| {
            v6_tunnel(v, 1);
            v["ports"][1]["mtu"] = json!(1200);
        },
        "ports[1].mtu",
        "at least 1280",
    );
    // Outer fragmentation over IPv6 too (Fragment headers).
    let t = accepted(|v| {
        v6_tunnel(v, 1);
        v["bundles"][0]["mode"] = json!("plain");
        v["bundles"][0]["outer_fragmentation"] = json!(true);
    });
    assert!(t.bundles[0].outer_fragmentation);
    // The next hop given by an IPv4 address (found by ARP) takes the IPv6
    // tunnel's packets too: it is only a MAC to send to.
    accepted(|v| {
        v6_tunnel(v, 1);
        let p = v["ports"][1].as_object_mut().unwrap();
        p.remove("next_hop_mac");
        p.insert("next_hop".into(), json!("192.0.2.254"));
    });
}

#[test]
fn local_sockets_are_unique_per_wan_port() {
    refused(
        |v| tunnel(v, 0, 3)["local"] = json!("192.0.2.1:4501"),
        "bundles[0].tunnels[3].local",
        "already the local address of bundles[0].tunnels[1]",
    );
    refused(
        |v| {
            add_spare_bundle(v);
            tunnel(v, 1, 0)["local"] = json!("192.0.2.1:4502");
        },
        "bundles[1].tunnels[0].local",
        "bundles[0].tunnels[2]",
    );
}

#[test]
fn spis_are_not_zero_or_reserved() {
    refused(
        |v| tunnel(v, 0, 0)["spi_in"] = json!(0),
        "bundles[0].tunnels[0].spi_in",
        "SPI 0",
    );
    refused(
        |v| tunnel(v, 0, 0)["spi_out"] = json!(0),
        "bundles[0].tunnels[0].spi_out",
        "SPI 0",
    );
    refused(
        |v| tunnel(v, 0, 1)["spi_out"] = json!(1),
        "bundles[0].tunnels[1].spi_out",
        "reserved",
    );
    refused(
        |v| tunnel(v, 0, 1)["spi_in"] = json!(255),
        "bundles[0].tunnels[1].spi_in",
        "reserved",
    );
    let t = accepted(|v| tunnel(v, 0, 1)["spi_in"] = json!(256));
    assert_eq!(t.bundles[0].tunnels[1].sa_in.spi, Spi(256));
    let t = accepted(|v| tunnel(v, 0, 1)["spi_in"] = json!(u32::MAX));
    assert_eq!(
        t.tunnel_by_spi_in(Spi(u32::MAX)),
        Some(TunnelRef {
            bundle: 0,
            tunnel: 1
        })
    );
}

#[test]
fn spi_in_is_unique_across_all_tunnels() {
    refused(
        |v| tunnel(v, 0, 3)["spi_in"] = json!(8192),
        "bundles[0].tunnels[3].spi_in",
        "SPI 8192 is already the spi_in of bundles[0].tunnels[0]",
    );
    refused(
        |v| {
            add_spare_bundle(v);
            tunnel(v, 1, 0)["spi_in"] = json!(8193);
        },
        "bundles[1].tunnels[0].spi_in",
        "bundles[0].tunnels[1]",
    );
}

#[test]
fn spi_out_is_unique_within_a_bundle() {
    refused(
        |v| tunnel(v, 0, 2)["spi_out"] = json!(4096),
        "bundles[0].tunnels[2].spi_out",
        "already the spi_out of bundles[0].tunnels[0]",
    );
    // Another bundle goes to another peer, whose SPI space is its own.
    accepted(|v| {
        add_spare_bundle(v);
        tunnel(v, 1, 0)["spi_out"] = json!(4096);
    });
    // spi_in and spi_out are separate spaces.
    accepted(|v| tunnel(v, 0, 0)["spi_out"] = json!(8192));
}

#[test]
fn keys_are_16_or_32_bytes_of_hex() {
    refused(
        |v| tunnel(v, 0, 2)["key_in"] = json!("11".repeat(15)),
        "bundles[0].tunnels[2].key_in",
        "expected 16 or 32 bytes of hex, got 15",
    );
    refused(
        |v| tunnel(v, 0, 2)["key_out"] = json!("11".repeat(24)),
        "bundles[0].tunnels[2].key_out",
        "got 24",
    );
    refused(
        |v| tunnel(v, 0, 0)["key_out"] = json!(format!("{}1", "11".repeat(16))),
        "bundles[0].tunnels[0].key_out",
        "odd number",
    );
    refused(
        |v| tunnel(v, 0, 0)["key_in"] = json!(format!("x{}", "1".repeat(31))),
        "bundles[0].tunnels[0].key_in",
        "not a hex digit",
    );
    let t = accepted(|v| tunnel(v, 0, 0)["key_in"] = json!(format!("0x{}", "AB".repeat(16))));
    assert!(matches!(t.bundles[0].tunnels[0].sa_in.key, AesGcmKey::Aes128(k) if k == [0xab; 16]));
}

#[test]
fn salts_are_4_bytes_of_hex() {
    refused(
        |v| tunnel(v, 0, 1)["salt_in"] = json!("0102"),
        "bundles[0].tunnels[1].salt_in",
        "expected 4 bytes of hex, got 2",
    );
    refused(
        |v| tunnel(v, 0, 1)["salt_out"] = json!("0102030405"),
        "bundles[0].tunnels[1].salt_out",
        "got 5",
    );
    refused(
        |v| tunnel(v, 0, 1)["salt_out"] = json!("0102030z"),
        "bundles[0].tunnels[1].salt_out",
        "not a hex digit",
    );
}

#[test]
fn weight_is_at_least_one() {
    refused(
        |v| tunnel(v, 0, 3)["weight"] = json!(0),
        "bundles[0].tunnels[3].weight",
        "at least 1",
    );
}

#[test]
fn rate_fits() {
    refused(
        |v| tunnel(v, 0, 3)["rate_mbps"] = json!(u64::MAX),
        "bundles[0].tunnels[3].rate_mbps",
        "too large",
    );
}

// ---------------------------------------------------------------------------
// Routes.

#[test]
fn route_prefixes_parse_without_host_bits() {
    refused(
        |v| v["routes"][0]["prefix"] = json!("10.2.0.0"),
        "routes[0].prefix",
        "address/length",
    );
    refused(
        |v| v["routes"][0]["prefix"] = json!("10.2.0.0/33"),
        "routes[0].prefix",
        "longer than 32",
    );
    refused(
        |v| v["routes"][0]["prefix"] = json!("10.2.3.0/16"),
        "routes[0].prefix",
        "host bits set: 10.2.3.0/16 (did you mean 10.2.0.0/16?)",
    );
    refused(
        |v| v["routes"][2]["prefix"] = json!("fd00:2::1/64"),
        "routes[2].prefix",
        "host bits set",
    );
    refused(
        |v| v["routes"][2]["prefix"] = json!("fd00:2::/129"),
        "routes[2].prefix",
        "longer than 128",
    );
    refused(
        |v| v["routes"][2]["prefix"] = json!("site-b/8"),
        "routes[2].prefix",
        "not an IPv4 or IPv6 address",
    );
}

#[test]
fn route_prefixes_are_unique_but_may_overlap() {
    refused(
        |v| as_array(&mut v["routes"]).push(json!({ "prefix": "10.2.0.0/16", "peer": "site-b" })),
        "routes[3].prefix",
        "10.2.0.0/16 is already routed by routes[0]",
    );
    refused(
        |v| as_array(&mut v["routes"]).push(json!({ "prefix": "fd00:2::/64", "peer": "site-b" })),
        "routes[3].prefix",
        "already routed by routes[2]",
    );
    let t = accepted(|v| {
        let routes = as_array(&mut v["routes"]);
        routes.push(json!({ "prefix": "0.0.0.0/0", "peer": "site-b" }));
        routes.push(json!({ "prefix": "10.2.5.7/32", "peer": "site-b" }));
        routes.push(json!({ "prefix": "::/0", "peer": "site-b" }));
        routes.push(json!({ "prefix": "fd00:2::1/128", "peer": "site-b" }));
    });
    assert_eq!(t.routes.len(), 7);
    assert_eq!(t.routes.lookup_v4(Ipv4Addr::new(8, 8, 8, 8)), Some(0));
    assert_eq!(t.routes.lookup_v6("2001:db8::1".parse().unwrap()), Some(0));
}

#[test]
fn route_peer_exists() {
    refused(
        |v| v["routes"][1]["peer"] = json!("site-c"),
        "routes[1].peer",
        "no peer named \"site-c\"",
    );
}

#[test]
fn routes_resolve_to_peer_indices() {
    let t = accepted(|v| {
        add_spare_bundle(v);
        as_array(&mut v["peers"]).push(json!({ "name": "site-c", "bundle": "spare" }));
        as_array(&mut v["routes"]).push(json!({ "prefix": "10.3.0.0/16", "peer": "site-c" }));
        as_array(&mut v["routes"]).push(json!({ "prefix": "10.2.5.128/25", "peer": "site-c" }));
    });
    assert_eq!(t.peers[1].bundle, 1);
    assert_eq!(t.bundles[1].peer, Some(1));
    assert_eq!(t.routes.lookup_v4(Ipv4Addr::new(10, 3, 1, 1)), Some(1));
    assert_eq!(t.routes.lookup_v4(Ipv4Addr::new(10, 2, 5, 200)), Some(1));
    assert_eq!(t.routes.lookup_v4(Ipv4Addr::new(10, 2, 5, 100)), Some(0));
    assert_eq!(t.routes.lookup(&[10, 3, 0, 0]), Some(1));
}

// ---------------------------------------------------------------------------
// Tunnel options.

#[test]
fn replay_window_is_a_power_of_two_in_range() {
    refused(
        |v| v["tunnel"]["replay_window"] = json!(4000),
        "tunnel.replay_window",
        "power of two",
    );
    refused(
        |v| v["tunnel"]["replay_window"] = json!(32),
        "tunnel.replay_window",
        "64..=1048576",
    );
    refused(
        |v| v["tunnel"]["replay_window"] = json!(1 << 21),
        "tunnel.replay_window",
        "power of two",
    );
    refused(
        |v| v["tunnel"]["replay_window"] = json!(0),
        "tunnel.replay_window",
        "power of two",
    );
    let t = accepted(|v| v["tunnel"]["replay_window"] = json!(1 << 20));
    assert_eq!(t.options.replay_window, 1 << 20);
}

#[test]
fn reorder_hold_bounds() {
    refused(
        |v| v["tunnel"]["reorder_hold_max_ms"] = json!(10_001),
        "tunnel.reorder_hold_max_ms",
        "above 10000",
    );
    refused(
        |v| {
            v["tunnel"]["reorder_hold_max_ms"] = json!(5);
            v["tunnel"]["reorder_hold_min_ms"] = json!(6);
        },
        "tunnel.reorder_hold_min_ms",
        "above reorder_hold_max_ms (5)",
    );
    refused(
        |v| v["tunnel"]["reorder_hold_margin_ms"] = json!(10_001),
        "tunnel.reorder_hold_margin_ms",
        "above 10000",
    );
    let t = accepted(|v| {
        v["tunnel"]["reorder_hold_max_ms"] = json!(0);
        v["tunnel"]["reorder_hold_min_ms"] = json!(0);
    });
    assert_eq!(t.options.hold.ceiling, 0);
}

#[test]
fn probe_options() {
    refused(
        |v| v["tunnel"]["probe_interval_ms"] = json!(0),
        "tunnel.probe_interval_ms",
        "1..=60000",
    );
    refused(
        |v| v["tunnel"]["probe_interval_ms"] = json!(60_001),
        "tunnel.probe_interval_ms",
        "1..=60000",
    );
    refused(
        |v| v["tunnel"]["probe_dead_after"] = json!(0),
        "tunnel.probe_dead_after",
        "at least 1",
    );
    refused(
        |v| v["tunnel"]["probe_alive_after"] = json!(0),
        "tunnel.probe_alive_after",
        "at least 1",
    );
    let t = accepted(|v| {
        v["tunnel"]["probe_interval_ms"] = json!(50);
        v["tunnel"]["probe_dead_after"] = json!(5);
    });
    assert_eq!(t.options.liveness.interval, 50_000_000);
    assert_eq!(t.options.liveness.dead_after, 5);
}

// ---------------------------------------------------------------------------
// NAT.

/// The ```json block of the `nat` section of docs/config.md.
fn doc_nat_example() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/config.md");
    let doc = std::fs::read_to_string(path).expect("docs/config.md");
    let sec = doc.find("### `nat`").expect("a nat section");
    let start = sec + doc[sec..].find("```json\n").expect("a ```json block") + "```json\n".len();
    let len = doc[start..].find("```").expect("end of the json block");
    serde_json::from_str(&doc[start..start + len]).expect("the nat example is JSON")
}

fn with_nat(v: &mut Value) {
    v["nat"] = doc_nat_example();
}

fn snat(v: &mut Value) -> &mut Vec<Value> {
    as_array(&mut v["nat"]["snat"])
}

fn dnat(v: &mut Value) -> &mut Vec<Value> {
    as_array(&mut v["nat"]["dnat"])
}

#[test]
fn nat_example_validates_into_tables() {
    use braid_config::NatProtocol;
    use core::net::IpAddr;
    let t = accepted(with_nat);
    assert_eq!(t.nat.snat.len(), 2);
    let s = &t.nat.snat[0];
    assert_eq!(s.name, "lan-to-b");
    assert_eq!(s.r#match.to_string(), "10.1.0.0/16");
    assert_eq!(s.peer, Some(0));
    assert_eq!(s.pool, vec![IpAddr::from([100, 64, 1, 1]), IpAddr::from([100, 64, 1, 2])]);
    assert_eq!(s.ports, (1024, 65535));
    let s1 = &t.nat.snat[1];
    assert_eq!((s1.peer, s1.ports), (None, (1024, 65535)));
    assert_eq!(s1.pool, vec![IpAddr::from([100, 64, 255, 1])]);
    assert_eq!(t.nat.max_sessions, braid_config::DEFAULT_NAT_MAX_SESSIONS);
    assert_eq!(t.nat.timeouts, braid_config::NatTimeouts::default());
    let d = &t.nat.dnat[0];
    assert_eq!(
        (d.external, d.protocol, d.port, d.internal, d.internal_port),
        (IpAddr::from([100, 64, 1, 1]), NatProtocol::Tcp, 443, IpAddr::from([10, 1, 0, 10]), 8443)
    );
    assert_eq!(d.protocol.number(), 6);
    // internal_port defaults to port.
    assert_eq!((t.nat.dnat[1].port, t.nat.dnat[1].internal_port), (53, 53));
    assert_eq!(t.nat.dnat[1].protocol.number(), 17);

    // No `nat` section: nothing to translate, and none is written back.
    let t = accepted(|_| {});
    assert!(t.nat.snat.is_empty() && t.nat.dnat.is_empty());
    let config = Config::from_json_str(&doc_example()).unwrap();
    assert!(!config.to_json_pretty().contains("\"nat\""));

    // With one, the round trip keeps it, defaults spelled out.
    let mut v = example_value();
    with_nat(&mut v);
    let config: Config = serde_json::from_value(v).unwrap();
    let text = config.to_json_pretty();
    assert!(text.contains("\"ports\": \"1024-65535\""), "{text}");
    assert_eq!(Config::from_json_str(&text).unwrap(), config);
}

#[test]
fn nptv6_rules_are_checked() {
    // The example's rule.
    let t = accepted(with_nat);
    let r = &t.nat.nptv6[0];
    assert_eq!((r.name.as_str(), r.internal.to_string(), r.external.to_string(), r.peer), ("ula", "fd00:1::/48".into(), "2001:db8:1::/48".into(), Some(0)));
    let nat = |edit: fn(&mut Value)| {
        move |v: &mut Value| {
            with_nat(v);
            edit(v);
        }
    };
    fn rule(v: &mut Value) -> &mut Value {
        &mut v["nat"]["nptv6"][0]
    }
    refused(nat(|v| rule(v)["internal"] = json!("10.1.0.0/16")), "nat.nptv6[0].internal", "not an IPv6 prefix");
    refused(nat(|v| rule(v)["external"] = json!("2001:db8:1::/56")), "nat.nptv6[0].external", "not as long as the internal prefix");
    refused(
        nat(|v| {
            rule(v)["internal"] = json!("fd00:1:2:3:4::/80");
            rule(v)["external"] = json!("2001:db8:1:2:3::/80");
        }),
        "nat.nptv6[0].internal",
        "1 to 64 bits",
    );
    refused(nat(|v| rule(v)["internal"] = json!("fd00:1::1/48")), "nat.nptv6[0].internal", "host bits");
    refused(nat(|v| rule(v)["peer"] = json!("site-z")), "nat.nptv6[0].peer", "no peer named \"site-z\"");
    let add = |r: Value| {
        move |v: &mut Value| {
            with_nat(v);
            as_array(&mut v["nat"]["nptv6"]).push(r);
        }
    };
    refused(
        add(json!({"name": "b", "internal": "fd00:2::/48", "external": "2001:db8:1::/48"})),
        "nat.nptv6[1].external",
        "overlaps nat.nptv6[0].external 2001:db8:1::/48",
    );
    refused(
        add(json!({"name": "b", "internal": "fd00::/16", "external": "2002::/16"})),
        "nat.nptv6[1].internal",
        "overlaps nat.nptv6[0].internal fd00:1::/48 for the same peer",
    );
    refused(
        add(json!({"name": "ula", "internal": "fd00:2::/48", "external": "2001:db8:2::/48"})),
        "nat.nptv6[1].name",
        "duplicate name",
    );
    // Another prefix: fine.
    let t = accepted(add(json!({"name": "b", "internal": "fd00:2::/48", "external": "2001:db8:2::/48"})));
    assert_eq!((t.nat.nptv6.len(), t.nat.nptv6[1].peer), (2, None));
}

#[test]
fn nat_unknown_fields_and_wrong_types_are_refused() {
    for (edit, reason) in [
        (
            Box::new(|v: &mut Value| v["nat"]["snat"][0]["egress"] = json!("site-b")) as Box<dyn Fn(&mut Value)>,
            "unknown field `egress`",
        ),
        (Box::new(|v: &mut Value| v["nat"]["masquerade"] = json!(true)), "unknown field `masquerade`"),
        (Box::new(|v: &mut Value| v["nat"]["dnat"][0]["protocol"] = json!("sctp")), "unknown variant `sctp`"),
        (Box::new(|v: &mut Value| v["nat"]["dnat"][0]["port"] = json!("443")), "invalid type"),
        (Box::new(|v: &mut Value| v["nat"]["dnat"][0]["port"] = json!(-1)), "invalid value"),
        (Box::new(|v: &mut Value| v["nat"]["snat"][0]["pool"] = json!("100.64.1.1")), "invalid type"),
    ] {
        let mut v = example_value();
        with_nat(&mut v);
        edit(&mut v);
        let e = serde_json::from_value::<Config>(v).expect_err("should not parse");
        assert!(e.to_string().contains(reason), "{e} lacks {reason:?}");
    }
}

#[test]
fn nat_names_are_unique_and_non_empty() {
    refused(
        |v| {
            with_nat(v);
            v["nat"]["snat"][1]["name"] = json!("lan-to-b");
        },
        "nat.snat[1].name",
        "duplicate name \"lan-to-b\" (also nat.snat[0])",
    );
    refused(
        |v| {
            with_nat(v);
            v["nat"]["dnat"][0]["name"] = json!("");
        },
        "nat.dnat[0].name",
        "must not be empty",
    );
}

#[test]
fn snat_match_is_a_prefix_and_peer_exists() {
    let nat = |edit: fn(&mut Value)| {
        move |v: &mut Value| {
            with_nat(v);
            edit(v);
        }
    };
    refused(nat(|v| v["nat"]["snat"][0]["match"] = json!("10.1.2.0/16")), "nat.snat[0].match", "host bits");
    refused(nat(|v| v["nat"]["snat"][0]["match"] = json!("10.1.0.0")), "nat.snat[0].match", "address/length");
    refused(nat(|v| v["nat"]["snat"][0]["peer"] = json!("site-z")), "nat.snat[0].peer", "no peer named \"site-z\"");
}

#[test]
fn snat_matches_do_not_overlap_for_the_same_peer() {
    let add = |m: &'static str, peer: Option<&'static str>| {
        move |v: &mut Value| {
            with_nat(v);
            let mut r = json!({ "name": "extra", "match": m, "pool": ["100.64.9.9"] });
            if let Some(p) = peer {
                r["peer"] = json!(p);
            }
            if m.contains(':') {
                r["pool"] = json!(["fd00:64::9"]);
            }
            snat(v).push(r);
        }
    };
    // Inside, around, equal: refused for the same peer.
    refused(add("10.1.5.0/24", Some("site-b")), "nat.snat[2].match", "10.1.5.0/24 overlaps nat.snat[0].match 10.1.0.0/16 for peer \"site-b\"");
    refused(add("10.0.0.0/8", Some("site-b")), "nat.snat[2].match", "overlaps nat.snat[0].match");
    refused(add("10.1.0.0/16", Some("site-b")), "nat.snat[2].match", "overlaps nat.snat[0].match");
    // A rule for every peer overlaps every peer's rules, and the other way.
    refused(add("10.1.128.0/17", None), "nat.snat[2].match", "overlaps nat.snat[0].match");
    refused(add("10.9.1.0/24", Some("site-b")), "nat.snat[2].match", "overlaps nat.snat[1].match 10.9.0.0/16");
    // IPv6 rules are refused (the dataplane's NAT is IPv4).
    refused(add("fd00:1::/64", None), "nat.snat[2].match", "IPv4 only");
    // Disjoint, or the other family: fine.
    let t = accepted(add("10.2.0.0/16", Some("site-b")));
    assert_eq!(t.nat.snat.len(), 3);
    accepted(add("128.0.0.0/1", Some("site-b")));
    refused(add("0.0.0.0/1", Some("site-b")), "nat.snat[2].match", "overlaps nat.snat[0].match");
    // Overlap for different peers is fine (each peer has its own rule).
    let t = accepted(|v| {
        add_spare_bundle(v);
        as_array(&mut v["peers"]).push(json!({ "name": "site-c", "bundle": "spare" }));
        with_nat(v);
        snat(v).push(json!({ "name": "c", "match": "10.1.0.0/16", "peer": "site-c", "pool": ["100.64.2.1"] }));
    });
    assert_eq!(t.nat.snat[2].peer, Some(1));
}

#[test]
fn snat_overlap_check_scales() {
    // 100,000 disjoint /32 rules (and one overlapping at the end).
    let mut v = example_value();
    with_nat(&mut v);
    let rules: Vec<Value> = (0..100_000u32)
        .map(|i| {
            let a = core::net::Ipv4Addr::from(0x0b00_0000 + i);
            json!({ "name": format!("r{i}"), "match": format!("{a}/32"), "peer": "site-b", "pool": ["100.64.1.1"] })
        })
        .collect();
    snat(&mut v).extend(rules);
    let t0 = std::time::Instant::now();
    let t = tables_of(v.clone()).expect("disjoint rules validate");
    assert_eq!(t.nat.snat.len(), 100_002);
    assert!(t0.elapsed() < std::time::Duration::from_secs(10), "{:?}", t0.elapsed());
    snat(&mut v).push(json!({ "name": "wide", "match": "11.0.0.0/8", "pool": ["100.64.1.1"] }));
    let e = tables_of(v).unwrap_err();
    assert_eq!(e.field(), Some("nat.snat[100002].match"), "{e}");
}

#[test]
fn snat_pool_addresses_match_the_family() {
    let nat = |edit: fn(&mut Value)| {
        move |v: &mut Value| {
            with_nat(v);
            edit(v);
        }
    };
    refused(nat(|v| v["nat"]["snat"][0]["pool"][1] = json!("fd00::1")), "nat.snat[0].pool[1]", "fd00::1 is IPv6, the match 10.1.0.0/16 is IPv4");
    refused(nat(|v| v["nat"]["snat"][1]["pool"][0] = json!("fd00::2")), "nat.snat[1].pool[0]", "is IPv6");
    refused(nat(|v| v["nat"]["snat"][0]["pool"] = json!([])), "nat.snat[0].pool", "at least one address");
    refused(nat(|v| v["nat"]["snat"][0]["pool"][1] = json!("100.64.1.1")), "nat.snat[0].pool[1]", "already pool[0]");
    refused(nat(|v| v["nat"]["snat"][0]["pool"][0] = json!("224.0.0.1")), "nat.snat[0].pool[0]", "not a unicast");
    refused(nat(|v| v["nat"]["snat"][0]["pool"][0] = json!("0.0.0.0")), "nat.snat[0].pool[0]", "not a unicast");
    refused(nat(|v| v["nat"]["snat"][0]["pool"][0] = json!("100.64.1")), "nat.snat[0].pool[0]", "not an IPv4 or IPv6");
}

#[test]
fn snat_port_ranges() {
    for (ports, reason) in [
        ("0-100", "port 0 is outside 1..=65535"),
        ("1024-65536", "port 65536 is outside"),
        ("2000-1000", "empty"),
        ("1024-", "not a port range"),
        ("+1-2", "not a port range"),
        ("abc", "not a port range"),
        ("99999999999", "not a port range"),
    ] {
        refused(
            move |v| {
                with_nat(v);
                v["nat"]["snat"][0]["ports"] = json!(ports);
            },
            "nat.snat[0].ports",
            reason,
        );
    }
    let t = accepted(|v| {
        with_nat(v);
        v["nat"]["snat"][0]["ports"] = json!("40000");
        v["nat"]["snat"][1]["ports"] = json!("1-65535");
    });
    assert_eq!(t.nat.snat[0].ports, (40000, 40000));
    assert_eq!(t.nat.snat[1].ports, (1, 65535));
}

#[test]
fn dnat_rules() {
    let nat = |edit: fn(&mut Value)| {
        move |v: &mut Value| {
            with_nat(v);
            edit(v);
        }
    };
    refused(nat(|v| v["nat"]["dnat"][0]["port"] = json!(0)), "nat.dnat[0].port", "port 0 is outside 1..=65535");
    refused(nat(|v| v["nat"]["dnat"][0]["port"] = json!(70000)), "nat.dnat[0].port", "port 70000 is outside");
    refused(nat(|v| v["nat"]["dnat"][0]["internal_port"] = json!(65536)), "nat.dnat[0].internal_port", "outside 1..=65535");
    refused(nat(|v| v["nat"]["dnat"][1]["port"] = json!(70000)), "nat.dnat[1].port", "outside");
    refused(nat(|v| v["nat"]["dnat"][0]["internal"] = json!("fd00:1::10")), "nat.dnat[0].internal", "fd00:1::10 is IPv6, external 100.64.1.1 is IPv4");
    refused(nat(|v| v["nat"]["dnat"][0]["external"] = json!("not-an-ip")), "nat.dnat[0].external", "not an IPv4 or IPv6");
    refused(nat(|v| v["nat"]["dnat"][0]["external"] = json!("fd00:64::1")), "nat.dnat[0].external", "IPv4 only");
    // Limits and timeouts.
    let t = accepted(nat(|v| {
        v["nat"]["max_sessions"] = json!(1000);
        v["nat"]["timeouts"] = json!({ "udp": 30, "tcp_established": 3600 });
    }));
    assert_eq!(t.nat.max_sessions, 1000);
    assert_eq!((t.nat.timeouts.udp, t.nat.timeouts.tcp_established, t.nat.timeouts.icmp), (30, 3600, 60));
    refused(nat(|v| v["nat"]["max_sessions"] = json!(0)), "nat.max_sessions", "not in 1..=");
    refused(nat(|v| v["nat"]["max_sessions"] = json!(1u64 << 25)), "nat.max_sessions", "not in 1..=");
    refused(nat(|v| v["nat"]["timeouts"] = json!({ "udp": 0 })), "nat.timeouts.udp", "0 s is not in");
    refused(nat(|v| v["nat"]["timeouts"] = json!({ "icmp": 10_000_000 })), "nat.timeouts.icmp", "is not in");
    refused(nat(|v| v["nat"]["dnat"][0]["external"] = json!("255.255.255.255")), "nat.dnat[0].external", "not a unicast");
    // Same external address, protocol and port: refused; another protocol is fine.
    refused(
        nat(|v| dnat(v).push(json!({ "name": "web2", "external": "100.64.1.1", "protocol": "tcp", "port": 443, "internal": "10.1.0.11" }))),
        "nat.dnat[2].port",
        "100.64.1.1 tcp port 443 is already forwarded by nat.dnat[0]",
    );
    let t = accepted(nat(|v| dnat(v).push(json!({ "name": "quic", "external": "100.64.1.1", "protocol": "udp", "port": 443, "internal": "10.1.0.10" }))));
    assert_eq!(t.nat.dnat.len(), 3);
    // A forward inside the ports SNAT hands out for that address: refused.
    refused(
        nat(|v| v["nat"]["dnat"][0]["port"] = json!(8080)),
        "nat.dnat[0].port",
        "100.64.1.1 port 8080 is inside the ports of nat.snat[0]",
    );
    accepted(nat(|v| {
        v["nat"]["snat"][0]["ports"] = json!("10000-65535");
        v["nat"]["dnat"][0]["port"] = json!(8080);
    }));
    // IPv6 forwards are refused (the dataplane's NAT is IPv4).
    refused(
        nat(|v| dnat(v).push(json!({ "name": "v6", "external": "fd00:64::80", "protocol": "tcp", "port": 80, "internal": "fd00:1::80" }))),
        "nat.dnat[2].external",
        "IPv4 only",
    );
}

/// Many SNAT rules sharing one pool address (each its own ports) and
/// forwards on that address: each forward checked against them by a binary
/// search, not a scan of every rule (found by review: quadratic).
#[test]
fn nat_checks_scale_with_rules_sharing_a_pool_address() {
    let mut v = example_value();
    with_nat(&mut v);
    let s: Vec<Value> = (0..20_000u32)
        .map(|i| {
            let m = core::net::Ipv4Addr::from(0x0b00_0000 + i);
            let lo = 2000 + 3 * i;
            json!({ "name": format!("s{i}"), "match": format!("{m}/32"), "peer": "site-b", "pool": ["100.64.9.9"], "ports": format!("{lo}-{}", lo + 2) })
        })
        .collect();
    let d: Vec<Value> = (1..1000u32)
        .flat_map(|p| ["tcp", "udp"].map(|proto| json!({ "name": format!("d{proto}{p}"), "external": "100.64.9.9", "protocol": proto, "port": p, "internal": "10.1.0.22" })))
        .collect();
    snat(&mut v).extend(s);
    dnat(&mut v).extend(d);
    let t0 = std::time::Instant::now();
    let t = tables_of(v.clone()).expect("validates");
    assert_eq!(t.nat.dnat.len(), 2 + 1998);
    assert!(t0.elapsed() < std::time::Duration::from_secs(10), "{:?}", t0.elapsed());
    // Nested and overlapping ranges on one address: a forward inside a
    // range that starts before a nested one and reaches past it is found
    // (the search keeps the furthest reach, not just the last start).
    let mut w = example_value();
    with_nat(&mut w);
    for (i, (lo, hi)) in [(1000, 5000), (1200, 1300), (4000, 6000)].into_iter().enumerate() {
        snat(&mut w).push(json!({ "name": format!("n{i}"), "match": format!("11.1.{i}.0/24"), "peer": "site-b", "pool": ["100.64.8.8"], "ports": format!("{lo}-{hi}") }));
    }
    for (port, inside) in [(2000, Some(2)), (5500, Some(4)), (1250, None), (900, None), (6001, None)] {
        let mut x = w.clone();
        dnat(&mut x).push(json!({ "name": "f", "external": "100.64.8.8", "protocol": "tcp", "port": port, "internal": "10.1.0.22" }));
        match (tables_of(x), inside) {
            (Ok(_), None) if port != 1250 => {}
            (Err(e), Some(j)) => assert!(e.to_string().contains(&format!("nat.snat[{j}]")), "{port}: {e}"),
            (Err(e), None) if port == 1250 => assert!(e.to_string().contains("nat.snat["), "{port}: {e}"),
            (r, _) => panic!("{port}: {:?}", r.map(|_| ())),
        }
    }
    // A forward inside the ports of the 15,000th rule: found, named.
    dnat(&mut v).push(json!({ "name": "bad", "external": "100.64.9.9", "protocol": "udp", "port": 2000 + 3 * 15_000 + 1, "internal": "10.1.0.22" }));
    let e = tables_of(v).unwrap_err();
    assert!(e.to_string().contains("nat.snat[15002]"), "{e}");
}

#[test]
fn nat_checks_scale_to_100k_rules() {
    // 50,000 SNAT rules with their own pool address and 50,000 forwards
    // on those addresses, below the SNAT port range.
    let mut v = example_value();
    with_nat(&mut v);
    let addr = |i: u32| core::net::Ipv4Addr::from(0x6440_0000 + i).to_string();
    let s: Vec<Value> = (0..50_000u32)
        .map(|i| {
            let m = core::net::Ipv4Addr::from(0x0b00_0000 + i);
            json!({ "name": format!("s{i}"), "match": format!("{m}/32"), "peer": "site-b", "pool": [addr(i + 10)], "ports": "10000-65535" })
        })
        .collect();
    let d: Vec<Value> = (0..50_000u32)
        .map(|i| json!({ "name": format!("d{i}"), "external": addr(i + 10), "protocol": "tcp", "port": 22, "internal": "10.1.0.22" }))
        .collect();
    snat(&mut v).extend(s);
    dnat(&mut v).extend(d);
    let t0 = std::time::Instant::now();
    let t = tables_of(v.clone()).expect("validates");
    assert_eq!((t.nat.snat.len(), t.nat.dnat.len()), (50_002, 50_002));
    assert!(t0.elapsed() < std::time::Duration::from_secs(10), "{:?}", t0.elapsed());
    // One forward inside the port range of the last rule's pool: found.
    dnat(&mut v).push(json!({ "name": "bad", "external": addr(50_009), "protocol": "udp", "port": 10000, "internal": "10.1.0.22" }));
    let e = tables_of(v).unwrap_err();
    assert_eq!(e.field(), Some("nat.dnat[50002].port"), "{e}");
    assert!(e.to_string().contains("nat.snat[50001]"), "{e}");
}
