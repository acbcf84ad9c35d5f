//! The quit mechanism ends sessions.

use rliv_sim::policies::{OraclePolicy, WorstPolicy};
use rliv_sim::{Policy, SimConfig, Simulator};

fn one_round(cfg: SimConfig, policy: &mut dyn Policy) -> rliv_sim::Metrics {
    let mut sim = Simulator::new(cfg, 11).expect("valid config");
    sim.run_round(policy).metrics
}

#[test]
fn bad_recommendations_end_sessions_early() {
    let cfg = SimConfig::default();
    let worst = one_round(cfg.clone(), &mut WorstPolicy);
    let oracle = one_round(cfg.clone(), &mut OraclePolicy);
    assert!(worst.sessions > 1000 && oracle.sessions > 1000);
    assert!(
        worst.session_length < 0.4 * oracle.session_length,
        "worst {} vs oracle {}",
        worst.session_length,
        oracle.session_length
    );
    // The worst policy's users leave because their temper runs out.
    assert!(worst.quit_temper as f64 > 0.9 * worst.sessions as f64);
    assert!(worst.watch_time_per_session < 0.05 * oracle.watch_time_per_session);
    for m in [&worst, &oracle] {
        assert!(m.max_session_requests <= cfg.session.max_requests);
        assert_eq!(
            m.quit_temper + m.quit_base + m.quit_cap + m.quit_other,
            m.sessions,
            "every session ends for exactly one reason"
        );
    }
}

#[test]
fn no_session_exceeds_the_cap() {
    let mut cfg = SimConfig::default();
    cfg.world.n_users = 300;
    cfg.session.max_requests = 4;
    cfg.session.base_quit_prob = 0.0;
    let m = one_round(cfg, &mut OraclePolicy);
    assert_eq!(m.max_session_requests, 4);
    assert!(m.quit_cap > 0);
    assert!(m.requests <= 4 * m.sessions);
}

#[test]
fn patience_matters() {
    let mut cfg = SimConfig::default();
    cfg.world.n_users = 300;
    let short = {
        let mut c = cfg.clone();
        c.users.patience_median = 1.0;
        one_round(c, &mut OraclePolicy)
    };
    let long = one_round(cfg, &mut OraclePolicy);
    assert!(short.session_length < 0.7 * long.session_length);
}
