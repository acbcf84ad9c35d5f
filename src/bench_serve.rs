//! `rliv bench serve`: latency and throughput of `/rank` under load from a
//! Rust client on loopback, and the time of the model's scoring alone.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use rliv_learner::checkpoint;
use rliv_learner::embed::PairInput;
use rliv_learner::engine::Engine;
use rliv_learner::Learner;
use rliv_state::PairSnapshot;

use crate::config::Config;
use crate::gen::Rng;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A request body with `n` candidates of a random user.
fn body(rng: &mut Rng, n: usize, users: u64, authors: u64) -> Vec<u8> {
    let user = 1 + rng.below(users);
    let cands: Vec<String> = (0..n)
        .map(|_| {
            let a = 1 + rng.below(authors);
            format!(
                r#"{{"item_id":{},"author_id":{a},"item_feats":[{},{}]}}"#,
                a * 1_000_000 + rng.below(40),
                rng.below(20),
                rng.below(10)
            )
        })
        .collect();
    format!(
        r#"{{"user_id":{user},"user_feats":[{},{},{}],"k":10,"candidates":[{}]}}"#,
        rng.below(8),
        rng.below(3),
        rng.below(5),
        cands.join(",")
    )
    .into_bytes()
}

/// One keep-alive HTTP/1.1 `POST /rank`; returns the status (the body is read and dropped).
pub fn post(stream: &mut TcpStream, reader: &mut BufReader<TcpStream>, body: &[u8]) -> Result<u16> {
    let head = format!(
        "POST /rank HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {line:?}"))?;
    let mut len = 0usize;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l
            .strip_prefix("content-length:")
            .or_else(|| l.strip_prefix("Content-Length:"))
        {
            len = v.trim().parse()?;
        }
    }
    let mut buf = vec![0u8; len];
    reader.read_exact(&mut buf)?;
    Ok(status)
}

pub fn run(
    cfg: &Config,
    candidates: usize,
    connections: usize,
    requests: usize,
    state: Option<PathBuf>,
    checkpoints: Option<PathBuf>,
) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (state, checkpoints) = match (state, checkpoints) {
        (Some(s), Some(c)) => (s, c),
        (None, None) => {
            // A generated log's pair state and an untrained default model
            // (scoring cost does not depend on training).
            let g = crate::gen::GenConfig {
                exposures: 100_000,
                ..cfg.gen.clone()
            };
            let log = tmp.path().join("log");
            crate::gen::generate(&g, &log)?;
            let st = tmp.path().join("state");
            let mut req = rliv_dataflows::ReplayRequest::new(
                vec![log.join("exposures.jsonl")],
                vec![log.join("actions.jsonl")],
                st.clone(),
            );
            req.store = cfg.state.clone();
            rliv_dataflows::run_replay(req)?;
            let ck = tmp.path().join("ck");
            let mut l = Learner::new(&cfg.learner).map_err(anyhow::Error::msg)?;
            checkpoint::save(&mut l, &ck, serde_json::Value::Null)?;
            (st, ck)
        }
        _ => bail!("give both --state and --checkpoints, or neither"),
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    // Scoring alone: the forward pass of `candidates` candidates.
    let (model, _, _) = checkpoint::load_newest_model(&checkpoints)?
        .ok_or_else(|| anyhow!("no checkpoint in {}", checkpoints.display()))?;
    let mut rng = Rng::new(5);
    let feats: Vec<[u32; 2]> = (0..candidates)
        .map(|_| [rng.below(20) as u32, rng.below(10) as u32])
        .collect();
    let uf = [1u32, 0, 2];
    let inputs: Vec<PairInput<'_>> = (0..candidates)
        .map(|i| PairInput {
            user_id: 7,
            author_id: 1 + i as u64,
            item_id: 1000 * (1 + i as u64),
            user_feats: &uf,
            item_feats: &feats[i],
            state: PairSnapshot {
                exposures: i as u64,
                clicks: i as u64 / 2,
                watch_sec_total: 7.5 * i as f64,
                last_ts_ms: 1_700_000_000_000,
                ..PairSnapshot::default()
            },
            ts_ms: 1_700_000_600_000,
        })
        .collect();
    println!("bench serve: {candidates} candidates per request, {cores} cores");
    for (name, threads) in [("fused", 1usize), ("fused", 2), ("candle", 1)] {
        let mut engine = Engine::new(name, "cpu", threads).map_err(anyhow::Error::msg)?;
        for _ in 0..5 {
            model
                .score(&mut engine, &inputs)
                .map_err(anyhow::Error::msg)?;
        }
        let mut times = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            model
                .score(&mut engine, &inputs)
                .map_err(anyhow::Error::msg)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "  scoring alone   {name:6} {threads} thread(s): p50 {:.3} ms  p99 {:.3} ms",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }
    drop(model);

    let scfg = crate::serve::ServeConfig {
        addr: "127.0.0.1:0".into(),
        ..cfg.serve.clone()
    };
    let server = crate::serve::Server::start(scfg, &state, &checkpoints)?;
    let addr = server.addr;
    // Wait for the model and the pair state.
    let ready = Instant::now();
    while server.state.current().is_none()
        || server
            .state
            .store
            .read()
            .map(|s| s.is_none())
            .unwrap_or(true)
    {
        if ready.elapsed().as_secs() > 60 {
            bail!("the service did not load the model and the pair state within 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let started = Instant::now();
    let handles: Vec<_> = (0..connections)
        .map(|c| {
            std::thread::spawn(move || -> Result<(Vec<f64>, usize)> {
                let mut rng = Rng::new(100 + c as u64);
                let bodies: Vec<Vec<u8>> = (0..32)
                    .map(|_| body(&mut rng, candidates, 20_000, 5_000))
                    .collect();
                let mut stream = TcpStream::connect(addr).context("connect")?;
                stream.set_nodelay(true)?;
                let mut reader = BufReader::new(stream.try_clone()?);
                let mut lat = Vec::with_capacity(requests);
                let mut failed = 0;
                for i in 0..requests {
                    let t = Instant::now();
                    let status = post(&mut stream, &mut reader, &bodies[i % bodies.len()])?;
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                    if status != 200 {
                        failed += 1;
                    }
                }
                Ok((lat, failed))
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut failed = 0;
    for h in handles {
        let (lat, f) = h.join().map_err(|_| anyhow!("client thread panicked"))??;
        all.extend(lat);
        failed += f;
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    println!(
        "  end to end      {connections} connections x {requests} requests: p50 {:.2} ms  p99 {:.2} ms  {:.0} requests/s  ({} non-200)",
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all.len() as f64 / secs,
        failed
    );
    drop(server);
    Ok(())
}
