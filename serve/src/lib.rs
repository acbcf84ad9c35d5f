//! The ranking service: `POST /rank`, `GET /healthz`, `GET /metrics`.
//!
//! Each request reads the candidates' pair counters from the pair state (a
//! RocksDB secondary instance that catches up with the writer every
//! `catch_up_interval_ms`), scores every candidate in one batched forward
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

pub use config::{ServeConfig, ServeConfigError, DISCARD_FACTOR, DRAIN_TIMEOUT};
pub use counters::Metrics;
pub use http::router;
pub use rank::{AppState, Figures, RankError, Reply, Served};
pub use server::{spawn_background, ServeError, Server};

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
}
