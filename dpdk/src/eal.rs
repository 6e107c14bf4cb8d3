//! EAL start-up, once per process, with braid's PCI-safety rule enforced.

use std::ffi::{c_char, c_int, CString};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Error;

static STARTED: AtomicBool = AtomicBool::new(false);
static RUNTIME_DIR: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Proof that EAL is up. There is one per process; it is `Send + Sync` and
/// cheap to pass around by reference.
#[derive(Debug)]
pub struct Eal {
    file_prefix: Option<String>,
}

/// EAL's short options that take a value (`eal_short_options` in DPDK
/// 22.11's eal_common_options.c): `-c -l -s -S -n -m -r -b -a -d`.
const SHORT_WITH_VALUE: &[u8] = b"clsSnmrbad";

/// EAL's long options that take a value (required or optional; an optional
/// one only takes `=value`, but treating it as taking the next token only
/// makes the check stricter).
const LONG_WITH_VALUE: &[&str] = &[
    "allow", "base-virtaddr", "block", "file-prefix", "force-max-simd-bitwidth", "huge-dir",
    "huge-unlink", "huge-worker-stack", "iova-mode", "lcores", "log-level", "main-lcore",
    "master-lcore", "mbuf-pool-ops-name", "pci-blacklist", "pci-whitelist", "proc-type",
    "service-corelist", "service-coremask", "socket-limit", "socket-mem", "syslog", "trace",
    "trace-bufsz", "trace-dir", "trace-mode", "vdev", "vfio-intr", "vfio-vf-token",
];

/// True when `v` (an `-a`/`--allow` value, devargs after `,` ignored) is a
/// PCI address: `[dddd:]bb:dd.f` in hex.
fn is_pci_addr(v: &str) -> bool {
    let addr = v.split(',').next().unwrap_or("");
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let Some((rest, func)) = addr.rsplit_once('.') else { return false };
    if !(func.len() == 1 && matches!(func.as_bytes()[0], b'0'..=b'7')) {
        return false;
    }
    let parts: Vec<&str> = rest.split(':').collect();
    match parts.as_slice() {
        [bus, dev] => hex(bus, 2) && hex(dev, 2),
        [dom, bus, dev] => hex(dom, 4) && hex(bus, 2) && hex(dev, 2),
        _ => false,
    }
}

/// What walking the arguments as EAL's getopt would found.
#[derive(Debug, Default, PartialEq, Eq)]
struct ArgScan {
    no_pci: bool,
    pci_allow: bool,
    /// `-h`/`--help` (or an abbreviation of it): EAL would exit().
    help: Option<String>,
}

/// Walks `args` the way EAL's `getopt_long` does: stops at `--`, skips the
/// value of every option that takes one (`-aX`, `-a X`, `--opt=X`,
/// `--opt X`, short options clustered as `-vaX`), and notes real `--no-pci`
/// options, PCI addresses given to `-a`/`--allow`, and requests for help.
fn scan(args: &[impl AsRef<str>]) -> ArgScan {
    let mut out = ArgScan::default();
    let mut it = args.iter().map(AsRef::as_ref);
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            };
            // getopt_long accepts unambiguous abbreviations: an exact name
            // wins, otherwise any option the name abbreviates counts.
            let takes_value = if LONG_WITH_VALUE.contains(&name) {
                true
            } else {
                !name.is_empty() && name != "no-pci" && LONG_WITH_VALUE.iter().any(|o| o.starts_with(name))
            };
            if !name.is_empty() && "help".starts_with(name) {
                out.help = Some(a.to_owned());
            }
            if name == "no-pci" && inline.is_none() {
                out.no_pci = true;
            }
            if takes_value {
                let v = match inline {
                    Some(v) => Some(v),
                    None => it.next(),
                };
                if name == "allow" && v.is_some_and(is_pci_addr) {
                    out.pci_allow = true;
                }
            }
            continue;
        }
        let Some(shorts) = a.strip_prefix('-') else { continue }; // non-option: getopt skips it
        let bytes = shorts.as_bytes();
        for (i, &c) in bytes.iter().enumerate() {
            if c == b'h' {
                out.help = Some(a.to_owned());
            }
            if SHORT_WITH_VALUE.contains(&c) {
                let rest = &shorts[i + 1..];
                let v = if rest.is_empty() { it.next() } else { Some(rest) };
                if c == b'a' && v.is_some_and(is_pci_addr) {
                    out.pci_allow = true;
                }
                break;
            }
        }
    }
    out
}

