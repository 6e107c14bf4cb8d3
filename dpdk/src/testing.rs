//! EAL for integration tests (ours and other crates'): one EAL per test
//! process (DPDK allows no more), vdevs only, `--no-pci` always, a unique
//! `--file-prefix`, the runtime folder removed at exit, and a guard that
//! serialises the tests of the process.

use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::Eal;

static EAL: OnceLock<Eal> = OnceLock::new();
static SERIAL: Mutex<()> = Mutex::new(());

/// Memory arguments for `mb` MB: hugepages only when asked
/// (`BRAID_HUGEPAGES=1`) and free, `--no-huge` otherwise, so tests never
/// fight over hugepages and never leave a hugepage file behind.
pub fn mem_args(mb: u32) -> Vec<String> {
    let free: u32 = std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if std::env::var("BRAID_HUGEPAGES").as_deref() == Ok("1") && free * 2 >= mb {
        vec!["-m".into(), mb.to_string(), "--huge-unlink".into()]
    } else {
        vec!["--no-huge".into(), "-m".into(), mb.to_string()]
    }
}

/// Starts (once per process) EAL on lcores 0 and 1 with `mb` MB and the
/// given vdevs, and returns it with the serialising guard. Later calls get
/// the same EAL whatever their arguments.
pub fn eal(vdevs: &[&str], mb: u32) -> (&'static Eal, MutexGuard<'static, ()>) {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let eal = EAL.get_or_init(|| {
        let prefix = format!("braid-test-{}", std::process::id());
        let mut args: Vec<String> = vec!["--no-pci".into(), "-l".into(), "0,1".into(), "--file-prefix".into(), prefix];
        args.extend(mem_args(mb));
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
