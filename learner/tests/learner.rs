//! Behaviour of the MTCL learner: the two engines agree, TD learning reaches
//! the known values of tiny MDPs, the clipped double-Q target, the ablation
//! switches, and checkpoints (round trip, resume, corrupt files).

use rliv_learner::buffer::{Ring, Sample};
use rliv_learner::checkpoint;
use rliv_learner::config::DoubleQ;
use rliv_learner::embed::PairInput;
use rliv_learner::{Learner, LearnerConfig};

/// A small model so tests run in milliseconds.
fn tiny() -> LearnerConfig {
    LearnerConfig {
        id_rows: 256,
        feature_rows: 64,
        counter_buckets: 8,
        hidden: vec![16, 16],
        batch_size: 32,
        num_threads: 2,
        ..LearnerConfig::default()
    }
}

/// The device of the candle learners in these tests: the CPU, or what
/// `RLIV_TEST_DEVICE` names (`scripts/gpu-check.sh` runs them with "cuda").
fn candle_device() -> String {
    std::env::var("RLIV_TEST_DEVICE").unwrap_or_else(|_| "cpu".into())
}

fn samples(n: usize, seed: u64) -> Vec<Sample> {
    rliv_learner::bench::synthetic(n, seed)
}

fn close(a: f32, b: f32, tol: f32) -> bool {
    (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
}

fn assert_all_close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(close(*x, *y, tol), "{what}[{i}]: fused {x} vs candle {y}");
    }
}

#[test]
fn fused_and_candle_engines_agree() {
    let variants = [
        tiny(),
        LearnerConfig {
            supervised_head: false,
            next_items: 3,
            ..tiny()
        },
        LearnerConfig {
            next_items: 3,
            double_q: DoubleQ::Min,
            ..tiny()
        },
        LearnerConfig {
            multi_task: false,
            assist_gift: false,
            target_label: "click".into(),
            num_threads: 1,
            ..tiny()
        },
    ];
    for cfg in variants {
        let data = samples(200, 4);
        let mut fused = Learner::new(&LearnerConfig {
            engine: "fused".into(),
            ..cfg.clone()
        })
        .expect("fused learner");
        let mut candle = Learner::new(&LearnerConfig {
            engine: "candle".into(),
            device: candle_device(),
            ..cfg.clone()
        })
        .expect("candle learner");
        for s in &data {
            fused.observe(s);
            candle.observe(s);
        }
        let batch: Vec<&Sample> = data.iter().take(48).collect();
        // A few identical updates first, so targets and online nets differ.
        for chunk in data[50..].chunks(32).take(3) {
            let refs: Vec<&Sample> = chunk.iter().collect();
            fused.train_step(&refs).expect("fused step");
            candle.train_step(&refs).expect("candle step");
        }
        let (fs, fg) = fused.gradients(&batch).expect("fused grads");
        let (cs, cg) = candle.gradients(&batch).expect("candle grads");
        assert!(
            close(fs.loss, cs.loss, 1e-4),
            "loss {} vs {}",
            fs.loss,
            cs.loss
        );
        assert_all_close("reward_loss", &fs.reward_loss, &cs.reward_loss, 1e-4);
        assert_all_close("critic_loss", &fs.critic_loss, &cs.critic_loss, 1e-4);
        assert_all_close("td_error", &fs.td_error, &cs.td_error, 1e-4);
        assert_eq!(fs.assist_loss.is_some(), cs.assist_loss.is_some());
        assert_all_close("dL/dH", &fg.dx, &cg.dx, 2e-3);
        for l in 0..fg.towers.layers() {
            assert_all_close(
                &format!("tower w{l}"),
                &fg.towers.w[l],
                &cg.towers.w[l],
                2e-3,
            );
            assert_all_close(
                &format!("tower b{l}"),
                &fg.towers.b[l],
                &cg.towers.b[l],
                2e-3,
            );
        }
        if let (Some(a), Some(b)) = (&fg.assist, &cg.assist) {
            for l in 0..a.layers() {
                assert_all_close(&format!("assist w{l}"), &a.w[l], &b.w[l], 2e-3);
            }
        }
        // And the scores of both engines.
        let inputs: Vec<PairInput<'_>> = data.iter().take(10).map(Sample::input).collect();
        let a = fused.score(&inputs).expect("score");
        let b = candle.score(&inputs).expect("score");
        for (x, y) in a.iter().zip(&b) {
            assert!(close(x.score, y.score, 1e-4), "{x:?} vs {y:?}");
        }
        // One user's candidates (the shared h_u path of the fused forward pass).
        let one_user: Vec<PairInput<'_>> = data
            .iter()
            .take(30)
            .map(|s| PairInput {
                user_id: 42,
                user_feats: &data[0].user_feats,
                ..s.input()
            })
            .collect();
        let a = fused.score(&one_user).expect("score");
        let b = candle.score(&one_user).expect("score");
        for (x, y) in a.iter().zip(&b) {
            for (tx, ty) in x.towers.iter().zip(&y.towers) {
                assert_eq!(tx.is_some(), ty.is_some());
                if let (Some(tx), Some(ty)) = (tx, ty) {
                    assert!(close(*tx, *ty, 1e-4), "{x:?} vs {y:?}");
                }
            }
        }
    }
}

