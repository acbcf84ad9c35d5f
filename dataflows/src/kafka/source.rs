//! [`KafkaReader`]: the job's input from the exposures and actions topics.
//!
//! Why one file over 400 lines: the reader's partition bookkeeping (what
//! was received, what is known of each end, which partition holds the
//! watermark) is one state machine; `lag.rs` and `sink.rs` are apart.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::lag::{spawn_lag_monitor, Shared};
use super::{kerr, partitions, KafkaConfig, KafkaProgress, QuietEof, TopicPartition};
use crate::event::Source;
use crate::input::{first_ts, Chunk, ChunkSource, InputError, InputName, Next, Positions};

struct Part {
    source: Source,
    tp: TopicPartition,
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

impl KafkaReader {
    /// Connects, finds the partitions of both topics and assigns them at
    /// `offsets` (the beginning for partitions not in it). Returns the reader
    /// and the partitions as file-table entries, in file-table order.
    #[allow(clippy::too_many_arguments)]
    pub fn connect(
        cfg: &KafkaConfig,
        offsets: &BTreeMap<TopicPartition, i64>,
        partition_ts: &BTreeMap<TopicPartition, i64>,
        next_epoch: u64,
        chunk_lines: usize,
        max_line_bytes: usize,
        until_end: bool,
    ) -> Result<(KafkaReader, Vec<(Source, InputName)>), InputError> {
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
                let tp = TopicPartition::new(topic.as_str(), id);
                let start = offsets.get(&tp).copied();
                tpl.add_partition_offset(
                    &topic,
                    id,
                    start.map_or(Offset::Beginning, Offset::Offset),
                )
                .map_err(|e| kerr("assigning", e))?;
                index.insert((si, id), parts.len());
                parts.push(Part {
                    source: *source,
                    tp: tp.clone(),
                    file: names.len() as u32,
                    next: start.unwrap_or(0),
                    buf: VecDeque::new(),
                    at_end: None,
                    last_data: Instant::now(),
                    max_ts: partition_ts.get(&tp).copied(),
                });
                names.push((*source, InputName::Kafka(tp)));
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

    fn offsets(&self) -> BTreeMap<TopicPartition, i64> {
        self.parts.iter().map(|p| (p.tp.clone(), p.next)).collect()
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
                                "kafka: {}: offsets {expected}..{offset} were not delivered (retention, compaction or transaction markers)",
                                part.tp
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
        shared
            .positions
            .extend(self.parts.iter().map(|p| (p.tp.clone(), p.next)));
    }
}

/// Measures consumer lag on its own client and thread, so broker round trips
/// never stall the reader: every second, each partition's end minus the
/// reader's position. The ends it fetches go back to the reader.
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
                .filter_map(|p| p.max_ts.map(|t| (p.tp.clone(), t)))
                .collect(),
        }
    }

    fn exhausts_at_end(&self) -> bool {
        false
    }
}
