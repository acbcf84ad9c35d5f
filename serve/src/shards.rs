//! The pair state as the service reads it: one RocksDB secondary instance
//! per store of the state directory (the store itself, or every shard
//! `p0..pN` of a cluster job), and the routing of a user's lookups to the
//! shard that owns the user.

use std::path::{Path, PathBuf};

use rliv_state::{shard_dir, user_process, Layout, PairCounters, PairKey, StateError, Store};

/// Secondary instances of every store of a state directory, in process order.
pub struct PairShards {
    stores: Vec<Store>,
    dirs: Vec<PathBuf>,
}

impl PairShards {
    /// Opens every store of `state` (as [`Layout::of`] finds them) as a
    /// secondary instance. `scratch` is this instance's own directory: a
    /// single store uses it directly, shard `i` uses `scratch/p{i}`.
    pub fn open_secondary(state: &Path, scratch: &Path) -> Result<PairShards, StateError> {
        let layout = Layout::of(state)?;
        let stores = match &layout {
            Layout::Single(dir) => vec![Store::open_secondary(dir, scratch)?],
            Layout::Cluster(dirs) => dirs
                .iter()
                .enumerate()
                .map(|(i, dir)| Store::open_secondary(dir, &shard_dir(scratch, i)))
                .collect::<Result<Vec<_>, _>>()?,
        };
        // A store opened while its writer is still creating it lacks the
        // pairs column family, and a secondary never gains one later: such a
        // store is not readable yet (the next attempt opens it again).
        for store in &stores {
            store.get_pairs(&[])?;
        }
        Ok(PairShards {
            stores,
            dirs: layout.dirs(),
        })
    }

    /// The store directories these instances read, in process order.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The store holding every pair of `user`.
    pub fn shard(&self, user: u64) -> &Store {
        // `stores` is never empty: `Layout::of` finds at least one store.
        &self.stores[user_process(user, self.stores.len())]
    }

    /// The counters of `user`'s pairs with `authors`, in their order (`None`
    /// for unknown pairs): one multi-get on the user's shard.
    pub fn get_pairs(
        &self,
        user: u64,
        authors: &[u64],
    ) -> Result<Vec<Option<PairCounters>>, StateError> {
        let keys: Vec<PairKey> = authors.iter().map(|a| PairKey::new(user, *a)).collect();
        self.shard(user).get_pairs(&keys)
    }

    /// Catches every instance up with its primary. Every shard is tried; the
    /// first error is returned.
    pub fn catch_up(&self) -> Result<(), StateError> {
        let mut first = Ok(());
        for store in &self.stores {
            if let Err(e) = store.catch_up() {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rliv_state::{Commit, StoreOptions};

    /// A user owned by process `process` of 2.
    pub(crate) fn user_of(process: usize, after: u64) -> u64 {
        (after + 1..)
            .find(|u| user_process(*u, 2) == process)
            .expect("a user")
    }

    pub(crate) fn counters(exposures: u64, clicks: u64) -> PairCounters {
        let mut c = PairCounters::default();
        c.counts.exposures = exposures;
        c.counts.clicks = clicks;
        c.watch_sec_total = 1.5 * clicks as f64;
        c.first_ts_ms = 1_000;
        c.last_ts_ms = 2_000 + exposures as i64;
        c
    }

    /// Writes `pairs` into the store at `dir` (created if needed) and returns it open.
    pub(crate) fn put(dir: &Path, pairs: &[(PairKey, PairCounters)]) -> Store {
        let store = Store::open(dir, &StoreOptions::default()).expect("open");
        store
            .commit(Commit {
                pairs: pairs.iter().map(|(k, c)| (*k, c.to_bytes())).collect(),
                ..Default::default()
            })
            .expect("commit");
        store
    }

    #[test]
    fn a_users_pairs_are_read_from_the_shard_that_owns_the_user() {
        let dir = tempfile::tempdir().expect("tmp");
        let state = dir.path().join("state");
        let (u0, u1) = (user_of(0, 0), user_of(1, 0));
        // Each shard also holds a decoy of the other shard's user: a lookup
        // routed to the wrong shard finds the decoy, not the owner's counters.
        let _p0 = put(
            &shard_dir(&state, 0),
            &[
                (PairKey::new(u0, 7), counters(3, 1)),
                (PairKey::new(u0, 9), counters(5, 2)),
                (PairKey::new(u1, 7), counters(99, 99)),
            ],
        );
        let _p1 = put(
            &shard_dir(&state, 1),
            &[
                (PairKey::new(u1, 7), counters(4, 4)),
                (PairKey::new(u0, 9), counters(98, 98)),
            ],
        );
        let shards =
            PairShards::open_secondary(&state, &dir.path().join("scratch")).expect("shards");
        assert_eq!(
            shards.dirs(),
            &[shard_dir(&state, 0), shard_dir(&state, 1)][..]
        );
        assert_eq!(
            shards.get_pairs(u0, &[7, 8, 9]).expect("u0"),
            vec![Some(counters(3, 1)), None, Some(counters(5, 2))]
        );
        assert_eq!(
            shards.get_pairs(u1, &[9, 7]).expect("u1"),
            vec![None, Some(counters(4, 4))]
        );
    }

    #[test]
    fn a_single_store_serves_every_user_and_catches_up() {
        let dir = tempfile::tempdir().expect("tmp");
        let state = dir.path().join("state");
        let (u0, u1) = (user_of(0, 0), user_of(1, 0));
        let primary = put(&state, &[(PairKey::new(u0, 1), counters(1, 0))]);
        let shards =
            PairShards::open_secondary(&state, &dir.path().join("scratch")).expect("shards");
        assert_eq!(shards.dirs(), &[state.clone()][..]);
        assert_eq!(shards.get_pairs(u1, &[2]).expect("u1"), vec![None]);
        primary
            .commit(Commit {
                pairs: vec![(PairKey::new(u1, 2), counters(2, 1).to_bytes())],
                ..Default::default()
            })
            .expect("commit");
        shards.catch_up().expect("catch up");
        assert_eq!(
            shards.get_pairs(u0, &[1]).expect("u0"),
            vec![Some(counters(1, 0))]
        );
        assert_eq!(
            shards.get_pairs(u1, &[2]).expect("u1"),
            vec![Some(counters(2, 1))]
        );
    }

    #[test]
    fn a_gap_in_the_shards_is_an_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let state = dir.path().join("state");
        let _p0 = put(&shard_dir(&state, 0), &[]);
        let _p2 = put(&shard_dir(&state, 2), &[]);
        let e = PairShards::open_secondary(&state, &dir.path().join("scratch"))
            .err()
            .expect("p1 is missing");
        assert!(e.to_string().contains("not p1"), "{e}");
    }
}
