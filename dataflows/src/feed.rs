//! The learner's durable input: the transition log.
//!
//! A job with a learner attached (`--train`) writes every transition it
//! emits into the state's `transition_log` column family, under a sequence
//! number, in the same `WriteBatch` as the pair counters that produced it,
//! and hands it to the learner only after that commit. The learner's
//! checkpoints record the log position they cover. So after a crash of
//! either side:
//!
//! - the state never runs ahead of what the learner can get back: on start,
//!   the job sends the learner every logged transition from its newest
//!   checkpoint's position to the log's end (committed but never covered
//!   by a checkpoint), then the new ones;
//! - the learner's sample buffer, which is not checkpointed, is refilled
//!   with the `refill` transitions before that position;
//! - the log is truncated only below `checkpointed - refill`, where
//!   `checkpointed` is the position the learner's newest checkpoint wrote.
//!
//! Every transition thus reaches the learner's checkpointed model exactly
//! once; the learner checks that the sequence numbers it receives have no
//! gap and no repeat.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;
use rliv_state::{StateError, Store};

use crate::event::Transition;
pub use rliv_contract::Fed;

/// The learner side of a job (`ReplayRequest::learner`).
#[derive(Clone, Debug)]
pub struct LearnerFeed {
    /// Bounded: the job waits when the learner is behind.
    pub tx: Sender<Fed>,
    /// The log position the learner's newest checkpoint covers (the next
    /// sequence number it wants); `None` for a learner without a checkpoint,
    /// which takes the whole log the state still holds.
    pub consumed: Option<u64>,
    /// Transitions before `consumed` sent to refill the sample buffer (its
    /// capacity); also how far behind the checkpointed position the log is kept.
    pub refill: u64,
    /// Set by the learner after each checkpoint: the log position it wrote.
    pub checkpointed: Arc<AtomicU64>,
}

/// Figures of [`send_backlog`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Transitions sent as [`Fed::Refill`].
    pub refilled: u64,
    /// Logged transitions sent as new (committed, never checkpointed).
    pub resent: u64,
    /// The first sequence number the learner takes as new.
    pub from: u64,
}

/// Why a transition log entry could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("{0}")]
    Encode(bincode::error::EncodeError),
    #[error("{0}")]
    Decode(bincode::error::DecodeError),
    /// The entry holds more than one transition's bytes.
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

/// A log entry's value: the transition in bincode's standard encoding.
pub fn encode(t: &Transition) -> Result<Vec<u8>, EntryError> {
    bincode::serde::encode_to_vec(t, bincode::config::standard()).map_err(EntryError::Encode)
}

pub fn decode(bytes: &[u8]) -> Result<Transition, EntryError> {
    let (t, used): (Transition, usize) =
        bincode::serde::decode_from_slice(bytes, bincode::config::standard())
            .map_err(EntryError::Decode)?;
    if used != bytes.len() {
        return Err(EntryError::Trailing(bytes.len() - used));
    }
    Ok(t)
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("transition log entry {seq} does not decode: {err}")]
    Corrupt { seq: u64, err: EntryError },
    #[error("the transition log has a gap: expected entry {want}, found {got}")]
    Gap { want: u64, got: u64 },
    #[error(
        "the learner's checkpoint has consumed {consumed} logged transitions, but this state's \
         log ends at {end}: the checkpoints belong to another state directory"
    )]
    AheadOfState { consumed: u64, end: u64 },
    #[error(
        "the learner's checkpoint wants logged transition {consumed}, but this state keeps the \
         log only from {start} (a learner with other checkpoints truncated it): resume with \
         those checkpoints, or train a new learner in an empty directory"
    )]
    Truncated { consumed: u64, start: u64 },
    #[error("the learner hung up")]
    Closed,
}

/// Sends the learner what it needs before the job's new transitions: the
/// refill before its position, then the committed entries after it, up to
/// the log's end `end` (the job's checkpoint); `start` is the oldest entry kept.
pub fn send_backlog(
    store: &Store,
    feed: &LearnerFeed,
    start: u64,
    end: u64,
) -> Result<Backlog, FeedError> {
    let from = match feed.consumed {
        Some(c) if c > end => return Err(FeedError::AheadOfState { consumed: c, end }),
        Some(c) if c < start => return Err(FeedError::Truncated { consumed: c, start }),
        Some(c) => c,
        None => start,
    };
    let refill_from = from.saturating_sub(feed.refill).max(start);
    let mut out = Backlog {
        from,
        ..Backlog::default()
    };
    let mut want = refill_from;
    for entry in store.read_log(refill_from, end)? {
        let (seq, bytes) = entry?;
        if seq != want {
            return Err(FeedError::Gap { want, got: seq });
        }
        want += 1;
        let t = decode(&bytes).map_err(|err| FeedError::Corrupt { seq, err })?;
        let msg = if seq < from {
            out.refilled += 1;
            Fed::Refill(t)
        } else {
            out.resent += 1;
            Fed::Logged(seq, t)
        };
        feed.tx.send(msg).map_err(|_| FeedError::Closed)?;
    }
    if want != end && end > refill_from {
        return Err(FeedError::Gap { want, got: end });
    }
    Ok(out)
}

