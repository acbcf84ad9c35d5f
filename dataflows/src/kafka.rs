//! Kafka input and outputs of the job (`rliv run`).
//!
//! [`KafkaReader`] assigns every partition of the exposures and actions
//! topics to itself at the offsets stored in the state (the group's committed
//! offsets are written too, for monitoring only), buffers each partition, and
//! hands out chunks of consecutive messages of one partition. The next chunk
//! comes from the partition whose next message is earliest in event time, and
//! only once every partition that is not at its end (and not idle for
//! `idle_timeout_ms`) has something buffered: so a lagging partition holds
//! the watermark back, a quiet one does not stall it, and for data already in
//! the topics the chunk sequence, and so the result, does not depend on fetch
//! timing.
//!
//! [`KafkaSink`] produces transitions and dead letters with an idempotent
//! producer; the committer flushes it before each state commit, so both
//! topics are at-least-once across crashes (the pair state is exactly-once).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::event::Source;
use crate::input::{first_ts, Chunk, ChunkSource, InputError, Next, Positions};

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
    /// A partition with nothing new for this long (and not at its end) stops
    /// holding the watermark back.
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

    pub fn validate(&self) -> Result<(), String> {
        if self.exposures_topic.is_empty() || self.actions_topic.is_empty() {
            return Err("kafka.exposures_topic and kafka.actions_topic must be set".into());
        }
        if self.exposures_topic == self.actions_topic {
            return Err("kafka.exposures_topic and kafka.actions_topic must differ".into());
        }
        Ok(())
    }
}

