//! Per-round and cumulative metrics (the paper's Section 4.1 metrics that a
//! simulator can measure).

use serde::{Deserialize, Serialize};

use crate::events::RoundEvents;

/// Counters and derived rates over one round or over all rounds so far.
/// Exposures are distinct (duplicated lines are not counted twice).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Rounds covered.
    pub rounds: u32,
    /// Sessions (each has at least one request).
    pub sessions: u64,
    /// Ranking requests.
    pub requests: u64,
    /// Distinct exposures (items actually seen; a session can end mid-slate).
    pub exposures: u64,
    /// Clicks.
    pub clicks: u64,
    /// Satisfying watches.
    pub satisfying: u64,
    /// Total seconds watched.
    pub watch_sec: f64,
    /// New fans: follows (each pair follows at most once).
    pub new_fans: u64,
    /// Gifts sent.
    pub gifts: u64,
    /// Total gift amount.
    pub gift_total: f64,
    /// Sum over requests of the per-slate diversity (see `diversity`).
    pub diversity_sum: f64,
    /// Longest session, in requests.
    pub max_session_requests: u32,
    /// Sessions ended because the temper reached zero.
    pub quit_temper: u64,
    /// Sessions ended by the per-request base quit probability.
    pub quit_base: u64,
    /// Sessions ended by the max_requests cap.
    pub quit_cap: u64,
    /// Sessions ended by the curfew (or an empty slate).
    pub quit_other: u64,
    /// Deep pairs (followed, >= deep_min_satisfying satisfying watches),
    /// counted over the whole world at the end of the (last) round.
    pub deep_pairs: u64,
    /// Session length: requests per session.
    pub session_length: f64,
    /// Watch time per session, seconds.
    pub watch_time_per_session: f64,
    /// CTR: clicks / exposures.
    pub ctr: f64,
    /// Diversity: mean over requests of (distinct authors in the returned
    /// slate) / K. 1 means every slot of every slate is a different author;
    /// 1/K means each slate is one author.
    pub diversity: f64,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

impl Metrics {
    /// Recomputes the derived rates from the counters.
    pub fn finish(&mut self) {
        let s = self.sessions as f64;
        self.session_length = ratio(self.requests as f64, s);
        self.watch_time_per_session = ratio(self.watch_sec, s);
        self.ctr = ratio(self.clicks as f64, self.exposures as f64);
        self.diversity = ratio(self.diversity_sum, self.requests as f64);
    }

    /// Adds another period's counters (deep_pairs is a level: the later
    /// period's value is kept) and recomputes the rates.
    pub fn merge(&mut self, o: &Metrics) {
        self.rounds += o.rounds;
        self.sessions += o.sessions;
        self.requests += o.requests;
        self.exposures += o.exposures;
        self.clicks += o.clicks;
        self.satisfying += o.satisfying;
        self.watch_sec += o.watch_sec;
        self.new_fans += o.new_fans;
        self.gifts += o.gifts;
        self.gift_total += o.gift_total;
        self.diversity_sum += o.diversity_sum;
        self.max_session_requests = self.max_session_requests.max(o.max_session_requests);
        self.quit_temper += o.quit_temper;
        self.quit_base += o.quit_base;
        self.quit_cap += o.quit_cap;
        self.quit_other += o.quit_other;
        self.deep_pairs = o.deep_pairs;
        self.finish();
    }

    /// Header of [`Metrics::table_row`].
    pub fn table_header() -> String {
        format!(
            "{:<14} {:>8} {:>9} {:>8} {:>12} {:>6} {:>9} {:>8} {:>10} {:>10}",
            "policy",
            "sessions",
            "requests",
            "sess_len",
            "watch/sess_s",
            "ctr",
            "diversity",
            "new_fans",
            "deep_pairs",
            "gifts"
        )
    }

    /// One aligned line for a text table.
    pub fn table_row(&self, name: &str) -> String {
        format!(
            "{:<14} {:>8} {:>9} {:>8.3} {:>12.1} {:>6.3} {:>9.3} {:>8} {:>10} {:>10.1}",
            name,
            self.sessions,
            self.requests,
            self.session_length,
            self.watch_time_per_session,
            self.ctr,
            self.diversity,
            self.new_fans,
            self.deep_pairs,
            self.gift_total
        )
    }
}

/// What [`Simulator::run_round`](crate::Simulator::run_round) returns.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundReport {
    /// 0-based round number.
    pub round: u32,
    /// Name of the policy that ranked this round.
    pub policy: String,
    /// Event time of the round's start (Unix ms, inclusive).
    pub start_ms: i64,
    /// Event time of the round's end (exclusive); every event of the round
    /// is before it.
    pub end_ms: i64,
    /// This round's metrics.
    pub metrics: Metrics,
    /// Metrics of all rounds so far, this one included.
    pub cumulative: Metrics,
    /// This round's events (not serialized; see `RoundEvents::write_dir`).
    #[serde(skip)]
    pub events: RoundEvents,
}
