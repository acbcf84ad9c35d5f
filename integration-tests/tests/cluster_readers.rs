//! The readers of pair state on a cluster state directory (shards `p0..pN`,
//! users sharded by `user_process`): `rliv dump` gives the same bytes as the
//! one store holding all the pairs, and `rliv status` shows process 0's
//! checkpoint.

mod common;

use common::{ok, rliv_bin, s};
use std::path::Path;
use std::process::{Command, Output};

use rliv_state::{shard_dir, user_process, Commit, PairKey, Store, StoreOptions};

const PROCESSES: usize = 3;

fn rliv(args: &[&str]) -> Output {
    Command::new(rliv_bin())
        .args(args)
        .output()
        .expect("run rliv")
}

/// stdout of a successful `rliv dump --state STATE ARGS`.
fn dump(state: &Path, args: &[&str]) -> Vec<u8> {
    let mut all = vec!["dump", "--state", s(state)];
    all.extend_from_slice(args);
    ok(rliv(&all)).stdout
}

/// Splits the single store at `single` into `PROCESSES` shards under
/// `cluster` by user, with its meta entries (the job's checkpoint) in p0.
/// Returns the number of pairs of each shard and one user of each.
fn split(single: &Path, cluster: &Path) -> (Vec<usize>, Vec<u64>) {
    let from = Store::open_read_only(single).expect("open single");
    let mut shards: Vec<Commit> = (0..PROCESSES).map(|_| Commit::default()).collect();
    let mut users = vec![None; PROCESSES];
    for item in from.scan_pairs(None).expect("scan") {
        let (k, c) = item.expect("pair");
        let p = user_process(k.user_id, PROCESSES);
        shards[p].pairs.push((k, c.to_bytes()));
        users[p].get_or_insert(k.user_id);
    }
    shards[0].meta_puts = from.meta_with_prefix(b"").expect("meta");
    assert!(
        !shards[0].meta_puts.is_empty(),
        "the replay left no checkpoint"
    );
    let mut sizes = Vec::new();
    // Written from the last shard to the first, so that no shard is written
    // in key order after another.
    for (i, commit) in shards.into_iter().enumerate().rev() {
        sizes.push(commit.pairs.len());
        let store = Store::open(&shard_dir(cluster, i), &StoreOptions::default()).expect("open");
        store.commit(commit).expect("commit");
    }
    sizes.reverse();
    let users = users
        .into_iter()
        .map(|u| u.expect("every shard has a user"))
        .collect();
    (sizes, users)
}

