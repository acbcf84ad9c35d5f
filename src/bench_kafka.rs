//! `rliv bench kafka`: events/s from a Kafka broker to pair state, the
//! consumer lag while a producer writes at full speed, and the same log
//! replayed from files in the same run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use crate::config::Config;

fn rliv(envs: &[(String, String)], args: &[&str]) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap_or_else(|_| PathBuf::from("rliv")));
    c.args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    c
}

fn ok(mut c: Command) -> Result<()> {
    let out = c.output()?;
    if !out.status.success() {
        bail!("{:?} failed: {}", c, String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn metric(addr: &str, name: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

pub fn run(cfg: &Config, exposures: u64, workers: usize) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let (_broker, brokers) = match std::env::var("RLIV_KAFKA_BROKERS") {
        Ok(b) if !b.is_empty() => (None, b),
        _ => {
            let b = crate::tansu::Broker::start(&dir.join("broker"))?;
            let a = b.addr();
            (Some(b), a)
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let log = dir.join("log");
    let g = crate::gen::GenConfig {
        exposures,
        ..cfg.gen.clone()
    };
    crate::gen::generate(&g, &log)?;
    let lines = |f: &str| -> Result<u64> {
        Ok(std::fs::read(log.join(f))?
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64)
    };
    let events = lines("exposures.jsonl")? + lines("actions.jsonl")?;
    let env = |prefix: &str| -> Vec<(String, String)> {
        vec![
            ("RLIV_KAFKA_BROKERS".into(), brokers.clone()),
            (
                "RLIV__KAFKA__EXPOSURES_TOPIC".into(),
                format!("{prefix}-exposures"),
            ),
            (
                "RLIV__KAFKA__ACTIONS_TOPIC".into(),
                format!("{prefix}-actions"),
            ),
            ("RLIV__KAFKA__TRANSITIONS_TOPIC".into(), String::new()),
            (
                "RLIV__KAFKA__DEAD_LETTER_TOPIC".into(),
                format!("{prefix}-dead"),
            ),
            ("RLIV__KAFKA__GROUP_ID".into(), format!("{prefix}-group")),
        ]
    };
    let w = workers.to_string();
    let e_file = log.join("exposures.jsonl");
    let a_file = log.join("actions.jsonl");
    let s = |p: &Path| p.display().to_string();
    println!("bench kafka: {events} events ({exposures} exposures), broker {brokers}, {workers} workers, {cores} cores");

    // 1. Pre-produced topics: broker -> pair state.
    let e1 = env("pre");
    ok(rliv(&e1, &["kafka", "create-topics", "--partitions", "2"]))?;
    let t = Instant::now();
    ok(rliv(
        &e1,
        &[
            "kafka",
            "produce",
            "--topic",
            "pre-exposures",
            "--file",
            &s(&e_file),
        ],
    ))?;
    ok(rliv(
        &e1,
        &[
            "kafka",
            "produce",
            "--topic",
            "pre-actions",
            "--file",
            &s(&a_file),
        ],
    ))?;
    let produce = t.elapsed().as_secs_f64();
    println!(
        "  produce         {:.0} events/s into the broker ({:.1}s)",
        events as f64 / produce,
        produce
    );
    let t = Instant::now();
    ok(rliv(
        &e1,
        &[
            "run",
            "-q",
            "--until-end",
            "-w",
            &w,
            "--state",
            &s(&dir.join("pre-state")),
        ],
    ))?;
    let consume = t.elapsed().as_secs_f64();
    println!(
        "  kafka -> state  {:.0} events/s end to end ({:.1}s, topics already filled)",
        events as f64 / consume,
        consume
    );
    // 2. The same log from files.
    let t = Instant::now();
    ok(rliv(
        &[],
        &[
            "replay",
            "-q",
            "-w",
            &w,
            "--exposures",
            &s(&e_file),
            "--actions",
            &s(&a_file),
            "--state",
            &s(&dir.join("file-state")),
        ],
    ))?;
    let files = t.elapsed().as_secs_f64();
    println!(
        "  files -> state  {:.0} events/s end to end ({:.1}s, same log)",
        events as f64 / files,
        files
    );

    // 3. Live: the job runs while a producer writes at full speed; lag sampled from /metrics.
    let e2 = env("live");
    ok(rliv(&e2, &["kafka", "create-topics", "--partitions", "2"]))?;
    let port = crate::tansu::free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let mut job = rliv(
        &e2,
        &[
            "run",
            "-q",
            "-w",
            &w,
            "--state",
            &s(&dir.join("live-state")),
            "--serve",
            &addr,
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()?;
    let t0 = Instant::now();
    while metric(&addr, "rliv_model_version").is_none() {
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("the live job did not start serving /metrics");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let producer = {
        let e2 = e2.clone();
        let (ef, af) = (s(&e_file), s(&a_file));
        std::thread::spawn(move || -> Result<()> {
            ok(rliv(
                &e2,
                &[
                    "kafka",
                    "produce",
                    "--topic",
                    "live-exposures",
                    "--file",
                    &ef,
                ],
            ))?;
            ok(rliv(
                &e2,
                &["kafka", "produce", "--topic", "live-actions", "--file", &af],
            ))
        })
    };
    let t = Instant::now();
    let mut lags = Vec::new();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let consumed = metric(&addr, "rliv_kafka_messages_total").unwrap_or(0.0);
        if let Some(l) = metric(&addr, "rliv_kafka_lag_messages") {
            lags.push(l);
        }
        if consumed as u64 >= events {
            break;
        }
        if t.elapsed() > Duration::from_secs(600) {
            bail!("the live job did not consume the log within 600 s");
        }
    }
    let live = t.elapsed().as_secs_f64();
    producer
        .join()
        .map_err(|_| anyhow!("producer thread panicked"))??;
    let _ = Command::new("kill").arg(job.id().to_string()).status(); // SIGTERM: clean stop
    let _ = job.wait();
    let max_lag = lags.iter().copied().fold(0.0, f64::max);
    let mean_lag = lags.iter().sum::<f64>() / lags.len().max(1) as f64;
    println!(
        "  live            {:.0} events/s consumed while producing ({:.1}s); consumer lag mean {:.0}, max {:.0} messages",
        events as f64 / live,
        live,
        mean_lag,
        max_lag
    );
    Ok(())
}
