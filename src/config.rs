//! The effective configuration: `configs/default.toml` (embedded), then a
//! user file, then `RLIV__SECTION__KEY` environment variables; command-line
//! flags are applied on top by each command.

use std::path::Path;

use anyhow::{bail, Context, Result};
use rliv_dataflows::{JoinConfig, ReplayConfig};
use rliv_learner::LearnerConfig;
use rliv_state::StoreOptions;
use serde::{Deserialize, Serialize};

use crate::gen::GenConfig;

pub const DEFAULT_TOML: &str = include_str!("../configs/default.toml");

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub join: JoinConfig,
    pub replay: ReplayConfig,
    pub state: StoreOptions,
    pub gen: GenConfig,
    pub learner: LearnerConfig,
    pub serve: crate::serve::ServeConfig,
    pub kafka: rliv_dataflows::kafka::KafkaConfig,
}

impl Config {
    /// Loads defaults, then `file`, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(file, &env)
    }

    pub fn load_with_env(file: Option<&Path>, env: &[(String, String)]) -> Result<Config> {
        let mut table: toml::Table =
            toml::from_str(DEFAULT_TOML).context("embedded configs/default.toml")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config {}", path.display()))?;
            let user: toml::Table = toml::from_str(&text)
                .with_context(|| format!("parsing config {}", path.display()))?;
            merge(&mut table, user);
        }
        for (k, v) in env {
            let Some(rest) = k.strip_prefix("RLIV__") else {
                continue;
            };
            let parts: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
            if parts.len() < 2 || parts.iter().any(String::is_empty) {
                bail!("environment variable {k}: expected RLIV__SECTION__KEY (or RLIV__SECTION__TABLE__KEY)");
            }
            let value = toml::from_str::<toml::Table>(&format!("v = {v}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(v.clone()));
            // Build {section = {..{key = value}}} from the innermost key out.
            let mut node = value;
            for part in parts.iter().rev() {
                let mut t = toml::Table::new();
                t.insert(part.clone(), node);
                node = toml::Value::Table(t);
            }
            if let toml::Value::Table(patch) = node {
                merge(&mut table, patch);
            }
        }
        let cfg: Config = toml::Value::Table(table)
            .try_into()
            .context("invalid configuration (see `rliv config show` and configs/default.toml)")?;
        cfg.join.validate().map_err(anyhow::Error::msg)?;
        cfg.replay.validate().map_err(anyhow::Error::msg)?;
        cfg.learner.validate().map_err(anyhow::Error::msg)?;
        cfg.serve.validate().map_err(anyhow::Error::msg)?;
        cfg.kafka.validate().map_err(anyhow::Error::msg)?;
        Ok(cfg)
    }

    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }
}

fn merge(base: &mut toml::Table, patch: toml::Table) {
    for (k, v) in patch {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(p)) => merge(b, p),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn embedded_defaults_equal_the_code_defaults() -> TestResult {
        let cfg = Config::load_with_env(None, &[])?;
        assert_eq!(cfg.join, JoinConfig::default());
        assert_eq!(cfg.replay, ReplayConfig::default());
        assert_eq!(cfg.gen, GenConfig::default());
        assert_eq!(cfg.learner, LearnerConfig::default());
        assert_eq!(cfg.serve, crate::serve::ServeConfig::default());
        assert_eq!(cfg.kafka, rliv_dataflows::kafka::KafkaConfig::default());
        Ok(())
    }

    #[test]
    fn nested_tables_can_be_overridden_from_the_environment() -> TestResult {
        let env = vec![
            (
                "RLIV__LEARNER__REWARD_SCALE__WATCH".to_string(),
                "0.5".to_string(),
            ),
            (
                "RLIV__LEARNER__SCORE_PRESET".to_string(),
                "revenue".to_string(),
            ),
        ];
        let cfg = Config::load_with_env(None, &env)?;
        assert_eq!(cfg.learner.reward_scale.watch, 0.5);
        assert_eq!(cfg.learner.weights().gift, 1.0);
        assert_eq!(cfg.learner.reward_scale.click, 1.0);
        Ok(())
    }

    #[test]
    fn file_then_environment_override_defaults() -> TestResult {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[join]\nwindow_ms = 5\n[replay]\nworkers = 3\n")?;
        let env = vec![("RLIV__REPLAY__WORKERS".to_string(), "4".to_string())];
        let cfg = Config::load_with_env(Some(&p), &env)?;
        assert_eq!(cfg.join.window_ms, 5);
        assert_eq!(cfg.replay.workers, 4);
        Ok(())
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() -> TestResult {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[join]\nwindow_msec = 5\n")?;
        let err = format!("{:#}", Config::load_with_env(Some(&p), &[]).unwrap_err());
        assert!(err.contains("window_msec"), "{err}");
        Ok(())
    }
}