/// True when `args` keep DPDK away from PCI devices it was not given: a
/// real `--no-pci` option, or at least one `-a`/`--allow` whose value is a
/// PCI address (an explicit allow-list of real hardware). Tokens are read
/// as EAL reads them: option values and everything after `--` do not count.
pub fn pci_safe(args: &[impl AsRef<str>]) -> bool {
    let s = scan(args);
    s.no_pci || s.pci_allow
}

impl Eal {
    /// Starts EAL from an argument list (without the program name).
    ///
    /// Refuses arguments that would let DPDK probe PCI devices, refuses a
    /// second start, and turns DPDK's rejection of arguments into
    /// [`Error::EalInit`] instead of exiting.
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal, Error> {
        let args: Vec<String> = args.iter().map(|a| a.as_ref().to_owned()).collect();
        let mut owned = Vec::with_capacity(args.len() + 1);
        owned.push(CString::new("braid").expect("static"));
        for a in &args {
            owned.push(CString::new(a.as_str()).map_err(|_| Error::BadArgument(a.clone()))?);
        }
        let s = scan(&args);
        if let Some(h) = s.help {
            return Err(Error::HelpRefused(h));
        }
        if !(s.no_pci || s.pci_allow) {
            return Err(Error::PciProbeRefused { args });
        }
        // Only now, with the arguments accepted, is this the one start.
        if STARTED.swap(true, Ordering::SeqCst) {
            return Err(Error::EalAlreadyInitialised);
        }
        // EAL may keep pointers into argv for the life of the process, so the
        // strings and the array are leaked on purpose (once per process).
        let owned: &'static mut [CString] = owned.leak();
        let argv: &'static mut [*mut c_char] =
            owned.iter().map(|s| s.as_ptr() as *mut c_char).collect::<Vec<_>>().leak();
        let file_prefix = args
            .iter()
            .position(|a| a == "--file-prefix")
            .and_then(|i| args.get(i + 1).cloned())
            .or_else(|| args.iter().find_map(|a| a.strip_prefix("--file-prefix=").map(str::to_owned)));
        let runtime_dir = file_prefix.as_ref().map(|p| format!("/var/run/dpdk/{p}"));
        let dir_was_there = runtime_dir.as_ref().is_some_and(|d| std::path::Path::new(d).exists());
        // SAFETY: argv points at argc valid NUL-terminated strings that live
        // forever; rte_eal_init is called at most once (STARTED above).
        let ret = unsafe { dpdk_sys::rte_eal_init(argv.len() as c_int, argv.as_mut_ptr()) };
        if ret < 0 {
            let errno = crate::rte_errno();
            // Remove the runtime folder this failed start made (never one that
            // was there before: it may belong to a running process).
            if let (Some(d), false) = (&runtime_dir, dir_was_there) {
                let _ = std::fs::remove_dir_all(d);
            }
            return Err(Error::EalInit { errno, reason: crate::strerror(errno), args });
        }
        Ok(Eal { file_prefix })
    }

    /// Number of lcores EAL runs (main included).
    pub fn lcore_count(&self) -> u32 {
        // SAFETY: EAL is up.
        unsafe { dpdk_sys::rte_lcore_count() }
    }

    /// The main lcore's id.
    pub fn main_lcore(&self) -> crate::LcoreId {
        // SAFETY: EAL is up.
        crate::LcoreId(unsafe { dpdk_sys::rte_get_main_lcore() })
    }

    /// Worker lcores (every enabled lcore but the main one), in order.
    pub fn worker_lcores(&self) -> Vec<crate::LcoreId> {
        let mut out = Vec::new();
        let mut i: u32 = u32::MAX; // -1: start of iteration
        loop {
            // SAFETY: EAL is up; skip_main=1, wrap=0.
            i = unsafe { dpdk_sys::rte_get_next_lcore(i, 1, 0) };
            if i >= dpdk_sys::BRAID_MAX_LCORE as u32 {
                break;
            }
            out.push(crate::LcoreId(i));
        }
        out
    }

    /// The `--file-prefix` EAL was started with, if any.
    pub fn file_prefix(&self) -> Option<&str> {
        self.file_prefix.as_deref()
    }

    /// Removes `/var/run/dpdk/<file-prefix>` when the process exits (DPDK
    /// leaves it behind). For tests and short-lived tools.
    pub fn remove_runtime_dir_at_exit(&self) {
        extern "C" fn remove() {
            if let Some(p) = RUNTIME_DIR.get() {
                let _ = std::fs::remove_dir_all(p);
            }
        }
        extern "C" {
            fn atexit(cb: extern "C" fn()) -> std::ffi::c_int;
        }
        if let Some(p) = &self.file_prefix {
            if RUNTIME_DIR.set(format!("/var/run/dpdk/{p}")).is_ok() {
                // SAFETY: registers a plain extern "C" function with libc.
                unsafe { atexit(remove) };
            }
        }
    }

