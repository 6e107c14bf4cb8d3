//! Helpers shared by the integration tests: unique segment paths removed on
//! drop, and child processes (this test binary re-executed) killed on drop.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// Tells a re-executed test binary which side it plays.
pub const ROLE_VAR: &str = "BRAID_SHM_TEST_ROLE";
/// The segment path handed to a child.
pub const PATH_VAR: &str = "BRAID_SHM_TEST_PATH";

/// A /dev/shm path unique to this process and test; removed on drop.
pub struct ShmPath(PathBuf);

impl ShmPath {
    pub fn new(test: &str) -> ShmPath {
        let path = PathBuf::from(format!("/dev/shm/braid-shm-test-{}-{test}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        ShmPath(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ShmPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The role this process was started with, if it is a child.
pub fn child_role() -> Option<(String, PathBuf)> {
    let role = std::env::var(ROLE_VAR).ok()?;
    let path = std::env::var(PATH_VAR).expect("child without a segment path");
    Some((role, PathBuf::from(path)))
}

/// A child process killed (SIGKILL, by pid) and reaped on drop unless it
/// already exited.
pub struct ChildGuard(Option<Child>);

impl ChildGuard {
    /// Re-executes this test binary to run only `test`, as `role`.
    pub fn spawn(test: &str, role: &str, path: &Path) -> ChildGuard {
        let exe = std::env::current_exe().expect("current_exe");
        let child = Command::new(exe)
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(ROLE_VAR, role)
            .env(PATH_VAR, path)
            .spawn()
            .expect("spawn child");
        ChildGuard(Some(child))
    }

    pub fn id(&self) -> u32 {
        self.0.as_ref().expect("child").id()
    }

    /// Has the child exited? (Does not reap a running one.)
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.0.as_mut().expect("child").try_wait().expect("try_wait")
    }

    /// Waits up to `timeout`; panics (and so kills the child) on timeout.
    pub fn wait(mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                self.0 = None;
                return status;
            }
            assert!(Instant::now() < deadline, "child {} did not exit within {timeout:?}", self.id());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends SIGKILL to the child's pid and reaps it.
    pub fn kill(mut self) -> ExitStatus {
        let mut child = self.0.take().expect("child");
        child.kill().expect("kill child");
        child.wait().expect("reap child")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
