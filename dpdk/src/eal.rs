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

/// True when `args` keep DPDK away from PCI devices it was not given: either
/// `--no-pci`, or an explicit allow-list (`-a`/`--allow`, real hardware).
pub fn pci_safe(args: &[impl AsRef<str>]) -> bool {
    args.iter().any(|a| {
        let a = a.as_ref();
        a == "--no-pci" || a == "-a" || a.starts_with("--allow") || (a.starts_with("-a") && a.len() > 2)
    })
}

impl Eal {
    /// Starts EAL from an argument list (without the program name).
    ///
    /// Refuses arguments that would let DPDK probe PCI devices, refuses a
    /// second start, and turns DPDK's rejection of arguments into
    /// [`Error::EalInit`] instead of exiting.
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal, Error> {
        let args: Vec<String> = args.iter().map(|a| a.as_ref().to_owned()).collect();
        if !pci_safe(&args) {
            return Err(Error::PciProbeRefused { args });
        }
        if STARTED.swap(true, Ordering::SeqCst) {
            return Err(Error::EalAlreadyInitialised);
        }
        let mut owned = Vec::with_capacity(args.len() + 1);
        owned.push(CString::new("braid").expect("static"));
        for a in &args {
            owned.push(CString::new(a.as_str()).map_err(|_| Error::BadArgument(a.clone()))?);
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
    /// folder `/var/run/dpdk/<prefix>`. Every port and pool must be gone.
    pub fn cleanup(self) {
        // SAFETY: consumes the only handle; callers drop ports/pools first.
        unsafe { dpdk_sys::rte_eal_cleanup() };
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
    }
}
