//! `rliv bench learner`: TD samples per second at the configured batch size
//! on synthetic transitions (timings live here, never in tests).

use std::time::Instant;

use crate::buffer::{Ring, Sample};
use crate::config::LearnerConfig;
use crate::learner::Learner;
use crate::rng::Rng;

#[derive(Clone, Debug)]
pub struct BenchReport {
    pub steps: u64,
    pub batch: usize,
    pub seconds: f64,
    pub samples_per_sec: f64,
    /// Forward + backward + target FLOPs per sample (2 per multiply-add).
    pub flops_per_sample: f64,
    pub model_bytes: usize,
    pub optimizer_bytes: usize,
    pub last_loss: f32,
}

/// Synthetic transitions with heavy-tailed ids (for benchmarks and tests).
pub fn synthetic(n: usize, seed: u64) -> Vec<Sample> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let zipf = |rng: &mut Rng, n: u64| {
                let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                (n as f64).powf(u) as u64
            };
            let user = zipf(&mut rng, 200_000);
            let author = zipf(&mut rng, 50_000);
            let t = rng.below(50) as u32;
            let click = rng.below(3) == 0;
            Sample {
                user_id: user,
                author_id: author,
                item_id: author * 1000 + rng.below(40),
                user_feats: [
                    rng.below(8) as u32,
                    rng.below(3) as u32,
                    rng.below(5) as u32,
                ][..]
                    .into(),
                item_feats: [rng.below(20) as u32, rng.below(10) as u32][..].into(),
                state: [t, t / 3, t / 2, t / 20, t / 40],
                next_state: [t + 1, t / 3 + u32::from(click), t / 2, t / 20, t / 40],
                extra: Default::default(),
                next_extra: Default::default(),
                reward: [f32::from(u8::from(click)), rng.below(60) as f32, 0.0, 0.0],
            }
        })
        .collect()
}

/// MACs of one pass of a stack of `nets` MLPs `input -> hidden.. -> 1`.
fn stack_macs(nets: usize, input: usize, hidden: &[usize]) -> f64 {
    let mut dims = vec![input];
    dims.extend_from_slice(hidden);
    dims.push(1);
    nets as f64 * dims.windows(2).map(|w| (w[0] * w[1]) as f64).sum::<f64>()
}

pub fn run(cfg: &LearnerConfig, steps: u64) -> Result<BenchReport, crate::LearnerError> {
    let mut learner = Learner::new(cfg)?;
    let data = synthetic(200_000.max(cfg.batch_size * 4), 11);
    let mut ring = Ring::new(data.len());
    for s in data {
        learner.observe(&s);
        ring.push(s);
    }
    // Warm-up (allocator, first-touch of the tables' pages).
    for _ in 0..3 {
        learner.train_from(&ring)?;
    }
    let t = Instant::now();
    let mut last = 0.0;
    for _ in 0..steps {
        last = learner.train_from(&ring)?.loss;
    }
    let seconds = t.elapsed().as_secs_f64();
    let samples = steps as f64 * cfg.batch_size as f64;
    let m = &learner.model;
    let input = m.emb.input_dim();
    let towers = stack_macs(m.towers.nets, input, &cfg.hidden);
    let assist = if cfg.assist_gift {
        stack_macs(1, 2 * cfg.embedding_dim, &cfg.hidden[..1])
    } else {
        0.0
    };
    // online forward (1x) + backward (2x) for towers and assist; target forward on J candidates.
    let macs = 3.0 * (towers + assist) + towers * cfg.next_items as f64;
    let sizes = m.sizes();
    Ok(BenchReport {
        steps,
        batch: cfg.batch_size,
        seconds,
        samples_per_sec: samples / seconds,
        flops_per_sample: 2.0 * macs,
        model_bytes: sizes.bytes,
        optimizer_bytes: sizes.optimizer_bytes,
        last_loss: last,
    })
}
