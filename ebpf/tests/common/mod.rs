//! Helpers of the root tests: root check, skip reporting, unique names.
#![allow(dead_code)]

pub mod netns;

use std::sync::atomic::{AtomicU32, Ordering};

/// Panics unless running as root (root tests never pass silently).
pub fn require_root(test: &str) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "{test} needs root: run by tests/run.sh");
}

/// Report a missing kernel feature: stderr and $SHOAL_SKIP_LOG.
pub fn skip(test: &str, reason: &str) {
    let line = format!("SHOAL-SKIP {test}: {reason}");
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("SHOAL_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            // One write: parallel tests append to the same file (O_APPEND keeps a write whole).
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
}

/// A name unique to this process and call: `<prefix><pid>x<n>` (max 15 chars for links).
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}{}x{}", std::process::id() % 100_000, N.fetch_add(1, Ordering::Relaxed))
}