#[test]
fn a_cluster_state_dumps_and_shows_status_as_its_single_store_would() {
    let t = tempfile::tempdir().expect("tmp");
    let log = t.path().join("log");
    ok(rliv(&["gen", "--out", s(&log), "--exposures", "20000"]));
    let single = t.path().join("single");
    ok(rliv(&[
        "replay",
        "-q",
        "--exposures",
        s(&log.join("exposures.jsonl")),
        "--actions",
        s(&log.join("actions.jsonl")),
        "--state",
        s(&single),
    ]));
    let cluster = t.path().join("cluster");
    let (sizes, users) = split(&single, &cluster);
    assert!(sizes.iter().all(|n| *n > 100), "shard sizes {sizes:?}");

    // The whole dump, in both formats, with and without a limit.
    for args in [
        &[][..],
        &["--format", "csv"],
        &["--limit", "17"],
        &["--format", "csv", "--limit", "17"],
    ] {
        let one = dump(&single, args);
        assert!(one.len() > 1000, "{args:?}: a dump of {} bytes", one.len());
        assert!(
            dump(&cluster, args) == one,
            "the cluster dump {args:?} differs from the single store's"
        );
    }
    let lines = dump(&single, &[]).iter().filter(|b| **b == b'\n').count();
    assert_eq!(lines, sizes.iter().sum::<usize>());

    // One user (one on each shard), one pair, one author.
    for &u in &users {
        let u = u.to_string();
        let one = dump(&single, &["--user", &u]);
        assert!(!one.is_empty(), "user {u} has pairs");
        assert_eq!(dump(&cluster, &["--user", &u]), one, "--user {u}");
        let first: serde_json::Value =
            serde_json::from_slice(one.split(|b| *b == b'\n').next().expect("a line"))
                .expect("json");
        let a = first["author_id"].as_u64().expect("author_id").to_string();
        let pair = dump(&single, &["--user", &u, "--author", &a]);
        assert_eq!(pair.iter().filter(|b| **b == b'\n').count(), 1);
        assert_eq!(
            dump(&cluster, &["--user", &u, "--author", &a, "--format", "csv"]),
            dump(&single, &["--user", &u, "--author", &a, "--format", "csv"]),
            "--user {u} --author {a}"
        );
        assert_eq!(
            dump(&cluster, &["--author", &a]),
            dump(&single, &["--author", &a])
        );
    }
    // A pair that is in no shard.
    assert!(dump(
        &cluster,
        &[
            "--user",
            &users[0].to_string(),
            "--author",
            "18446744073709551615"
        ]
    )
    .is_empty());

    // `status`: process 0's checkpoint, stdout as for the single store.
    let one = ok(rliv(&["status", "--state", s(&single)]));
    let many = ok(rliv(&["status", "--state", s(&cluster)]));
    assert!(
        serde_json::from_slice::<serde_json::Value>(&one.stdout).is_ok(),
        "{}",
        String::from_utf8_lossy(&one.stdout)
    );
    assert_eq!(
        String::from_utf8_lossy(&many.stdout),
        String::from_utf8_lossy(&one.stdout)
    );
    assert!(
        String::from_utf8_lossy(&many.stderr).contains(s(&shard_dir(&cluster, 2))),
        "{}",
        String::from_utf8_lossy(&many.stderr)
    );

    // A missing shard is refused, not dumped without its users.
    std::fs::rename(shard_dir(&cluster, 1), t.path().join("away")).expect("move p1");
    let out = rliv(&["dump", "--state", s(&cluster)]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not p1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_key_the_cluster_dump_reads_is_the_key_the_store_holds() {
    // The merge sorts by (user, author) as big-endian keys do: users and
    // authors beyond 2^32 and 2^63 keep their order across shards.
    let t = tempfile::tempdir().expect("tmp");
    let single = t.path().join("single");
    let cluster = t.path().join("cluster");
    let users = [0u64, 1, 255, 256, 1 << 32, (1 << 63) + 5, u64::MAX];
    let authors = [0u64, 7, 1 << 40, u64::MAX];
    let mut all = Vec::new();
    for &u in &users {
        for &a in &authors {
            let mut c = rliv_state::PairCounters::default();
            c.counts.exposures = 1 + (u ^ a) % 1000;
            c.first_ts_ms = 1_700_000_000_000;
            c.last_ts_ms = c.first_ts_ms + (a % 5000) as i64;
            all.push((PairKey::new(u, a), c.to_bytes()));
        }
    }
    let owners: std::collections::BTreeSet<usize> =
        users.iter().map(|u| user_process(*u, PROCESSES)).collect();
    assert!(owners.len() > 1, "the users are all on one shard");
    let store = Store::open(&single, &StoreOptions::default()).expect("open");
    store
        .commit(Commit {
            pairs: all.clone(),
            ..Default::default()
        })
        .expect("commit");
    drop(store);
    for p in 0..PROCESSES {
        let store = Store::open(&shard_dir(&cluster, p), &StoreOptions::default()).expect("open");
        store
            .commit(Commit {
                pairs: all
                    .iter()
                    .filter(|(k, _)| user_process(k.user_id, PROCESSES) == p)
                    .cloned()
                    .collect(),
                ..Default::default()
            })
            .expect("commit");
    }
    for format in ["jsonl", "csv"] {
        let one = dump(&single, &["--format", format]);
        assert_eq!(
            String::from_utf8_lossy(&dump(&cluster, &["--format", format])),
            String::from_utf8_lossy(&one)
        );
    }
}
