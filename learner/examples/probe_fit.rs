//! Diagnostic: trains the learner on a transitions file (for instance the
//! probe world's random-policy logs) and prints, per author and per bucket
//! of the pair's visible exposure count, the mean predicted LIV (watch
//! tower) beside the realized discounted return of those transitions, and
//! the share of users whose fresh pair scores author B above author A.
//!
//! `cargo run --release -p rliv-learner --example probe_fit -- TRANSITIONS.jsonl EPOCHS GAMMA`
//! Learner settings come from `PROBE_*` variables (see `main`).

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;

use rliv_contract::Transition;
use rliv_learner::buffer::{Ring, Sample};
use rliv_learner::config::{DoubleQ, LearnerConfig};
use rliv_learner::engine::Engine;
use rliv_learner::eval::realized_returns;
use rliv_learner::Learner;

fn env<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).ok_or("transitions file")?;
    let epochs: f64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(64.0);
    let gamma: f64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(0.9);
    let mut ts: Vec<Transition> = Vec::new();
    for line in std::io::BufReader::new(std::fs::File::open(path)?).lines() {
        let line = line?;
        if !line.trim().is_empty() {
            ts.push(serde_json::from_str(&line)?);
        }
    }
    ts.sort_by_key(|t| (t.ts_ms, t.request_id, t.item_id));
    let cfg = LearnerConfig {
        id_rows: 4096,
        feature_rows: 4096,
        batch_size: env("PROBE_BATCH", 256),
        min_buffer: 1000,
        gamma,
        visible_lag_ms: env("PROBE_LAG", 0),
        tau: env("PROBE_TAU", 0.005),
        lr: env("PROBE_LR", 0.001),
        embedding_lr: env("PROBE_ELR", 0.001),
        embedding_weight_decay: env("PROBE_EWD", 0.0),
        user_id_dropout: env("PROBE_UID_DROPOUT", 0.0),
        huber_delta: env("PROBE_DELTA", LearnerConfig::default().huber_delta),
        double_q: match std::env::var("PROBE_DOUBLE_Q").as_deref() {
            Ok("min") => DoubleQ::Min,
            Ok("mean") | Err(_) => DoubleQ::Mean,
            Ok(other) => return Err(format!("PROBE_DOUBLE_Q: {other:?} is not min or mean").into()),
        },
        derived_features: env("PROBE_DERIVED", true),
        seed: env("PROBE_SEED", 7),
        num_threads: 2,
        ..LearnerConfig::default()
    };
    cfg.validate()?;
    let mut learner = Learner::new(&cfg)?;
    let mut ring = Ring::new(ts.len() + 1);
    let mut samples: Vec<Sample> = Vec::new();
    for t in &ts {
        let s = learner.sample(t);
        samples.push(s.clone());
        ring.push(s);
    }
    // Realized discounted watch return of each transition along its pair's chain.
    let ret: Vec<f64> = realized_returns(&ts, gamma).iter().map(|g| g[1]).collect();
    learner.measure_reward_scale(&ring);
    let updates = (epochs * ts.len() as f64 / cfg.batch_size as f64).ceil() as u64;
    let report_every = env("PROBE_REPORT", updates.max(1));
    let mut engine = Engine::new("auto", "cpu", 1)?;
    for u in 1..=updates {
        learner.train_from(&ring)?;
        if u % report_every == 0 || u == updates {
            report(&mut learner, &mut engine, &samples, &ret, u)?;
        }
    }
    Ok(())
}

fn report(
    learner: &mut Learner,
    engine: &mut Engine,
    samples: &[Sample],
    ret: &[f64],
    updates: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let bucket = |n: u32| (32 - n.leading_zeros()).min(6);
    // (author, bucket) -> (n, sum predicted, sum realized, sum reward)
    let mut rows: BTreeMap<(u64, u32), (u64, f64, f64, f64)> = BTreeMap::new();
    let mut fresh: HashMap<u64, [f32; 2]> = HashMap::new();
    for chunk in samples.chunks(512).zip(ret.chunks(512)) {
        let inputs: Vec<_> = chunk.0.iter().map(|s| s.input()).collect();
        let livs = learner.model()?.score(engine, &inputs)?;
        for ((s, r), l) in chunk.0.iter().zip(chunk.1).zip(&livs) {
            let e = rows.entry((s.author_id, bucket(s.state[0]))).or_default();
            e.0 += 1;
            e.1 += f64::from(l.score);
            e.2 += r;
            e.3 += f64::from(s.reward[1]);
        }
    }
    // Fresh pairs: every user with each author's first-seen item, empty state.
    let mut first_item: BTreeMap<u64, &Sample> = BTreeMap::new();
    for s in samples {
        first_item.entry(s.author_id).or_insert(s);
    }
    let authors: Vec<&Sample> = first_item.values().copied().collect();
    let mut users: BTreeMap<u64, &Sample> = BTreeMap::new();
    for s in samples {
        users.entry(s.user_id).or_insert(s);
    }
    if authors.len() == 2 {
        for (uid, us) in &users {
            let inputs: Vec<_> = authors
                .iter()
                .map(|a| {
                    let mut x = a.input();
                    x.user_id = *uid;
                    x.user_feats = &us.user_feats;
                    x.state = Default::default();
                    x.ts_ms = 0;
                    x
                })
                .collect();
            let l = learner.model()?.score(engine, &inputs)?;
            fresh.insert(*uid, [l[0].score, l[1].score]);
        }
    }
    let n = fresh.len().max(1) as f64;
    let share_b = fresh.values().filter(|v| v[1] > v[0]).count() as f64 / n;
    let mean = |f: &dyn Fn(&[f32; 2]) -> f64| fresh.values().map(f).sum::<f64>() / n;
    let dm = mean(&|v| f64::from(v[1] - v[0]));
    let dsd = mean(&|v| (f64::from(v[1] - v[0]) - dm).powi(2)).sqrt();
    println!(
        "updates {updates}: fresh pair share preferring author {} = {share_b:.2} (mean LIV {:.1} vs {:.1}; difference sd over users {dsd:.1})",
        authors.get(1).map_or(0, |s| s.author_id),
        mean(&|v| f64::from(v[1])),
        mean(&|v| f64::from(v[0]))
    );
    println!("  author bucket     n   pred   realized  reward");
    for ((a, b), (n, p, r, w)) in rows {
        let n_ = n as f64;
        println!(
            "  {a:>6} {b:>6} {n:>5} {:>6.1} {:>10.1} {:>7.2}",
            p / n_,
            r / n_,
            w / n_
        );
    }
    Ok(())
}
