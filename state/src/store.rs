//! The RocksDB pair store: column family `pairs` (key: user_id ++ author_id
//! big-endian, value: [`PairCounters`] compact encoding) and `meta` (the job's
//! input positions, window snapshots and counters, written in the same
//! `WriteBatch` as the pair counters they produced), and `transition_log`
//! (key: sequence number big-endian, value: one ASA transition, opaque to
//! this crate): the learner's durable input, written in the commit that
//! produced it and truncated only behind the learner's newest checkpoint.

use std::path::{Path, PathBuf};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, Direction, IteratorMode,
    Options, ReadOptions, WriteBatch, WriteOptions, DB,
};

use crate::{PairCounters, PairKey, StateError};

const CF_PAIRS: &str = "pairs";
const CF_META: &str = "meta";
const CF_LOG: &str = "transition_log";

/// Tuning of the RocksDB instance (section `[state]` of the config).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreOptions {
    /// Block cache shared by all column families, in MiB.
    pub block_cache_mb: usize,
    /// Memtable size of the pairs column family, in MiB.
    pub write_buffer_mb: usize,
    /// Compression of SST files: "zstd", "lz4" or "none".
    pub compression: String,
    /// Bloom filter bits per key (0 disables it): makes lookups of new pairs cheap.
    pub bloom_bits_per_key: f64,
    /// fsync the WAL on every commit (survives power loss, not only process death).
    pub sync_commits: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            block_cache_mb: 256,
            write_buffer_mb: 64,
            compression: "zstd".into(),
            bloom_bits_per_key: 10.0,
            sync_commits: true,
        }
    }
}

/// One atomic commit: pair values and meta entries, written as a single
/// RocksDB `WriteBatch`.
#[derive(Default, Debug)]
pub struct Commit {
    pub pairs: Vec<(PairKey, Vec<u8>)>,
    /// Pairs removed (a cluster shard rolling back a commit that created them).
    pub pair_deletes: Vec<PairKey>,
    /// Meta keys whose prefix is deleted before `meta_puts` are written.
    pub meta_delete_prefixes: Vec<Vec<u8>>,
    pub meta_puts: Vec<(Vec<u8>, Vec<u8>)>,
    /// Transition log entries (sequence number, encoded transition).
    pub log_puts: Vec<(u64, Vec<u8>)>,
    /// Log entries with sequence numbers in this range are deleted.
    pub log_delete: Option<std::ops::Range<u64>>,
}

pub struct Store {
    db: DB,
    path: PathBuf,
    sync: bool,
}

impl Store {
    /// Opens (creating if needed) the store at `path` for reading and writing.
    pub fn open(path: &Path, opts: &StoreOptions) -> Result<Store, StateError> {
        let (db_opts, cfs) = options(opts)?;
        std::fs::create_dir_all(path).map_err(|e| StateError::Io(path.to_path_buf(), e))?;
        let db =
            DB::open_cf_descriptors(&db_opts, path, cfs).map_err(|e| StateError::open(path, e))?;
        Ok(Store {
            db,
            path: path.to_path_buf(),
            sync: opts.sync_commits,
        })
    }

    /// Opens an existing store read-only; works while a replay writes to it.
    pub fn open_read_only(path: &Path) -> Result<Store, StateError> {
        if !path.join("CURRENT").exists() {
            return Err(StateError::NotAStore(path.to_path_buf()));
        }
        let (db_opts, cfs) = options(&StoreOptions::default())?;
        let cfs = existing(&db_opts, path, cfs);
        let db = DB::open_cf_descriptors_read_only(&db_opts, path, cfs, false)
            .map_err(|e| StateError::open(path, e))?;
        Ok(Store {
            db,
            path: path.to_path_buf(),
            sync: false,
        })
    }

    /// Opens a secondary instance of the store at `path` (which another
    /// process, or this one, keeps writing): reads see the primary's state as
    /// of the last [`Store::catch_up`]. `secondary` is a scratch directory of
    /// this instance's own.
    pub fn open_secondary(path: &Path, secondary: &Path) -> Result<Store, StateError> {
        if !path.join("CURRENT").exists() {
            return Err(StateError::NotAStore(path.to_path_buf()));
        }
        let (mut db_opts, cfs) = options(&StoreOptions::default())?;
        let cfs = existing(&db_opts, path, cfs);
        // A secondary keeps every file open: it cannot follow file deletions otherwise.
        db_opts.set_max_open_files(-1);
        std::fs::create_dir_all(secondary)
            .map_err(|e| StateError::Io(secondary.to_path_buf(), e))?;
        let db = DB::open_cf_descriptors_as_secondary(&db_opts, path, secondary, cfs)
            .map_err(|e| StateError::open(path, e))?;
        Ok(Store {
            db,
            path: path.to_path_buf(),
            sync: false,
        })
    }

