//! `rliv gen`: a synthetic, KuaiRand-like event log.
//!
//! Users, authors and items are heavy-tailed (Zipf). Every user has a few
//! favourite authors; the user-author affinity drives clicks, watch time,
//! follows and gifts, so a pair with a long history of clicks and long
//! watches really is more valuable than an unknown one. Actions are delayed
//! (seconds to minutes), delivered out of order within the allowed lateness,
//! sometimes duplicated, sometimes delivered after their window closed
//! (late), and a few match no exposure (orphans). Files are written in
//! arrival order, split by arrival time when `files > 1`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rliv_state::mix64;
use serde::{Deserialize, Serialize};

/// Settings of the generator (section `[gen]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenConfig {
    pub seed: u64,
    pub exposures: u64,
    pub users: u64,
    pub authors: u64,
    pub items_per_author: u64,
    pub items_per_request: u64,
    pub days: u64,
    pub duplicate_rate: f64,
    pub orphan_rate: f64,
    pub late_rate: f64,
    pub files: usize,
    pub gzip: bool,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            seed: 42,
            exposures: 200_000,
            users: 20_000,
            authors: 5_000,
            items_per_author: 40,
            items_per_request: 6,
            days: 7,
            duplicate_rate: 0.02,
            orphan_rate: 0.003,
            late_rate: 0.002,
            files: 1,
            gzip: false,
        }
    }
}

/// The start of generated time: 2023-11-14T22:13:20Z.
pub const T0: i64 = 1_700_000_000_000;
const WINDOW_MS: i64 = 30 * 60 * 1000;
/// Out-of-order delivery stays within this (the default allowed lateness is 60 s).
const JITTER_MS: i64 = 45_000;

/// xoshiro256++: small, fast, reproducible.
pub struct Rng([u64; 4]);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            mix64(s)
        };
        Rng([next(), next(), next(), next()])
    }
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let r = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        r
    }
    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo).max(1) as u64) as i64
    }
}

/// Zipf(s) over ranks 0..n by inverse CDF.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: u64, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n as usize);
        let mut acc = 0.0;
        for k in 1..=n.max(1) {
            acc += 1.0 / (k as f64).powf(s);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf(cdf)
    }
    fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.f64();
        self.0.partition_point(|c| *c < u).min(self.0.len() - 1) as u64
    }
}

/// The hidden affinity of a pair in [0, 1]: high for a user's favourites.
pub fn affinity(user: u64, author: u64, favourite: bool) -> f64 {
    let h = (mix64(user.wrapping_mul(31) ^ mix64(author)) >> 11) as f64 / (1u64 << 53) as f64;
    if favourite {
        0.6 + 0.4 * h
    } else {
        0.3 * h * h
    }
}

/// The `k`-th favourite author of `user` (ids start at 1).
fn favourite(user: u64, k: u64, authors: &Zipf) -> u64 {
    let mut rng = Rng::new(mix64(user) ^ (k + 1));
    authors.sample(&mut rng) + 1
}

const FAVOURITES: u64 = 3;

#[derive(Debug, Default, Serialize)]
pub struct GenSummary {
    pub exposures: u64,
    pub actions: u64,
    pub exposure_files: Vec<PathBuf>,
    pub action_files: Vec<PathBuf>,
}

struct Sink {
    files: Vec<BufWriter<Box<dyn Write>>>,
    paths: Vec<PathBuf>,
    heap: BinaryHeap<Reverse<(i64, u64, String)>>,
    seq: u64,
    span: i64,
    written: u64,
}

impl Sink {
    fn create(dir: &Path, stem: &str, cfg: &GenConfig, span: i64) -> Result<Sink> {
        let ext = if cfg.gzip { "jsonl.gz" } else { "jsonl" };
        let n = cfg.files.max(1);
        let mut files = Vec::new();
        let mut paths = Vec::new();
        for i in 0..n {
            let name = if n == 1 {
                format!("{stem}.{ext}")
            } else {
                format!("{stem}-{i:03}.{ext}")
            };
            let path = dir.join(name);
            let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            let w: Box<dyn Write> = if cfg.gzip {
                Box::new(flate2::write::GzEncoder::new(
                    f,
                    flate2::Compression::fast(),
                ))
            } else {
                Box::new(f)
            };
            files.push(BufWriter::with_capacity(1 << 20, w));
            paths.push(path);
        }
        Ok(Sink {
            files,
            paths,
            heap: BinaryHeap::new(),
            seq: 0,
            span,
            written: 0,
        })
    }

