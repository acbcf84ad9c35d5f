//! Named counters of the job and the reasons a record is rejected.
//!
//! Counters are a fixed array indexed by [`Counter`]: cheap to add up per epoch
//! on every worker and to persist with each commit.

use std::sync::atomic::{AtomicU64, Ordering};

use rliv_contract::prom::metric;
use serde::{Deserialize, Serialize};

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name { $($(#[$vm])* $v),* }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v),*];
            pub fn name(self) -> &'static str { match self { $($name::$v => $s),* } }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.name()) }
        }
    };
}

named_enum! {
    /// Why a record went to the dead-letter output instead of the pair state.
    Reason {
        /// Not valid JSON.
        MalformedJson = "malformed_json",
        /// Valid JSON, but not an object.
        NotAnObject = "not_an_object",
        /// A required field is absent.
        MissingField = "missing_field",
        /// A field has the wrong JSON type.
        WrongType = "wrong_type",
        /// A number outside its type's range (a negative id, a huge value).
        OutOfRange = "out_of_range",
        /// `action` is not click, watch, follow or gift.
        UnknownAction = "unknown_action",
        /// A `watch` with a negative value.
        NegativeWatch = "negative_watch",
        /// A `gift` with a value <= 0.
        NonPositiveGift = "nonpositive_gift",
        /// A line longer than `replay.max_line_bytes`.
        LineTooLong = "line_too_long",
        /// An exposure that arrived after its own attribution window closed.
        LateExposure = "late_exposure",
        /// An action whose exposure had already closed.
        LateAction = "late_action",
        /// An action that matches no exposure.
        OrphanAction = "orphan_action",
        /// An action outside `[exposure.ts_ms, exposure.ts_ms + window_ms]`.
        OutOfWindow = "out_of_window",
        /// An action whose user_id differs from its exposure's.
        UserMismatch = "user_mismatch",
    }
}

impl Reason {
    pub fn counter(self) -> Counter {
        Counter::ALL[Counter::FIRST_REJECT + self as usize]
    }
}

named_enum! {
    /// Every counter the job keeps. The `rejected_*` ones mirror [`Reason`].
    Counter {
        Lines = "lines",
        ExposuresParsed = "exposures_parsed",
        ActionsParsed = "actions_parsed",
        RejectedMalformedJson = "rejected_malformed_json",
        RejectedNotAnObject = "rejected_not_an_object",
        RejectedMissingField = "rejected_missing_field",
        RejectedWrongType = "rejected_wrong_type",
        RejectedOutOfRange = "rejected_out_of_range",
        RejectedUnknownAction = "rejected_unknown_action",
        RejectedNegativeWatch = "rejected_negative_watch",
        RejectedNonPositiveGift = "rejected_nonpositive_gift",
        RejectedLineTooLong = "rejected_line_too_long",
        LateExposures = "late_exposures",
        LateActions = "late_actions",
        OrphanActions = "orphan_actions",
        OutOfWindowActions = "out_of_window_actions",
        UserMismatchActions = "user_mismatch_actions",
        DuplicateExposures = "duplicate_exposures",
        DuplicateActions = "duplicate_actions",
        AttributedActions = "attributed_actions",
        ClosedExposures = "closed_exposures",
        Transitions = "transitions",
        NewPairs = "new_pairs",
    }
}

impl Counter {
    const FIRST_REJECT: usize = Counter::RejectedMalformedJson as usize;
    pub const COUNT: usize = Counter::ALL.len();
}

/// A vector of all counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters(pub Vec<u64>);

impl Default for Counters {
    fn default() -> Self {
        Counters(vec![0; Counter::COUNT])
    }
}

impl Counters {
    pub fn add(&mut self, c: Counter, n: u64) {
        self.0[c as usize] += n;
    }
    pub fn inc(&mut self, c: Counter) {
        self.add(c, 1);
    }
    pub fn get(&self, c: Counter) -> u64 {
        self.0.get(c as usize).copied().unwrap_or(0)
    }
    pub fn merge(&mut self, other: &Counters) {
        for (i, v) in other.0.iter().enumerate().take(Counter::COUNT) {
            self.0[i] += v;
        }
    }
    /// `self - earlier`, saturating (a run's share of cumulative counters).
    pub fn since(&self, earlier: &Counters) -> Counters {
        let mut out = Counters::default();
        for c in Counter::ALL {
            out.0[*c as usize] = self.get(*c).saturating_sub(earlier.get(*c));
        }
        out
    }
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|v| *v == 0)
    }
    /// Rejected input lines (parse and validation), all reasons.
    pub fn rejected_lines(&self) -> u64 {
        Reason::ALL
            .iter()
            .take(9)
            .map(|r| self.get(r.counter()))
            .sum()
    }
    pub fn iter(&self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        Counter::ALL.iter().map(|c| (*c, self.get(*c)))
    }
    /// Name → value, for JSON summaries.
    pub fn to_map(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.iter().map(|(c, v)| (c.name(), v)).collect()
    }
}

