//! The effective configuration: `configs/default.toml` (embedded), then a
//! user file, then `RLIV__SECTION__KEY` environment variables; command-line
//! flags are applied on top by each command.
//!
//! Every problem is a [`ConfigError`] (exit status 2) that names the key and
//! where it was set: `configuration: learner.gamma = 1.5 in /etc/rliv.toml:
//! must be in [0, 1), got 1.5`, `configuration: unknown key replay.chunk_line
//! in /etc/rliv.toml (did you mean replay.chunk_lines?)`.

use std::fmt;
use std::path::{Path, PathBuf};

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
    pub views: rliv_dataflows::views::ViewsConfig,
}

/// Where a setting comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The embedded `configs/default.toml`.
    Defaults,
    /// A `--config` file.
    File(PathBuf),
    /// An `RLIV__SECTION__KEY` environment variable.
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Defaults => write!(f, "the embedded configs/default.toml"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
        }
    }
}

/// A configuration problem (bad input: `rliv` exits with status 2).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: reading {}: {message}", path.display())]
    Read { path: PathBuf, message: String },
    #[error("configuration: {origin} is not valid TOML: {message}")]
    Syntax { origin: Origin, message: String },
    #[error(
        "configuration: environment variable {var}: expected RLIV__SECTION__KEY (or RLIV__SECTION__TABLE__KEY)"
    )]
    EnvName { var: String },
    #[error("configuration: unknown key {key} in {origin}{}", did_you_mean(.hint))]
    UnknownKey {
        key: String,
        origin: Origin,
        /// The known key it most resembles.
        hint: Option<String>,
    },
    #[error("configuration: {key} = {value} in {origin}: {reason}")]
    Invalid {
        key: String,
        /// The value as TOML.
        value: String,
        origin: Origin,
        reason: String,
    },
    /// Refused by a check no single setting fails alone.
    #[error("configuration: {reason}")]
    Inconsistent { reason: String },
}

fn did_you_mean(hint: &Option<String>) -> String {
    hint.as_ref()
        .map(|h| format!(" (did you mean {h}?)"))
        .unwrap_or_default()
}

impl ConfigError {
    /// The dotted key at fault, if the error is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. } | ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// One value set by a file or an environment variable, at a dotted path.
#[derive(Clone, Debug)]
struct Setting {
    path: Vec<String>,
    value: toml::Value,
    origin: Origin,
}

impl Setting {
    fn key(&self) -> String {
        self.path.join(".")
    }
}

impl Config {
    /// Loads defaults, then `file`, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(file, &env)
    }

    pub fn load_with_env(
        file: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let defaults: toml::Table =
            toml::from_str(DEFAULT_TOML).map_err(|e| ConfigError::Syntax {
                origin: Origin::Defaults,
                message: e.to_string(),
            })?;
        let mut settings = Vec::new();
        if let Some(path) = file {
            let origin = Origin::File(path.to_path_buf());
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            let user: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
                origin: origin.clone(),
                message: e.to_string().trim_end().to_string(),
            })?;
            flatten(&defaults, user, &mut Vec::new(), &origin, &mut settings)?;
        }
        let mut env: Vec<&(String, String)> = env
            .iter()
            .filter(|(k, _)| k.starts_with("RLIV__"))
            .collect();
        env.sort();
        for (k, v) in env {
            let rest = &k["RLIV__".len()..];
            let parts: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
            if parts.len() < 2 || parts.iter().any(String::is_empty) {
                return Err(ConfigError::EnvName { var: k.clone() });
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
                flatten(
                    &defaults,
                    patch,
                    &mut Vec::new(),
                    &Origin::Env(k.clone()),
                    &mut settings,
                )?;
            }
        }
        let mut table = defaults.clone();
        for s in &settings {
            set_path(&mut table, &s.path, s.value.clone());
        }
        check(table).map_err(|reason| blame(&defaults, &settings, reason.to_string()))
    }

    pub fn to_toml(&self) -> anyhow::Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }
}

