//! The config file, defaults and validation.

use rliv_sim::{SimConfig, SimError};

fn sim_toml() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/sim.toml");
    std::fs::read_to_string(path).expect("configs/sim.toml is readable")
}

#[test]
fn configs_sim_toml_is_the_default() {
    let cfg = SimConfig::from_toml_str(&sim_toml()).expect("configs/sim.toml parses");
    assert_eq!(cfg, SimConfig::default());
}

#[test]
fn every_default_key_is_in_configs_sim_toml() {
    // Serialize the defaults and check each section/key appears in the file,
    // so a new field cannot be added without documenting it there.
    let text = sim_toml();
    let table: toml::Table =
        toml::from_str(&toml::to_string(&SimConfig::default()).expect("ser")).expect("reparse");
    for (section, v) in &table {
        assert!(
            text.contains(&format!("[{section}]")),
            "missing [{section}]"
        );
        for key in v.as_table().expect("section table").keys() {
            assert!(
                text.lines().any(|l| l.starts_with(&format!("{key} ="))),
                "configs/sim.toml misses {section}.{key}"
            );
        }
    }
}

#[test]
fn unknown_keys_and_bad_values_are_rejected() {
    assert!(matches!(
        SimConfig::from_toml_str("[world]\nn_userz = 3\n"),
        Err(SimError::Toml(_))
    ));
    assert!(matches!(
        SimConfig::from_toml_str("[session]\nbase_quit_prob = 1.5\n"),
        Err(SimError::Invalid(_))
    ));
    assert!(matches!(
        SimConfig::from_toml_str("[world]\nn_authors = 10\nn_items = 5\n"),
        Err(SimError::Invalid(_))
    ));
    // A curfew so late that events would spill into the next round.
    assert!(matches!(
        SimConfig::from_toml_str("[session]\nsleep_hour = 23.5\ncurfew_hour = 23.9\n"),
        Err(SimError::Invalid(_))
    ));
    // Partial files keep the other defaults.
    let c = SimConfig::from_toml_str("[retrieval]\nn_candidates = 80\n").expect("partial config");
    assert_eq!(c.retrieval.n_candidates, 80);
    assert_eq!(c.world, SimConfig::default().world);
}

#[test]
fn probe_is_valid_and_round_trips() {
    let p = SimConfig::long_term_probe();
    p.validate().expect("probe validates");
    let text = toml::to_string(&p).expect("serialize");
    assert_eq!(SimConfig::from_toml_str(&text).expect("parse"), p);
}
