//! Sanity of the default world and of the long-term probe.

use rliv_sim::policies::{OraclePolicy, PairHistoryPolicy, RandomPolicy};
use rliv_sim::{Metrics, NoPeek, Policy, Request, SimConfig, Simulator, WorldPeek};

/// Session length over rounds 1..rounds (round 0 lets learners learn).
fn session_length(policy: &mut dyn Policy, rounds: u32) -> f64 {
    let mut sim = Simulator::new(SimConfig::default(), 1).expect("valid");
    let mut m = Metrics::default();
    for r in 0..rounds {
        let rep = sim.run_round(policy);
        if r > 0 {
            m.merge(&rep.metrics);
        }
    }
    m.session_length
}

#[test]
fn oracle_beats_pair_history_beats_random() {
    let random = session_length(&mut RandomPolicy::new(2), 3);
    let pair = session_length(&mut PairHistoryPolicy::new(2), 3);
    let oracle = session_length(&mut OraclePolicy, 3);
    eprintln!("session length: random {random:.3} pair_history {pair:.3} oracle {oracle:.3}");
    assert!(oracle > 1.5 * pair, "oracle {oracle} pair {pair}");
    assert!(pair > 1.05 * random, "pair {pair} random {random}");
}

#[test]
fn a_deepened_relationship_raises_expected_watch() {
    let fresh = Simulator::new(SimConfig::default(), 1).expect("valid");
    let mut sim = Simulator::new(SimConfig::default(), 1).expect("valid");
    for _ in 0..3 {
        sim.run_round(&mut OraclePolicy);
    }
    // The next morning: last night's fatigue has worn off.
    let ts = sim.round_start_ms(3) + 8 * 3_600_000;
    let world = sim.world();
    let mut checked = 0;
    let mut ratio_sum = 0.0;
    for user in &world.users {
        for author in &world.authors {
            let rel = sim.relationship(user.id, author.id, ts).expect("known ids");
            if rel.depth < 0.3 {
                continue;
            }
            for &i in &author.items {
                let item = world.items[i as usize].id;
                let after = sim.expected_immediate(user.id, item, ts).expect("known");
                let before = fresh.expected_immediate(user.id, item, ts).expect("known");
                assert!(after > before, "{rel:?}: {after} vs {before}");
                ratio_sum += after / before;
                checked += 1;
            }
        }
    }
    assert!(checked > 1000, "only {checked} deepened (pair, item)s");
    let mean_ratio = ratio_sum / checked as f64;
    eprintln!("{checked} deepened (pair, item)s, mean after/before {mean_ratio:.3}");
    assert!(
        mean_ratio > 1.3,
        "deepening raised expected watch by {mean_ratio} on average"
    );
}

/// Always shows the given author's item first.
struct AlwaysAuthor(u64);

impl Policy for AlwaysAuthor {
    fn name(&self) -> String {
        format!("always_{}", self.0)
    }
    fn rank(&mut self, req: &Request, k: usize, _: &dyn WorldPeek) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..req.candidates.len()).collect();
        idx.sort_by_key(|&i| {
            (
                req.candidates[i].author_id != self.0,
                req.candidates[i].item_id,
            )
        });
        idx.truncate(k);
        idx
    }
}

