//! The pair-history ranker scores exactly as defined.

use rliv_sim::policies::{label_round, PairHistoryPolicy};
use rliv_sim::{Action, ActionKind, Candidate, Exposure, NoPeek, Policy, Request, RoundEvents};

const T: i64 = 1_700_000_000_000;

fn exp(request_id: u64, user_id: u64, item_id: u64, author_id: u64, ts_ms: i64) -> Exposure {
    Exposure {
        request_id,
        user_id,
        item_id,
        author_id,
        ts_ms,
        position: 0,
        user_feats: vec![],
        item_feats: vec![],
    }
}

fn act(
    request_id: u64,
    user_id: u64,
    item_id: u64,
    ts_ms: i64,
    kind: ActionKind,
    v: f64,
) -> Action {
    Action {
        request_id,
        user_id,
        item_id,
        ts_ms,
        action: kind,
        value: v,
    }
}

fn history() -> RoundEvents {
    use ActionKind::*;
    RoundEvents {
        round: 0,
        exposures: vec![
            exp(1, 10, 100, 7, T),
            exp(1, 10, 200, 8, T + 1000),
            exp(2, 10, 101, 7, T + 60_000),
            exp(3, 11, 100, 7, T + 120_000),
            exp(3, 11, 100, 7, T + 120_000), // duplicate exposure: ignored
        ],
        actions: vec![
            act(1, 10, 100, T + 1500, Click, 1.0),
            act(1, 10, 100, T + 21_500, Watch, 20.0),
            act(1, 10, 100, T + 21_500, Watch, 20.0), // duplicate: counts once
            act(2, 10, 101, T + 72_000, Watch, 10.0),
            act(3, 11, 100, T + 130_000, Watch, 6.0),
            act(3, 11, 100, T + 120_000 + 1_860_000, Watch, 100.0), // after the window
            act(3, 99, 100, T + 130_000, Watch, 50.0),              // wrong user
            act(99, 10, 100, T + 130_000, Watch, 50.0),             // orphan
        ],
    }
}

#[test]
fn labels_follow_the_contract() {
    let l = label_round(&history(), 1_800_000);
    assert_eq!(l.len(), 4);
    let watches: Vec<f64> = l.iter().map(|x| x.watch_s).collect();
    assert_eq!(watches, vec![20.0, 0.0, 10.0, 6.0]);
    assert!(l[0].click && !l[1].click);
}

#[test]
fn scores_are_exactly_as_defined() {
    let mut p = PairHistoryPolicy::new(1);
    p.end_round(&history());
    // 4 exposures, 36 s watched: global mean 9.
    let global = 9.0;
    let item100 = (26.0 + 5.0 * global) / (2.0 + 5.0);
    let item101 = (10.0 + 5.0 * global) / (1.0 + 5.0);
    let item200 = (0.0 + 5.0 * global) / (1.0 + 5.0);
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert!(close(p.items.mean(100), item100));
    assert!(close(p.items.mean(999), global));
    // Pair (10, 7): 2 exposures, 30 s.
    assert!(close(
        p.score(10, 7, 100),
        (30.0 + 5.0 * item100) / (2.0 + 5.0)
    ));
    assert!(close(
        p.score(10, 7, 101),
        (30.0 + 5.0 * item101) / (2.0 + 5.0)
    ));
    // Pair (10, 8): 1 exposure, 0 s.
    assert!(close(
        p.score(10, 8, 200),
        (0.0 + 5.0 * item200) / (1.0 + 5.0)
    ));
    // Pair (11, 7): 1 exposure, 6 s.
    assert!(close(
        p.score(11, 7, 101),
        (6.0 + 5.0 * item101) / (1.0 + 5.0)
    ));
    // Unknown pair, unknown item: the global mean.
    assert!(close(p.score(12, 9, 300), global));

    let cand = |item_id, author_id| Candidate {
        item_id,
        author_id,
        item_feats: vec![],
    };
    let req = Request {
        request_id: 50,
        user_id: 10,
        user_feats: vec![],
        ts_ms: T + 3_600_000,
        candidates: vec![cand(200, 8), cand(100, 7), cand(300, 9)],
    };
    // 6.25 < 9 < 11.53
    assert_eq!(p.rank(&req, 3, &NoPeek), vec![1, 2, 0]);
    assert_eq!(p.rank(&req, 2, &NoPeek), vec![1, 2]);

    // Stats accumulate over rounds: the same history again doubles every
    // count; the global mean stays 9 and the shrinkage weakens.
    p.end_round(&history());
    assert!(close(
        p.score(10, 8, 200),
        (0.0 + 5.0 * (5.0 * global / 7.0)) / (2.0 + 5.0)
    ));
}
