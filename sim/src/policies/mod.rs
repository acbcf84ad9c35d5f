//! Baseline policies. Only the oracles peek at the world; the others learn
//! from the round's events in `end_round` (all rounds so far).

pub mod item_ctr;
pub mod item_watch;
pub mod labels;
pub mod oracle;
pub mod pair_history;
pub mod random;

pub use item_ctr::ItemCtrPolicy;
pub use item_watch::{ItemWatchPolicy, ItemWatchStats};
pub use labels::{label_round, Labeled, DEFAULT_WINDOW_MS};
pub use oracle::{OraclePolicy, WorstPolicy};
pub use pair_history::PairHistoryPolicy;
pub use random::RandomPolicy;

use crate::policy::Policy;

/// The five baselines by name: `random`, `item_ctr`, `item_watch`,
/// `pair_history`, `oracle` (and `worst`); `seed` seeds tie-breaking.
pub fn by_name(name: &str, seed: u64) -> Option<Box<dyn Policy>> {
    Some(match name {
        "random" => Box::new(RandomPolicy::new(seed)),
        "item_ctr" => Box::new(ItemCtrPolicy::new(seed)),
        "item_watch" => Box::new(ItemWatchPolicy::new(seed)),
        "pair_history" => Box::new(PairHistoryPolicy::new(seed)),
        "oracle" => Box::new(OraclePolicy),
        "worst" => Box::new(WorstPolicy),
        _ => return None,
    })
}