/// Where the log may be cut: below the learner's checkpointed position less
/// the refill (never above `end`).
pub fn truncate_below(feed: &LearnerFeed, end: u64) -> u64 {
    feed.checkpointed
        .load(Ordering::Acquire)
        .min(end)
        .saturating_sub(feed.refill)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Feats;
    use rliv_state::{Commit, PairSnapshot, Rewards, StoreOptions};

    fn transition(i: u64) -> Transition {
        Transition {
            request_id: i,
            user_id: i % 7,
            author_id: i % 5,
            item_id: 100 + i,
            ts_ms: 1_700_000_000_000 + i as i64,
            user_feats: Feats::default(),
            item_feats: Feats::default(),
            state: PairSnapshot::default(),
            reward: Rewards::default(),
            next_state: PairSnapshot::default(),
        }
    }

    fn store_with(range: std::ops::Range<u64>) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        let commit = Commit {
            log_puts: range
                .map(|i| (i, encode(&transition(i)).expect("encode")))
                .collect(),
            ..Commit::default()
        };
        store.commit(commit).expect("commit");
        (dir, store)
    }

    fn feed(consumed: Option<u64>, refill: u64) -> (LearnerFeed, crossbeam_channel::Receiver<Fed>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let f = LearnerFeed {
            tx,
            consumed,
            refill,
            checkpointed: Arc::new(AtomicU64::new(0)),
        };
        (f, rx)
    }

    fn received(rx: &crossbeam_channel::Receiver<Fed>) -> (Vec<u64>, Vec<u64>) {
        let (mut refill, mut new) = (Vec::new(), Vec::new());
        for m in rx.try_iter() {
            match m {
                Fed::Refill(t) => refill.push(t.request_id),
                Fed::Logged(seq, t) => {
                    assert_eq!(
                        seq, t.request_id,
                        "the sequence number travels with its entry"
                    );
                    new.push(seq)
                }
                Fed::New(_) => panic!("the log sends no unlogged transitions"),
            }
        }
        (refill, new)
    }

    #[test]
    fn a_resumed_learner_gets_the_refill_then_exactly_the_uncovered_entries() {
        let (_d, store) = store_with(0..50);
        let (f, rx) = feed(Some(30), 8);
        let b = send_backlog(&store, &f, 0, 50).expect("backlog");
        assert_eq!(
            b,
            Backlog {
                refilled: 8,
                resent: 20,
                from: 30
            }
        );
        let (refill, new) = received(&rx);
        assert_eq!(refill, (22..30).collect::<Vec<_>>());
        assert_eq!(new, (30..50).collect::<Vec<_>>());
    }

    #[test]
    fn a_fresh_learner_takes_the_whole_log_kept() {
        let (_d, store) = store_with(10..20);
        let (f, rx) = feed(None, 100);
        let b = send_backlog(&store, &f, 10, 20).expect("backlog");
        assert_eq!((b.refilled, b.resent, b.from), (0, 10, 10));
        assert_eq!(received(&rx).1, (10..20).collect::<Vec<_>>());
    }

    #[test]
    fn entries_past_the_jobs_checkpoint_are_not_sent() {
        // Entries at or after `end` belong to no commit the job resumes from.
        let (_d, store) = store_with(0..40);
        let (f, rx) = feed(Some(25), 0);
        let b = send_backlog(&store, &f, 0, 30).expect("backlog");
        assert_eq!((b.refilled, b.resent), (0, 5));
        assert_eq!(received(&rx).1, (25..30).collect::<Vec<_>>());
    }

    #[test]
    fn a_checkpoint_ahead_of_the_state_is_an_error() {
        let (_d, store) = store_with(0..10);
        let (f, _rx) = feed(Some(11), 4);
        let e = send_backlog(&store, &f, 0, 10).expect_err("ahead");
        assert!(
            matches!(
                e,
                FeedError::AheadOfState {
                    consumed: 11,
                    end: 10
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn a_checkpoint_behind_the_kept_log_is_an_error() {
        let (_d, store) = store_with(20..30);
        let (f, _rx) = feed(Some(12), 4);
        let e = send_backlog(&store, &f, 20, 30).expect_err("truncated");
        assert!(
            matches!(
                e,
                FeedError::Truncated {
                    consumed: 12,
                    start: 20
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn a_missing_entry_is_a_gap_not_a_silent_skip() {
        let (_d, store) = store_with(0..10);
        store
            .commit(Commit {
                log_delete: Some(4..5),
                ..Commit::default()
            })
            .expect("delete");
        let (f, _rx) = feed(Some(0), 0);
        let e = send_backlog(&store, &f, 0, 10).expect_err("gap");
        assert!(matches!(e, FeedError::Gap { want: 4, got: 5 }), "{e}");
        // A log that ends early is a gap too.
        let (_d, store) = store_with(0..10);
        let (f, _rx) = feed(Some(0), 0);
        let e = send_backlog(&store, &f, 0, 12).expect_err("short");
        assert!(matches!(e, FeedError::Gap { want: 10, got: 12 }), "{e}");
    }

    #[test]
    fn a_damaged_entry_is_named() {
        let (_d, store) = store_with(0..3);
        store
            .commit(Commit {
                log_puts: vec![(1, b"\xff\xff\xff".to_vec())],
                ..Commit::default()
            })
            .expect("damage");
        let (f, _rx) = feed(Some(0), 0);
        let e = send_backlog(&store, &f, 0, 3).expect_err("corrupt");
        assert!(matches!(e, FeedError::Corrupt { seq: 1, .. }), "{e}");
    }

    #[test]
    fn truncation_keeps_the_refill_behind_the_checkpoint() {
        let (f, _rx) = feed(Some(0), 10);
        assert_eq!(truncate_below(&f, 100), 0);
        f.checkpointed.store(50, Ordering::Release);
        assert_eq!(truncate_below(&f, 100), 40);
        // Never past the log's committed end.
        assert_eq!(truncate_below(&f, 30), 20);
    }

    #[test]
    fn entries_round_trip() {
        let t = transition(9);
        assert_eq!(decode(&encode(&t).expect("encode")).expect("decode"), t);
        assert!(decode(b"").is_err());
    }
}
