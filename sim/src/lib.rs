//! # rliv-sim: a closed-loop user simulator with a quit mechanism
//!
//! The offline evaluation of RLIV-UA (paper Section 4.1) runs ranking
//! policies against a user simulator: the simulator returns immediate
//! feedback (click, watch, ...) for every recommended item and decides, with
//! a quitting mechanism, whether the user sends another request. This crate
//! is such a simulator for rliv, plus the [`Policy`] trait and simple
//! baselines. It emits exactly the events of the wire contract
//! (`EVENTS.md`), so a round's output can be pushed through the rliv
//! pipeline (label join, pair state, transitions, learner) and the learned
//! model swapped in as the next round's policy.
//!
//! ## The world ([`world`], `[world]`, `[users]`, `[authors]`, `[items]`)
//! * **Users** have static categorical features `user_feats = [age bucket,
//!   gender, region, activity bucket]`, a latent taste vector (half explained
//!   by age and region centroids, so the features are informative, half
//!   individual), an activity rate (sessions per day, log-normal) and a
//!   patience (the temper a session starts with).
//! * **Authors** have a main category, a style vector (category centroid +
//!   noise), a quality offset, a popularity, a *bond* (how fast
//!   relationships with them grow) and, for streamer-like authors, a gift
//!   boost. The number of items per author is Zipf-ish.
//! * **Items** have `item_feats = [category, duration bucket, author
//!   popularity quartile]`, a duration (log-normal seconds), a quality and a
//!   click-bait propensity (most 0; bait attracts clicks, is abandoned early
//!   and dissatisfies).
//! * **Affinity** of a user to an author = taste . style / sqrt(dim) + the
//!   author's bias + static per-pair noise. It is latent: policies only see
//!   ids and features.
//!
//! ## Dynamics ([`relation`], [`response`])
//! * **Relationship** per (user, author): a depth in \[0, 1\]. A satisfying
//!   watch (fraction >= `satisfy_frac`) adds `growth * bond * (1 - depth)`,
//!   a short watch removes `hurt * depth`, a follow adds
//!   `follow_boost * bond * (1 - depth)`; without interaction the depth halves every
//!   `half_life_days` of event time. Depth and a follow raise the click,
//!   watch, follow and gift propensities for that author's items: the
//!   lifelong value of a pair is real and is built by exposures.
//! * **Response** to one shown item: P(click) = sigmoid of affinity,
//!   quality, click-bait, depth, follow and fatigue terms; given a click the
//!   watched fraction is Beta-distributed around sigmoid(affinity, quality,
//!   -bait, depth, -log duration, -fatigue); watch seconds = fraction *
//!   duration (so <= duration). After a satisfying watch a follow is drawn
//!   (at most one per pair, likelier with depth) and a gift (rare, likelier
//!   for followers, with depth and for streamers; amount log-normal, scaled
//!   by depth).
//! * **Fatigue**: seeing the same author again within minutes lowers click
//!   and watch propensities and costs temper (`sum exp(-dt / tau)` over the
//!   user's recent exposures of that author), so exploiting one author is
//!   not free.
//! * [`Simulator::expected_immediate`] is the exact expected watch seconds
//!   of showing an item now: P(click) * E\[fraction\] * duration under the
//!   current relationship and fatigue. Only the myopic oracle uses it.
//!
//! ## Sessions and the quit mechanism ([`Simulator::run_round`], `[session]`)
//! A round is `round_days` simulated days. Each day every user starts a
//! Poisson(activity) number of sessions at uniform times between
//! `wake_hour` and `sleep_hour` (a session that would overlap the user's
//! previous one is postponed); sessions of all users run in event-time
//! order. A session is a sequence of requests: the simulator retrieves N
//! candidates (`[retrieval]`: authors the user has a relationship with, the
//! user's affinity pool as a noisy retrieval model sees it, popular items,
//! uniform items; then shuffled), the policy returns the top K, and the user
//! consumes them in order. The session's **temper** starts at the user's
//! patience; an unclicked item costs `skip_cost`, a short watch
//! `short_cost`, a neutral watch `neutral_cost`, a satisfying watch
//! recovers `satisfy_recover` (up to `temper_cap * patience`), fatigue
//! costs extra. The user leaves as soon as the temper reaches 0 (mid-slate:
//! the rest of the slate is never exposed), with probability
//! `base_quit_prob` after each request, at `max_requests`, or at the
//! curfew. Time advances by click delays, watch seconds, skip dwell and
//! browsing gaps, so event times are realistic; the config is validated so
//! that every event of a round lies inside its day.
//!
//! ## Events ([`events`], `[events]`)
//! Every item the user actually sees is an [`Exposure`] (`ts_ms` = when it
//! came on screen, `position` 0..K-1, features). [`Action`]s follow with
//! delays: `click` seconds after the exposure, `watch` (value = seconds)
//! when watching ends, `follow` after the watch, `gift` (value = amount)
//! minutes later; all inside \[exposure, exposure + window - 1 s\] of the
//! contract's 30-minute attribution window. A small fraction of exposures
//! and actions is emitted twice (identical lines). Each round's events are
//! in memory ([`RoundReport::events`], sorted by `ts_ms`) and can be written
//! as `round_NNNN/exposures.jsonl` and `actions.jsonl`
//! ([`RoundReport::write_events`]).
//!
//! ## Policies ([`policy`], [`policies`])
//! A [`Policy`] ranks a [`Request`] (the contract's `/rank` fields) and
//! learns, if it wants, from each round's events in `end_round`. It gets a
//! [`WorldPeek`] whose only method is `expected_immediate`; everything but
//! the oracles must ignore it. Baselines: random, item CTR, item mean watch,
//! pair history (the pair's mean watch shrunk toward the item's with weight
//! 5), the myopic oracle, and the "worst" anti-oracle (a stress test).
//!
//! ## Metrics ([`metrics`])
//! Per round and cumulative: sessions, requests, session length (requests
//! per session), watch time per session, CTR (clicks / exposures),
//! diversity (mean distinct authors per slate / K), new fans (follows), deep
//! pairs (followed with >= `deep_min_satisfying` satisfying watches, at the
//! end of the round), gifts, and why sessions ended.
//!
//! ## Presets
//! [`SimConfig::default`] (= `configs/sim.toml`): 1,500 users, 250
//! authors, 2,000 items, 60 candidates, K = 6. [`SimConfig::long_term_probe`]:
//! a two-author world where the author with the better immediate watch
//! never builds a relationship and the other one does and pays far more
//! later.
//!
//! ## Determinism
//! Same config + seed (+ a deterministic policy) gives identical events and
//! metrics, bit for bit: one seeded xoshiro256** stream per purpose
//! ([`rng`]), ordered maps wherever iteration order matters. The world and
//! the session schedule do not depend on the policy, so policies are
//! compared on the same users and days.
//!
//! ## Relation to KuaiSim
//! KuaiSim (Zhao et al., 2023) couples a *user-response model* (learned on
//! KuaiRand: multi-behaviour feedback to a recommended list) with a *user
//! leave model* (each session carries a temper that bad feedback lowers;
//! the user leaves when it runs out) and a cross-session retention model.
//! This crate keeps that two-part structure, the response model and the
//! per-session temper/leave model, but its response model is parametric
//! and hand-specified instead of learned, so the ground truth (affinity,
//! relationship, fatigue, expected watch) is known and can be checked. It
//! adds what the RLIV-UA setting needs and KuaiSim does not model: an
//! explicit user-author relationship that grows with satisfying
//! interactions and decays with neglect, follows and gifts, same-author
//! fatigue, and event-time logs in the rliv wire format. Return visits are
//! a fixed Poisson rate per user (no retention model).
//!
//! ```
//! use rliv_sim::{policies::RandomPolicy, SimConfig, Simulator};
//! let mut cfg = SimConfig::default();
//! cfg.world.n_users = 50;
//! let mut sim = Simulator::new(cfg, 1).unwrap();
//! let mut policy = RandomPolicy::new(1);
//! let report = sim.run_round(&mut policy);
//! assert!(report.metrics.sessions > 0);
//! assert_eq!(report.metrics.exposures as usize,
//!            report.events.exposures.len() - count_dups(&report.events));
//! # fn count_dups(e: &rliv_sim::RoundEvents) -> usize {
//! #     let mut k: Vec<_> = e.exposures.iter().map(|x| (x.request_id, x.item_id)).collect();
//! #     let n = k.len(); k.sort(); k.dedup(); n - k.len()
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms, clippy::unwrap_used)]

pub mod config;
pub mod events;
pub mod metrics;
pub mod policies;
pub mod policy;
pub mod relation;
pub mod response;
pub mod rng;
mod session;
mod sim;
pub mod world;

pub use config::SimConfig;
pub use events::{Action, ActionKind, Exposure, RoundEvents};
pub use metrics::{Metrics, RoundReport};
pub use policy::{Candidate, NoPeek, Policy, Request, WorldPeek};
pub use relation::RelView;
pub use sim::Simulator;

/// Errors of the simulator crate.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration is out of range.
    #[error("invalid simulator config: {0}")]
    Invalid(String),
    /// The TOML could not be parsed.
    #[error("cannot parse simulator config: {0}")]
    Toml(String),
    /// Reading or writing files failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// JSON encoding or decoding failed.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}
