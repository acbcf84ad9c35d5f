//! SIGTERM and SIGINT (Ctrl-C): one graceful stop for every long-running
//! command (`rliv serve`, `rliv run`, and whatever else asks for it).
//!
//! [`install`] registers both signals before it returns, so a signal that
//! arrives right after it neither is lost nor kills the process with the
//! default disposition. A watcher thread then waits for them:
//!
//! * the first one prints what is stopping, sets the [`Stop`] flag (a job
//!   polls it at its chunk boundaries) and wakes [`Stop::wait`] (the service
//!   drains its requests in flight);
//! * a second one exits at once with status 128 + the signal number (143,
//!   130). Every command is crash-safe (a replay or a run resumes from its
//!   last commit), so this is the way out of a drain that hangs.
//!
//! Installing registers the signals for the rest of the process: the default
//! "terminate at once" disposition is gone. Install only where something
//! honours the stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The stop request of this process: a flag for jobs, a wait for services.
#[derive(Clone)]
pub struct Stop {
    inner: Arc<Inner>,
}

struct Inner {
    flag: Arc<AtomicBool>,
    /// The signal that asked for the stop (`None` until one does).
    signal: Mutex<Option<&'static str>>,
    woken: Condvar,
    /// What each installer stops, printed with the first signal.
    what: Mutex<Vec<String>>,
}

/// A poisoned lock only means another thread panicked while holding it; the
/// data here (an `Option`, a list of strings) is still whole.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Stop {
    /// A stop that no signal triggers (tests, embedding); see [`Stop::request`].
    pub fn new() -> Stop {
        Stop {
            inner: Arc::new(Inner {
                flag: Arc::new(AtomicBool::new(false)),
                signal: Mutex::new(None),
                woken: Condvar::new(),
                what: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The flag a job polls (set once a stop is requested).
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.inner.flag.clone()
    }

    /// Whether a stop was requested.
    pub fn requested(&self) -> bool {
        self.inner.flag.load(Ordering::SeqCst)
    }

    /// Requests the stop, as the signal named `by` does.
    pub fn request(&self, by: &'static str) {
        let mut signal = lock(&self.inner.signal);
        if signal.is_none() {
            *signal = Some(by);
        }
        self.inner.flag.store(true, Ordering::SeqCst);
        self.inner.woken.notify_all();
    }

    /// Blocks until a stop is requested; returns what requested it.
    pub fn wait(&self) -> &'static str {
        let mut signal = lock(&self.inner.signal);
        loop {
            if let Some(s) = *signal {
                return s;
            }
            signal = self
                .inner
                .woken
                .wait(signal)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Like [`Stop::wait`], for at most `timeout`.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<&'static str> {
        let deadline = Instant::now() + timeout;
        let mut signal = lock(&self.inner.signal);
        loop {
            if let Some(s) = *signal {
                return Some(s);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            signal = self
                .inner
                .woken
                .wait_timeout(signal, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    fn announce(&self, name: &'static str) {
        let what = lock(&self.inner.what).join("; ");
        let what = if what.is_empty() {
            "stopping".to_string()
        } else {
            what
        };
        eprintln!("rliv: {name}: {what} (send it again to exit at once)");
    }
}

impl Default for Stop {
    fn default() -> Self {
        Stop::new()
    }
}

/// The process's one signal watcher, once installed.
static INSTALLED: Mutex<Option<Stop>> = Mutex::new(None);

/// Registers SIGTERM and SIGINT for a graceful stop (once per process; later
/// calls return the same [`Stop`]). `what` says what the stop does, for the
/// message printed with the first signal (e.g. "serve: draining the requests
/// in flight").
pub fn install(what: &str) -> std::io::Result<Stop> {
    let mut installed = lock(&INSTALLED);
    if let Some(stop) = installed.as_ref() {
        lock(&stop.inner.what).push(what.to_string());
        return Ok(stop.clone());
    }
    let stop = Stop::new();
    lock(&stop.inner.what).push(what.to_string());
    watch(stop.clone())?;
    *installed = Some(stop.clone());
    Ok(stop)
}

/// Exit status of a process ended by signal `name` (128 + its number).
fn forced_exit_code(name: &str) -> i32 {
    match name {
        "SIGINT" => 130,
        _ => 143,
    }
}

#[cfg(unix)]
fn watch(stop: Stop) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Registered here, before returning: from now on the signals are ours.
    let (mut term, mut int) = {
        let _guard = rt.enter();
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        )
    };
    std::thread::Builder::new()
        .name("rliv-signals".into())
        .spawn(move || {
            rt.block_on(async move {
                let mut seen = 0u32;
                loop {
                    let name = tokio::select! {
                        Some(()) = term.recv() => "SIGTERM",
                        Some(()) = int.recv() => "SIGINT",
                        else => return,
                    };
                    seen += 1;
                    if seen == 1 {
                        stop.announce(name);
                        stop.request(name);
                    } else {
                        eprintln!("rliv: {name} again: exiting now");
                        std::process::exit(forced_exit_code(name));
                    }
                }
            });
        })?;
    Ok(())
}

#[cfg(not(unix))]
fn watch(stop: Stop) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("rliv-signals".into())
        .spawn(move || {
            rt.block_on(async move {
                let mut seen = 0u32;
                while tokio::signal::ctrl_c().await.is_ok() {
                    seen += 1;
                    if seen == 1 {
                        stop.announce("Ctrl-C");
                        stop.request("Ctrl-C");
                    } else {
                        eprintln!("rliv: Ctrl-C again: exiting now");
                        std::process::exit(forced_exit_code("SIGINT"));
                    }
                }
            });
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_sets_the_flag_and_wakes_the_waiters() {
        let stop = Stop::new();
        assert!(!stop.requested());
        assert_eq!(stop.wait_timeout(Duration::from_millis(10)), None);
        let waiter = {
            let stop = stop.clone();
            std::thread::spawn(move || stop.wait())
        };
        std::thread::sleep(Duration::from_millis(20));
        stop.request("SIGTERM");
        stop.request("SIGINT");
        assert_eq!(waiter.join().ok(), Some("SIGTERM"));
        assert!(stop.flag().load(Ordering::SeqCst));
        assert_eq!(stop.wait_timeout(Duration::ZERO), Some("SIGTERM"));
    }
}
