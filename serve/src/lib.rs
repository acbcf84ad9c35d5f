//! The ranking service: `POST /rank`, `GET /healthz`, `GET /metrics`.
//!
//! Each request reads the candidates' pair counters from the pair state (a
//! RocksDB secondary instance per store, which catches up with its writer
//! every `catch_up_interval_ms`; in a cluster state, the shard that owns the
//! request's user), scores every candidate in one batched forward
//! pass of the one scoring path (`Model::score`), and returns the top `k`.
//! A reloader thread watches the checkpoint directory and swaps in a new model
//! as soon as it verifies; requests in flight keep the model they started
//! with (an `Arc`), so a reload never fails or stalls them.

mod config;
mod counters;
mod http;
mod metrics;
mod rank;
mod server;
mod shards;

pub use config::{ServeConfig, ServeConfigError, DISCARD_FACTOR, DRAIN_TIMEOUT};
pub use counters::Metrics;
pub use http::router;
pub use rank::{AppState, Figures, RankError, Reply, Served};
pub use server::{spawn_background, ServeError, Server};
pub use shards::PairShards;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::atomic::Ordering;

    #[test]
    fn training_figures_appear_on_metrics() {
        let t = rliv_learner::trainer::TrainProgress::default();
        t.updates.store(12, Ordering::Relaxed);
        t.buffer_len.store(300, Ordering::Relaxed);
        let stats = rliv_learner::StepStats {
            loss: 2.5,
            td_error: vec![0.25, 1.5],
            ..Default::default()
        };
        *t.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((vec!["click", "watch"], stats));
        let mut text = String::new();
        t.render_prometheus(&mut text);
        assert!(text.contains("rliv_learner_updates_total 12\n"), "{text}");
        assert!(text.contains("rliv_learner_buffer_samples 300\n"), "{text}");
        assert!(
            text.contains("rliv_learner_td_error{tower=\"watch\"} 1.5\n"),
            "{text}"
        );
        assert!(text.contains("rliv_learner_loss 2.5\n"), "{text}");
    }

    #[test]
    fn error_kinds_index_their_counters_in_order() {
        for (i, kind) in crate::counters::ErrorKind::ALL.into_iter().enumerate() {
            assert_eq!(kind.index(), i, "{}", kind.as_str());
        }
    }

    #[test]
    fn bad_requests_name_the_problem() {
        let st = AppState::new(
            ServeConfig {
                max_candidates: 2,
                ..ServeConfig::default()
            },
            Path::new("/nonexistent"),
            Path::new("/nonexistent"),
        );
        let cases: &[(&[u8], u16, &str)] = &[
            (b"{", 400, "EOF"),
            (br#"{"candidates":[]}"#, 400, "user_id"),
            (br#"{"user_id":1,"candidates":[]}"#, 400, "empty"),
            (br#"{"user_id":1,"k":0,"candidates":[{"item_id":1,"author_id":1}]}"#, 400, "`k`"),
            (br#"{"user_id":1,"candidates":[{"item_id":1,"author_id":"a"}]}"#, 400, "expected u64"),
            (br#"{"user_id":1,"candidates":[{"item_id":1,"author_id":1},{"item_id":1,"author_id":1},{"item_id":1,"author_id":1}]}"#, 413, "at most 2"),
        ];
        for (body, status, needle) in cases {
            let r = st.rank(body);
            assert_eq!(
                r.status.as_u16(),
                *status,
                "{}",
                String::from_utf8_lossy(body)
            );
            let msg = r.body["error"].as_str().unwrap_or_default().to_string();
            assert!(msg.contains(needle), "{msg}");
        }
    }

    /// Waits (at most 30 s) until `ok` holds.
    fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
        let t = std::time::Instant::now();
        while !ok() {
            assert!(t.elapsed().as_secs() < 30, "never: {what}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn the_service_follows_cluster_shards_created_after_it_started() {
        use crate::shards::tests::{counters, put, user_of};
        use rliv_state::{shard_dir, Commit, PairKey, PairSnapshot};

        let dir = tempfile::tempdir().expect("tmp");
        let state = dir.path().join("state");
        let st = AppState::new(
            ServeConfig {
                catch_up_interval_ms: 10,
                reload_interval_ms: 10,
                ..ServeConfig::default()
            },
            &state,
            &dir.path().join("checkpoints"),
        );
        let background = spawn_background(&st);
        let (u0, u1) = (user_of(0, 0), user_of(1, 0));
        let found = |user: u64, author: u64| {
            st.counters(user, &[author])
                .expect("counters")
                .get(&author)
                .copied()
        };
        assert!(st.pair_state().is_none());
        assert_eq!(found(u0, 7), None);

        // Process 0's shard appears first; user u1's decoy there is what a
        // one-shard layout reads.
        let _p0 = put(
            &shard_dir(&state, 0),
            &[
                (PairKey::new(u0, 7), counters(3, 1)),
                (PairKey::new(u1, 8), counters(99, 99)),
            ],
        );
        eventually("p0 read", || {
            found(u0, 7) == Some(PairSnapshot::from(&counters(3, 1)))
        });

        // Then process 1's: its user's lookups go there.
        let p1 = put(
            &shard_dir(&state, 1),
            &[(PairKey::new(u1, 8), counters(4, 2))],
        );
        eventually("p1 read", || {
            found(u1, 8) == Some(PairSnapshot::from(&counters(4, 2)))
        });
        assert_eq!(st.pair_state().expect("open").dirs().len(), 2);
        assert_eq!(found(u0, 7), Some(PairSnapshot::from(&counters(3, 1))));

        // A commit to shard 1 after the reopening is caught up with.
        p1.commit(Commit {
            pairs: vec![(PairKey::new(u1, 9), counters(6, 5).to_bytes())],
            ..Default::default()
        })
        .expect("commit");
        eventually("p1 caught up", || {
            found(u1, 9) == Some(PairSnapshot::from(&counters(6, 5)))
        });

        st.stop.store(true, Ordering::Relaxed);
        for t in background {
            t.join().expect("background thread");
        }
    }
}
