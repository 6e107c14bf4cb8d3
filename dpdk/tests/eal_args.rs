//! EAL start-up failures, each in its own process (EAL starts once per
//! process): the `braid-dpdk-check` tool must exit 1 with a clear one-line
//! error — never panic, never hang — and leave no runtime folder behind.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn run(ours: &[&str], eal: &[&str]) -> (i32, String) {
    let (code, _out, err) = run_full(ours, eal, true);
    (code, err)
}

/// Runs the tool; `quiet` adds `--log-level=*:error`. Returns the exit
/// code, stdout and stderr.
fn run_full(ours: &[&str], eal: &[&str], quiet: bool) -> (i32, String, String) {
    let prefix = format!("braid-args-{}-{}", std::process::id(), rand_suffix());
    let mut args: Vec<String> = ours.iter().map(|s| s.to_string()).collect();
    args.push("--".into());
    args.extend(eal.iter().map(|s| s.to_string()));
    args.extend(["--file-prefix".to_string(), prefix.clone()]);
    if quiet {
        args.push("--log-level=*:error".into());
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_braid-dpdk-check"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn braid-dpdk-check");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("braid-dpdk-check hung with {args:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(
        !std::path::Path::new(&format!("/var/run/dpdk/{prefix}")).exists(),
        "runtime folder left behind for {args:?}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (status.code().unwrap_or(-1), stdout, stderr)
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

const BASE: &[&str] = &["--no-pci", "--no-huge", "-m", "256", "-l", "0"];

fn with(extra: &[&str]) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = BASE.to_vec();
    v.extend(extra.iter().map(|s| -> &'static str { Box::leak(s.to_string().into_boxed_str()) }));
    v
}

#[test]
fn good_arguments_start_and_list_vdevs() {
    let (code, out, err) = run_full(&[], &with(&["--vdev=net_null0"]), true);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("net_null0"), "port list on stdout: {out:?} (stderr {err})");
}

#[test]
fn arguments_dpdk_rejects_are_an_error() {
    let (code, err) = run(&[], &with(&["--definitely-not-an-eal-flag"]));
    assert_eq!(code, 1);
    assert!(err.contains("EAL initialisation failed"), "{err}");
}

#[test]
fn a_vdev_dpdk_cannot_parse_is_an_error() {
    let (code, err) = run(&[], &with(&["--vdev=net_nonexistent0"]));
    assert_eq!(code, 1);
    assert!(err.contains("EAL initialisation failed"), "{err}");
}

#[test]
fn a_missing_vdev_is_an_error() {
    let (code, err) = run(&["--port", "net_memif0"], BASE);
    assert_eq!(code, 1);
    assert!(err.contains("no DPDK port named \"net_memif0\""), "{err}");
}

#[test]
fn a_pool_too_small_is_an_error() {
    let (code, err) = run(&["--port", "net_null0", "--pool", "100"], &with(&["--vdev=net_null0"]));
    assert_eq!(code, 1);
    assert!(err.contains("needs at least"), "{err}");
}

#[test]
fn no_pci_probe_without_no_pci_or_an_allow_list() {
    // Without --no-pci and without -a, braid refuses before DPDK starts.
    // No --log-level here: had EAL started, its "EAL: ..." lines would show.
    let (code, out, err) = run_full(&[], &["--no-huge", "-m", "256", "-l", "0", "--vdev=net_null0"], false);
    assert_eq!(code, 1);
    assert!(err.contains("refusing to start EAL without --no-pci"), "{err}");
    assert!(!err.lines().chain(out.lines()).any(|l| l.starts_with("EAL:")), "EAL started anyway: {out}{err}");
    // The same arguments with --no-pci do make EAL talk, so the check above can fail.
    let (code, out, err) =
        run_full(&[], &["--no-pci", "--no-huge", "-m", "256", "-l", "0", "--vdev=net_null0"], false);
    assert_eq!(code, 0, "{err}");
    assert!(err.lines().chain(out.lines()).any(|l| l.starts_with("EAL:")), "no EAL output: {out}{err}");
}

#[test]
fn eal_args_hidden_in_values_or_after_double_dash_do_not_count() {
    for eal in [
        &["--no-huge", "-l", "0", "--file-prefix", "-a", "0000:01:00.0"][..],
        &["--no-huge", "-l", "0", "-d", "--no-pci"][..],
        &["--no-huge", "-l", "0", "-a", "net_null0"][..],
    ] {
        let (code, err) = run(&[], eal);
        assert_eq!(code, 1, "{eal:?}: {err}");
        assert!(err.contains("refusing to start EAL without --no-pci"), "{eal:?}: {err}");
    }
    let (code, err) = run(&[], &with(&["-h"]));
    assert_eq!(code, 1);
    assert!(err.contains("help"), "{err}");
}
