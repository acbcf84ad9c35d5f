//! The service's own counters: requests, refusals by kind, the latency
//! histogram, model reloads. `metrics.rs` renders them.

use std::sync::atomic::AtomicU64;

/// The kinds of refused `/rank` requests, counted apart on `/metrics`
/// (`rliv_rank_errors_total{kind=".."}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// The body is not JSON (a syntax error or a truncated body).
    BadJson,
    /// JSON, but not a valid request.
    BadRequest,
    BodyTooLarge,
    TooManyCandidates,
    /// No model yet, or the pair state cannot be read.
    NotReady,
    Internal,
}

impl ErrorKind {
    /// Every kind, in the order of `/metrics` (and of `Metrics::errors`).
    pub(crate) const ALL: [ErrorKind; 6] = [
        ErrorKind::BadJson,
        ErrorKind::BadRequest,
        ErrorKind::BodyTooLarge,
        ErrorKind::TooManyCandidates,
        ErrorKind::NotReady,
        ErrorKind::Internal,
    ];

    /// The `kind` label on `/metrics`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadJson => "bad_json",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::BodyTooLarge => "body_too_large",
            ErrorKind::TooManyCandidates => "too_many_candidates",
            ErrorKind::NotReady => "not_ready",
            ErrorKind::Internal => "internal",
        }
    }

    /// Its counter's index in `Metrics::errors` (its place in [`Self::ALL`]).
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Latency histogram bucket bounds, seconds.
pub(crate) const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

#[derive(Default)]
pub struct Metrics {
    pub(crate) requests: AtomicU64,
    pub(crate) ok: AtomicU64,
    /// Refused requests, by [`ErrorKind::index`].
    pub(crate) errors: [AtomicU64; ErrorKind::ALL.len()],
    pub(crate) latency: [AtomicU64; 12],
    pub(crate) latency_sum_ns: AtomicU64,
    pub(crate) scoring_sum_ns: AtomicU64,
    pub(crate) candidates: AtomicU64,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
}