/// One pair whose every interaction earns `click` reward `r`: the ASA chain
/// t = 0, 1, 2, ... with the click counter advancing when r > 0.
fn chain(r: f32, len: u32) -> Vec<Sample> {
    (0..len)
        .map(|t| {
            let clicks = if r > 0.0 { t } else { 0 };
            Sample {
                user_id: 1,
                author_id: 2,
                item_id: 3,
                user_feats: Default::default(),
                item_feats: Default::default(),
                state: [t, clicks, 0, 0, 0],
                next_state: [t + 1, clicks + u32::from(r > 0.0), 0, 0, 0],
                extra: Default::default(),
                next_extra: Default::default(),
                reward: [r, 0.0, 0.0, 0.0],
            }
        })
        .collect()
}

fn click_tower_cfg() -> LearnerConfig {
    LearnerConfig {
        multi_task: false,
        target_label: "click".into(),
        assist_gift: false,
        // A faster target than the paper's 0.005 so the test converges in
        // a few thousand updates; the algorithm is the same.
        tau: 0.05,
        lr: 3e-3,
        embedding_lr: 3e-3,
        ..tiny()
    }
}

fn click_liv(l: &mut Learner, s: &Sample) -> f32 {
    let x = [s.input()];
    l.score(&x).expect("score")[0].towers[0].expect("click tower")
}

#[test]
fn td_learning_reaches_the_value_of_a_pair_that_always_clicks() {
    // r = 1 at every interaction forever: Q = 1 / (1 - gamma) = 10 in every state.
    let cfg = click_tower_cfg();
    let mut l = Learner::new(&cfg).expect("learner");
    let data = chain(1.0, 40);
    let mut ring = Ring::new(1000);
    for s in data.iter().cloned() {
        l.observe(&s);
        ring.push(s);
    }
    for _ in 0..3000 {
        l.train_from(&ring).expect("step");
    }
    for t in [0usize, 5, 20] {
        let q = click_liv(&mut l, &data[t]);
        assert!(
            (q - 10.0).abs() < 0.5,
            "state t={t}: Q = {q}, want 10 +- 5%"
        );
    }
}

#[test]
fn td_learning_keeps_a_pair_that_never_clicks_near_zero() {
    let cfg = click_tower_cfg();
    let mut l = Learner::new(&cfg).expect("learner");
    let data = chain(0.0, 40);
    let mut ring = Ring::new(1000);
    for s in data.iter().cloned() {
        l.observe(&s);
        ring.push(s);
    }
    for _ in 0..1500 {
        l.train_from(&ring).expect("step");
    }
    let q = click_liv(&mut l, &data[10]);
    assert!(q.abs() < 0.3, "Q = {q}, want about 0");
}

/// Sets every net of a stack to output the constant bias of its last layer.
fn constant_outputs(p: &mut rliv_learner::nets::StackParams, per_net: &[f32]) {
    for w in p.w.iter_mut() {
        w.iter_mut().for_each(|v| *v = 0.0);
    }
    for b in p.b.iter_mut() {
        b.iter_mut().for_each(|v| *v = 0.0);
    }
    let last = p.b.len() - 1;
    p.b[last].copy_from_slice(per_net);
}