fn kerr(what: &str, e: impl std::fmt::Display) -> InputError {
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

/// The name of a partition in positions and dead letters.
pub fn partition_name(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

struct Part {
    source: Source,
    topic: String,
    partition: i32,
    file: u32,
    /// Next offset to hand out.
    next: i64,
    buf: VecDeque<(i64, Vec<u8>)>,
    eof: bool,
    last_data: Instant,
    /// Newest event time handed out from this partition.
    max_ts: Option<i64>,
}

/// Live figures of the Kafka input.
#[derive(Debug, Default)]
pub struct KafkaProgress {
    /// Messages behind the partitions' ends, summed (from the last end seen).
    pub lag: AtomicU64,
    pub messages: AtomicU64,
    pub errors: AtomicU64,
}

/// The default client context, except that reaching a partition's end (which
/// the reader asks to be told about) is not an error, and a repeated error
/// (a broker down: librdkafka reports it for every request) is logged once
/// per 10 s with the number of repeats.
#[derive(Default)]
pub struct QuietEof {
    seen: std::sync::Mutex<HashMap<String, (Instant, u64)>>,
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
        let msg = format!("{error}");
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
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

pub struct KafkaReader {
    consumers: Vec<BaseConsumer<QuietEof>>,
    parts: Vec<Part>,
    index: HashMap<(usize, i32), usize>,
    next_epoch: u64,
    chunk_lines: usize,
    max_line_bytes: usize,
    idle: Duration,
    until_end: bool,
    pub progress: Arc<KafkaProgress>,
    shared_offsets: Arc<std::sync::Mutex<Vec<(String, i32, i64)>>>,
    lag_stop: Arc<std::sync::atomic::AtomicBool>,
    /// Set to end the run at the next chunk boundary.
    pub stop: Arc<std::sync::atomic::AtomicBool>,
}

impl KafkaReader {
    /// Connects, finds the partitions of both topics and assigns them at
    /// `offsets` (the beginning for partitions not in it). Returns the reader
    /// and the partition names, in file-table order.
    #[allow(clippy::too_many_arguments)]
    pub fn connect(
        cfg: &KafkaConfig,
        offsets: &BTreeMap<String, i64>,
        partition_ts: &BTreeMap<String, i64>,
        next_epoch: u64,
        chunk_lines: usize,
        max_line_bytes: usize,
        until_end: bool,
    ) -> Result<(KafkaReader, Vec<(Source, String)>), InputError> {
        let timeout = Duration::from_millis(cfg.request_timeout_ms);
        let mut consumers = Vec::new();
        let mut parts = Vec::new();
        let mut names = Vec::new();
        let mut index = HashMap::new();
        for (si, source) in Source::ALL.iter().enumerate() {
            let topic = cfg.topic(*source).to_string();
            let consumer: BaseConsumer<QuietEof> = cfg
                .client_with(&[
                    // Some brokers hold a fetch for its whole wait when little is
                    // new; a streaming job wants its data sooner.
                    ("fetch.wait.max.ms", "50"),
                ])
                .set("group.id", &cfg.group_id)
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("enable.partition.eof", "true")
                .set("auto.offset.reset", "earliest")
                .create_with_context(QuietEof::default())
                .map_err(|e| kerr("creating the consumer", e))?;
            let ids = partitions(&consumer, &topic, timeout).map_err(|e| {
                kerr(
                    &format!("metadata of topic {topic:?} from {}", cfg.brokers()),
                    e,
                )
            })?;
            if ids.is_empty() {
                return Err(InputError::Kafka(format!(
                    "topic {topic:?} has no partitions on {} (create it first: rliv kafka create-topics)",
                    cfg.brokers()
                )));
            }
            let mut tpl = TopicPartitionList::new();
            for id in ids {
                let name = partition_name(&topic, id);
                let start = offsets.get(&name).copied();
                tpl.add_partition_offset(
                    &topic,
                    id,
                    start.map_or(Offset::Beginning, Offset::Offset),
                )
                .map_err(|e| kerr("assigning", e))?;
                index.insert((si, id), parts.len());
                parts.push(Part {
                    source: *source,
                    topic: topic.clone(),
                    partition: id,
                    file: names.len() as u32,
                    next: start.unwrap_or(0),
                    buf: VecDeque::new(),
                    eof: false,
                    last_data: Instant::now(),
                    max_ts: partition_ts.get(&name).copied(),
                });
                names.push((*source, format!("kafka:{name}")));
            }
            consumer
                .assign(&tpl)
                .map_err(|e| kerr("assigning partitions", e))?;
            consumers.push(consumer);
        }
        Ok((
            KafkaReader {
                consumers,
                parts,
                index,
                next_epoch,
                chunk_lines: chunk_lines.max(1),
                max_line_bytes,
                idle: Duration::from_millis(cfg.idle_timeout_ms),
                until_end,
                progress: Arc::default(),
                shared_offsets: Arc::default(),
                lag_stop: Arc::default(),
                stop: Arc::default(),
            },
            names,
        ))
    }

    fn offsets(&self) -> BTreeMap<String, i64> {
        self.parts
            .iter()
            .map(|p| (partition_name(&p.topic, p.partition), p.next))
            .collect()
    }

    /// Fetches what the consumers have, without blocking.
    fn poll(&mut self) {
        for si in 0..self.consumers.len() {
            for _ in 0..4 * self.chunk_lines {
                let Some(res) = self.consumers[si].poll(Duration::ZERO) else {
                    break;
                };
                match res {
                    Ok(m) => {
                        let Some(&pi) = self.index.get(&(si, m.partition())) else {
                            continue;
                        };
                        let part = &mut self.parts[pi];
                        let offset = m.offset();
                        let last = part.buf.back().map_or(part.next - 1, |(o, _)| *o);
                        if offset <= last {
                            continue; // a redelivery after a reconnect
                        }
                        let mut payload = m.payload().unwrap_or(&[]).to_vec();
                        // Lines end at '\n': JSON allows raw newlines only as
                        // whitespace, so they become spaces.
                        for b in payload.iter_mut() {
                            if *b == b'\n' || *b == b'\r' {
                                *b = b' ';
                            }
                        }
                        part.buf.push_back((offset, payload));
                        part.eof = false;
                        part.last_data = Instant::now();
                        self.progress.messages.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(KafkaError::PartitionEOF(p)) => {
                        if let Some(&pi) = self.index.get(&(si, p)) {
                            self.parts[pi].eof = true;
                        }
                    }
                    Err(e) => {
                        // Broker down, rebalancing...: librdkafka reconnects by itself.
                        self.progress.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("kafka: {e}");
                        break;
                    }
                }
            }
        }
    }

    /// The event-time progress of `source`: the slowest of its partitions
    /// that may still deliver older events. A partition stops counting when
    /// it has had nothing for `idle_timeout_ms`; with `until_end`, also when it
    /// is at its end (the topics are not being written). A partition that has
    /// delivered nothing yet holds the source at the start.
    fn source_progress(&self, source: Source) -> i64 {
        let parts = || self.parts.iter().filter(|p| p.source == source);
        let live: Vec<i64> = parts()
            .filter(|p| {
                let drained = p.buf.is_empty();
                let ended = self.until_end && p.eof && drained;
                let idle = drained && p.last_data.elapsed() >= self.idle;
                !(ended || idle)
            })
            .map(|p| p.max_ts.unwrap_or(i64::MIN))
            .collect();
        match live.iter().min() {
            Some(m) => *m,
            None => parts().filter_map(|p| p.max_ts).max().unwrap_or(i64::MIN),
        }
    }

    /// Starts measuring consumer lag into `self.progress` (call after setting it).
    pub fn start_lag_monitor(&self, cfg: &KafkaConfig) {
        if let Ok(mut o) = self.shared_offsets.lock() {
            *o = self.current_offsets();
        }
        spawn_lag_monitor(
            cfg,
            self.shared_offsets.clone(),
            self.progress.clone(),
            self.lag_stop.clone(),
        );
    }

    fn current_offsets(&self) -> Vec<(String, i32, i64)> {
        self.parts
            .iter()
            .map(|p| (p.topic.clone(), p.partition, p.next))
            .collect()
    }
}

/// Measures consumer lag on its own client and thread, so broker round trips
/// never stall the reader: every second, each partition's end minus the
/// reader's position.
fn spawn_lag_monitor(
    cfg: &KafkaConfig,
    offsets: Arc<std::sync::Mutex<Vec<(String, i32, i64)>>>,
    progress: Arc<KafkaProgress>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let client: Result<BaseConsumer<QuietEof>, _> = cfg
        .client_with(&[])
        .set("group.id", format!("{}-lag", cfg.group_id))
        .create_with_context(QuietEof::default());
    let Ok(client) = client else { return };
    let _ = std::thread::Builder::new()
        .name("rliv-kafka-lag".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let parts = offsets.lock().map(|o| o.clone()).unwrap_or_default();
                let mut lag = 0i64;
                for (topic, partition, next) in parts {
                    if let Ok((_, high)) =
                        client.fetch_watermarks(&topic, partition, Duration::from_secs(1))
                    {
                        lag += (high - next).max(0);
                    }
                }
                progress.lag.store(lag.max(0) as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_secs(1));
            }
        });
}

impl Drop for KafkaReader {
    fn drop(&mut self) {
        self.lag_stop.store(true, Ordering::Relaxed);
    }
}

impl ChunkSource for KafkaReader {
    fn next_epoch(&self) -> u64 {
        self.next_epoch
    }

    fn next(&mut self) -> Result<Next, InputError> {
        if self.stop.load(Ordering::Relaxed) {
            return Ok(Next::End);
        }
        self.poll();
        if let Ok(mut o) = self.shared_offsets.lock() {
            o.clone_from(&self.current_offsets());
        }
        // Wait for every partition that may still deliver (not at its end,
        // not idle) before choosing: the choice must not depend on timing.
        let waiting = self
            .parts
            .iter()
            .any(|p| p.buf.is_empty() && !p.eof && p.last_data.elapsed() < self.idle);
        if waiting {
            return Ok(Next::Pending);
        }
        let pick = self
            .parts
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                p.buf
                    .front()
                    .map(|(_, m)| (first_ts(m).unwrap_or(i64::MIN), i))
            })
            .min();
        let Some((_, pi)) = pick else {
            if self.until_end && self.parts.iter().all(|p| p.eof) {
                return Ok(Next::End);
            }
            return Ok(Next::Pending);
        };
        // A full chunk, or all there is (at its end, or idle): chunk
        // boundaries must not depend on how much a fetch happened to bring.
        let part = &self.parts[pi];
        let ready =
            part.buf.len() >= self.chunk_lines || part.eof || part.last_data.elapsed() >= self.idle;
        if !ready {
            return Ok(Next::Pending);
        }
        let part = &mut self.parts[pi];
        let mut chunk = Chunk {
            epoch: self.next_epoch,
            source: Some(part.source),
            file: part.file,
            first_line: part.buf.front().map_or(0, |(o, _)| *o as u64),
            ..Chunk::default()
        };
        let mut expect = None;
        let mut n = 0;
        while n < self.chunk_lines {
            // Only consecutive offsets in one chunk: a line's number is its offset.
            match (part.buf.front(), expect) {
                (Some((o, _)), Some(e)) if *o != e => break,
                (None, _) => break,
                _ => {}
            }
            let Some((offset, mut payload)) = part.buf.pop_front() else {
                break;
            };
            if payload.len() > self.max_line_bytes {
                payload.truncate(self.max_line_bytes);
                chunk.too_long.push(n as u32);
            }
            if let Some(ts) = first_ts(&payload) {
                part.max_ts = part.max_ts.max(Some(ts));
            }
            chunk.data.extend_from_slice(&payload);
            chunk.data.push(b'\n');
            part.next = offset + 1;
            expect = Some(offset + 1);
            n += 1;
        }
        let source = chunk.source.unwrap_or(Source::Exposures);
        chunk.source_progress = Some(self.source_progress(source));
        self.next_epoch += 1;
        Ok(Next::Chunk(chunk))
    }

    fn positions(&self) -> Positions {
        Positions {
            files: Default::default(),
            offsets: self.offsets(),
            partition_ts: self
                .parts
                .iter()
                .filter_map(|p| p.max_ts.map(|t| (partition_name(&p.topic, p.partition), t)))
                .collect(),
        }
    }

    fn exhausts_at_end(&self) -> bool {
        false
    }
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
    group: Option<BaseConsumer<QuietEof>>,
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
            .ok();
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
    pub fn send(&self, topic: &str, key: &[u8], payload: &[u8]) -> Result<(), String> {
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
                        return Err(format!("producing to {topic}: the queue stayed full"));
                    }
                }
                Err((e, _)) => return Err(format!("producing to {topic}: {e}")),
            }
        }
    }

    /// Commits `offsets` (`"topic/partition"` -> next offset), durable in the
    /// state, to the consumer group, so lag tools see the job's position. A
    /// failure is logged, not fatal: the state holds the offsets that count.
    pub fn commit_offsets(&self, offsets: &BTreeMap<String, i64>) {
        let Some(group) = &self.group else { return };
        let mut tpl = TopicPartitionList::new();
        for (name, offset) in offsets {
            let Some((topic, partition)) = name.rsplit_once('/') else {
                continue;
            };
            let Ok(partition) = partition.parse::<i32>() else {
                continue;
            };
            let _ = tpl.add_partition_offset(topic, partition, Offset::Offset(*offset));
        }
        if tpl.count() == 0 {
            return;
        }
        if let Err(e) = group.commit(&tpl, CommitMode::Sync) {
            tracing::warn!("kafka: committing the group's offsets: {e}");
        }
    }

    /// Waits until every queued message is delivered; fails if any was not.
    pub fn flush(&self) -> Result<(), String> {
        self.producer
            .flush(self.timeout)
            .map_err(|e| format!("flushing the producer: {e}"))?;
        let failed = self.failed.swap(0, Ordering::Relaxed);
        if failed > 0 {
            return Err(format!("{failed} messages were not delivered"));
        }
        Ok(())
    }
}
