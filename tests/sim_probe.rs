//! The learned LIV prefers long-term value where it disagrees with the
//! immediate reward, and only because of its TD part.
//!
//! The simulator's probe world (`SimConfig::long_term_probe`): author A's
//! items pay about 1.2x more watch on a pair's first exposure, but a user's
//! relationship with A never grows; with B it grows with every satisfying
//! view, so that B's discounted watch from a first exposure on (gamma 0.9
//! per interaction) is about 1.4x A's (`sim/tests/world.rs` checks both on
//! the random-policy logs). Logged under the random policy and replayed through
//! the real pipeline, the full model must score B above A for a new pair,
//! and the same model with gamma = 0 (the reward head alone: myopic) must
//! not.

use std::path::{Path, PathBuf};

use rliv::config::Config;
use rliv::sim::SimOptions;
use rliv_learner::embed::PairInput;
use rliv_learner::engine::Engine;
use rliv_learner::{checkpoint, Model};
use rliv_sim::{SimConfig, Simulator};

const SEED: u64 = 3;

/// Logs the probe world under the random policy, replays and trains on it
/// through the real pipeline; returns the checkpoint directory.
fn train_on_probe(gamma: f64, dir: &Path) -> PathBuf {
    let mut cfg = Config::load(None).expect("default config");
    // A small model: the probe world has 200 users and 2 authors.
    cfg.learner.id_rows = 4096;
    cfg.learner.feature_rows = 4096;
    cfg.learner.batch_size = 256;
    cfg.learner.min_buffer = 1000;
    cfg.learner.epochs = 64.0;
    cfg.learner.gamma = gamma;
    // Every earlier interaction visible in s_t: the probe's relationship
    // grows within a session, and with the default lag a fresh visible state
    // would also stand for the session's later, deeper interactions (which
    // makes B the better immediate choice given what a request can see).
    cfg.learner.visible_lag_ms = 0;
    cfg.learner.checkpoint_every_secs = 0;
    cfg.replay.workers = 1;
    let opts = SimOptions {
        sim: SimConfig::long_term_probe(),
        policies: vec!["rliv".into()],
        seeds: vec![SEED],
        warmup_rounds: 5,
        rounds: 1,
        out: dir.to_path_buf(),
        quiet: true,
        baselines: Default::default(),
    };
    let run = rliv::sim::run_one(&cfg, &opts, "rliv", SEED).expect("closed loop");
    assert!(
        run.updates > 100,
        "the learner trained: {} updates",
        run.updates
    );
    dir.join("rliv")
        .join(format!("seed-{SEED}"))
        .join("checkpoints")
}

/// The LIV of author A's and author B's first item for every user of the
/// world, from a fresh pair state (no interaction yet): how often B wins.
fn share_preferring_b(checkpoints: &Path) -> f64 {
    share_in(
        checkpoints,
        &Simulator::new(SimConfig::long_term_probe(), SEED).expect("world"),
    )
}

fn share_in<'a>(checkpoints: &Path, sim: &'a Simulator) -> f64 {
    let (model, _, _): (Model, _, _) = checkpoint::load_newest_model(checkpoints)
        .expect("checkpoint")
        .expect("a checkpoint");
    let mut engine = Engine::new("auto", "cpu", 1).expect("engine");
    let w = sim.world();
    let item = |author: usize| &w.items[w.authors[author].items[0] as usize];
    let (a, b) = (item(0), item(1));
    let mut wins = 0;
    for u in w.users.iter() {
        let input = |it: &'a rliv_sim::world::Item| -> PairInput<'a> {
            PairInput {
                user_id: u.id,
                author_id: w.authors[it.author as usize].id,
                item_id: it.id,
                user_feats: &u.feats,
                item_feats: &it.feats,
                state: Default::default(),
                ts_ms: 0,
            }
        };
        let s = model
            .score(&mut engine, &[input(a), input(b)])
            .expect("score");
        wins += usize::from(s[1].score > s[0].score);
    }
    wins as f64 / w.users.len() as f64
}

#[test]
#[ignore = "open (issue 11): with the default learner (mean of the value nets, Huber delta 10) the share of \
            users preferring B is 0.61 at gamma 0.9 and 0.28 at gamma 0 (64 epochs), short of 0.8 and 0.2; \
            embedding_weight_decay 10 passes (0.99, 0.02) but costs 6% session length in rliv sim, so it is off"]
fn the_learned_liv_prefers_the_author_whose_relationship_grows_and_the_myopic_one_does_not() {
    let dir = tempfile::tempdir().expect("tmp");
    let full = share_preferring_b(&train_on_probe(0.9, &dir.path().join("full")));
    let myopic = share_preferring_b(&train_on_probe(0.0, &dir.path().join("myopic")));
    eprintln!("users preferring B from a fresh pair: gamma 0.9 {full:.2}, gamma 0 {myopic:.2}");
    assert!(
        full > 0.8,
        "with gamma 0.9 the LIV should prefer author B (long-term value) for most users: {full:.2}"
    );
    assert!(
        myopic < 0.2,
        "with gamma 0 (no TD part) the model should prefer author A (immediate reward): {myopic:.2}"
    );
}