#[test]
fn the_td_target_combines_the_two_target_q_values_by_min_or_mean() {
    // Target nets [r_hat', V1', V2'] = [1, 5, 3]: Q'_1 = 1 + 0.9 * 5 = 5.5,
    // Q'_2 = 1 + 0.9 * 3 = 3.7; the min is 3.7, the mean 4.6.
    for (double_q, combined) in [(DoubleQ::Min, 3.7), (DoubleQ::Mean, 4.6)] {
        for engine in ["fused", "candle"] {
            let cfg = LearnerConfig {
                engine: engine.into(),
                double_q,
                huber_delta: 1.0,
                ..click_tower_cfg()
            };
            let mut l = Learner::new(&cfg).expect("learner");
            constant_outputs(&mut l.model_mut().expect("model").target, &[1.0, 5.0, 3.0]);
            // Online nets output 0: Q = 0, so the TD error |Q - y| is y itself.
            constant_outputs(&mut l.model_mut().expect("model").towers, &[0.0, 0.0, 0.0]);
            let s = chain(2.0, 1);
            let stats = l.evaluate(&[&s[0]]).expect("evaluate");
            let y = 2.0 + 0.9 * combined;
            assert!(
                (stats.td_error[0] - y).abs() < 1e-4,
                "{engine} {double_q:?}: y = {}",
                stats.td_error[0]
            );
            // Critic loss: both Q_k miss by y (Huber, delta 1): 2 * (y - 0.5).
            assert!(
                (stats.critic_loss[0] - 2.0 * (y - 0.5)).abs() < 1e-4,
                "{engine} {double_q:?}: {stats:?}"
            );
            // Reward head predicts 0 for r = 2: huber(2) = 1.5.
            assert!(
                (stats.reward_loss[0] - 1.5).abs() < 1e-5,
                "{engine} {double_q:?}: {stats:?}"
            );
        }
    }
}

#[test]
fn the_liv_combines_the_two_online_values_the_same_way() {
    // Online nets [r_hat, V1, V2] = [1, 5, 3]: Q_1 = 5.5, Q_2 = 3.7.
    let mut l = Learner::new(&LearnerConfig {
        double_q: DoubleQ::Min,
        ..click_tower_cfg()
    })
    .expect("learner");
    constant_outputs(&mut l.model_mut().expect("model").towers, &[1.0, 5.0, 3.0]);
    let s = chain(2.0, 1);
    let min = click_liv(&mut l, &s[0]);
    l.model_mut().expect("model").cfg.double_q = DoubleQ::Mean;
    let mean = click_liv(&mut l, &s[0]);
    // Both are the same reward scale times the combined value.
    assert!(min > 0.0, "LIV with min: {min}");
    assert!(
        (mean / min - 4.6 / 3.7).abs() < 1e-4,
        "LIV mean {mean} / min {min}, want 4.6 / 3.7"
    );
}

fn tensor_names(l: &mut Learner) -> Vec<String> {
    let mut names: Vec<String> = checkpoint::model_tensors(l.model().expect("model"))
        .expect("tensors")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    names.sort();
    names
}

