//! The `rliv` binary's library: configuration, the synthetic log generator,
//! training commands and the benchmark commands. The streaming core lives in
//! `rliv-dataflows`, the pair store in `rliv-state`, the learner and the
//! scoring path in `rliv-learner`.

pub mod bench;
pub mod bench_kafka;
pub mod bench_serve;
pub mod config;
pub mod eval_liv;
pub mod gen;
pub mod plot;
pub mod run;
pub mod serve;
pub mod signal;
pub mod sim;
pub mod tansu;
pub mod train;