    /// Releases EAL's resources (`rte_eal_cleanup`) and removes the runtime
    /// folder `/var/run/dpdk/<prefix>`. Every port, ring, reassembly table
    /// and pool must be gone: if one is still alive or was leaked (a pool
    /// dropped with mbufs out), `rte_eal_cleanup` is skipped so no later
    /// drop touches unmapped memory; the runtime folder is still removed.
    ///
    /// Devices EAL probed that no `Port` holds are closed first
    /// (`rte_eal_cleanup` leaves them: a `net_tap`'s kernel interface
    /// stays until the process ends).
    pub fn cleanup(self) {
        if crate::mempool::pools_outstanding() || crate::eal_objects_outstanding() {
            eprintln!("braid-dpdk: a mempool, port, ring or reassembly table is still alive or leaked; skipping rte_eal_cleanup");
        } else {
            crate::port::close_unheld();
            // SAFETY: consumes the only handle, and no pool, port, ring or
            // reassembly table is left whose drop could touch EAL memory
            // afterwards (closures still running on lcores hold theirs).
            unsafe { dpdk_sys::rte_eal_cleanup() };
        }
        if let Some(p) = &self.file_prefix {
            let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{p}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pci_safe;

    #[test]
    fn pci_rule() {
        assert!(pci_safe(&["--no-pci", "--no-huge"]));
        assert!(pci_safe(&["-a", "0000:01:00.0"]));
        assert!(pci_safe(&["-a0000:01:00.0"]));
        assert!(pci_safe(&["--allow=0000:01:00.0"]));
        assert!(!pci_safe(&["--no-huge", "-l", "0"]));
        let none: [&str; 0] = [];
        assert!(!pci_safe(&none));
        assert!(!pci_safe(&["--vdev=net_null0"]));
        // Good forms.
        assert!(pci_safe(&["-l", "0", "--no-pci"]));
        assert!(pci_safe(&["-a", "01:00.0"]));
        assert!(pci_safe(&["-a", "0000:3b:00.1,txq_inline=128"]));
        assert!(pci_safe(&["--allow", "0000:01:00.0"]));
        assert!(pci_safe(&["--file-prefix", "x", "--no-pci"]));
        assert!(pci_safe(&["--file-prefix=-a", "--no-pci"]));
        assert!(pci_safe(&["-vl0", "--no-pci"]));
        // Bypasses: the token is a value or after `--`, or -a names no PCI device.
        assert!(!pci_safe(&["--file-prefix", "-a", "0000:01:00.0"]));
        assert!(!pci_safe(&["--file-prefix", "-a"]));
        assert!(!pci_safe(&["-d", "--no-pci"]));
        assert!(!pci_safe(&["-d", "--no-pci", "-a"]));
        assert!(!pci_safe(&["--", "--no-pci"]));
        assert!(!pci_safe(&["--", "-a", "0000:01:00.0"]));
        assert!(!pci_safe(&["-a", "net_null0"]));
        assert!(!pci_safe(&["-anet_null0"]));
        assert!(!pci_safe(&["--allow=net_null0"]));
        assert!(!pci_safe(&["-a"]));
        assert!(!pci_safe(&["--no-pci=1"]));
        assert!(!pci_safe(&["--vdev", "--no-pci"]));
        assert!(!pci_safe(&["--file", "--no-pci"]), "abbreviation of --file-prefix takes a value");
        assert!(!pci_safe(&["-l0", "-a", "0000:01:00.8"]));
        assert!(!pci_safe(&["-a", "0000:01:00"]));
    }

    #[test]
    fn help_is_refused_before_eal_starts() {
        use crate::{Eal, Error};
        for h in ["-h", "--help", "--he", "-vh"] {
            let e = Eal::init(&["--no-pci", h]).unwrap_err();
            assert!(matches!(e, Error::HelpRefused(_)), "{h}: {e}");
        }
        assert!(matches!(Eal::init(&["--no-pci", "bad\0arg"]).unwrap_err(), Error::BadArgument(_)));
        assert!(matches!(Eal::init(&["--vdev=net_null0"]).unwrap_err(), Error::PciProbeRefused { .. }));
        assert!(super::scan(&["--vdev", "-h"]).help.is_none());
    }
}
