//! `rliv bench ...`: commands that measure and print figures. Timings live
//! here, never in tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use rliv_state::{Commit, PairCounters, PairKey, Rewards, Store};

use crate::config::Config;
use crate::gen::{generate, Rng};

#[derive(Subcommand)]
pub enum BenchCmd {
    /// End-to-end replay throughput and peak RSS on a generated log
    /// (runs `rliv replay` as a child process so RSS is the job's own).
    Replay {
        /// Exposures to generate (about as many actions come with them).
        #[arg(long, default_value_t = 1_000_000)]
        exposures: u64,
        /// Worker threads.
        #[arg(short = 'w', long, default_value_t = 2)]
        workers: usize,
        /// Keep the generated log and state here (default: a temp directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Also write transitions (JSONL) during the replay.
        #[arg(long)]
        transitions: bool,
        /// Cluster mode: run the job as this many processes of -w workers
        /// each, all on 127.0.0.1 (measures the network hop against one
        /// process with the same total of workers).
        #[arg(long, default_value_t = 1)]
        processes: usize,
    },
    /// TD samples per second of the learner at the configured batch size
    /// (synthetic transitions, default model), FLOPs per sample, memory.
    Learner {
        /// Updates to time (after 3 warm-up updates).
        #[arg(long, default_value_t = 50)]
        steps: u64,
        /// Threads of the fused engine (default: learner.num_threads).
        #[arg(long)]
        threads: Option<usize>,
        /// "fused" or "candle" (default: learner.engine).
        #[arg(long)]
        engine: Option<String>,
        /// "cpu" or "cuda" (the candle engine; default: learner.device).
        #[arg(long)]
        device: Option<String>,
        /// Samples per update (default: learner.batch_size).
        #[arg(long)]
        batch: Option<usize>,
    },
    /// The ranking service under load: a Rust client on loopback, N
    /// concurrent keep-alive connections, C candidates per request; and the
    /// model's scoring alone. Uses a generated log and an untrained default
    /// model unless --state/--checkpoints are given.
    Serve {
        #[arg(long, default_value_t = 300)]
        candidates: usize,
        #[arg(long, default_value_t = 8)]
        connections: usize,
        /// Requests per connection.
        #[arg(long, default_value_t = 500)]
        requests: usize,
        #[arg(long)]
        state: Option<PathBuf>,
        #[arg(long)]
        checkpoints: Option<PathBuf>,
    },
    /// Kafka: events/s from the broker to pair state, consumer lag while a
    /// producer writes, and the same log from files (starts a Tansu broker
    /// unless RLIV_KAFKA_BROKERS is set).
    Kafka {
        #[arg(long, default_value_t = 200_000)]
        exposures: u64,
        #[arg(short = 'w', long, default_value_t = 2)]
        workers: usize,
    },
    /// Bytes per pair on disk after compaction, for N synthetic pairs.
    State {
        #[arg(long, default_value_t = 10_000_000)]
        pairs: u64,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

pub fn run(cfg: &Config, cmd: BenchCmd, config_file: Option<&Path>) -> Result<()> {
    match cmd {
        BenchCmd::Replay {
            exposures,
            workers,
            dir,
            transitions,
            processes,
        } => bench_replay(
            cfg,
            exposures,
            workers,
            processes,
            dir,
            transitions,
            config_file,
        ),
        BenchCmd::State { pairs, dir } => bench_state(cfg, pairs, dir),
        BenchCmd::Kafka { exposures, workers } => crate::bench_kafka::run(cfg, exposures, workers),
        BenchCmd::Serve {
            candidates,
            connections,
            requests,
            state,
            checkpoints,
        } => crate::bench_serve::run(cfg, candidates, connections, requests, state, checkpoints),
        BenchCmd::Learner {
            steps,
            threads,
            engine,
            device,
            batch,
        } => bench_learner(cfg, steps, threads, engine, device, batch),
    }
}

fn work_dir(dir: Option<PathBuf>) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    match dir {
        Some(d) => {
            std::fs::create_dir_all(&d)?;
            Ok((d, None))
        }
        None => {
            let t = tempfile::tempdir()?;
            Ok((t.path().to_path_buf(), Some(t)))
        }
    }
}

fn bench_replay(
    cfg: &Config,
    exposures: u64,
    workers: usize,
    processes: usize,
    dir: Option<PathBuf>,
    transitions: bool,
    config_file: Option<&Path>,
) -> Result<()> {
    if processes == 0 {
        bail!(crate::train::UsageError(
            "--processes must be at least 1".into()
        ));
    }
    let (dir, _keep) = work_dir(dir)?;
    let data = dir.join(format!("log-{exposures}"));
    if !data.join("actions.jsonl").exists() {
        let g = crate::gen::GenConfig {
            exposures,
            ..cfg.gen.clone()
        };
        let t = Instant::now();
        generate(&g, &data)?;
        eprintln!(
            "generated {exposures} exposures in {:.1}s",
            t.elapsed().as_secs_f64()
        );
    }
    let bytes: u64 = ["exposures.jsonl", "actions.jsonl"]
        .iter()
        .map(|f| {
            std::fs::metadata(data.join(f))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum();
    let state = dir.join(format!("state-{exposures}-p{processes}-w{workers}"));
    if state.exists() {
        std::fs::remove_dir_all(&state)?;
    }
    let exe = std::env::current_exe()?;
    let hosts = dir.join("bench-hosts");
    if processes > 1 {
        // Free loopback ports (bound, then released for the job).
        let ls: Vec<std::net::TcpListener> = (0..processes)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<_>>()?;
        let mut text = String::new();
        for l in &ls {
            text += &format!("{}\n", l.local_addr()?);
        }
        std::fs::write(&hosts, text)?;
    }
    let command = |process: usize| {
        let mut cmd = Command::new(&exe);
        if let Some(c) = config_file {
            cmd.arg("--config").arg(c);
        }
        cmd.args([
            "replay",
            "--json",
            "-q",
            "-w",
            &workers.to_string(),
            "--exposures",
        ])
        .arg(data.join("exposures.jsonl"))
        .arg("--actions")
        .arg(data.join("actions.jsonl"))
        .arg("--state")
        .arg(&state);
        if transitions {
            cmd.arg("--transitions").arg(dir.join("transitions.jsonl"));
        }
        if processes > 1 {
            cmd.args([
                "--processes",
                &processes.to_string(),
                "--process",
                &process.to_string(),
                "--hosts",
            ])
            .arg(&hosts);
        }
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd
    };
    let t = Instant::now();
    let children = (0..processes)
        .rev()
        .map(|i| command(i).spawn())
        .collect::<std::io::Result<Vec<_>>>()
        .context("running rliv replay")?;
    let mut outs = children
        .into_iter()
        .map(|c| c.wait_with_output())
        .collect::<std::io::Result<Vec<_>>>()?;
    let wall = t.elapsed().as_secs_f64();
    outs.reverse();
    for (i, out) in outs.iter().enumerate() {
        if !out.status.success() {
            bail!(
                "rliv replay (process {i}) failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let mut rss = Vec::new();
    for out in &outs[1..] {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        rss.push(v["peak_rss_bytes"].as_f64().unwrap_or(0.0));
    }
    let out = &outs[0];
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let lines = summary["run"]["lines"].as_u64().unwrap_or(0);
    let pairs = summary["pairs_total"].as_u64().unwrap_or(0);
    let mut sst = 0;
    for d in rliv_state::Layout::of(&state)?.dirs() {
        let store = Store::open(&d, &cfg.state)?;
        store.compact()?;
        sst += store.pairs_sst_bytes()?;
    }
    println!("bench replay: {exposures} exposures, {lines} input events ({:.0} MiB JSONL), {processes} process(es) x {workers} workers, {} cores",
        bytes as f64 / (1 << 20) as f64, std::thread::available_parallelism().map_or(0, |n| n.get()));
    println!(
        "  job time        {:.2} s (process wall {:.2} s)",
        summary["elapsed_s"].as_f64().unwrap_or(0.0),
        wall
    );
    println!(
        "  throughput      {:.0} events/s end to end (JSON parsing and RocksDB writes included)",
        summary["events_per_s"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  peak RSS        {:.0} MiB{}",
        summary["peak_rss_bytes"].as_f64().unwrap_or(0.0) / (1 << 20) as f64,
        if rss.is_empty() {
            String::new()
        } else {
            format!(
                " (process 0); the others {:?} MiB",
                rss.iter()
                    .map(|r| (r / (1 << 20) as f64).round())
                    .collect::<Vec<_>>()
            )
        }
    );
    println!(
        "  pairs           {pairs}; after compaction {:.1} bytes/pair on disk",
        sst as f64 / pairs.max(1) as f64
    );
    Ok(())
}

fn bench_state(cfg: &Config, pairs: u64, dir: Option<PathBuf>) -> Result<()> {
    let (dir, _keep) = work_dir(dir)?;
    let path = dir.join(format!("pairs-{pairs}"));
    if path.exists() {
        std::fs::remove_dir_all(&path)?;
    }
    let mut opts = cfg.state.clone();
    opts.sync_commits = false;
    let store = Store::open(&path, &opts)?;
    let mut rng = Rng::new(7);
    let t = Instant::now();
    // Users with ~20 authors each; counters shaped like the generated log's.
    let mut batch = Commit::default();
    let per_user = 20u64;
    for i in 0..pairs {
        let user = i / per_user + 1;
        let author = (crate::gen::Rng::new(i).next_u64() % 5_000_000) + 1;
        let mut c = PairCounters::default();
        let n = 1 + (rng.f64().powi(4) * 40.0) as u64;
        let mut ts = crate::gen::T0 + rng.range(0, 7 * 86_400_000);
        for _ in 0..n {
            let click = rng.f64() < 0.3;
            let watch = if rng.f64() < 0.6 {
                (rng.f64() * 600.0).round() / 10.0
            } else {
                0.0
            };
            c.apply(
                ts,
                &Rewards {
                    click: f64::from(u8::from(click)),
                    watch,
                    follow: 0.0,
                    gift: 0.0,
                },
            );
            ts += rng.range(1000, 3_600_000);
        }
        batch.pairs.push((PairKey::new(user, author), c.to_bytes()));
        if batch.pairs.len() == 100_000 {
            store.commit(std::mem::take(&mut batch))?;
        }
    }
    store.commit(batch)?;
    let write_s = t.elapsed().as_secs_f64();
    store.compact()?;
    let sst = store.pairs_sst_bytes()?;
    println!(
        "bench state: {pairs} pairs written in {write_s:.1}s ({:.0} pairs/s); after compaction {} bytes, {:.1} bytes/pair ({} compression)",
        pairs as f64 / write_s,
        sst,
        sst as f64 / pairs as f64,
        opts.compression
    );
    Ok(())
}

fn bench_learner(
    cfg: &Config,
    steps: u64,
    threads: Option<usize>,
    engine: Option<String>,
    device: Option<String>,
    batch: Option<usize>,
) -> Result<()> {
    let mut l = cfg.learner.clone();
    if let Some(d) = device {
        l.device = d;
    }
    if let Some(b) = batch {
        l.batch_size = b;
    }
    if let Some(t) = threads {
        l.num_threads = t;
    }
    if let Some(e) = engine {
        l.engine = e;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let r = rliv_learner::bench::run(&l, steps).map_err(anyhow::Error::msg)?;
    let gflops = r.flops_per_sample * r.samples_per_sec / 1e9;
    println!(
        "bench learner: {} engine on {}, batch {}, {} updates in {:.2}s on {} threads ({} cores)",
        l.engine,
        l.device,
        r.batch,
        r.steps,
        r.seconds,
        l.threads(),
        cores
    );
    println!(
        "  throughput      {:.0} TD samples/s ({:.1} updates/s)",
        r.samples_per_sec,
        r.samples_per_sec / r.batch as f64
    );
    println!(
        "  compute         {:.2} MFLOP/sample (towers fwd+bwd, targets fwd, assist) = {:.1} GFLOP/s",
        r.flops_per_sample / 1e6,
        gflops
    );
    println!(
        "  memory          {:.0} MiB weights (embeddings, nets, targets) + {:.0} MiB Adam moments",
        r.model_bytes as f64 / (1 << 20) as f64,
        r.optimizer_bytes as f64 / (1 << 20) as f64
    );
    println!("  last loss       {:.4}", r.last_loss);
    Ok(())
}
