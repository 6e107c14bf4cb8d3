//! `/v1/stats`, `/metrics` and the status's liveness from a real stats
//! segment written the way the dataplane writes it.

mod common;

use std::time::{Duration, Instant};

use braid_shm::stats::{StatsLayout, StatsSegment};
use common::{Server, TempDir};

fn layout() -> StatsLayout {
    StatsLayout {
        workers: 2,
        counters: vec![
            "lan/rx_packets".into(),
            "drop/no_route".into(),
            "tunnel/to-site-b/0/tx_packets".into(),
            "tunnel/to-site-b/1/tx_packets".into(),
            "port/wan0/rx_bytes".into(),
        ],
        gauges: vec!["path/to-site-b/0/alive".into(), "path/to-site-b/0/rtt_ns".into()],
    }
}

#[test]
fn stats_json_metrics_and_liveness() {
    let dir = TempDir::new("stats");
    let path = dir.path().join("stats");
    // The API works before the dataplane made its stats segment.
    let s = Server::start(dir.path(), &["--stats", path.to_str().unwrap()]);
    let (st, v) = s.req("GET", "/v1/stats", None);
    assert_eq!(st, 503, "{v}");
    assert!(s.client().get("/metrics").unwrap().text().contains("braid_control_generation 0\n"));

    let seg = StatsSegment::create(&path, &layout(), 0x55).unwrap();
    let mut w0 = seg.writer(0).unwrap();
    let mut w1 = seg.writer(1).unwrap();
    w0.publish(&[10, 1, 12, 0, 1000], &[1, 2_000_000]);
    w1.publish(&[5, 2, 3, 7, 24], &[0, 1_500_000]);
    seg.set_applied(4, 0);

    let (st, v) = s.req("GET", "/v1/stats", None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["boot_id"], 0x55);
    assert_eq!(v["applied_generation"], 4);
    assert_eq!(v["workers"], 2);
    assert_eq!(v["counters"]["lan/rx_packets"], 15);
    assert_eq!(v["counters"]["tunnel/to-site-b/0/tx_packets"], 15);
    assert_eq!(v["counters"]["drop/no_route"], 3);
    assert_eq!(v["gauges"]["path/to-site-b/0/alive"], 1, "gauges: the maximum over workers");
    assert_eq!(v["gauges"]["path/to-site-b/0/rtt_ns"], 2_000_000);

    let m = s.client().get("/metrics").unwrap();
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let text = m.text();
    for line in [
        "# TYPE braid_tunnel_tx_packets counter\n",
        "braid_tunnel_tx_packets{bundle=\"to-site-b\",tunnel=\"0\"} 15\n",
        "braid_tunnel_tx_packets{bundle=\"to-site-b\",tunnel=\"1\"} 7\n",
        "braid_drop{reason=\"no_route\"} 3\n",
        "braid_lan_rx_packets 15\n",
        "braid_port_rx_bytes{port=\"wan0\"} 1024\n",
        "# TYPE braid_path_alive gauge\n",
        "braid_path_alive{bundle=\"to-site-b\",tunnel=\"0\"} 1\n",
        "braid_path_rtt_ns{bundle=\"to-site-b\",tunnel=\"0\"} 2000000\n",
        "braid_stats_applied_generation 4\n",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }

    let (_, v) = s.req("GET", "/v1/status", None);
    assert_eq!(v["dataplane"], serde_json::Value::Null, "no --shm: no link");

    // The dataplane replaces the segment (new layout after a change): read anew.
    let mut l = layout();
    l.counters.push("tunnel/to-site-b/2/tx_packets".into());
    let seg2 = StatsSegment::create(&path, &l, 0x56).unwrap();
    seg2.writer(0).unwrap().publish(&[1, 0, 0, 0, 0, 99], &[0, 0]);
    let (_, v) = s.req("GET", "/v1/stats", None);
    assert_eq!((v["boot_id"].as_u64(), v["counters"]["tunnel/to-site-b/2/tx_packets"].as_u64()), (Some(0x56), Some(99)));
    drop(seg);
}

#[test]
fn alive_is_false_when_the_heartbeat_stops() {
    let dir = TempDir::new("alive");
    let path = dir.path().join("stats");
    let shm = dir.path().join("shm");
    let seg = StatsSegment::create(&path, &layout(), 1).unwrap();
    let s = Server::start(dir.path(), &["--stats", path.to_str().unwrap(), "--shm", shm.to_str().unwrap()]);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut n = 1;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seg.set_heartbeat(n);
                n += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        let (_, v) = s.req("GET", "/v1/status", None);
        assert_eq!(v["dataplane"]["alive"], true, "{v}");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let t0 = Instant::now();
    loop {
        let (_, v) = s.req("GET", "/v1/status", None);
        if v["dataplane"]["alive"] == false {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "still alive: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(t0.elapsed() >= Duration::from_secs(2), "declared dead too early");
}
