//! `rliv dump`: the pair state as JSON Lines or CSV.
//!
//! A cluster state (shards `p0..pN`) dumps as the one store holding all of
//! its pairs would: the shards' sorted scans merged in (user, author) order.
//! `--user` reads only the shard that owns the user.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::io::Write;

use anyhow::{bail, Result};
use clap::ValueEnum;
use rliv_state::{user_process, Layout, PairCounters, PairKey, StateError, Store};

#[derive(Copy, Clone, ValueEnum)]
pub(crate) enum Format {
    Jsonl,
    Csv,
}

pub(crate) fn dump(
    state: &std::path::Path,
    user: Option<u64>,
    author: Option<u64>,
    format: Format,
    limit: Option<u64>,
) -> Result<()> {
    let dirs = Layout::of(state)?.dirs();
    // With `--user`, only the user's shard is opened.
    let stores = match user {
        Some(u) => vec![Store::open_read_only(&dirs[user_process(u, dirs.len())])?],
        None => dirs
            .iter()
            .map(|d| Store::open_read_only(d))
            .collect::<Result<Vec<_>, _>>()?,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut line = Vec::with_capacity(256);
    if let Format::Csv = format {
        out.write_all(rliv_state::json::PAIR_CSV_HEADER.as_bytes())?;
    }
    let mut n = 0u64;
    let mut emit = |k: &PairKey, c: &PairCounters| -> Result<bool> {
        if limit.is_some_and(|l| n >= l) {
            return Ok(false);
        }
        line.clear();
        match format {
            Format::Jsonl => rliv_state::json::write_pair_jsonl(&mut line, k, c),
            Format::Csv => rliv_state::json::write_pair_csv(&mut line, k, c),
        }
        n += 1;
        match out.write_all(&line) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(e.into()),
        }
    };
    if let (Some(u), Some(a)) = (user, author) {
        if let Some(c) = stores[0].get_pair(PairKey::new(u, a))? {
            emit(&PairKey::new(u, a), &c)?;
        }
    } else {
        let pairs: Box<dyn Iterator<Item = Result<(PairKey, PairCounters), StateError>> + '_> =
            if let [store] = &stores[..] {
                Box::new(store.scan_pairs(user)?)
            } else {
                let scans = stores
                    .iter()
                    .map(|s| s.scan_pairs(None))
                    .collect::<Result<Vec<_>, _>>()?;
                Box::new(merge_sorted(scans))
            };
        for item in pairs {
            let (k, c) = item?;
            if author.is_some_and(|a| a != k.author_id) {
                continue;
            }
            if !emit(&k, &c)? {
                break;
            }
        }
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => bail!(e),
        _ => Ok(()),
    }
}

/// The next pair of one source, ordered so that `BinaryHeap` (a max-heap)
/// pops the smallest key first, and the lowest source among equal keys.
struct Head {
    key: PairKey,
    source: usize,
    counters: PairCounters,
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.key, other.source).cmp(&(self.key, self.source))
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head {}

/// The pairs of `sources`, each sorted by (user, author), merged into one
/// sequence sorted by (user, author) (a key held by several sources comes
/// once per source, in source order). A source's error ends the sequence
/// with that error.
pub(crate) struct MergeSorted<I> {
    sources: Vec<I>,
    heads: BinaryHeap<Head>,
    error: Option<StateError>,
    failed: bool,
}

pub(crate) fn merge_sorted<I>(sources: Vec<I>) -> MergeSorted<I>
where
    I: Iterator<Item = Result<(PairKey, PairCounters), StateError>>,
{
    let mut m = MergeSorted {
        heads: BinaryHeap::with_capacity(sources.len()),
        sources,
        error: None,
        failed: false,
    };
    for i in 0..m.sources.len() {
        m.advance(i);
        if m.error.is_some() {
            break;
        }
    }
    m
}

impl<I> MergeSorted<I>
where
    I: Iterator<Item = Result<(PairKey, PairCounters), StateError>>,
{
    /// Takes the next pair of source `i` into the heap.
    fn advance(&mut self, i: usize) {
        match self.sources[i].next() {
            Some(Ok((key, counters))) => self.heads.push(Head {
                key,
                source: i,
                counters,
            }),
            Some(Err(e)) => self.error = Some(e),
            None => {}
        }
    }
}