#[test]
fn ablation_switches_change_the_parameters_and_the_loss_terms() {
    let mut full = Learner::new(&tiny()).expect("full");
    let names = tensor_names(&mut full);
    for label in ["click", "watch", "follow", "gift"] {
        for net in ["reward", "v1", "v2"] {
            let n = format!("tower.{label}.{net}.0.weight");
            assert!(names.contains(&n), "missing {n}");
            assert!(names.contains(&format!("target.{n}")), "missing target.{n}");
        }
    }
    assert!(names.contains(&"assist_gift.0.weight".to_string()));

    // multi_task off: one tower, for the target label.
    let mut single = Learner::new(&LearnerConfig {
        multi_task: false,
        target_label: "follow".into(),
        ..tiny()
    })
    .expect("single");
    let names = tensor_names(&mut single);
    assert!(names.iter().any(|n| n.starts_with("tower.follow.")));
    assert!(!names
        .iter()
        .any(|n| n.starts_with("tower.watch.") || n.starts_with("tower.click.")));

    // supervised_head off: no reward heads, and no reward loss term.
    let mut no_head = Learner::new(&LearnerConfig {
        supervised_head: false,
        ..tiny()
    })
    .expect("no head");
    assert!(!tensor_names(&mut no_head)
        .iter()
        .any(|n| n.contains(".reward.")));
    let data = samples(64, 9);
    let batch: Vec<&Sample> = data.iter().collect();
    let stats = no_head.evaluate(&batch).expect("eval");
    assert!(stats.reward_loss.iter().all(|r| *r == 0.0));
    let mut with_head = Learner::new(&tiny()).expect("with head");
    let stats = with_head.evaluate(&batch).expect("eval");
    assert!(stats.reward_loss.iter().all(|r| *r > 0.0), "{stats:?}");
    assert!(stats.assist_loss.is_some());

    // assist_gift off: no assistance network, no BCE term; total = sum of tower terms.
    let mut no_assist = Learner::new(&LearnerConfig {
        assist_gift: false,
        ..tiny()
    })
    .expect("no assist");
    assert!(!tensor_names(&mut no_assist)
        .iter()
        .any(|n| n.starts_with("assist_gift")));
    let stats = no_assist.evaluate(&batch).expect("eval");
    assert!(stats.assist_loss.is_none());
    let towers: f32 = stats.reward_loss.iter().sum::<f32>() + stats.critic_loss.iter().sum::<f32>();
    assert!((stats.loss - towers).abs() < 1e-4 * (1.0 + towers));
}

fn trained(cfg: &LearnerConfig, steps: usize) -> (Learner, Ring, Vec<Sample>) {
    let mut l = Learner::new(cfg).expect("learner");
    let data = samples(500, 21);
    let mut ring = Ring::new(1000);
    for s in data.iter().cloned() {
        l.observe(&s);
        ring.push(s);
    }
    for _ in 0..steps {
        l.train_from(&ring).expect("step");
    }
    (l, ring, data)
}

#[test]
fn checkpoint_round_trip_gives_identical_scores_and_the_same_next_loss() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = tiny();
    let (mut l, ring, data) = trained(&cfg, 20);
    checkpoint::save(&mut l, dir.path(), serde_json::json!({"kind": "test"})).expect("save");

    // Scores of the loaded model equal the live one's.
    let (loaded, manifest, skipped) = checkpoint::load_newest_model(dir.path())
        .expect("load")
        .expect("one");
    assert!(skipped.is_empty());
    assert_eq!(manifest.step, 20);
    let mut engine = rliv_learner::engine::Engine::new("fused", "cpu", 1).expect("engine");
    let inputs: Vec<PairInput<'_>> = data.iter().take(50).map(Sample::input).collect();
    let live = l.score(&inputs).expect("score");
    let back = loaded.score(&mut engine, &inputs).expect("score");
    assert_eq!(live, back, "scores changed through a checkpoint");

    // Resuming continues exactly: same next batch, same loss, same parameters after.
    let (mut resumed, _, _) = checkpoint::resume(dir.path(), &cfg)
        .expect("resume")
        .expect("one");
    assert_eq!(resumed.step, l.step);
    let a = l.train_from(&ring).expect("step");
    let b = resumed.train_from(&ring).expect("step");
    assert_eq!(a, b, "the next update differs after resuming");
    let a = l.train_from(&ring).expect("step");
    let b = resumed.train_from(&ring).expect("step");
    assert_eq!(a, b, "the second update differs after resuming");
}

#[test]
fn checkpoints_are_named_for_pytorch_and_pruned_to_the_newest() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = LearnerConfig {
        keep_checkpoints: 2,
        ..tiny()
    };
    let (mut l, ring, _) = trained(&cfg, 1);
    for _ in 0..3 {
        l.train_from(&ring).expect("step");
        checkpoint::save(&mut l, dir.path(), serde_json::Value::Null).expect("save");
    }
    let kept = checkpoint::list(dir.path()).expect("list");
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept[0].ends_with(checkpoint::dir_name(4)));
    // The weights file is plain safetensors with PyTorch layouts: (out, in).
    let bytes = std::fs::read(kept[0].join("model.safetensors")).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let w = st.tensor("tower.watch.v1.0.weight").expect("tensor");
    assert_eq!(w.shape(), &[16, 96]);
    assert_eq!(
        st.tensor("embedding.user.weight").expect("emb").shape(),
        &[256, 32]
    );
}

