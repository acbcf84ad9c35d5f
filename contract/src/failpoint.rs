//! Crash points for the fault-injection tests.
//!
//! `RLIV_FAILPOINT=NAME[:N]` kills the process with SIGKILL, as `kill -9`
//! would (no destructor, no flush), the `N`-th time (default the first)
//! [`hit`] runs with that name. The points are named where they are placed
//! (`job.before_commit`, `job.after_commit`, `learner.checkpoint_write`, ...).
//! Unset, a hit costs one load of an initialized `OnceLock`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

struct Armed {
    name: String,
    at: u64,
    seen: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let v = std::env::var("RLIV_FAILPOINT").ok()?;
            let (name, at) = match v.rsplit_once(':') {
                Some((n, k)) => (n.to_string(), k.parse().ok()?),
                None => (v, 1),
            };
            Some(Armed {
                name,
                at,
                seen: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Kills this process if `RLIV_FAILPOINT` names `name` and this is the hit it counts to.
pub fn hit(name: &str) {
    let Some(a) = armed() else { return };
    if a.name != name {
        return;
    }
    if a.seen.fetch_add(1, Ordering::SeqCst) + 1 == a.at {
        eprintln!("rliv: failpoint {name}:{}: killing the process", a.at);
        // SIGKILL from outside, exactly as a user's `kill -9`; abort (no
        // destructor, no flush either) if `kill` cannot be run.
        let _ = std::process::Command::new("kill")
            .args(["-9", &std::process::id().to_string()])
            .status();
        std::process::abort();
    }
}
