//! Two DPDK processes joined by net_memif (one server, one client): a
//! generator sends 300,000 frames of three sizes, the sink checks every
//! frame arrives once, in order, byte for byte. Both processes use --no-pci
//! and --no-huge; both are ended by pid and their files removed, also on
//! failure.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process, killed (and its DPDK runtime folder removed) if the
/// test fails before it exits.
struct Proc(Option<Child>, String);
impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
            let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.1));
        }
    }
}

fn spawn(role: &str, lcore: &str, prefix: &str, vdev: &str, count: u64) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_braid-perf-gen"))
        .args(["--role", role, "--count", &count.to_string(), "--sizes", "64,600,1514", "--timeout", "60", "--"])
        .args(["--no-pci", "--no-huge", "-m", "256", "-l", lcore, "--file-prefix", prefix, "--log-level=*:error"])
        .arg(format!("--vdev={vdev}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn braid-perf-gen");
    Proc(Some(child), prefix.to_owned())
}

fn wait(mut p: Proc, limit: Duration) -> (i32, String, String) {
    let deadline = Instant::now() + limit;
    let child = p.0.as_mut().unwrap();
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "process hung");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = p.0.take().unwrap().wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn frames_cross_memif_between_two_processes_intact_and_in_order() {
    const COUNT: u64 = 300_000;
    let id = std::process::id();
    let dir = std::env::temp_dir().join(format!("braid-memif-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("memif.sock");
    let vdev = |role: &str| format!("net_memif0,role={role},socket={},socket-abstract=no", sock.display());
    let (pa, pb) = (format!("braid-memif-rx-{id}"), format!("braid-memif-tx-{id}"));

    let rx = spawn("rx", "1", &pa, &vdev("server"), COUNT);
    std::thread::sleep(Duration::from_millis(300));
    let tx = spawn("tx", "0", &pb, &vdev("client"), COUNT);
    let (tx_code, tx_out, tx_err) = wait(tx, Duration::from_secs(90));
    let (rx_code, rx_out, rx_err) = wait(rx, Duration::from_secs(90));
    let _ = std::fs::remove_dir_all(&dir);
    for p in [&pa, &pb] {
        assert!(!std::path::Path::new(&format!("/var/run/dpdk/{p}")).exists(), "runtime folder left behind");
    }
    eprintln!("tx: {tx_out}{tx_err}\nrx: {rx_out}{rx_err}");
    assert_eq!(tx_code, 0, "generator failed: {tx_err}");
    assert_eq!(rx_code, 0, "sink failed: {rx_out} {rx_err}");
    assert!(rx_out.contains(&format!("\"received\":{COUNT}")), "{rx_out}");
    assert!(rx_out.contains("\"bad\":0"), "{rx_out}");
}