#[test]
fn a_corrupt_or_truncated_checkpoint_is_named_and_the_newest_good_one_is_used() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = tiny();
    let (mut l, ring, _) = trained(&cfg, 2);
    checkpoint::save(&mut l, dir.path(), serde_json::Value::Null).expect("save"); // step 2
    l.train_from(&ring).expect("step");
    checkpoint::save(&mut l, dir.path(), serde_json::Value::Null).expect("save"); // step 3
    let newest = dir.path().join(checkpoint::dir_name(3));

    // Truncate the newest weights: the loader names that file and falls back to step 2.
    let model_file = newest.join("model.safetensors");
    let len = std::fs::metadata(&model_file).expect("meta").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&model_file)
        .expect("open");
    f.set_len(len / 2).expect("truncate");
    let (_, manifest, skipped) = checkpoint::resume(dir.path(), &cfg)
        .expect("resume")
        .expect("one");
    assert_eq!(manifest.step, 2);
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(
        skipped[0].contains("model.safetensors") && skipped[0].contains("truncated"),
        "{}",
        skipped[0]
    );

    // Flip a byte of the step-2 optimizer file too: now nothing is usable, and the error names both.
    let opt = dir
        .path()
        .join(checkpoint::dir_name(2))
        .join("optimizer.safetensors");
    let mut bytes = std::fs::read(&opt).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xFF;
    std::fs::write(&opt, &bytes).expect("write");
    let err = checkpoint::resume(dir.path(), &cfg)
        .err()
        .expect("no usable checkpoint");
    let msg = err.to_string();
    assert!(
        msg.contains("optimizer.safetensors") && msg.contains("checksum"),
        "{msg}"
    );
    assert!(msg.contains("model.safetensors"), "{msg}");

    // Serving needs only the weights: step 2's are intact. A garbage manifest
    // in step 3 is named as such, and step 2 is served.
    std::fs::write(newest.join("manifest.json"), b"{not json").expect("write");
    let (_, manifest, skipped) = checkpoint::load_newest_model(dir.path())
        .expect("load")
        .expect("one");
    assert_eq!(manifest.step, 2);
    assert!(skipped[0].contains("manifest.json"), "{skipped:?}");
}

#[test]
fn unfinished_checkpoint_writes_are_removed_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tmp");
    let mk = |name: &str| std::fs::create_dir_all(dir.path().join(name)).expect("mkdir");
    mk("ckpt-000000000407.tmp");
    mk("ckpt-000000000400");
    mk("notes.tmp");
    std::fs::write(
        dir.path().join("ckpt-000000000407.tmp/model.safetensors"),
        b"half",
    )
    .expect("write");
    assert_eq!(
        rliv_learner::checkpoint::remove_unfinished(dir.path()).expect("remove"),
        1
    );
    assert!(!dir.path().join("ckpt-000000000407.tmp").exists());
    assert!(dir.path().join("ckpt-000000000400").exists());
    assert!(dir.path().join("notes.tmp").exists());
    // A missing directory has nothing to remove.
    assert_eq!(
        rliv_learner::checkpoint::remove_unfinished(&dir.path().join("absent")).expect("absent"),
        0
    );
}

/// Rows of the user id table (table 0) that differ between two learners.
fn user_rows_changed(a: &mut Learner, b: &mut Learner) -> usize {
    let (a, b) = (a.model().expect("model"), b.model().expect("model"));
    let (ta, tb) = (&a.emb.tables[0], &b.emb.tables[0]);
    let d = a.emb.dim;
    (0..ta.rows)
        .filter(|r| ta.weight[r * d..(r + 1) * d] != tb.weight[r * d..(r + 1) * d])
        .count()
}