impl<I> Iterator for MergeSorted<I>
where
    I: Iterator<Item = Result<(PairKey, PairCounters), StateError>>,
{
    type Item = Result<(PairKey, PairCounters), StateError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if let Some(e) = self.error.take() {
            self.failed = true;
            return Some(Err(e));
        }
        let head = self.heads.pop()?;
        self.advance(head.source);
        Some(Ok((head.key, head.counters)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Pairs = Vec<Result<(PairKey, PairCounters), StateError>>;

    fn pair(user: u64, author: u64) -> (PairKey, PairCounters) {
        let mut c = PairCounters::default();
        c.counts.exposures = user.wrapping_mul(1000).wrapping_add(author);
        (PairKey::new(user, author), c)
    }

    fn merged(sources: Vec<Pairs>) -> Vec<(u64, u64, u64)> {
        merge_sorted(sources.into_iter().map(Vec::into_iter).collect())
            .map(|r| {
                let (k, c) = r.expect("pair");
                (k.user_id, k.author_id, c.counts.exposures)
            })
            .collect()
    }

    #[test]
    fn shards_merge_in_user_then_author_order() {
        let a: Pairs = vec![
            Ok(pair(1, 5)),
            Ok(pair(3, 1)),
            Ok(pair(3, 9)),
            Ok(pair(7, 0)),
        ];
        let b: Pairs = vec![
            Ok(pair(0, 2)),
            Ok(pair(2, 2)),
            Ok(pair(3, 4)),
            Ok(pair(u64::MAX, 1)),
        ];
        let c: Pairs = vec![];
        let d: Pairs = vec![Ok(pair(1, 4)), Ok(pair(1, 6))];
        let keys: Vec<(u64, u64)> = merged(vec![a, b, c, d])
            .into_iter()
            .map(|(u, a, e)| {
                assert_eq!(
                    e,
                    u.wrapping_mul(1000).wrapping_add(a),
                    "counters follow their key"
                );
                (u, a)
            })
            .collect();
        assert_eq!(
            keys,
            vec![
                (0, 2),
                (1, 4),
                (1, 5),
                (1, 6),
                (2, 2),
                (3, 1),
                (3, 4),
                (3, 9),
                (7, 0),
                (u64::MAX, 1)
            ]
        );
    }

    #[test]
    fn a_key_in_two_shards_comes_once_per_shard_in_shard_order() {
        let mut dup = pair(2, 2);
        dup.1.counts.clicks = 1;
        let out: Vec<_> = merge_sorted(vec![
            vec![Ok(pair(1, 1)), Ok(pair(2, 2))].into_iter(),
            vec![Ok(dup), Ok(pair(3, 3))].into_iter(),
        ])
        .map(|r| r.expect("pair"))
        .collect();
        let clicks: Vec<(u64, u64)> = out
            .iter()
            .map(|(k, c)| (k.user_id, c.counts.clicks))
            .collect();
        assert_eq!(clicks, vec![(1, 0), (2, 0), (2, 1), (3, 0)]);
    }

    #[test]
    fn a_shards_error_ends_the_merge_with_it() {
        let out: Vec<_> = merge_sorted(vec![
            vec![
                Ok(pair(1, 1)),
                Err(StateError::Corrupt("bad value".into())),
                Ok(pair(9, 9)),
            ]
            .into_iter(),
            vec![Ok(pair(2, 2)), Ok(pair(3, 3))].into_iter(),
        ])
        .collect();
        assert!(matches!(out[0], Ok((k, _)) if k == PairKey::new(1, 1)));
        assert!(
            matches!(&out[1], Err(e) if e.to_string().contains("bad value")),
            "{:?}",
            out.iter()
                .map(|r| r.as_ref().map(|(k, _)| *k).map_err(|e| e.to_string()))
                .collect::<Vec<_>>()
        );
        assert_eq!(out.len(), 2);
    }
}
