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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    /// Since when the broker has confirmed that nothing lies beyond what was
    /// received; `None` once new data arrives or a client error is seen.
    at_end: Option<Instant>,
    /// When the last message arrived (a high watermark fetched before that
    /// says nothing about the partition's end now).
    last_data: Instant,
    /// Newest event time handed out from this partition.
    max_ts: Option<i64>,
}

impl Part {
    /// The offset after the last message received (buffered or handed out).
    fn received(&self) -> i64 {
        self.buf.back().map_or(self.next, |(o, _)| *o + 1)
    }

    /// Drained and confirmed at its end.
    fn drained_at_end(&self) -> bool {
        self.buf.is_empty() && self.at_end.is_some()
    }
}

/// Live figures of the Kafka input.
#[derive(Debug, Default)]
pub struct KafkaProgress {
    /// Messages behind the partitions' ends, summed (from the last end seen).
    pub lag: AtomicU64,
    pub messages: AtomicU64,
    /// Client and fetch errors (a broker down, a reset offset, ...).
    pub errors: AtomicU64,
    /// Offsets that were never delivered (skipped by the broker: retention,
    /// compaction or transaction markers), counted when the next one arrives.
    pub skipped_offsets: AtomicU64,
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
    /// Positions out to the lag monitor, high watermarks back.
    shared: Arc<Mutex<Shared>>,
    /// Client errors seen so far (summed over the consumers).
    errors_seen: u64,
    /// When the reader last forgot what it knew of the partitions' ends.
    forgot_at: Instant,
    lag_stop: Arc<AtomicBool>,
    /// Set to end the run at the next chunk boundary.
    pub stop: Arc<AtomicBool>,
}

/// What the reader and the lag monitor exchange, in the reader's partition
/// order.
#[derive(Default)]
struct Shared {
    /// (topic, partition, next offset to hand out).
    positions: Vec<(String, i32, i64)>,
    /// The latest high watermark fetched, and when the answer came.
    ends: Vec<Option<(i64, Instant)>>,
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
                // Only reached when the broker no longer has the stored
                // offset: redelivery from the start is deduplicated by
                // offset, a jump to the end would lose data.
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
                    at_end: None,
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
        let shared = Shared {
            positions: Vec::new(),
            ends: vec![None; parts.len()],
        };
        let reader = KafkaReader {
            consumers,
            parts,
            index,
            next_epoch,
            chunk_lines: chunk_lines.max(1),
            max_line_bytes,
            idle: Duration::from_millis(cfg.idle_timeout_ms),
            until_end,
            progress: Arc::default(),
            shared: Arc::new(Mutex::new(shared)),
            errors_seen: 0,
            forgot_at: Instant::now(),
            lag_stop: Arc::default(),
            stop: Arc::default(),
        };
        reader.publish_positions();
        Ok((reader, names))
    }

    fn offsets(&self) -> BTreeMap<String, i64> {
        self.parts
            .iter()
            .map(|p| (partition_name(&p.topic, p.partition), p.next))
            .collect()
    }

    /// Fetches what the consumers have, without blocking, and updates what
    /// is known of each partition's end.
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
                        let expected = part.received();
                        if offset < expected {
                            continue; // a redelivery after a reconnect or a reset
                        }
                        if offset > expected {
                            let skipped = (offset - expected) as u64;
                            self.progress
                                .skipped_offsets
                                .fetch_add(skipped, Ordering::Relaxed);
                            tracing::warn!(
                                "kafka: {}/{}: offsets {expected}..{offset} were not delivered (retention, compaction or transaction markers)",
                                part.topic,
                                part.partition
                            );
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
                        part.at_end = None;
                        part.last_data = Instant::now();
                        self.progress.messages.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(KafkaError::PartitionEOF(p)) => {
                        // Queued after every message before it: what was
                        // received is all the partition had.
                        if let Some(&pi) = self.index.get(&(si, p)) {
                            let part = &mut self.parts[pi];
                            part.at_end.get_or_insert_with(Instant::now);
                        }
                    }
                    Err(e) => {
                        // A fetch error (the broker down, an offset reset):
                        // librdkafka recovers by itself; forget the ends.
                        self.progress.errors.fetch_add(1, Ordering::Relaxed);
                        self.forget_ends();
                        tracing::warn!("kafka: {e}");
                        break;
                    }
                }
            }
        }
        let errors: u64 = self.consumers.iter().map(|c| c.context().errors()).sum();
        if errors != self.errors_seen {
            // The client lost the broker, or a request failed: an end seen
            // before may not be the end now.
            self.progress
                .errors
                .fetch_add(errors.saturating_sub(self.errors_seen), Ordering::Relaxed);
            self.errors_seen = errors;
            self.forget_ends();
        }
        self.confirm_ends_from_watermarks();
    }

    fn forget_ends(&mut self) {
        self.forgot_at = Instant::now();
        for p in &mut self.parts {
            p.at_end = None;
        }
    }

    /// A partition whose high watermark, fetched after its last message
    /// arrived and after the last error, is no more than what the reader
    /// received, is at its end.
    fn confirm_ends_from_watermarks(&mut self) {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        for (part, end) in self.parts.iter_mut().zip(&shared.ends) {
            let Some((high, when)) = *end else { continue };
            if part.at_end.is_none()
                && when > self.forgot_at
                && when > part.last_data
                && part.received() >= high
            {
                part.at_end = Some(Instant::now());
            }
        }
    }

    /// Whether a drained partition no longer holds the watermark back.
    ///
    /// In a live run: once it has been at its end for `idle_timeout_ms`.
    /// With `--until-end`, a partition that has delivered data holds the
    /// watermark at its newest event for the whole run, even at its end: a
    /// producer may still be writing, and what it writes next to this
    /// partition can be older than what a sibling has already delivered (a
    /// producer batches per partition). The run ends once every partition is
    /// at its end, so this costs no waiting, and the watermark a run leaves
    /// behind is the slowest partition's, which the next run can continue
    /// exactly. A partition that has never delivered anything says nothing
    /// about time and holds nothing once at its end.
    fn finished_or_idle(&self, p: &Part) -> bool {
        let Some(since) = p.at_end else { return false };
        if !p.buf.is_empty() {
            return false;
        }
        if self.until_end {
            p.max_ts.is_none()
        } else {
            since.elapsed() >= self.idle
        }
    }

    /// The event-time progress of `source`: the slowest of its partitions
    /// that may still deliver older events (see [`Self::finished_or_idle`]).
    /// A partition that has delivered nothing yet holds the source at the
    /// start.
    fn source_progress(&self, source: Source) -> i64 {
        let parts = || self.parts.iter().filter(|p| p.source == source);
        let live: Vec<i64> = parts()
            .filter(|p| !self.finished_or_idle(p))
            .map(|p| p.max_ts.unwrap_or(i64::MIN))
            .collect();
        match live.iter().min() {
            Some(m) => *m,
            None => parts().filter_map(|p| p.max_ts).max().unwrap_or(i64::MIN),
        }
    }

    /// Starts measuring consumer lag into `self.progress` and fetching the
    /// high watermarks that confirm a partition's end after an error (call
    /// after setting `progress`). Without it a reader still learns ends from
    /// partition-EOF events, but not again after a client error.
    pub fn start_lag_monitor(&self, cfg: &KafkaConfig) -> Result<(), InputError> {
        spawn_lag_monitor(
            cfg,
            self.shared.clone(),
            self.progress.clone(),
            self.lag_stop.clone(),
        )
    }

    fn publish_positions(&self) {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.positions.clear();
        shared.positions.extend(
            self.parts
                .iter()
                .map(|p| (p.topic.clone(), p.partition, p.next)),
        );
    }
}

