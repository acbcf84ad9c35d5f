//! The `rliv` binary's library: configuration, the synthetic log generator
//! and the benchmark commands. The streaming core lives in `rliv-dataflows`,
//! the pair store in `rliv-state`.

pub mod bench;
pub mod config;
pub mod gen;
