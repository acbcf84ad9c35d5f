//! Prints per-round metrics of one policy: `rounds POLICY [ROUNDS] [SEED] [CONFIG|probe]`.

use rliv_sim::{policies, Metrics, SimConfig, Simulator};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map(String::as_str).unwrap_or("random");
    let rounds: u32 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(6);
    let seed: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let cfg = match args.get(4).map(String::as_str) {
        Some("probe") => SimConfig::long_term_probe(),
        Some(p) => SimConfig::load(p)?,
        None => SimConfig::default(),
    };
    let mut sim = Simulator::new(cfg, seed)?;
    let mut policy = policies::by_name(name, seed).ok_or("unknown policy")?;
    println!("{}", Metrics::table_header());
    for r in 0..rounds {
        let report = sim.run_round(policy.as_mut());
        println!("{}", report.metrics.table_row(&format!("{name}#{r}")));
    }
    println!("{}", sim.cumulative().table_row(name));
    Ok(())
}
