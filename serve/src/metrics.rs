//! `GET /metrics`: the service's figures, and those of the learner and the
//! job in the same process, in the Prometheus text format.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::counters::{ErrorKind, BUCKETS};
use crate::rank::*;
use rliv_contract::prom::{family, metric};

impl AppState {
    /// Prometheus text exposition.
    pub fn metrics_text(&self) -> String {
        let m = &self.metrics;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let requests = load(&m.requests);
        let mut out = String::new();
        metric(
            &mut out,
            "rliv_rank_requests_total",
            "counter",
            "/rank requests handled.",
            requests,
        );
        family(
            &mut out,
            "rliv_rank_errors_total",
            "counter",
            "/rank requests refused, by kind.",
        );
        for kind in ErrorKind::ALL {
            out += &format!(
                "rliv_rank_errors_total{{kind=\"{}\"}} {}\n",
                kind.as_str(),
                load(&m.errors[kind.index()])
            );
        }
        family(
            &mut out,
            "rliv_rank_latency_seconds",
            "histogram",
            "/rank latency in the handler.",
        );
        for (b, bound) in BUCKETS.iter().enumerate() {
            out += &format!(
                "rliv_rank_latency_seconds_bucket{{le=\"{bound}\"}} {}\n",
                load(&m.latency[b])
            );
        }
        out += &format!("rliv_rank_latency_seconds_bucket{{le=\"+Inf\"}} {requests}\n");
        out += &format!(
            "rliv_rank_latency_seconds_sum {}\nrliv_rank_latency_seconds_count {requests}\n",
            load(&m.latency_sum_ns) as f64 / 1e9
        );
        let secs = |a: &AtomicU64| load(a) as f64 / 1e9;
        let version = self.current().map_or(0, |s| s.version);
        metric(
            &mut out,
            "rliv_rank_scoring_seconds_total",
            "counter",
            "Time spent in the model's forward pass.",
            secs(&m.scoring_sum_ns),
        );
        metric(
            &mut out,
            "rliv_rank_candidates_total",
            "counter",
            "Candidates scored.",
            load(&m.candidates),
        );
        metric(
            &mut out,
            "rliv_model_version",
            "gauge",
            "Step of the model being served (0: none).",
            version,
        );
        metric(
            &mut out,
            "rliv_model_reloads_total",
            "counter",
            "Models loaded from the checkpoint directory.",
            load(&m.reloads),
        );
        metric(
            &mut out,
            "rliv_model_reload_failures_total",
            "counter",
            "Checkpoint directory scans that failed.",
            load(&m.reload_failures),
        );
        let training = read_lock(&self.training).clone();
        if let Some(t) = training {
            t.render_prometheus(&mut out);
        }
        let job = read_lock(&self.job).clone();
        if let Some(j) = job {
            j.render(&mut out);
        }
        out
    }
}