    /// Catches a secondary instance up with its primary's latest commits.
    pub fn catch_up(&self) -> Result<(), StateError> {
        self.db.try_catch_up_with_primary().map_err(StateError::Db)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StateError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StateError::Corrupt(format!("column family {name:?} is missing")))
    }

    /// Reads the counters of `keys` (sorted or not); `None` for unknown pairs.
    pub fn get_pairs(&self, keys: &[PairKey]) -> Result<Vec<Option<PairCounters>>, StateError> {
        let cf = self.cf(CF_PAIRS)?;
        let encoded: Vec<[u8; 16]> = keys.iter().map(PairKey::encode).collect();
        let sorted = encoded.windows(2).all(|w| w[0] <= w[1]);
        let mut out = Vec::with_capacity(keys.len());
        for (res, key) in self
            .db
            .batched_multi_get_cf(cf, &encoded, sorted)
            .into_iter()
            .zip(keys)
        {
            match res.map_err(StateError::Db)? {
                None => out.push(None),
                Some(v) => out.push(Some(
                    PairCounters::decode(&v).map_err(|e| StateError::from(e).at(*key))?,
                )),
            }
        }
        Ok(out)
    }

    /// The stored values of `keys`, undecoded (a cluster shard's pre-images).
    pub fn get_pairs_raw(&self, keys: &[PairKey]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        let cf = self.cf(CF_PAIRS)?;
        let encoded: Vec<[u8; 16]> = keys.iter().map(PairKey::encode).collect();
        let sorted = encoded.windows(2).all(|w| w[0] <= w[1]);
        self.db
            .batched_multi_get_cf(cf, &encoded, sorted)
            .into_iter()
            .map(|r| r.map(|v| v.map(|v| v.to_vec())).map_err(StateError::Db))
            .collect()
    }

    pub fn get_pair(&self, key: PairKey) -> Result<Option<PairCounters>, StateError> {
        Ok(self.get_pairs(&[key])?.pop().flatten())
    }

    pub fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        let cf = self.cf(CF_META)?;
        self.db.get_cf(cf, key).map_err(StateError::Db)
    }

    /// All meta entries whose key starts with `prefix`, in key order.
    pub fn meta_with_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateError> {
        let cf = self.cf(CF_META)?;
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(prefix, Direction::Forward))
        {
            let (k, v) = item.map_err(StateError::Db)?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Writes `commit` atomically (one `WriteBatch`).
    pub fn commit(&self, mut commit: Commit) -> Result<(), StateError> {
        let pairs = self.cf(CF_PAIRS)?;
        let meta = self.cf(CF_META)?;
        // In key order, each memtable insert starts where the last one
        // ended instead of searching the skip list from the top. A stable
        // sort: of two puts of one key the later still wins.
        commit.pairs.sort_by_key(|(k, _)| *k);
        // Sized up front: a batch that grows copies itself at every doubling.
        let record = |k: usize, v: usize| k + v + 12;
        let bytes = 12
            + commit
                .pairs
                .iter()
                .map(|(_, v)| record(16, v.len()))
                .sum::<usize>()
            + commit
                .meta_puts
                .iter()
                .map(|(k, v)| record(k.len(), v.len()))
                .sum::<usize>()
            + commit
                .log_puts
                .iter()
                .map(|(_, v)| record(8, v.len()))
                .sum::<usize>()
            + commit.pair_deletes.len() * record(16, 0);
        let mut batch = WriteBatch::with_capacity_bytes(bytes);
        for (k, v) in &commit.pairs {
            batch.put_cf(pairs, k.encode(), v);
        }
        for k in &commit.pair_deletes {
            batch.delete_cf(pairs, k.encode());
        }
        for prefix in &commit.meta_delete_prefixes {
            for (k, _) in self.meta_with_prefix(prefix)? {
                batch.delete_cf(meta, k);
            }
        }
        for (k, v) in &commit.meta_puts {
            batch.put_cf(meta, k, v);
        }
        if !commit.log_puts.is_empty() || commit.log_delete.is_some() {
            let log = self.cf(CF_LOG)?;
            if let Some(r) = &commit.log_delete {
                if r.start < r.end {
                    batch.delete_range_cf(log, r.start.to_be_bytes(), r.end.to_be_bytes());
                }
            }
            for (seq, v) in &commit.log_puts {
                batch.put_cf(log, seq.to_be_bytes(), v);
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync);
        self.db.write_opt(batch, &wo).map_err(StateError::Db)
    }

    /// Iterates pairs in (user_id, author_id) order, only `user`'s when given
    /// (one prefix scan).
    pub fn scan_pairs(
        &self,
        user: Option<u64>,
    ) -> Result<impl Iterator<Item = Result<(PairKey, PairCounters), StateError>> + '_, StateError>
    {
        let cf = self.cf(CF_PAIRS)?;
        let start = PairKey::new(user.unwrap_or(0), 0).encode();
        let mut ro = ReadOptions::default();
        ro.fill_cache(false);
        if let Some(u) = user {
            if let Some(next) = u.checked_add(1) {
                ro.set_iterate_upper_bound(PairKey::new(next, 0).encode().to_vec());
            }
        }
        let iter = self
            .db
            .iterator_cf_opt(cf, ro, IteratorMode::From(&start, Direction::Forward));
        Ok(iter.map(|item| {
            let (k, v) = item.map_err(StateError::Db)?;
            let key = PairKey::decode(&k)?;
            let c = PairCounters::decode(&v).map_err(|e| StateError::from(e).at(key))?;
            Ok((key, c))
        }))
    }

    /// Iterates the transition log from sequence number `from` (inclusive)
    /// to `to` (exclusive), in order. A store written before the log existed
    /// (opened read-only) has an empty log.
    pub fn read_log(
        &self,
        from: u64,
        to: u64,
    ) -> Result<impl Iterator<Item = Result<(u64, Vec<u8>), StateError>> + '_, StateError> {
        let cf = self.db.cf_handle(CF_LOG);
        let mut ro = ReadOptions::default();
        ro.fill_cache(false);
        ro.set_iterate_upper_bound(to.to_be_bytes().to_vec());
        let start = from.to_be_bytes();
        let iter = cf.map(|cf| {
            self.db
                .iterator_cf_opt(cf, ro, IteratorMode::From(&start, Direction::Forward))
        });
        Ok(iter.into_iter().flatten().map(|item| {
            let (k, v) = item.map_err(StateError::Db)?;
            let seq: [u8; 8] = k.as_ref().try_into().map_err(|_| {
                StateError::Corrupt(format!("transition log key of {} bytes", k.len()))
            })?;
            Ok((u64::from_be_bytes(seq), v.to_vec()))
        }))
    }

    /// Flushes memtables and compacts the pairs column family fully.
    pub fn compact(&self) -> Result<(), StateError> {
        let cf = self.cf(CF_PAIRS)?;
        self.db.flush_cf(cf).map_err(StateError::Db)?;
        self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        Ok(())
    }

    /// Bytes of the pairs column family's SST files on disk.
    pub fn pairs_sst_bytes(&self) -> Result<u64, StateError> {
        let cf = self.cf(CF_PAIRS)?;
        Ok(self
            .db
            .property_int_value_cf(cf, "rocksdb.total-sst-files-size")
            .map_err(StateError::Db)?
            .unwrap_or(0))
    }

    /// Flushes all memtables (used before measuring or at the end of a run).
    pub fn flush(&self) -> Result<(), StateError> {
        for name in [CF_PAIRS, CF_META, CF_LOG] {
            self.db.flush_cf(self.cf(name)?).map_err(StateError::Db)?;
        }
        Ok(())
    }
}