/// The Kafka reader's figures, shared with the lag monitor and `/metrics`.
#[derive(Debug, Default)]
pub struct KafkaProgress {
    /// Messages behind the partitions' ends, summed (from the last end seen).
    pub lag: AtomicU64,
    pub messages: AtomicU64,
    /// Client and fetch errors (a broker down, a reset offset, ...).
    pub errors: AtomicU64,
    /// Offsets that were never delivered (skipped by the broker: retention,
    /// compaction or transaction markers), counted when the next one arrives.
    pub skipped_offsets: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_maps_to_its_own_counter() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            let c = r.counter();
            assert!(seen.insert(c), "{r} shares a counter");
        }
        assert_eq!(Reason::LineTooLong.counter(), Counter::RejectedLineTooLong);
        assert_eq!(Reason::UserMismatch.counter(), Counter::UserMismatchActions);
        assert_eq!(Reason::LateExposure.counter(), Counter::LateExposures);
    }
}

/// Live figures of a replay or Kafka run, for a service in the same process.
#[derive(Clone)]
pub struct JobFigures {
    pub progress: std::sync::Arc<crate::Progress>,
    pub kafka: Option<std::sync::Arc<KafkaProgress>>,
}

impl JobFigures {
    /// The job's figures in the Prometheus text format (`/metrics`).
    pub fn render_prometheus(&self, out: &mut String) {
        let j = self;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let p = &j.progress;
        metric(
            out,
            "rliv_job_events_total",
            "counter",
            "Input events (lines or messages) processed.",
            load(&p.lines),
        );
        metric(
            out,
            "rliv_job_closed_exposures_total",
            "counter",
            "Exposures closed by the label join.",
            load(&p.closed_exposures),
        );
        metric(
            out,
            "rliv_job_transitions_total",
            "counter",
            "ASA transitions emitted.",
            load(&p.transitions),
        );
        metric(
            out,
            "rliv_job_dead_letters_total",
            "counter",
            "Records dead-lettered (bad input, late, orphan, ...).",
            load(&p.dead_letters),
        );
        metric(
            out,
            "rliv_job_pairs",
            "gauge",
            "Pairs in the state.",
            load(&p.pairs),
        );
        let wm = p.watermark_ms.load(Ordering::Relaxed);
        if wm > i64::MIN / 2 {
            metric(
                out,
                "rliv_job_watermark_ms",
                "gauge",
                "Event-time watermark of the label join.",
                wm,
            );
        }
        let views = |a: &std::sync::atomic::AtomicI64| a.load(Ordering::Relaxed);
        for (name, help, v) in [
            (
                "rliv_views_deep_pairs",
                "Deep user-author pairs now ([views]).",
                views(&p.views_deep_pairs),
            ),
            (
                "rliv_views_weekly_gifted_users",
                "Distinct users with a gift in the trailing gift window.",
                views(&p.views_weekly_gifted_users),
            ),
            (
                "rliv_views_revenue_milli",
                "Gift revenue over the state's history, in thousandths.",
                views(&p.views_revenue_milli),
            ),
            (
                "rliv_views_new_fans",
                "First follows over the kept days.",
                views(&p.views_new_fans),
            ),
        ] {
            metric(out, name, "gauge", help, v);
        }
        if let Some(k) = &j.kafka {
            metric(
                out,
                "rliv_kafka_lag_messages",
                "gauge",
                "Messages behind the partitions' ends.",
                load(&k.lag),
            );
            metric(
                out,
                "rliv_kafka_messages_total",
                "counter",
                "Messages consumed.",
                load(&k.messages),
            );
            metric(
                out,
                "rliv_kafka_errors_total",
                "counter",
                "Consumer errors (reconnects, ...).",
                load(&k.errors),
            );
        }
    }
}
