//! The myopic oracle and its mirror image.

use crate::policy::{top_k_by, Policy, Request, WorldPeek};

fn expected(req: &Request, world: &dyn WorldPeek, sign: f64) -> Vec<f64> {
    req.candidates
        .iter()
        .map(|c| {
            sign * world
                .expected_immediate(req.user_id, c.item_id, req.ts_ms)
                .unwrap_or(0.0)
        })
        .collect()
}

/// Ranks by the true expected immediate watch seconds (peeks at the world).
/// Myopic: ignores how the slate's own items tire the user and what an
/// exposure does to the relationship later.
#[derive(Clone, Copy, Debug, Default)]
pub struct OraclePolicy;

impl Policy for OraclePolicy {
    fn name(&self) -> String {
        "oracle".into()
    }

    fn rank(&mut self, req: &Request, k: usize, world: &dyn WorldPeek) -> Vec<usize> {
        top_k_by(&expected(req, world, 1.0), &[], k)
    }
}

/// Ranks by the true expected immediate watch, worst first: shows the
/// least watchable items (unclicked, click-bait). A stress test of the quit
/// mechanism, not a baseline.
#[derive(Clone, Copy, Debug, Default)]
pub struct WorstPolicy;

impl Policy for WorstPolicy {
    fn name(&self) -> String {
        "worst".into()
    }

    fn rank(&mut self, req: &Request, k: usize, world: &dyn WorldPeek) -> Vec<usize> {
        top_k_by(&expected(req, world, -1.0), &[], k)
    }
}
