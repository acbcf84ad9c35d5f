//! [`TopicPartition`]: how the job names one partition of a topic, in
//! memory and in its checkpoints. A leaf: the input table and the Kafka
//! reader both use it.

use serde::{Deserialize, Serialize};

/// One partition of a topic. Its text form, `topic/partition`, is how
/// checkpoints (offsets, per-partition event times) and the file table
/// (`kafka:topic/partition`) name it; serde uses that text too.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// Text that is not `topic/partition` (a partition number after the last `/`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not topic/partition")]
pub struct BadTopicPartition(pub String);

impl std::str::FromStr for TopicPartition {
    type Err = BadTopicPartition;

    /// Splits at the last `/` (topic names cannot hold one).
    fn from_str(s: &str) -> Result<TopicPartition, BadTopicPartition> {
        s.rsplit_once('/')
            .and_then(|(topic, p)| Some(TopicPartition::new(topic, p.parse().ok()?)))
            .ok_or_else(|| BadTopicPartition(s.to_string()))
    }
}

impl From<TopicPartition> for String {
    fn from(tp: TopicPartition) -> String {
        tp.to_string()
    }
}

impl TryFrom<String> for TopicPartition {
    type Error = BadTopicPartition;
    fn try_from(s: String) -> Result<TopicPartition, BadTopicPartition> {
        s.parse()
    }
}
