//! Runs the baselines on one world and prints the metrics table.
//!
//! `cargo run --release --example compare -- [ROUNDS] [SEED] [CONFIG.toml] [OUT_DIR]`

use std::path::PathBuf;
use std::time::Instant;

use rliv_sim::{policies, Metrics, SimConfig, Simulator};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let rounds: u32 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(6);
    let seed: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let cfg = match args.get(3).filter(|s| !s.is_empty() && *s != "-") {
        Some(p) if p == "probe" => SimConfig::long_term_probe(),
        Some(p) => SimConfig::load(p)?,
        None => SimConfig::default(),
    };
    let out = args.get(4).map(PathBuf::from);
    println!("{} rounds, seed {seed}", rounds);
    println!(
        "{}   {:>9} {:>9}",
        Metrics::table_header(),
        "first_s",
        "round_s"
    );
    let names = std::env::var("SIM_POLICIES")
        .unwrap_or_else(|_| "random,item_ctr,item_watch,pair_history,oracle,worst".into());
    for name in names.split(',') {
        let mut sim = Simulator::new(cfg.clone(), seed)?;
        let mut policy = policies::by_name(name, seed).ok_or("unknown policy")?;
        let mut times = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            let report = sim.run_round(policy.as_mut());
            times.push(t.elapsed().as_secs_f64());
            if let Some(dir) = &out {
                report.write_events(&dir.join(name))?;
            }
        }
        let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
        println!(
            "{}   {:>9.3} {:>9.3}",
            sim.cumulative().table_row(name),
            times.first().copied().unwrap_or(0.0),
            mean
        );
        if std::env::var_os("SIM_VERBOSE").is_some() {
            println!("  {}", serde_json::to_string(sim.cumulative())?);
        }
    }
    Ok(())
}