#[test]
fn user_id_dropout_leaves_out_the_users_row_in_training_only() {
    let cfg = LearnerConfig {
        id_rows: 1 << 16,
        batch_size: 1024,
        ..tiny()
    };
    let dropped = LearnerConfig {
        user_id_dropout: 0.5,
        ..cfg.clone()
    };
    let data = samples(1024, 11);
    let batch: Vec<&Sample> = data.iter().collect();
    let mut fresh = Learner::new(&cfg).expect("learner");
    // Without dropout, a step moves the row of every user in the batch.
    let mut full = Learner::new(&cfg).expect("learner");
    full.train_step(&batch).expect("step");
    let all = user_rows_changed(&mut fresh, &mut full);
    assert!(all > 300, "the batch should touch many user rows: {all}");
    // With dropout 0.5, about half of the samples leave the row out (a user
    // with several samples keeps its row if any of them does).
    let mut half = Learner::new(&dropped).expect("learner");
    // Outside training (loss, gradients, scores) the row is always used.
    let (g_full, g_half) = (
        Learner::new(&cfg)
            .expect("learner")
            .gradients(&batch)
            .expect("gradients")
            .1,
        half.gradients(&batch).expect("gradients").1,
    );
    assert_eq!(
        g_full.dx, g_half.dx,
        "gradients outside training use every row"
    );
    half.train_step(&batch).expect("step");
    let kept = user_rows_changed(&mut fresh, &mut half);
    assert!(
        kept > all * 3 / 10 && kept < all * 8 / 10,
        "dropout 0.5 should leave out about half of the user rows: {kept} of {all} moved"
    );
}

/// Largest |a - b| over two buffers, and how many entries differ by more
/// than `tol` relative to their size (`tol * (1 + max(|a|, |b|))`).
fn spread(a: &[f32], b: &[f32], tol: f32) -> (f32, usize) {
    assert_eq!(a.len(), b.len());
    let mut max = 0f32;
    let mut over = 0;
    for (x, y) in a.iter().zip(b) {
        let d = (x - y).abs();
        max = max.max(d);
        over += usize::from(!close(*x, *y, tol));
    }
    (max, over)
}

/// Every parameter and Adam moment of two learners, by checkpoint name.
fn all_tensors(l: &mut Learner) -> Vec<(String, Vec<f32>)> {
    let flat = |v: Vec<(String, candle_core::Tensor)>| -> Vec<(String, Vec<f32>)> {
        v.into_iter()
            .map(|(n, t)| {
                let data = t.flatten_all().and_then(|t| t.to_vec1::<f32>());
                (n, data.expect("f32 tensor"))
            })
            .collect()
    };
    let mut out = flat(checkpoint::model_tensors(l.model().expect("model")).expect("model"));
    out.extend(flat(checkpoint::optimizer_tensors(l).expect("moments")));
    out
}

