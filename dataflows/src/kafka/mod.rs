//! Kafka input and outputs of the job (`rliv run`).
//!
//! [`KafkaReader`] assigns every partition of the exposures and actions
//! topics to itself at the offsets stored in the state (the group's committed
//! offsets are written too, for monitoring only), buffers each partition, and
//! hands out chunks of consecutive messages of one partition. The next chunk
//! comes from the partition whose next message is earliest in event time, and
//! only once every partition has something buffered or is known to be at its
//! end: so a lagging partition holds the watermark back, a quiet one does not
//! stall it, and for data already in the topics the chunk sequence, and so the
//! result, does not depend on fetch timing.
//!
//! "At its end" is a fact the broker states, never an inference from silence:
//! a partition-EOF event, or a high watermark (fetched by the lag monitor)
//! that the reader has already received up to. While the broker is down no
//! such fact arrives, so a partition that has not been drained holds the
//! watermark for as long as the outage lasts (a broker restart once made
//! partitions look idle by wall clock, and the data they delivered afterwards
//! was classified late). Any client error forgets what was known, so after a
//! reconnect every partition has to be confirmed at its end again. In a live
//! run a partition stops holding the watermark back once it has been at its
//! end for `idle_timeout_ms`. With `--until-end`, a partition that has
//! delivered data never stops holding it (at its newest event): a producer
//! may still be writing, and the run's last watermark must be one the next
//! run can continue from exactly.
//!
//! [`KafkaSink`] produces transitions and dead letters with an idempotent
//! producer; the committer flushes it before each state commit, so both
//! topics are at-least-once across crashes (the pair state is exactly-once).

mod lag;
pub mod partition;
mod sink;
mod source;

/// The reader's figures live with the job's other metrics.
pub use crate::metrics::KafkaProgress;
pub use partition::{BadTopicPartition, TopicPartition};
pub use sink::{DeliveryCounter, KafkaSink, SinkError};
pub use source::KafkaReader;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::ClientContext;
use serde::{Deserialize, Serialize};

use crate::event::Source;
use crate::input::InputError;

/// Section `[kafka]` of the configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`; the environment variable `RLIV_KAFKA_BROKERS` overrides it.
    pub brokers: String,
    /// Consumer group (offsets are committed to it for monitoring only).
    pub group_id: String,
    pub exposures_topic: String,
    pub actions_topic: String,
    /// Topic for transitions ("" = none).
    pub transitions_topic: String,
    /// Topic for dead letters ("" = the dead-letter file only).
    pub dead_letter_topic: String,
    /// A partition confirmed at its end by the broker, with nothing new for
    /// this long, stops holding the watermark back (a live run; with
    /// `--until-end` it stops at once). Silence alone never counts.
    pub idle_timeout_ms: u64,
    /// Timeout of broker requests at start (metadata) and of producer flushes.
    pub request_timeout_ms: u64,
    /// Extra librdkafka properties for every client (SASL, TLS, ...), e.g.
    /// `"security.protocol" = "SASL_SSL"`.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            group_id: "rliv".into(),
            exposures_topic: "exposures".into(),
            actions_topic: "actions".into(),
            transitions_topic: "transitions".into(),
            dead_letter_topic: "dead-letters".into(),
            idle_timeout_ms: 5_000,
            request_timeout_ms: 30_000,
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// The broker list, `RLIV_KAFKA_BROKERS` first.
    pub fn brokers(&self) -> String {
        std::env::var("RLIV_KAFKA_BROKERS")
            .ok()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| self.brokers.clone())
    }

    pub fn client(&self) -> ClientConfig {
        self.client_with(&[])
    }

    /// A client configuration with rliv's `defaults`, then the user's
    /// `properties` (which win).
    pub fn client_with(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers());
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    pub fn topic(&self, s: Source) -> &str {
        match s {
            Source::Exposures => &self.exposures_topic,
            Source::Actions => &self.actions_topic,
        }
    }

    pub fn validate(&self) -> Result<(), KafkaConfigError> {
        if self.exposures_topic.is_empty() || self.actions_topic.is_empty() {
            return Err(KafkaConfigError::TopicUnset);
        }
        if self.exposures_topic == self.actions_topic {
            return Err(KafkaConfigError::SameTopic);
        }
        Ok(())
    }
}

/// Why a `[kafka]` section is refused ([`KafkaConfig::validate`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KafkaConfigError {
    /// The exposures or the actions topic is empty.
    #[error("kafka.exposures_topic and kafka.actions_topic must be set")]
    TopicUnset,
    /// Both sources name the same topic.
    #[error("kafka.exposures_topic and kafka.actions_topic must differ")]
    SameTopic,
}

pub(super) fn kerr(what: &str, e: impl std::fmt::Display) -> InputError {
    InputError::Kafka(format!("{what}: {e}"))
}

/// The partition ids of `topic` (none if the broker does not know it).
pub fn partitions<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, KafkaError> {
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    Ok(md
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// The default client context, except that reaching a partition's end (which
/// the reader asks to be told about) is not an error, and a repeated error
/// (a broker down: librdkafka reports it for every request) is logged once
/// per 10 s with the number of repeats.
#[derive(Default)]
pub struct QuietEof {
    seen: std::sync::Mutex<HashMap<String, (Instant, u64)>>,
    /// Errors reported so far (every one, deduplicated or not): the reader
    /// forgets which partitions were at their end when this moves.
    errors: AtomicU64,
}

impl QuietEof {
    /// Errors reported so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Acquire)
    }
}

impl ClientContext for QuietEof {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(
            error,
            KafkaError::PartitionEOF(_)
                | KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        );
        if eof {
            return;
        }
        self.errors.fetch_add(1, Ordering::AcqRel);
        let msg = format!("{error}");
        // A panic while logging cannot leave the map inconsistent: use it.
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let entry = seen
            .entry(msg)
            .or_insert((Instant::now() - Duration::from_secs(60), 0));
        if entry.0.elapsed() < Duration::from_secs(10) {
            entry.1 += 1;
            return;
        }
        let repeats = std::mem::take(&mut entry.1);
        entry.0 = Instant::now();
        if repeats > 0 {
            tracing::warn!(
                "librdkafka: {error}: {reason} (and {repeats} times more in the last 10 s)"
            );
        } else {
            tracing::warn!("librdkafka: {error}: {reason}");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for QuietEof {}
