//! A running service: its runtime thread, the model reloader and pair-state
//! catch-up threads, and the graceful stop.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::*;
use crate::http::router;
use crate::rank::*;
use crate::shards::PairShards;
use rliv_state::Layout;

/// Background threads: the model reloader and the pair-state catch-up (which
/// also opens the pair state once it exists, and reopens it when the shards
/// of a cluster state change).
pub fn spawn_background(st: &Arc<AppState>) -> Vec<std::thread::JoinHandle<()>> {
    let mut handles = Vec::new();
    let s = st.clone();
    handles.push(std::thread::spawn(move || {
        let mut last_error = String::new();
        while !s.stop.load(Ordering::Relaxed) {
            match s.reload() {
                Ok(true) => {
                    if let Some(m) = s.current() {
                        eprintln!(
                            "serve: model version {} from {}",
                            m.version,
                            m.dir.display()
                        );
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    s.metrics.reload_failures.fetch_add(1, Ordering::Relaxed);
                    // Say it once per distinct problem, not every interval.
                    let e = e.to_string();
                    if e != last_error {
                        eprintln!("serve: reloading the model: {e}");
                        last_error = e;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(s.cfg.reload_interval_ms));
        }
    }));
    let s = st.clone();
    handles.push(std::thread::spawn(move || {
        static INSTANCE: AtomicU64 = AtomicU64::new(0);
        let secondary = std::env::temp_dir().join(format!(
            "rliv-serve-secondary-{}-{}",
            std::process::id(),
            INSTANCE.fetch_add(1, Ordering::Relaxed)
        ));
        // Each successful opening gets its own scratch directory: a reopened
        // layout never shares one with the instances requests may still hold
        // (failed attempts reuse the next one).
        let mut openings = 0u64;
        let mut open = || {
            let shards =
                PairShards::open_secondary(&s.state_dir, &secondary.join(openings.to_string()))?;
            openings += 1;
            Ok::<_, rliv_state::StateError>(shards)
        };
        let mut warned = false;
        let mut last_reopen_error = String::new();
        while !s.stop.load(Ordering::Relaxed) {
            match s.pair_state() {
                Some(shards) => {
                    if let Err(e) = shards.catch_up() {
                        tracing::warn!("serve: catching up with the pair state: {e}");
                    }
                    // A cluster job's shards may appear one after another:
                    // follow the layout until it stops changing.
                    let moved = Layout::of(&s.state_dir).is_ok_and(|l| l.dirs() != shards.dirs());
                    if moved {
                        match open() {
                            Ok(reopened) => {
                                eprintln!(
                                    "serve: the pair state now has {} store(s)",
                                    reopened.dirs().len()
                                );
                                *write_lock(&s.store) = Some(Arc::new(reopened));
                            }
                            Err(e) => {
                                let e = e.to_string();
                                if e != last_reopen_error {
                                    tracing::warn!("serve: reopening the pair state: {e}");
                                    last_reopen_error = e;
                                }
                            }
                        }
                    }
                }
                None => match open() {
                    Ok(shards) => *write_lock(&s.store) = Some(Arc::new(shards)),
                    Err(e) => {
                        if !warned {
                            eprintln!("serve: pair state not readable yet ({e}); unknown pairs score with zero counters");
                            warned = true;
                        }
                    }
                },
            }
            std::thread::sleep(Duration::from_millis(s.cfg.catch_up_interval_ms));
        }
        let _ = std::fs::remove_dir_all(&secondary);
    }));
    handles
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid [serve] configuration: {0}")]
    Config(ServeConfigError),
    #[error("binding {0}: {1}")]
    Bind(String, std::io::Error),
    #[error("starting the service: {0}")]
    Io(std::io::Error),
}

/// A running server (its own runtime on its own thread).
pub struct Server {
    pub addr: std::net::SocketAddr,
    pub state: Arc<AppState>,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
    background: Vec<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Binds `cfg.addr` and serves until [`Server::stop`] (or drop).
    pub fn start(
        cfg: ServeConfig,
        state_dir: &Path,
        checkpoints: &Path,
    ) -> Result<Server, ServeError> {
        cfg.validate().map_err(ServeError::Config)?;
        let st = AppState::new(cfg.clone(), state_dir, checkpoints);
        // A first attempt right away, so a ready model serves from the start.
        let _ = st.reload();
        let background = spawn_background(&st);
        let listener = std::net::TcpListener::bind(&cfg.addr)
            .map_err(|e| ServeError::Bind(cfg.addr.clone(), e))?;
        listener.set_nonblocking(true).map_err(ServeError::Io)?;
        let addr = listener.local_addr().map_err(ServeError::Io)?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        let app = router(st.clone());
        let thread = std::thread::Builder::new()
            .name("rliv-serve".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        eprintln!("serve: starting the runtime: {e}");
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            eprintln!("serve: {e}");
                            return;
                        }
                    };
                    // Both futures end when a stop is asked for (or the
                    // sender is gone): the server stops accepting and drains
                    // its requests in flight, for at most DRAIN_TIMEOUT.
                    let stopping = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
                        let _ = rx.wait_for(|stop| *stop).await;
                    };
                    let graceful = std::future::IntoFuture::into_future(
                        axum::serve(listener, app).with_graceful_shutdown(stopping(rx.clone())),
                    );
                    let deadline = async {
                        stopping(rx).await;
                        tokio::time::sleep(DRAIN_TIMEOUT).await;
                    };
                    tokio::select! {
                        r = graceful => if let Err(e) = r {
                            eprintln!("serve: {e}");
                        },
                        () = deadline => eprintln!(
                            "serve: requests still in flight after {DRAIN_TIMEOUT:?}: closing their connections"
                        ),
                    }
                });
                // Connections still open after the deadline are dropped here.
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(ServeError::Io)?;
        Ok(Server {
            addr,
            state: st,
            shutdown: Some(tx),
            thread: Some(thread),
            background,
        })
    }

    /// Stops accepting, drains the requests in flight (for at most
    /// [`DRAIN_TIMEOUT`]) and stops the background threads.
    pub fn stop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for t in self.background.drain(..) {
            let _ = t.join();
        }
    }

    /// Serves until `wait` returns (it blocks until a stop is requested,
    /// e.g. by SIGTERM, and says by what), then drains and stops.
    pub fn run_until(mut self, wait: impl FnOnce() -> String) {
        let by = wait();
        self.stop();
        eprintln!("serve: stopped ({by})");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