#[test]
fn long_term_probe_makes_immediate_and_long_term_value_disagree() {
    let cfg = SimConfig::long_term_probe();
    let sim = Simulator::new(cfg.clone(), 4).expect("valid");
    let w = sim.world();
    let t0 = sim.round_start_ms(0);
    let (a_item, b_item) = (w.authors[0].items[0], w.authors[1].items[0]);
    let (a_item, b_item) = (w.items[a_item as usize].id, w.items[b_item as usize].id);
    for u in &w.users {
        let a = sim.expected_immediate(u.id, a_item, t0).expect("known");
        let b = sim.expected_immediate(u.id, b_item, t0).expect("known");
        assert!(
            a > 1.1 * b && b > 0.7 * a,
            "A {a} should beat B {b} slightly, now"
        );
    }
    let run = |policy: &mut dyn Policy| {
        let mut sim = Simulator::new(cfg.clone(), 4).expect("valid");
        let first = sim.run_round(policy).metrics;
        for _ in 1..5 {
            sim.run_round(policy);
        }
        (first, sim.cumulative().clone())
    };
    let (a0, a) = run(&mut AlwaysAuthor(1));
    let (b0, b) = run(&mut AlwaysAuthor(2));
    let (_, oracle) = run(&mut OraclePolicy);
    // Over the first request of the world, A pays more; over days B pays
    // far more, and the myopic oracle (which keeps choosing A) loses.
    eprintln!(
        "probe watch s: A first round {:.0}, B first round {:.0}; 5 rounds A {:.0} B {:.0} \
         oracle {:.0}; fans A {} B {}",
        a0.watch_sec,
        b0.watch_sec,
        a.watch_sec,
        b.watch_sec,
        oracle.watch_sec,
        a.new_fans,
        b.new_fans
    );
    assert!(a0.watch_sec > 0.0 && b0.watch_sec > 0.0);
    assert!(
        b.watch_sec > 2.0 * a.watch_sec,
        "B {} vs A {}",
        b.watch_sec,
        a.watch_sec
    );
    assert!(b.watch_sec > 2.0 * oracle.watch_sec);
    assert!(b.new_fans > 5 * a.new_fans.max(1));
    assert_eq!(AlwaysAuthor(2).rank(&probe_request(), 1, &NoPeek), vec![1]);
}

fn probe_request() -> Request {
    let c = |item_id, author_id| rliv_sim::Candidate {
        item_id,
        author_id,
        item_feats: vec![],
    };
    Request {
        request_id: 1,
        user_id: 1,
        user_feats: vec![],
        ts_ms: 0,
        candidates: vec![c(1, 1), c(6, 2)],
    }
}

/// The premise the learner's probe (`tests/sim_probe.rs`) rests on, measured
/// on the logs it learns from: under the random policy, a pair's first
/// exposure pays more watch with author A, but its discounted watch from
/// that exposure on (gamma 0.9 per interaction, the learner's discount) is
/// larger with author B.
#[test]
fn on_random_logs_the_probe_pays_more_now_with_a_and_more_discounted_with_b() {
    use std::collections::{BTreeMap, HashMap};
    let mut sim = Simulator::new(SimConfig::long_term_probe(), 3).expect("valid");
    let mut policy = RandomPolicy::new(3);
    let mut exposures = Vec::new();
    let mut watch: HashMap<(u64, u64), f64> = HashMap::new();
    for _ in 0..5 {
        let rep = sim.run_round(&mut policy);
        exposures.extend(rep.events.exposures.iter().cloned());
        for a in &rep.events.actions {
            if a.action == rliv_sim::events::ActionKind::Watch {
                *watch.entry((a.request_id, a.item_id)).or_default() += a.value;
            }
        }
    }
    exposures.sort_by_key(|e| e.ts_ms);
    // Per (user, author): the watch of each exposure, in time order.
    let mut seq: BTreeMap<(u64, u64), Vec<f64>> = BTreeMap::new();
    for e in &exposures {
        let w = watch
            .get(&(e.request_id, e.item_id))
            .copied()
            .unwrap_or(0.0);
        seq.entry((e.user_id, e.author_id)).or_default().push(w);
    }
    let mean_over_pairs = |author: u64, f: &dyn Fn(&[f64]) -> f64| {
        let v: Vec<f64> = seq
            .iter()
            .filter(|((_, a), _)| *a == author)
            .map(|(_, s)| f(s))
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let first = |s: &[f64]| s[0];
    let discounted = |s: &[f64]| s.iter().rev().fold(0.0, |acc, r| r + 0.9 * acc);
    let (a_now, b_now) = (mean_over_pairs(1, &first), mean_over_pairs(2, &first));
    let (a_liv, b_liv) = (
        mean_over_pairs(1, &discounted),
        mean_over_pairs(2, &discounted),
    );
    eprintln!(
        "first exposure: A {a_now:.2} s, B {b_now:.2} s; discounted: A {a_liv:.1}, B {b_liv:.1}"
    );
    assert!(
        a_now > 1.1 * b_now,
        "A {a_now} should pay more now than B {b_now}"
    );
    assert!(
        b_liv > 1.2 * a_liv,
        "B {b_liv} should pay more in discounted watch than A {a_liv}"
    );
}