/// Why [`check`] refuses a configuration table; [`blame`] finds the setting
/// at fault from its text.
#[derive(Debug, thiserror::Error)]
enum CheckError {
    /// The table does not fit the schema (a wrong type, a missing section).
    #[error("{}", .0.message().trim_end())]
    Schema(toml::de::Error),
    #[error(transparent)]
    Job(#[from] rliv_dataflows::JobConfigError),
    #[error(transparent)]
    Learner(#[from] rliv_learner::InvalidSetting),
    #[error(transparent)]
    Serve(#[from] crate::serve::ServeConfigError),
    #[error(transparent)]
    Kafka(#[from] rliv_dataflows::kafka::KafkaConfigError),
    /// `state.compression` names no codec the store has.
    #[error("state.compression must be \"zstd\", \"lz4\" or \"none\", got {0:?}")]
    Compression(String),
    #[error("{0}")]
    Views(String),
}

/// Deserializes and validates a whole configuration table.
fn check(table: toml::Table) -> Result<Config, CheckError> {
    let cfg: Config = toml::Value::Table(table)
        .try_into()
        .map_err(CheckError::Schema)?;
    cfg.join.validate()?;
    cfg.replay.validate()?;
    cfg.learner.validate()?;
    cfg.serve.validate()?;
    cfg.kafka.validate()?;
    cfg.views.validate().map_err(CheckError::Views)?;
    // The store checks this only when it opens (an I/O failure by then).
    if !matches!(cfg.state.compression.as_str(), "zstd" | "lz4" | "none") {
        return Err(CheckError::Compression(cfg.state.compression));
    }
    Ok(cfg)
}

/// Splits `user` into settings at the leaves of the schema (the defaults'
/// tables), refusing keys the schema does not have. Tables that are empty in
/// the defaults (`kafka.properties`) take any key.
fn flatten(
    schema: &toml::Table,
    user: toml::Table,
    path: &mut Vec<String>,
    origin: &Origin,
    out: &mut Vec<Setting>,
) -> Result<(), ConfigError> {
    let free = schema.is_empty() && !path.is_empty();
    for (k, v) in user {
        path.push(k.clone());
        match (schema.get(&k), v) {
            (Some(toml::Value::Table(s)), toml::Value::Table(u)) => {
                flatten(s, u, path, origin, out)?;
            }
            (Some(_), v) => out.push(Setting {
                path: path.clone(),
                value: v,
                origin: origin.clone(),
            }),
            (None, v) if free => out.push(Setting {
                path: path.clone(),
                value: v,
                origin: origin.clone(),
            }),
            (None, _) => {
                let parent = path[..path.len() - 1].join(".");
                let known: Vec<&str> = schema.keys().map(String::as_str).collect();
                let hint = closest(&k, &known).map(|h| {
                    if parent.is_empty() {
                        h.to_string()
                    } else {
                        format!("{parent}.{h}")
                    }
                });
                return Err(ConfigError::UnknownKey {
                    key: path.join("."),
                    origin: origin.clone(),
                    hint,
                });
            }
        }
        path.pop();
    }
    Ok(())
}

/// Sets `value` at `path` in `table`, making the tables on the way.
fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut t = table;
    for p in parents {
        let entry = t
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(next) = entry else {
            return;
        };
        t = next;
    }
    t.insert(last.clone(), value);
}

/// Finds the setting behind a refused configuration: the one the refusal
/// names, else the first that is refused on its own over the defaults.
fn blame(defaults: &toml::Table, settings: &[Setting], reason: String) -> ConfigError {
    // Settings overridden by a later one (same key, or a table above it) no
    // longer count.
    let effective: Vec<&Setting> = settings
        .iter()
        .enumerate()
        .filter(|(i, s)| {
            !settings[i + 1..]
                .iter()
                .any(|later| s.path.starts_with(&later.path))
        })
        .map(|(_, s)| s)
        .collect();
    let invalid = |s: &Setting, reason: String| {
        let key = s.key();
        let value = s.value.to_string();
        ConfigError::Invalid {
            reason: shorten(&reason, &key, &value),
            key,
            value,
            origin: s.origin.clone(),
        }
    };
    if let Some(s) = effective.iter().rev().find(|s| mentions(&reason, &s.key())) {
        return invalid(s, reason);
    }
    // Each setting alone over the defaults: the one refused for the same
    // reason first, else the first one refused at all.
    let alone: Vec<(&Setting, String)> = effective
        .iter()
        .filter_map(|s| {
            let mut t = defaults.clone();
            set_path(&mut t, &s.path, s.value.clone());
            check(t).err().map(|r| (*s, r.to_string()))
        })
        .collect();
    match alone
        .iter()
        .find(|(_, r)| *r == reason)
        .or_else(|| alone.first())
    {
        Some((s, r)) => invalid(s, r.clone()),
        None => ConfigError::Inconsistent { reason },
    }
}

/// Whether `text` names `key` (not as part of a longer key).
fn mentions(text: &str, key: &str) -> bool {
    let part = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    text.match_indices(key).any(|(at, _)| {
        !text[..at].chars().next_back().is_some_and(part)
            && !text[at + key.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// A validator's message without the key and value the error already shows
/// ("learner.gamma must be in [0, 1)" -> "must be in [0, 1)").
fn shorten(reason: &str, key: &str, value: &str) -> String {
    let Some(rest) = reason.strip_prefix(key).and_then(|r| r.strip_prefix(' ')) else {
        return reason.to_string();
    };
    rest.strip_prefix(&format!("= {value} "))
        .unwrap_or(rest)
        .to_string()
}

/// The known key closest to `key`: by edit distance if one is close, else
/// the only one that begins with it (`max_body` -> `max_body_bytes`).
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let near = known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k);
    near.or_else(|| {
        let mut longer = known
            .iter()
            .copied()
            .filter(|k| key.len() >= 3 && k.starts_with(key));
        match (longer.next(), longer.next()) {
            (Some(k), None) => Some(k),
            _ => None,
        }
    })
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
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
        let err = format!(
            "{:#}",
            Config::load_with_env(Some(&p), &[]).expect_err("refused")
        );
        assert!(err.contains("window_msec"), "{err}");
        Ok(())
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The error of loading `file_text` (if any) and `vars`.
    fn error_of(file_text: Option<&str>, vars: &[(&str, &str)]) -> (ConfigError, PathBuf) {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("c.toml");
        if let Some(text) = file_text {
            std::fs::write(&p, text).expect("write");
        }
        let file = file_text.map(|_| p.as_path());
        match Config::load_with_env(file, &env(vars)) {
            Ok(_) => panic!("accepted {file_text:?} {vars:?}"),
            Err(e) => (e, p),
        }
    }

    #[test]
    fn a_bad_value_names_its_key_value_and_origin() {
        let (e, p) = error_of(Some("[learner]\ngamma = 1.5\n"), &[]);
        assert_eq!(
            e.to_string(),
            format!(
                "configuration: learner.gamma = 1.5 in {}: must be in [0, 1), got 1.5",
                p.display()
            )
        );
        // The environment overrides the file: the variable is at fault.
        let (e, _) = error_of(
            Some("[learner]\ngamma = 0.5\n"),
            &[("RLIV__LEARNER__GAMMA", "1.5")],
        );
        assert_eq!(e.key(), Some("learner.gamma"));
        assert!(
            e.to_string()
                .contains("in environment variable RLIV__LEARNER__GAMMA"),
            "{e}"
        );
        // A valid file value under an invalid environment value of another key.
        let (e, _) = error_of(
            Some("[join]\nwindow_ms = 5\n"),
            &[("RLIV__JOIN__ALLOWED_LATENESS_MS", "-1")],
        );
        assert_eq!(e.key(), Some("join.allowed_lateness_ms"), "{e}");
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_key() {
        let (e, _) = error_of(None, &[("RLIV__JOIN__WINDOW_MS", "soon")]);
        let text = e.to_string();
        assert_eq!(e.key(), Some("join.window_ms"), "{text}");
        assert!(text.contains("\"soon\""), "{text}");
        let (e, _) = error_of(Some("[state]\ncompression = \"zip\"\n"), &[]);
        assert_eq!(e.key(), Some("state.compression"), "{e}");
        let (e, _) = error_of(Some("[learner]\nreward_scale = 2\n"), &[]);
        assert_eq!(e.key(), Some("learner.reward_scale"), "{e}");
        let (e, _) = error_of(Some("[learner]\nhidden = [64, 0]\n"), &[]);
        assert_eq!(e.key(), Some("learner.hidden"), "{e}");
        let (e, _) = error_of(None, &[("RLIV__SERVE__MAX_CANDIDATES", "0")]);
        assert_eq!(e.key(), Some("serve.max_candidates"), "{e}");
    }

    #[test]
    fn unknown_keys_are_named_with_their_origin_and_a_hint() {
        let (e, p) = error_of(Some("[replay]\nchunk_line = 5\n"), &[]);
        assert_eq!(
            e.to_string(),
            format!(
                "configuration: unknown key replay.chunk_line in {} (did you mean replay.chunk_lines?)",
                p.display()
            )
        );
        let (e, _) = error_of(Some("[replays]\nworkers = 1\n"), &[]);
        assert_eq!(e.key(), Some("replays"), "{e}");
        assert!(e.to_string().contains("did you mean replay?"), "{e}");
        let (e, _) = error_of(None, &[("RLIV__LEARNER__REWARD_SCALE__WATC", "1")]);
        assert_eq!(e.key(), Some("learner.reward_scale.watc"), "{e}");
        assert!(
            e.to_string().contains("RLIV__LEARNER__REWARD_SCALE__WATC"),
            "{e}"
        );
        let (e, _) = error_of(None, &[("RLIV__JOIN", "1")]);
        assert!(matches!(e, ConfigError::EnvName { .. }), "{e}");
        let (e, p) = error_of(Some("[join\n"), &[]);
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e}");
        assert!(e.to_string().contains(&p.display().to_string()), "{e}");
    }

    #[test]
    fn free_form_tables_take_any_key() -> TestResult {
        let cfg = Config::load_with_env(
            None,
            &env(&[("RLIV__KAFKA__PROPERTIES__SASL_USERNAME", "me")]),
        )?;
        assert_eq!(
            cfg.kafka
                .properties
                .get("sasl_username")
                .map(String::as_str),
            Some("me")
        );
        Ok(())
    }

    #[test]
    fn a_missing_file_is_a_configuration_error() {
        let e = Config::load_with_env(Some(Path::new("/nonexistent/rliv.toml")), &[])
            .expect_err("missing file");
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/rliv.toml"), "{e}");
    }
}