    fn push(&mut self, arrival: i64, line: String) {
        self.seq += 1;
        self.heap.push(Reverse((arrival, self.seq, line)));
    }

    /// Writes every event that arrives at or before `t`.
    fn flush_until(&mut self, t: i64) -> Result<()> {
        while let Some(Reverse((arrival, _, _))) = self.heap.peek() {
            if *arrival > t {
                break;
            }
            let Some(Reverse((arrival, _, line))) = self.heap.pop() else {
                break;
            };
            let n = self.files.len() as i64;
            let idx = (((arrival - T0).max(0) as i128 * n as i128) / self.span.max(1) as i128)
                .clamp(0, n as i128 - 1);
            let f = &mut self.files[idx as usize];
            f.write_all(line.as_bytes())?;
            f.write_all(b"\n")?;
            self.written += 1;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(u64, Vec<PathBuf>)> {
        self.flush_until(i64::MAX)?;
        for f in self.files {
            let inner = f
                .into_inner()
                .map_err(|e| anyhow::anyhow!("flushing: {}", e.error()))?;
            drop(inner);
        }
        Ok((self.written, self.paths))
    }
}

/// Writes `exposures.jsonl` and `actions.jsonl` (or numbered/gz files) into `dir`.
pub fn generate(cfg: &GenConfig, dir: &Path) -> Result<GenSummary> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let span = (cfg.days.max(1) as i64) * 86_400_000;
    let mut exposures = Sink::create(dir, "exposures", cfg, span)?;
    let mut actions = Sink::create(dir, "actions", cfg, span)?;
    let mut rng = Rng::new(cfg.seed);
    let users = Zipf::new(cfg.users.max(1), 1.05);
    let authors = Zipf::new(cfg.authors.max(1), 1.15);
    let items = Zipf::new(cfg.items_per_author.max(1) * 4, 1.1);
    let per_request = cfg.items_per_request.max(1);
    let requests = cfg.exposures.div_ceil(per_request);
    let mut line = String::new();
    let mut made = 0u64;
    for r in 0..requests {
        let ts =
            T0 + ((r as i128 * span as i128) / requests.max(1) as i128) as i64 + rng.range(0, 1000);
        exposures.flush_until(ts)?;
        actions.flush_until(ts)?;
        let request_id = r + 1;
        let user = users.sample(&mut rng) + 1;
        let uh = mix64(user ^ 0xABCD);
        let user_feats = [uh % 8, (uh >> 8) % 3, (uh >> 16) % 5];
        for position in 0..per_request {
            if made == cfg.exposures {
                break;
            }
            made += 1;
            let fav = rng.f64() < 0.35;
            let author = if fav {
                favourite(user, rng.below(FAVOURITES), &authors)
            } else {
                authors.sample(&mut rng) + 1
            };
            let item = author * 1_000_000 + items.sample(&mut rng) + 1;
            let ih = mix64(item);
            let duration_s = 5 + (ih % 115) as i64;
            let item_feats = [ih % 20, (duration_s / 25) as u64];
            line.clear();
            let _ = write!(
                line,
                "{{\"request_id\":{request_id},\"user_id\":{user},\"item_id\":{item},\"author_id\":{author},\
                 \"ts_ms\":{ts},\"position\":{position},\"user_feats\":[{},{},{}],\"item_feats\":[{},{}]}}",
                user_feats[0], user_feats[1], user_feats[2], item_feats[0], item_feats[1]
            );
            exposures.push(ts + rng.range(0, JITTER_MS), line.clone());

            let is_fav = (0..FAVOURITES).any(|k| favourite(user, k, &authors) == author);
            let aff = affinity(user, author, is_fav);
            let mut emit = |rng: &mut Rng, kind: &str, at: i64, value: Option<f64>| {
                let mut l = format!(
                    "{{\"request_id\":{request_id},\"user_id\":{user},\"item_id\":{item},\"ts_ms\":{at},\"action\":\"{kind}\""
                );
                if let Some(v) = value {
                    let _ = write!(l, ",\"value\":{v}");
                }
                l.push('}');
                let late = rng.f64() < cfg.late_rate;
                let arrival = if late {
                    ts + WINDOW_MS + 60_000 + rng.range(60_000, 20 * 60_000)
                } else {
                    at + rng.range(0, JITTER_MS)
                };
                if rng.f64() < cfg.duplicate_rate {
                    actions.push(at + rng.range(0, JITTER_MS), l.clone());
                }
                actions.push(arrival, l);
            };
            if rng.f64() < 0.45 + 0.45 * aff {
                let frac = (0.1 + 0.85 * aff + 0.15 * (rng.f64() - 0.5)).clamp(0.02, 1.0);
                let secs = ((duration_s as f64 * frac) * 10.0).round() / 10.0;
                let at = ts + (secs * 1000.0) as i64 + rng.range(500, 3000);
                emit(&mut rng, "watch", at, Some(secs));
            }
            if rng.f64() < 0.05 + 0.5 * aff {
                let at = ts + rng.range(1_000, 15_000);
                emit(&mut rng, "click", at, None);
                if rng.f64() < 0.08 * aff {
                    let at = ts + rng.range(10_000, 600_000);
                    emit(&mut rng, "follow", at, None);
                }
                if rng.f64() < 0.05 * aff {
                    let amount = (1.0 / (1.0 - rng.f64() * 0.98)).round().max(1.0);
                    // A few gifts come after the window: attributed to nothing.
                    let at = if rng.f64() < 0.05 {
                        ts + WINDOW_MS + rng.range(1_000, 600_000)
                    } else {
                        ts + rng.range(30_000, 1_500_000)
                    };
                    emit(&mut rng, "gift", at, Some(amount));
                }
            }
            if rng.f64() < cfg.orphan_rate {
                let l = format!(
                    "{{\"request_id\":{},\"user_id\":{user},\"item_id\":{item},\"ts_ms\":{ts},\"action\":\"click\"}}",
                    1_000_000_000_000 + request_id
                );
                actions.push(ts + rng.range(0, JITTER_MS), l);
            }
        }
    }
    let (n_exp, exp_files) = exposures.finish()?;
    let (n_act, act_files) = actions.finish()?;
    Ok(GenSummary {
        exposures: n_exp,
        actions: n_act,
        exposure_files: exp_files,
        action_files: act_files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn same_seed_same_log() -> TestResult {
        let a = tempfile::tempdir()?;
        let b = tempfile::tempdir()?;
        let cfg = GenConfig {
            exposures: 3000,
            ..GenConfig::default()
        };
        generate(&cfg, a.path())?;
        generate(&cfg, b.path())?;
        for f in ["exposures.jsonl", "actions.jsonl"] {
            assert_eq!(
                std::fs::read(a.path().join(f))?,
                std::fs::read(b.path().join(f))?
            );
        }
        Ok(())
    }

    #[test]
    fn files_are_in_arrival_order_within_the_jitter() -> TestResult {
        let d = tempfile::tempdir()?;
        let cfg = GenConfig {
            exposures: 5000,
            late_rate: 0.0,
            ..GenConfig::default()
        };
        let s = generate(&cfg, d.path())?;
        assert_eq!(s.exposures, 5000);
        let text = std::fs::read_to_string(d.path().join("actions.jsonl"))?;
        let mut max_ts = i64::MIN;
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l)?;
            let ts = v["ts_ms"].as_i64().ok_or("ts_ms is not an integer")?;
            assert!(
                ts >= max_ts.saturating_sub(JITTER_MS),
                "an action arrives {} ms behind",
                max_ts.saturating_sub(ts)
            );
            max_ts = max_ts.max(ts);
        }
        Ok(())
    }

    #[test]
    fn favourites_have_higher_affinity() -> TestResult {
        for u in 1..200 {
            assert!(affinity(u, 7, true) > affinity(u, 7, false));
        }
        Ok(())
    }
}
