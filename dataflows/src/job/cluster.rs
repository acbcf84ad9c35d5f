//! Cluster mode: one job over `N` processes (`--processes N --process I
//! --hosts FILE`), each with `-w` worker threads, on timely's own TCP
//! allocator.
//!
//! This module owns the part timely leaves to its caller: connecting the
//! processes. rliv connects the sockets itself (then hands them to
//! `initialize_networking_from_sockets`), so that
//! - stdout stays clean (timely's own connector prints its retries there);
//! - a peer that never comes up is an error after
//!   `replay.cluster_connect_timeout_ms`, not an endless retry;
//! - every process checks that its peers run the same job shape (process
//!   count, workers, join configuration) before any data moves;
//! - process 0, which holds the job checkpoint, tells every other process
//!   where the cluster stands ([`Start`]) in the same exchange.
//!
//! A lost peer makes timely's network threads panic (by design); in cluster
//! mode [`exit_on_panic`] turns any panic into one clear line on stderr and
//! exit status 1. Nothing is lost by exiting there: the commit protocol
//! (see `shard`) makes a restart of every process resume exactly.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::JobError;

/// Where this process stands in a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSpec {
    pub processes: usize,
    /// This process's index, `0..processes`.
    pub process: usize,
    /// `host:port` of every process, in process order.
    pub hosts: Vec<String>,
}

impl ClusterSpec {
    /// Reads a host file: one `host:port` per line, in process order; blank
    /// lines and `#` comments are skipped; lines past the first `processes`
    /// are ignored.
    pub fn from_host_file(
        path: &Path,
        processes: usize,
        process: usize,
    ) -> Result<ClusterSpec, JobError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            JobError::Config(format!("reading the host file {}: {e}", path.display()))
        })?;
        ClusterSpec::parse(&text, processes, process)
            .map_err(|e| JobError::Config(format!("host file {}: {e}", path.display())))
    }

    /// [`ClusterSpec::from_host_file`] on the file's text.
    pub fn parse(text: &str, processes: usize, process: usize) -> Result<ClusterSpec, String> {
        if processes < 2 {
            return Err(format!(
                "--processes {processes}: a cluster has at least 2 processes (run without --processes on one)"
            ));
        }
        if process >= processes {
            return Err(format!(
                "--process {process} is not below --processes {processes}"
            ));
        }
        let mut hosts = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let ok = line
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok || line.contains(char::is_whitespace) {
                return Err(format!("line {}: {line:?} is not host:port", n + 1));
            }
            hosts.push(line.to_string());
        }
        if hosts.len() < processes {
            return Err(format!(
                "{} host:port lines for --processes {processes}",
                hosts.len()
            ));
        }
        hosts.truncate(processes);
        for (i, h) in hosts.iter().enumerate() {
            if let Some(j) = hosts[..i].iter().position(|o| o == h) {
                return Err(format!("processes {j} and {i} both listen on {h}"));
            }
        }
        Ok(ClusterSpec {
            processes,
            process,
            hosts,
        })
    }
}

/// What process 0 tells every other process when it connects.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) enum Start {
    /// Run. `committed_before`: every epoch below it is globally committed
    /// (the job checkpoint's `next_epoch`); a shard rolls back any commit at
    /// or after it. `last_commit`: the newest globally committed epoch, which
    /// every shard must hold. `inflight`: process 0's `max_inflight_chunks`
    /// (the shards' horizon for pruning rollback records).
    Go {
        committed_before: u64,
        last_commit: Option<u64>,
        reopen: bool,
        inflight: u64,
        /// Which transition outputs process 0 writes (every worker formats its own).
        lines: bool,
        records: bool,
    },
    /// The state already holds exactly these inputs: nothing to do.
    UpToDate,
    /// Process 0 refused to run (its message).
    Refused(String),
}

/// The first message on every connection, from the higher process to the lower.
#[derive(Serialize, Deserialize)]
struct Hello {
    magic: String,
    process: usize,
    processes: usize,
    threads: usize,
    /// The configuration every process must share (the join's, ...).
    shape: String,
}

/// The lower process's answer: `Err` when the shapes differ.
#[derive(Serialize, Deserialize)]
struct Welcome {
    answer: Result<Option<Start>, String>,
}