/// Measures consumer lag on its own client and thread, so broker round trips
/// never stall the reader: every second, each partition's end minus the
/// reader's position. The ends it fetches go back to the reader.
fn spawn_lag_monitor(
    cfg: &KafkaConfig,
    shared: Arc<Mutex<Shared>>,
    progress: Arc<KafkaProgress>,
    stop: Arc<AtomicBool>,
) -> Result<(), InputError> {
    let client: BaseConsumer<QuietEof> = cfg
        .client_with(&[])
        .set("group.id", format!("{}-lag", cfg.group_id))
        .create_with_context(QuietEof::default())
        .map_err(|e| kerr("creating the lag monitor's client", e))?;
    std::thread::Builder::new()
        .name("rliv-kafka-lag".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let positions = shared
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .positions
                    .clone();
                let mut lag = 0i64;
                for (i, (topic, partition, next)) in positions.into_iter().enumerate() {
                    if let Ok((_, high)) =
                        client.fetch_watermarks(&topic, partition, Duration::from_secs(1))
                    {
                        let answered = Instant::now();
                        lag += (high - next).max(0);
                        let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
                        if let Some(end) = s.ends.get_mut(i) {
                            *end = Some((high, answered));
                        }
                    }
                }
                progress.lag.store(lag.max(0) as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(500));
            }
        })
        .map(|_| ())
        .map_err(|e| kerr("starting the lag monitor", e))
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
        self.publish_positions();
        // Wait for every partition that may still deliver (not known to be
        // at its end) before choosing: the choice must not depend on timing.
        let waiting = self
            .parts
            .iter()
            .any(|p| p.buf.is_empty() && p.at_end.is_none());
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
            if self.until_end && self.parts.iter().all(Part::drained_at_end) {
                return Ok(Next::End);
            }
            return Ok(Next::Pending);
        };
        // A full chunk, or all there is (the partition at its end): chunk
        // boundaries must not depend on how much a fetch happened to bring.
        let part = &self.parts[pi];
        let ready = part.buf.len() >= self.chunk_lines || part.at_end.is_some();
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
        let group = &self.group;
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
