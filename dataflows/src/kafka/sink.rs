//! [`KafkaSink`]: transitions and dead letters to their topics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{kerr, KafkaConfig, QuietEof, TopicPartition};
use crate::input::InputError;

/// Why [`KafkaSink::send`] or [`KafkaSink::flush`] failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// librdkafka's queue stayed full for the whole request timeout.
    #[error("producing to {topic}: the queue stayed full")]
    QueueFull { topic: String },
    /// The producer refused the message.
    #[error("producing to {topic}: {error}")]
    Produce { topic: String, error: KafkaError },
    /// Flushing the producer failed (or timed out).
    #[error("flushing the producer: {0}")]
    Flush(KafkaError),
    /// Messages whose delivery failed since the last flush.
    #[error("{0} messages were not delivered")]
    Undelivered(u64),
}

/// Counts failed deliveries.
pub struct DeliveryCounter {
    failed: Arc<AtomicU64>,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            tracing::warn!("kafka: a delivery failed: {e}");
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Transitions and dead letters to topics, with an idempotent producer.
pub struct KafkaSink {
    producer: BaseProducer<DeliveryCounter>,
    /// Commits the durable offsets to the consumer group (monitoring only).
    group: BaseConsumer<QuietEof>,
    pub transitions_topic: Option<String>,
    pub dead_letter_topic: Option<String>,
    failed: Arc<AtomicU64>,
    timeout: Duration,
}

impl KafkaSink {
    pub fn new(cfg: &KafkaConfig) -> Result<KafkaSink, InputError> {
        let failed = Arc::new(AtomicU64::new(0));
        let producer = cfg
            .client()
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create_with_context(DeliveryCounter {
                failed: failed.clone(),
            })
            .map_err(|e| kerr("creating the producer", e))?;
        let opt = |t: &str| (!t.is_empty()).then(|| t.to_string());
        let group = cfg
            .client_with(&[])
            .set("group.id", &cfg.group_id)
            .set("enable.auto.commit", "false")
            .create_with_context(QuietEof::default())
            .map_err(|e| kerr("creating the consumer-group client", e))?;
        Ok(KafkaSink {
            producer,
            group,
            transitions_topic: opt(&cfg.transitions_topic),
            dead_letter_topic: opt(&cfg.dead_letter_topic),
            failed,
            timeout: Duration::from_millis(cfg.request_timeout_ms),
        })
    }

    /// Queues one message (waiting while librdkafka's queue is full).
    pub fn send(&self, topic: &str, key: &[u8], payload: &[u8]) -> Result<(), SinkError> {
        let mut record = BaseRecord::to(topic).key(key).payload(payload);
        let started = Instant::now();
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(50));
                    if started.elapsed() > self.timeout {
                        return Err(SinkError::QueueFull {
                            topic: topic.to_string(),
                        });
                    }
                }
                Err((error, _)) => {
                    return Err(SinkError::Produce {
                        topic: topic.to_string(),
                        error,
                    })
                }
            }
        }
    }

    /// Commits `offsets` (next offset per partition), durable in the state,
    /// to the consumer group, so lag tools see the job's position. A failure
    /// is logged, not fatal: the state holds the offsets that count.
    pub fn commit_offsets(&self, offsets: &BTreeMap<TopicPartition, i64>) {
        let group = &self.group;
        let mut tpl = TopicPartitionList::new();
        for (tp, offset) in offsets {
            let _ = tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset));
        }
        if tpl.count() == 0 {
            return;
        }
        if let Err(e) = group.commit(&tpl, CommitMode::Sync) {
            tracing::warn!("kafka: committing the group's offsets: {e}");
        }
    }

    /// Waits until every queued message is delivered; fails if any was not.
    pub fn flush(&self) -> Result<(), SinkError> {
        self.producer
            .flush(self.timeout)
            .map_err(SinkError::Flush)?;
        let failed = self.failed.swap(0, Ordering::Relaxed);
        if failed > 0 {
            return Err(SinkError::Undelivered(failed));
        }
        Ok(())
    }
}