fn options(opts: &StoreOptions) -> Result<(Options, Vec<ColumnFamilyDescriptor>), StateError> {
    let compression = match opts.compression.as_str() {
        "zstd" => DBCompressionType::Zstd,
        "lz4" => DBCompressionType::Lz4,
        "none" => DBCompressionType::None,
        other => {
            return Err(StateError::Config(format!(
                "state.compression = {other:?}: expected \"zstd\", \"lz4\" or \"none\""
            )))
        }
    };
    let cache = Cache::new_lru_cache(opts.block_cache_mb.max(1) << 20);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&cache);
    table.set_block_size(16 << 10);
    table.set_format_version(6);
    if opts.bloom_bits_per_key > 0.0 {
        table.set_bloom_filter(opts.bloom_bits_per_key, false);
        table.set_optimize_filters_for_memory(true);
    }
    let mut pairs = Options::default();
    pairs.set_block_based_table_factory(&table);
    pairs.set_write_buffer_size(opts.write_buffer_mb.max(1) << 20);
    pairs.set_compression_type(DBCompressionType::Lz4);
    pairs.set_bottommost_compression_type(compression);
    pairs.set_level_compaction_dynamic_level_bytes(true);
    if opts.bloom_bits_per_key > 0.0 {
        // A whole-key bloom filter over the memtable: a replay's lookups are
        // mostly of pairs that do not exist yet, and without it each one
        // walks the memtable's skip list.
        pairs.set_memtable_prefix_bloom_ratio(0.05);
        pairs.set_memtable_whole_key_filtering(true);
    }

    let mut meta = Options::default();
    meta.set_compression_type(DBCompressionType::Lz4);
    let mut log = Options::default();
    log.set_compression_type(DBCompressionType::Lz4);

    let mut db = Options::default();
    db.create_if_missing(true);
    db.create_missing_column_families(true);
    db.set_max_background_jobs(2);
    db.set_keep_log_file_num(3);
    Ok((
        db,
        vec![
            ColumnFamilyDescriptor::new(CF_PAIRS, pairs),
            ColumnFamilyDescriptor::new(CF_META, meta),
            ColumnFamilyDescriptor::new(CF_LOG, log),
        ],
    ))
}

