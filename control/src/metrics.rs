//! The dataplane's stats segment as JSON (`/v1/stats`) and as Prometheus
//! text (`/metrics`).
//!
//! Counter names are `/`-separated paths (`lan/rx_packets`,
//! `tunnel/<bundle>/<i>/tx_packets`, `drop/<reason>`, gauges
//! `path/<bundle>/<i>/alive`). In Prometheus the first segment is the kind
//! and the last the measure: `braid_<kind>_<measure>{labels}` with the
//! middle segments as labels (`tunnel`, `path`: `bundle`, `tunnel`; `port`:
//! `port`; `peer`: `peer`), except drops, where the last segment is the
//! reason: `braid_drop{reason="no_route"}`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use braid_shm::stats::StatsReader;
use serde::{Deserialize, Serialize};

use crate::link::LinkStatus;

/// A heartbeat that has not moved for this long means the dataplane's
/// control thread is not running.
pub const HEARTBEAT_STALE: Duration = Duration::from_secs(3);

/// `GET /v1/stats`: totals over workers (gauges: summed, but those of a
/// path, `path/...`: the maximum).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub boot_id: u64,
    pub applied_generation: u64,
    pub heartbeat: u64,
    pub workers: u16,
    /// Workers whose block could not be read consistently this time.
    pub torn_workers: u32,
    pub counters: BTreeMap<String, u64>,
    pub gauges: BTreeMap<String, u64>,
}

/// The stats segment at a path, re-opened when the dataplane replaces it.
pub struct StatsSource {
    path: PathBuf,
    reader: Mutex<Option<StatsReader>>,
    /// Last heartbeat value and when it was first seen.
    heartbeat: Mutex<Option<(u64, Instant)>>,
}

impl StatsSource {
    pub fn new(path: PathBuf) -> StatsSource {
        StatsSource { path, reader: Mutex::new(None), heartbeat: Mutex::new(None) }
    }

    /// A consistent snapshot, or why there is none.
    pub fn read(&self) -> Result<Stats, String> {
        let mut r = self.reader.lock().unwrap();
        if r.as_ref().is_none_or(|r| r.is_replaced()) {
            *r = Some(StatsReader::open(&self.path).map_err(|e| format!("stats segment: {e}"))?);
        }
        let reader = r.as_ref().expect("opened above");
        let snap = reader.snapshot();
        let layout = reader.layout();
        let stats = Stats {
            boot_id: snap.boot_id,
            applied_generation: snap.applied_generation,
            heartbeat: snap.heartbeat,
            workers: layout.workers,
            torn_workers: snap.torn_workers,
            counters: layout.counters.iter().cloned().zip(snap.totals.iter().copied()).collect(),
            gauges: layout.gauges.iter().cloned().zip(snap.gauges.iter().copied()).collect(),
        };
        self.saw_heartbeat(stats.heartbeat);
        Ok(stats)
    }

    fn saw_heartbeat(&self, hb: u64) {
        let mut h = self.heartbeat.lock().unwrap();
        if h.is_none_or(|(last, _)| last != hb) {
            *h = Some((hb, Instant::now()));
        }
    }

    /// Whether the dataplane's heartbeat moves; `None` when there is no
    /// stats segment to tell.
    pub async fn alive(&self) -> Option<bool> {
        let first = self.heartbeat.lock().unwrap().is_none();
        self.read().ok()?;
        if first {
            // One look cannot tell a moving heartbeat: look again shortly.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let before = *self.heartbeat.lock().unwrap();
            self.read().ok()?;
            let after = *self.heartbeat.lock().unwrap();
            return Some(before.map(|b| b.0) != after.map(|a| a.0));
        }
        let (_, since) = (*self.heartbeat.lock().unwrap())?;
        Some(since.elapsed() < HEARTBEAT_STALE)
    }
}

/// A metric name part: `[a-zA-Z0-9_]`, anything else becomes `_`.
fn metric_part(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// A label value with `\`, `"` and newlines escaped.
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Metric name and labels of a stats name.
pub fn prometheus_name(name: &str) -> (String, Vec<(&'static str, String)>) {
    let parts: Vec<&str> = name.split('/').collect();
    let kind = metric_part(parts[0]);
    match parts.as_slice() {
        [_] => (format!("braid_{kind}"), vec![]),
        [k, reason] if k.ends_with("drop") => (format!("braid_{kind}"), vec![("reason", reason.to_string())]),
        [_, measure] => (format!("braid_{kind}_{}", metric_part(measure)), vec![]),
        [k, middle @ .., measure] => {
            let names: &[&'static str] = match *k {
                "tunnel" | "path" => &["bundle", "tunnel"],
                "port" => &["port"],
                "peer" => &["peer"],
                "bundle" => &["bundle"],
                _ => &[],
            };
            let labels = middle
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let l = names.get(i).copied().unwrap_or(["label0", "label1", "label2", "label3"][i.min(3)]);
                    (l, v.to_string())
                })
                .collect();
            (format!("braid_{kind}_{}", metric_part(measure)), labels)
        }
        [] => unreachable!("split yields at least one part"),
    }
}

