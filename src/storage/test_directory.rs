//! A scratch directory for tests, under `std::env::temp_dir()` with a unique name, removed when
//! dropped (also when the test fails and unwinds).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) struct TestDirectory {
    path: PathBuf,
}

impl TestDirectory {
    pub fn new(name: &str) -> TestDirectory {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "lockstep-storage-unit-{name}-{}-{unique}",
            std::process::id()
        ));
        // A leftover from a killed run of the same pid is stale: start clean.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("test: create a scratch directory");
        TestDirectory { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestDirectory {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