/// The descriptors of the column families `path` already has (a read-only
/// or secondary instance cannot create one: a store written before a column
/// family existed opens without it).
fn existing(
    db: &Options,
    path: &Path,
    cfs: Vec<ColumnFamilyDescriptor>,
) -> Vec<ColumnFamilyDescriptor> {
    match DB::list_cf(db, path) {
        Ok(names) => cfs
            .into_iter()
            .filter(|d| names.iter().any(|n| n == d.name()))
            .collect(),
        Err(_) => cfs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;
    use crate::Rewards;

    fn counters(n: u64) -> PairCounters {
        let mut c = PairCounters::default();
        for i in 0..n {
            c.apply(
                1000 + i as i64,
                &Rewards {
                    click: 1.0,
                    watch: 2.5,
                    follow: 0.0,
                    gift: 0.0,
                },
            );
        }
        c
    }

    #[test]
    fn commit_then_read_back_and_scan_a_user_prefix() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path(), &StoreOptions::default())?;
        let keys = [
            PairKey::new(2, 9),
            PairKey::new(1, 5),
            PairKey::new(2, 1),
            PairKey::new(3, 0),
        ];
        let mut commit = Commit::default();
        for (i, k) in keys.iter().enumerate() {
            commit.pairs.push((*k, counters(i as u64 + 1).to_bytes()));
        }
        commit.meta_puts.push((b"job/x".to_vec(), b"1".to_vec()));
        store.commit(commit)?;

        let got = store.get_pairs(&[PairKey::new(2, 1), PairKey::new(7, 7)])?;
        assert_eq!(got[0], Some(counters(3)));
        assert_eq!(got[1], None);

        let user2: Vec<_> = store
            .scan_pairs(Some(2))?
            .map(|r| r.map(|(k, _)| k))
            .collect::<Result<_, _>>()?;
        assert_eq!(user2, vec![PairKey::new(2, 1), PairKey::new(2, 9)]);
        let all: Vec<_> = store
            .scan_pairs(None)?
            .map(|r| r.map(|(k, _)| k))
            .collect::<Result<_, _>>()?;
        let mut sorted = keys.to_vec();
        sorted.sort();
        assert_eq!(all, sorted);

        let mut del = Commit::default();
        del.meta_delete_prefixes.push(b"job/".to_vec());
        store.commit(del)?;
        assert_eq!(store.get_meta(b"job/x")?, None);
        Ok(())
    }

    #[test]
    fn scan_of_the_last_user_id_stops_at_the_end() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path(), &StoreOptions::default())?;
        let mut commit = Commit::default();
        commit
            .pairs
            .push((PairKey::new(u64::MAX, 1), counters(1).to_bytes()));
        commit
            .pairs
            .push((PairKey::new(u64::MAX - 1, 1), counters(1).to_bytes()));
        store.commit(commit)?;
        let n = store.scan_pairs(Some(u64::MAX))?.count();
        assert_eq!(n, 1);
        Ok(())
    }

    #[test]
    fn opening_a_missing_directory_read_only_names_it() -> TestResult {
        let dir = tempfile::tempdir()?;
        let err = Store::open_read_only(&dir.path().join("nope"))
            .err()
            .ok_or("opening a missing directory succeeded")?;
        assert!(err.to_string().contains("nope"), "{err}");
        Ok(())
    }
}