/// The Prometheus text exposition (format 0.0.4).
pub fn prometheus(generation: u64, link: Option<&LinkStatus>, stats: Option<&Stats>) -> String {
    // Family name -> (type, sample lines), so each family is one block.
    let mut families: BTreeMap<String, (&str, Vec<String>)> = BTreeMap::new();
    let mut add = |name: &str, ty: &'static str, labels: &[(&str, String)], v: u64| {
        let l = if labels.is_empty() {
            String::new()
        } else {
            let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", label_value(v))).collect();
            format!("{{{}}}", inner.join(","))
        };
        families.entry(name.to_string()).or_insert((ty, Vec::new())).1.push(format!("{name}{l} {v}"));
    };
    add("braid_control_generation", "gauge", &[], generation);
    if let Some(l) = link {
        add("braid_dataplane_attached", "gauge", &[], l.attached as u64);
        if let Some(g) = l.applied_generation {
            add("braid_dataplane_applied_generation", "gauge", &[], g);
        }
        add("braid_control_pushes", "counter", &[], l.pushes);
        add("braid_control_resyncs", "counter", &[], l.resyncs);
    }
    if let Some(s) = stats {
        add("braid_stats_applied_generation", "gauge", &[], s.applied_generation);
        add("braid_stats_torn_workers", "gauge", &[], s.torn_workers as u64);
        add("braid_workers", "gauge", &[], s.workers as u64);
        for (name, &v) in &s.counters {
            let (m, labels) = prometheus_name(name);
            add(&m, "counter", &labels, v);
        }
        for (name, &v) in &s.gauges {
            let (m, labels) = prometheus_name(name);
            add(&m, "gauge", &labels, v);
        }
    }
    let mut out = String::new();
    for (name, (ty, lines)) in families {
        let _ = writeln!(out, "# TYPE {name} {ty}");
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_families_and_labels() {
        assert_eq!(
            prometheus_name("tunnel/b/3/tx_packets"),
            ("braid_tunnel_tx_packets".into(), vec![("bundle", "b".into()), ("tunnel", "3".into())])
        );
        assert_eq!(prometheus_name("drop/no_route"), ("braid_drop".into(), vec![("reason", "no_route".into())]));
        assert_eq!(prometheus_name("engine_drop/replayed"), ("braid_engine_drop".into(), vec![("reason", "replayed".into())]));
        assert_eq!(prometheus_name("lan/rx_packets"), ("braid_lan_rx_packets".into(), vec![]));
        assert_eq!(prometheus_name("port/lan0/rx_bytes"), ("braid_port_rx_bytes".into(), vec![("port", "lan0".into())]));
        assert_eq!(prometheus_name("encapsulated"), ("braid_encapsulated".into(), vec![]));
        assert_eq!(prometheus_name("path/to-b/0/rtt-ns"), ("braid_path_rtt_ns".into(), vec![("bundle", "to-b".into()), ("tunnel", "0".into())]));
    }

    #[test]
    fn exposition_groups_families_and_escapes() {
        let stats = Stats {
            boot_id: 1,
            applied_generation: 4,
            heartbeat: 9,
            workers: 2,
            torn_workers: 0,
            counters: [
                ("tunnel/a\"b/0/tx_packets".to_string(), 5),
                ("drop/no_route".to_string(), 2),
                ("tunnel/c/1/tx_packets".to_string(), 7),
                ("drop/too_big".to_string(), 1),
            ]
            .into_iter()
            .collect(),
            gauges: [("path/c/1/alive".to_string(), 1)].into_iter().collect(),
        };
        let text = prometheus(4, None, Some(&stats));
        assert!(text.contains("# TYPE braid_drop counter\nbraid_drop{reason=\"no_route\"} 2\nbraid_drop{reason=\"too_big\"} 1\n"), "{text}");
        assert!(text.contains("braid_tunnel_tx_packets{bundle=\"a\\\"b\",tunnel=\"0\"} 5\n"), "{text}");
        assert!(text.contains("braid_tunnel_tx_packets{bundle=\"c\",tunnel=\"1\"} 7\n"), "{text}");
        assert!(text.contains("# TYPE braid_path_alive gauge\nbraid_path_alive{bundle=\"c\",tunnel=\"1\"} 1\n"), "{text}");
        assert!(text.contains("braid_control_generation 4\n"), "{text}");
        // Every sample line belongs to the family its TYPE line announced.
        let mut family = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap().to_string();
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(name, family, "{line}");
            }
        }
    }
}
