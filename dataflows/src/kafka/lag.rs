//! The lag monitor: its own client and thread fetch each partition's high
//! watermark every half second, for the lag figure and for the reader's
//! knowledge of where each partition ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};

use super::partition::TopicPartition;
use super::{kerr, KafkaConfig, KafkaProgress, QuietEof};
use crate::input::InputError;

/// What the reader and the lag monitor exchange, in the reader's partition
/// order.
#[derive(Default)]
pub(super) struct Shared {
    /// Each partition and the next offset to hand out.
    pub(super) positions: Vec<(TopicPartition, i64)>,
    /// The latest high watermark fetched, and when the answer came.
    pub(super) ends: Vec<Option<(i64, Instant)>>,
}

pub(super) fn spawn_lag_monitor(
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
                for (i, (tp, next)) in positions.into_iter().enumerate() {
                    if let Ok((_, high)) =
                        client.fetch_watermarks(&tp.topic, tp.partition, Duration::from_secs(1))
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