#[test]
fn the_engines_take_the_same_consecutive_steps_and_read_each_others_checkpoints() {
    let cfg = LearnerConfig {
        next_items: 3,
        embedding_weight_decay: 0.5,
        ..tiny()
    };
    let with = |engine: &str| LearnerConfig {
        engine: engine.into(),
        device: if engine == "candle" {
            candle_device()
        } else {
            "cpu".into()
        },
        ..cfg.clone()
    };
    let data = samples(600, 8);
    let mut fused = Learner::new(&with("fused")).expect("fused");
    let mut candle = Learner::new(&with("candle")).expect("candle");
    for s in &data {
        fused.observe(s);
        candle.observe(s);
    }
    // Ten consecutive updates on the same batches: the same losses before
    // each update, so the same parameters after each one.
    for (k, chunk) in data.chunks(48).take(10).enumerate() {
        let refs: Vec<&Sample> = chunk.iter().collect();
        let a = fused.train_step(&refs).expect("fused step");
        let b = candle.train_step(&refs).expect("candle step");
        assert!(
            close(a.loss, b.loss, 1e-4),
            "step {k}: loss {} vs {}",
            a.loss,
            b.loss
        );
        assert_all_close(
            &format!("step {k} td_error"),
            &a.td_error,
            &b.td_error,
            1e-4,
        );
    }
    assert_eq!(candle.step, 10);
    // Parameters (towers, targets, assistance net, embedding tables) and
    // Adam's moments after the ten updates.
    let (fa, ca) = (all_tensors(&mut fused), all_tensors(&mut candle));
    assert_eq!(fa.len(), ca.len());
    for ((name, x), (name2, y)) in fa.iter().zip(&ca) {
        assert_eq!(name, name2);
        let (max, over) = spread(x, y, 1e-4);
        if std::env::var_os("RLIV_TEST_VERBOSE").is_some() {
            eprintln!(
                "{name}: max |fused - candle| {max:.3e}, {over} of {} beyond 1e-4",
                x.len()
            );
        }
        // Rounding alone (measured on the CPU: at most 1e-6 on the weights
        // after ten updates); a different update would move a weight by
        // about lr = 1e-3.
        assert!(
            over == 0 && (name.contains(".exp_avg") || max <= 1e-5),
            "{name}: max |fused - candle| {max}, {over} of {} entries beyond 1e-4 (relative)",
            x.len()
        );
    }
    let moved = spread(
        &fa[0].1,
        &all_tensors(&mut Learner::new(&with("fused")).expect("fresh"))[0].1,
        1e-5,
    )
    .1;
    assert!(moved > 0, "{} did not train", fa[0].0);

    // A checkpoint from either engine resumes in either engine.
    let batch: Vec<&Sample> = data[480..].iter().collect();
    for (from, to) in [
        ("candle", "fused"),
        ("fused", "candle"),
        ("candle", "candle"),
    ] {
        let dir = tempfile::tempdir().expect("tmp");
        let src = if from == "candle" {
            &mut candle
        } else {
            &mut fused
        };
        checkpoint::save(src, dir.path(), serde_json::Value::Null).expect("save");
        let (mut resumed, _, _) = checkpoint::resume(dir.path(), &with(to))
            .expect("resume")
            .expect("one");
        assert_eq!(resumed.engine_name(), to);
        // The recent items (the next-state candidates) are not in a
        // checkpoint: the resumed learner sees the same transitions again.
        for s in &data {
            resumed.observe(s);
        }
        assert_eq!(resumed.step, 10);
        assert_eq!(
            all_tensors(&mut resumed),
            all_tensors(src),
            "{from} -> {to}: the checkpoint changed the state"
        );
        let live = src.evaluate(&batch).expect("eval");
        let back = resumed.evaluate(&batch).expect("eval");
        if from == to && candle_device() == "cpu" {
            // (A GPU's scatter-adds need not sum in the same order twice.)
            assert_eq!(live, back, "{from} -> {to}");
        } else {
            assert!(
                close(live.loss, back.loss, 1e-4),
                "{from} -> {to}: {} vs {}",
                live.loss,
                back.loss
            );
        }
    }
}

#[test]
fn a_batch_with_a_non_finite_loss_is_refused_and_changes_nothing() {
    for engine in ["fused", "candle"] {
        let cfg = LearnerConfig {
            engine: engine.into(),
            device: if engine == "candle" {
                candle_device()
            } else {
                "cpu".into()
            },
            ..tiny()
        };
        let mut l = Learner::new(&cfg).expect("learner");
        let data = samples(64, 12);
        for s in &data {
            l.observe(s);
        }
        let good: Vec<&Sample> = data.iter().take(32).collect();
        l.train_step(&good).expect("a finite step");
        let before = all_tensors(&mut l);
        // (The candle engine's newest parameters are on its device: its
        // loss on a batch reads them there.)
        let loss_before = l.evaluate(&good).expect("loss");
        // One infinite reward makes the batch's loss infinite or NaN.
        let mut broken = data[40].clone();
        broken.reward[1] = f32::INFINITY;
        let mut bad: Vec<&Sample> = data[32..].iter().collect();
        bad[8] = &broken;
        match l.train_step(&bad) {
            Err(rliv_learner::LearnerError::NonFiniteLoss { step, .. }) => assert_eq!(step, 1),
            other => panic!("{engine}: expected a refused step, got {other:?}"),
        }
        assert_eq!(l.step, 1, "{engine}: the step count moved");
        assert_eq!(
            l.evaluate(&good).expect("loss"),
            loss_before,
            "{engine}: a refused step changed the parameters"
        );
        assert!(
            all_tensors(&mut l) == before,
            "{engine}: a refused step changed the parameters or moments"
        );
        // The learner goes on with good batches.
        l.train_step(&good)
            .expect("a finite step after the refused one");
        assert_eq!(l.step, 2);
    }
}
