//! The `rliv` binary's library: configuration, the synthetic log generator,
//! training commands and the benchmark commands. The contract's types live in
//! `rliv-contract`, the streaming core in `rliv-dataflows`, the pair store in
//! `rliv-state`, the learner and the scoring path in `rliv-learner`, the
//! ranking service in `rliv-serve` (re-exported as [`serve`]).

pub mod bench;
pub mod bench_kafka;
pub mod bench_serve;
pub mod config;
pub mod eval_liv;
pub mod experiment;
pub mod gen;
pub mod plot;
pub mod run;
pub mod signal;
pub mod sim;
pub mod tansu;
pub mod train;

pub use rliv_serve as serve;

/// The job's figures on the service's `/metrics` (a replay or run with `--serve`).
pub struct JobMetrics(pub rliv_dataflows::metrics::JobFigures);

impl rliv_serve::Figures for JobMetrics {
    fn render(&self, out: &mut String) {
        self.0.render_prometheus(out);
    }
}
