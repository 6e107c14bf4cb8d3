//! Shared set-up for the EAL tests: one EAL per test process (DPDK allows
//! no more), vdevs only, `--no-pci` always, a unique `--file-prefix`, and the
//! runtime folder removed at exit.

#![allow(dead_code)]

use std::sync::{Mutex, MutexGuard, OnceLock};

use braid_dpdk::Eal;

static EAL: OnceLock<Eal> = OnceLock::new();
static SERIAL: Mutex<()> = Mutex::new(());

/// Memory arguments: hugepages only when asked (`BRAID_HUGEPAGES=1`) and
/// free, `--no-huge` otherwise, so tests never fight over hugepages.
pub fn mem_args() -> Vec<String> {
    let free: u64 = std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if std::env::var("BRAID_HUGEPAGES").as_deref() == Ok("1") && free >= 256 {
        vec!["-m".into(), "512".into(), "--huge-unlink".into()]
    } else {
        vec!["--no-huge".into(), "-m".into(), "512".into()]
    }
}

/// Starts (once) EAL with lcores 0 and 1 and the given vdevs, and returns it
/// with a guard that serialises the tests of this process.
pub fn eal(vdevs: &[&str]) -> (&'static Eal, MutexGuard<'static, ()>) {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let eal = EAL.get_or_init(|| {
        let prefix = format!("braid-test-{}", std::process::id());
        let mut args: Vec<String> = vec!["--no-pci".into(), "-l".into(), "0,1".into(), "--file-prefix".into(), prefix];
        args.extend(mem_args());
        args.push("--log-level=*:warning".into());
        for v in vdevs {
            args.push(format!("--vdev={v}"));
        }
        let eal = Eal::init(&args).expect("EAL init");
        eal.remove_runtime_dir_at_exit();
        eal
    });
    (eal, guard)
}