const MAGIC: &str = "rliv-cluster/1";
const MAX_MESSAGE: u32 = 1 << 20;

fn send<T: Serialize>(s: &mut TcpStream, msg: &T) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    s.write_all(&(bytes.len() as u32).to_be_bytes())?;
    s.write_all(&bytes)?;
    s.flush()
}

fn receive<T: for<'de> Deserialize<'de>>(s: &mut TcpStream) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len);
    if len > MAX_MESSAGE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a {len}-byte greeting: not an rliv cluster peer"),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    s.read_exact(&mut buf)?;
    serde_json::from_slice(&buf).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not an rliv cluster peer: {e}"),
        )
    })
}

/// Connects this process to every other one (it connects to the lower
/// processes and accepts the higher ones, on its own `host:port`), checks
/// that all run the same shape, and passes process 0's [`Start`] around.
/// Process 0 passes `Some(start)` and gets it back; the others get process
/// 0's. Returns one socket per process (`None` at this process's index),
/// ready for timely.
pub(super) fn connect(
    spec: &ClusterSpec,
    threads: usize,
    shape: &str,
    start: Option<Start>,
    timeout: Duration,
) -> Result<(Vec<Option<TcpStream>>, Start), JobError> {
    let me = spec.process;
    let deadline = Instant::now() + timeout;
    let listener = TcpListener::bind(&spec.hosts[me]).map_err(|e| {
        JobError::Aborted(format!(
            "process {me}: listening on {} (line {} of the host file): {e}",
            spec.hosts[me],
            me + 1
        ))
    })?;
    let accept = {
        let spec = spec.clone();
        let shape = shape.to_string();
        let start = start.clone();
        std::thread::Builder::new()
            .name("rliv-cluster-accept".into())
            .spawn(move || accept_all(listener, &spec, threads, &shape, start, timeout, deadline))
            .map_err(|e| JobError::Aborted(format!("starting the cluster listener: {e}")))?
    };
    let mut lower = Vec::with_capacity(me);
    let mut got = start;
    let hello = Hello {
        magic: MAGIC.into(),
        process: me,
        processes: spec.processes,
        threads,
        shape: shape.to_string(),
    };
    for (peer, addr) in spec.hosts.iter().enumerate().take(me) {
        let mut s = loop {
            match TcpStream::connect(addr) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(JobError::Aborted(format!(
                        "process {me}: process {peer} at {addr} did not come up within {} ms: {e}",
                        timeout.as_millis()
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let talk = |s: &mut TcpStream| -> std::io::Result<Welcome> {
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(timeout))?;
            send(s, &hello)?;
            receive(s)
        };
        let welcome = talk(&mut s).map_err(|e| {
            JobError::Aborted(format!(
                "process {me}: greeting process {peer} at {addr}: {e}"
            ))
        })?;
        match welcome.answer {
            Err(msg) => {
                return Err(JobError::Config(format!(
                    "process {peer} refused this process: {msg}"
                )))
            }
            Ok(Some(s0)) if peer == 0 => got = Some(s0),
            Ok(_) => {}
        }
        s.set_read_timeout(None)
            .map_err(|e| JobError::Aborted(format!("process {me}: {e}")))?;
        lower.push(Some(s));
    }
    let higher = accept
        .join()
        .map_err(|_| JobError::Aborted("the cluster listener panicked".into()))??;
    let start =
        got.ok_or_else(|| JobError::Aborted(format!("process {me}: process 0 sent no start")))?;
    let mut sockets = lower;
    sockets.push(None);
    sockets.extend(higher.into_iter().map(Some));
    Ok((sockets, start))
}

/// Accepts processes `me+1..N` (in any order), checks their greeting, answers.
fn accept_all(
    listener: TcpListener,
    spec: &ClusterSpec,
    threads: usize,
    shape: &str,
    start: Option<Start>,
    timeout: Duration,
    deadline: Instant,
) -> Result<Vec<TcpStream>, JobError> {
    let me = spec.process;
    let mut slots: Vec<Option<TcpStream>> = (me + 1..spec.processes).map(|_| None).collect();
    listener
        .set_nonblocking(true)
        .map_err(|e| JobError::Aborted(format!("process {me}: {e}")))?;
    while slots.iter().any(Option::is_none) {
        let (mut s, from) = match listener.accept() {
            Ok(x) => x,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    let missing: Vec<usize> = slots
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| s.is_none())
                        .map(|(i, _)| me + 1 + i)
                        .collect();
                    return Err(JobError::Aborted(format!(
                        "process {me}: processes {missing:?} did not connect within {} ms \
                         (are they started with --process, the same --processes and host file?)",
                        timeout.as_millis()
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => return Err(JobError::Aborted(format!("process {me}: accepting: {e}"))),
        };
        let greeted = (|| -> std::io::Result<Hello> {
            s.set_nonblocking(false)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            receive(&mut s)
        })();
        let hello = match greeted {
            Ok(h) => h,
            Err(e) => {
                // Something else knocked on the port: not fatal, keep waiting.
                tracing::warn!("process {me}: ignoring a connection from {from}: {e}");
                continue;
            }
        };
        let refusal = if hello.magic != MAGIC {
            Some(format!("it speaks {:?}, this rliv {MAGIC:?}", hello.magic))
        } else if hello.processes != spec.processes {
            Some(format!(
                "it runs with --processes {}, process {me} with {}",
                hello.processes, spec.processes
            ))
        } else if hello.threads != threads {
            Some(format!(
                "it runs with -w {}, process {me} with -w {threads} (every process needs the same -w)",
                hello.threads
            ))
        } else if hello.shape != shape {
            Some(format!(
                "its configuration differs from process {me}'s ({} vs {shape})",
                hello.shape
            ))
        } else if hello.process <= me || hello.process >= spec.processes {
            Some(format!("it says it is process {}", hello.process))
        } else if slots[hello.process - me - 1].is_some() {
            Some(format!("process {} connected twice", hello.process))
        } else {
            None
        };
        let answer = match &refusal {
            Some(r) => Err(r.clone()),
            None => Ok(start.clone()),
        };
        let answered = send(&mut s, &Welcome { answer });
        if let Some(r) = refusal {
            return Err(JobError::Config(format!(
                "process {me} refused a peer from {from}: {r}"
            )));
        }
        answered.map_err(|e| JobError::Aborted(format!("process {me}: answering {from}: {e}")))?;
        s.set_read_timeout(None)
            .map_err(|e| JobError::Aborted(format!("process {me}: {e}")))?;
        let slot = hello.process - me - 1;
        slots[slot] = Some(s);
    }
    Ok(slots.into_iter().flatten().collect())
}

/// A stable description of the configuration every process must share.
pub(super) fn shape(
    join: &crate::config::JoinConfig,
    replay: &crate::config::ReplayConfig,
    views: &crate::views::ViewsConfig,
) -> String {
    format!(
        "window_ms={} allowed_lateness_ms={} late_retention_ms={} drain_at_end={} views={}",
        join.window_ms,
        join.allowed_lateness_ms,
        join.late_retention_ms,
        replay.drain_at_end,
        serde_json::to_string(views).unwrap_or_default()
    )
}

/// Runs `func` on every worker of this process, connected to the others by `sockets`.
pub(super) fn execute<T, F>(
    sockets: Vec<Option<TcpStream>>,
    process: usize,
    threads: usize,
    func: F,
) -> Result<timely::communication::WorkerGuards<T>, JobError>
where
    T: Send + 'static,
    F: Fn(&mut timely::worker::Worker) -> T + Send + Sync + 'static,
{
    use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
    use timely::communication::allocator::ProcessBuilder;
    use timely::communication::{AllocatorBuilder, Hooks};
    let hooks = Hooks::default();
    let local =
        ProcessBuilder::new_typed_vector(threads, hooks.refill.clone(), hooks.spill.clone());
    let (builders, guard) =
        initialize_networking_from_sockets(local, sockets, process, threads, hooks)
            .map_err(|e| JobError::Aborted(format!("starting the cluster network: {e}")))?;
    let builders = builders.into_iter().map(AllocatorBuilder::Tcp).collect();
    timely::execute::execute_from(
        builders,
        Box::new(guard),
        timely::WorkerConfig::default(),
        func,
    )
    .map_err(JobError::Aborted)
}

/// In cluster mode a panic anywhere (a lost peer makes timely's network
/// threads panic) ends the process with one line on stderr and status 1:
/// the state is consistent at its last commit, and restarting every
/// process resumes exactly. Installed once per process.
pub(super) fn exit_on_panic(process: usize) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(move |info| {
            let payload = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            let network = payload.contains("timely communication error")
                || payload.contains("MergeQueue poisoned")
                || payload.contains("thread panic");
            let what = if network {
                "lost the connection to a peer process (it stopped, or the network failed)"
            } else {
                "a thread failed"
            };
            let thread = std::thread::current()
                .name()
                .unwrap_or("unnamed")
                .to_string();
            eprintln!(
                "rliv: error: cluster process {process}: {what}: {payload} (thread {thread}{}). \
                 The state is consistent at the last commit: restart every process with the \
                 same command to resume.",
                info.location()
                    .map(|l| format!(", {}:{}", l.file(), l.line()))
                    .unwrap_or_default()
            );
            std::process::exit(1);
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_files_are_checked() {
        let ok = ClusterSpec::parse(
            "# hosts\n127.0.0.1:7000\n\nnode2:7001  # second\nx:1\n",
            2,
            1,
        )
        .expect("valid");
        assert_eq!(ok.hosts, vec!["127.0.0.1:7000", "node2:7001"]);
        for (text, n, i, want) in [
            ("a:1\n", 2, 0, "1 host:port lines"),
            ("a:1\nb:2\n", 2, 2, "not below"),
            ("a:1\nb\n", 2, 0, "line 2"),
            ("a:1\nb:99999\n", 2, 0, "line 2"),
            ("a:1\na:1\n", 2, 0, "both listen"),
            ("a:1\n", 1, 0, "at least 2"),
        ] {
            let e = ClusterSpec::parse(text, n, i).expect_err(text);
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    fn free_ports(n: usize) -> Vec<String> {
        let ls: Vec<TcpListener> = (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
            .collect();
        ls.iter()
            .map(|l| l.local_addr().expect("addr").to_string())
            .collect()
    }

    fn spec(hosts: &[String], process: usize) -> ClusterSpec {
        ClusterSpec {
            processes: hosts.len(),
            process,
            hosts: hosts.to_vec(),
        }
    }

    #[test]
    fn three_processes_connect_and_all_get_process_0s_start() {
        let hosts = free_ports(3);
        let start = Start::Go {
            committed_before: 7,
            last_commit: Some(6),
            reopen: true,
            inflight: 64,
            lines: true,
            records: false,
        };
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let spec = spec(&hosts, i);
                let s = (i == 0).then(|| start.clone());
                std::thread::spawn(move || connect(&spec, 2, "shape", s, Duration::from_secs(20)))
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            let (sockets, got) = h.join().expect("thread").expect("connect");
            assert_eq!(got, start, "process {i}");
            assert_eq!(sockets.len(), 3);
            for (j, s) in sockets.iter().enumerate() {
                assert_eq!(s.is_none(), i == j, "process {i} socket {j}");
            }
        }
    }

    #[test]
    fn a_peer_with_other_workers_is_refused_on_both_sides() {
        let hosts = free_ports(2);
        let (s0, s1) = (spec(&hosts, 0), spec(&hosts, 1));
        let p0 = std::thread::spawn(move || {
            connect(
                &s0,
                2,
                "shape",
                Some(Start::UpToDate),
                Duration::from_secs(20),
            )
        });
        let e1 = connect(&s1, 1, "shape", None, Duration::from_secs(20)).expect_err("refused");
        assert!(e1.to_string().contains("-w 1"), "{e1}");
        let e0 = p0.join().expect("thread").expect_err("refused");
        assert!(e0.to_string().contains("-w 1"), "{e0}");
    }

    #[test]
    fn a_missing_peer_is_an_error_after_the_timeout() {
        let hosts = free_ports(2);
        let e = connect(&spec(&hosts, 1), 1, "s", None, Duration::from_millis(300))
            .expect_err("nobody at process 0");
        assert!(e.to_string().contains("did not come up"), "{e}");
    }
}
