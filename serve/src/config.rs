//! Section `[serve]` of the configuration and the service's fixed bounds.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Section `[serve]` of the configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// Listen address. Loopback by default: expose it deliberately.
    pub addr: String,
    /// Most candidates in one request (more: 413).
    pub max_candidates: usize,
    /// Largest request body in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// How often the checkpoint directory is checked for a newer model.
    pub reload_interval_ms: u64,
    /// How often the pair-state reader catches up with the writer.
    pub catch_up_interval_ms: u64,
    /// Threads one request's forward pass uses (the towers are split over them).
    pub scoring_threads: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            addr: "127.0.0.1:8080".into(),
            max_candidates: 1000,
            max_body_bytes: 1 << 20,
            reload_interval_ms: 250,
            catch_up_interval_ms: 500,
            scoring_threads: 2,
        }
    }
}

impl ServeConfig {
    pub fn validate(&self) -> Result<(), ServeConfigError> {
        for (key, value) in [
            ("max_candidates", self.max_candidates as u64),
            ("max_body_bytes", self.max_body_bytes as u64),
            ("reload_interval_ms", self.reload_interval_ms),
            ("catch_up_interval_ms", self.catch_up_interval_ms),
        ] {
            if value == 0 {
                return Err(ServeConfigError::Zero { key });
            }
        }
        let host_port = self
            .addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !host_port {
            return Err(ServeConfigError::Addr(self.addr.clone()));
        }
        Ok(())
    }
}

/// Why a `[serve]` section is refused ([`ServeConfig::validate`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServeConfigError {
    /// A count or interval that must be at least 1.
    #[error("serve.{key} must be >= 1, got 0")]
    Zero { key: &'static str },
    /// `serve.addr` is not `HOST:PORT`.
    #[error("serve.addr must be HOST:PORT (e.g. \"127.0.0.1:8080\"), got {0:?}")]
    Addr(String),
}

/// Bytes of an oversized `/rank` body read and thrown away before the 413 is
/// sent, as a multiple of `max_body_bytes`. A client that writes its whole
/// body before it reads (Python's urllib, for one) then receives the 413; had
/// the service closed the connection with the body unread, the client would
/// see a reset instead. A body declared longer than this is refused at once.
pub const DISCARD_FACTOR: usize = 4;

/// How long a stopping server waits for the requests in flight before it
/// closes their connections.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
