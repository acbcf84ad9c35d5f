//! `rliv run` (the job on Kafka topics) and `rliv kafka ...` (topic helpers).

use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::Message;
use rliv_dataflows::kafka::{KafkaConfig, KafkaProgress, QuietEof};

/// The Kafka input of `rliv run`. SIGTERM and SIGINT stop it at the next
/// chunk boundary, with a commit (see [`crate::signal`]).
pub fn kafka_run(
    cfg: &KafkaConfig,
    until_end: bool,
    cluster_peer: Option<usize>,
) -> Result<(rliv_dataflows::job::KafkaRun, Arc<KafkaProgress>)> {
    let progress = Arc::new(KafkaProgress::default());
    let what = match cluster_peer {
        Some(i) => format!(
            "run: process {i} exits now (signal process 0 to stop a cluster at a chunk boundary)"
        ),
        None => {
            "run: stopping at the next chunk boundary and committing (the state stays consistent)"
                .into()
        }
    };
    let stop = crate::signal::install(&what).context("installing the SIGTERM/SIGINT handlers")?;
    Ok((
        rliv_dataflows::job::KafkaRun {
            cfg: cfg.clone(),
            until_end,
            progress: progress.clone(),
            stop: stop.flag(),
        },
        progress,
    ))
}

/// Creates the input and output topics with `partitions` partitions each
/// (existing topics are left as they are).
pub fn create_topics(cfg: &KafkaConfig, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        cfg.client().create().context("creating the admin client")?;
    let names: Vec<&str> = [
        cfg.exposures_topic.as_str(),
        cfg.actions_topic.as_str(),
        cfg.transitions_topic.as_str(),
        cfg.dead_letter_topic.as_str(),
    ]
    .into_iter()
    .filter(|t| !t.is_empty())
    .collect();
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let opts =
        AdminOptions::new().operation_timeout(Some(Duration::from_millis(cfg.request_timeout_ms)));
    let results = rt
        .block_on(admin.create_topics(&topics, &opts))
        .with_context(|| format!("creating topics on {}", cfg.brokers()))?;
    for r in results {
        match r {
            Ok(t) => eprintln!("kafka: created topic {t} ({partitions} partitions)"),
            Err((t, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                eprintln!("kafka: topic {t} exists")
            }
            Err((t, e)) => return Err(anyhow!("creating topic {t}: {e}")),
        }
    }
    Ok(())
}

/// The value of `"request_id"` in a JSON line, as the message key (an
/// exposure's actions then share its partition number).
fn request_key(line: &[u8]) -> Option<&[u8]> {
    let at = memchr_find(line, b"\"request_id\"")? + 12;
    let rest = &line[at..];
    let start = rest.iter().position(|b| b.is_ascii_digit())?;
    let end = rest[start..]
        .iter()
        .position(|b| !b.is_ascii_digit())
        .map_or(rest.len(), |e| start + e);
    Some(&rest[start..end])
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Produces each line of `file` as one message to `topic` (keyed by its
/// `request_id`), and waits until all are delivered.
pub fn produce(cfg: &KafkaConfig, topic: &str, file: &Path) -> Result<u64> {
    let producer: BaseProducer = cfg
        .client()
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .create()
        .context("creating the producer")?;
    let f = std::fs::File::open(file)
        .map_err(|e| crate::train::UsageError(format!("opening {}: {e}", file.display())))?;
    let mut n = 0u64;
    for line in std::io::BufReader::new(f).split(b'\n') {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let key = request_key(&line).unwrap_or(b"").to_vec();
        let mut record = BaseRecord::to(topic).key(&key).payload(&line);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    r,
                )) => {
                    record = r;
                    producer.poll(Duration::from_millis(20));
                }
                Err((e, _)) => return Err(anyhow!("producing to {topic}: {e}")),
            }
        }
        n += 1;
        if n % 10_000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .with_context(|| format!("delivering to {topic}"))?;
    Ok(n)
}

/// A consumer of group `group` for the `rliv kafka` tools: manual
/// assignment, no auto-commit, told when a partition is at its end.
fn tool_consumer(cfg: &KafkaConfig, group: &str) -> Result<BaseConsumer<QuietEof>> {
    cfg.client_with(&[("fetch.wait.max.ms", "50")])
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create_with_context(QuietEof::default())
        .context("creating the consumer")
}

/// Prints every message of `topic` (all partitions, from the beginning to
/// their current ends), one per line, to stdout.
pub fn consume(cfg: &KafkaConfig, topic: &str) -> Result<u64> {
    let consumer = tool_consumer(cfg, &format!("{}-consume", cfg.group_id))?;
    let timeout = Duration::from_millis(cfg.request_timeout_ms);
    let ids = rliv_dataflows::kafka::partitions(&consumer, topic, timeout)?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for id in &ids {
        tpl.add_partition_offset(topic, *id, rdkafka::Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut at_end = std::collections::BTreeSet::new();
    let mut n = 0u64;
    let started = std::time::Instant::now();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    while at_end.len() < ids.len() {
        if started.elapsed() > timeout {
            return Err(anyhow!("reading {topic}: not at the end after {timeout:?}"));
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                std::io::Write::write_all(&mut out, m.payload().unwrap_or(&[]))?;
                std::io::Write::write_all(&mut out, b"\n")?;
                n += 1;
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => eprintln!("kafka: {e}"),
            None => {}
        }
    }
    std::io::Write::flush(&mut out)?;
    Ok(n)
}

/// Prints, per partition of the input topics, the consumer group's committed
/// offset, the partition's end and the lag, one JSON line each.
pub fn offsets(cfg: &KafkaConfig) -> Result<()> {
    let consumer = tool_consumer(cfg, &cfg.group_id)?;
    let timeout = Duration::from_millis(cfg.request_timeout_ms);
    for topic in [&cfg.exposures_topic, &cfg.actions_topic] {
        let ids = rliv_dataflows::kafka::partitions(&consumer, topic, timeout)?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        for id in &ids {
            tpl.add_partition(topic, *id);
        }
        let committed = consumer.committed_offsets(tpl, timeout)?;
        for id in ids {
            let (_, end) = consumer.fetch_watermarks(topic, id, timeout)?;
            let at = committed
                .find_partition(topic, id)
                .and_then(|e| e.offset().to_raw())
                .filter(|o| *o >= 0);
            let lag = at.map(|a| (end - a).max(0));
            println!(
                "{}",
                serde_json::json!({"topic": topic, "partition": id, "committed": at, "end": end, "lag": lag})
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_the_request_id() {
        assert_eq!(
            request_key(br#"{"request_id":1234,"user_id":5}"#),
            Some(&b"1234"[..])
        );
        assert_eq!(
            request_key(br#"{"user_id":5, "request_id" : 7}"#),
            Some(&b"7"[..])
        );
        assert_eq!(request_key(b"not json"), None);
    }
}
