//! Running closures on EAL lcores, with panics caught at the FFI edge.

use std::any::Any;
use std::ffi::{c_int, c_void};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use crate::eal::Eal;
use crate::error::Error;

/// An EAL lcore id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LcoreId(pub u32);
impl fmt::Debug for LcoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lcore{}", self.0)
    }
}

impl LcoreId {
    /// The calling thread's lcore id (`LCORE_ID_ANY` on non-EAL threads).
    pub fn current() -> LcoreId {
        // SAFETY: reads a thread-local.
        LcoreId(unsafe { dpdk_sys::braid_lcore_id() })
    }
}

type Slot<T> = Arc<Mutex<Option<Result<T, String>>>>;

/// A closure running on a worker lcore; [`LcoreHandle::join`] waits for it.
#[must_use = "join the lcore to learn whether its closure panicked"]
pub struct LcoreHandle<T> {
    lcore: LcoreId,
    slot: Slot<T>,
}

/// The boxed closure handed through DPDK's `void *` argument; it returns
/// false when the user closure panicked.
struct Job(Box<dyn FnOnce() -> bool + Send>);

unsafe extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the Box<Job> leaked by `launch` for exactly this call.
    let job = unsafe { Box::from_raw(arg as *mut Job) };
    // A panic must never unwind into DPDK's C frames.
    match catch_unwind(AssertUnwindSafe(job.0)) {
        Ok(true) => 0,
        _ => -1,
    }
}

fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Runs `f` on worker lcore `lcore`. Fails when `lcore` is not a worker of
/// this EAL or is still busy.
pub fn launch<F, T>(eal: &Eal, lcore: LcoreId, f: F) -> Result<LcoreHandle<T>, Error>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if !eal.worker_lcores().contains(&lcore) {
        return Err(Error::NoSuchLcore(lcore.0));
    }
    // Two launches on one lcore from two threads must not race between
    // DPDK's state check and the hand-over inside rte_eal_remote_launch.
    static LAUNCH: Mutex<()> = Mutex::new(());
    let _launch = LAUNCH.lock().unwrap_or_else(|e| e.into_inner());
    let slot: Slot<T> = Arc::new(Mutex::new(None));
    let out = slot.clone();
    let job = Box::new(Job(Box::new(move || {
        let r = catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_message(&*p));
        let ok = r.is_ok();
        *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        ok
    })));
    let arg = Box::into_raw(job) as *mut c_void;
    // SAFETY: trampoline takes ownership of `arg` when DPDK runs it.
    let ret = unsafe { dpdk_sys::rte_eal_remote_launch(Some(trampoline), arg, lcore.0) };
    if ret != 0 {
        // SAFETY: DPDK did not take the job; reclaim and drop it.
        drop(unsafe { Box::from_raw(arg as *mut Job) });
        return Err(Error::LcoreBusy(lcore.0));
    }
    Ok(LcoreHandle { lcore, slot })
}

impl<T> LcoreHandle<T> {
    /// The lcore the closure runs on.
    pub fn lcore(&self) -> LcoreId {
        self.lcore
    }

    /// Waits for the closure and returns its value, or the panic message.
    pub fn join(self) -> Result<T, Error> {
        // SAFETY: waits on an lcore we launched.
        unsafe { dpdk_sys::rte_eal_wait_lcore(self.lcore.0) };
        let r = self.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        match r {
            Some(Ok(v)) => Ok(v),
            Some(Err(message)) => Err(Error::LcorePanicked { lcore: self.lcore.0, message }),
            None => Err(Error::LcorePanicked { lcore: self.lcore.0, message: "closure did not finish".into() }),
        }
    }
}
