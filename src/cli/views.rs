//! `rliv views`: the live relationship metrics as of a state's last commit.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Result;
use clap::ValueEnum;
use rliv_dataflows::views::ViewKey;
use rliv_state::{Layout, Store};

#[derive(Copy, Clone, ValueEnum)]
pub(crate) enum Format {
    Jsonl,
    Csv,
}

#[derive(Default, serde::Serialize)]
struct AuthorRow {
    author_id: u64,
    deep_pairs: i64,
    weekly_gifted_users: i64,
    revenue_milli: i64,
    /// (day since 1970-01-01, first follows that day), oldest first.
    new_fans: Vec<(i64, i64)>,
}

#[derive(Default, serde::Serialize)]
struct Totals {
    as_of_ms: Option<i64>,
    deep_pairs: i64,
    weekly_gifted_users: i64,
    revenue_milli: i64,
    new_fans: i64,
}

/// Prints the views of `state` (a store, or a cluster's shards: the views
/// are in process 0's): one totals line, then one line per author (JSONL), or
/// `author_id,metric,day,value` rows (CSV, totals with an empty author).
pub(crate) fn views(state: &std::path::Path, author: Option<u64>, format: Format) -> Result<()> {
    let layout = Layout::of(state)?;
    let store = Store::open_read_only(layout.primary())?;
    let rows = rliv_dataflows::job::load_views(&store)?.unwrap_or_default();
    let mut totals = Totals::default();
    let mut authors: BTreeMap<u64, AuthorRow> = BTreeMap::new();
    fn row(authors: &mut BTreeMap<u64, AuthorRow>, a: u64) -> &mut AuthorRow {
        authors.entry(a).or_insert_with(|| AuthorRow {
            author_id: a,
            ..AuthorRow::default()
        })
    }
    for (k, v) in rows {
        match k {
            ViewKey::DeepPairs(a) => row(&mut authors, a).deep_pairs = v,
            ViewKey::WeeklyGiftedUsers(a) => row(&mut authors, a).weekly_gifted_users = v,
            ViewKey::RevenueMilli(a) => row(&mut authors, a).revenue_milli = v,
            ViewKey::NewFans(a, day) => row(&mut authors, a).new_fans.push((day, v)),
            ViewKey::DeepPairsTotal => totals.deep_pairs = v,
            ViewKey::WeeklyGiftedUsersTotal => totals.weekly_gifted_users = v,
            ViewKey::RevenueMilliTotal => totals.revenue_milli = v,
            ViewKey::NewFansTotal => totals.new_fans = v,
            ViewKey::AsOfMs => totals.as_of_ms = Some(v),
        }
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let written = (|| -> std::io::Result<()> {
        match format {
            Format::Jsonl => {
                if author.is_none() {
                    serde_json::to_writer(&mut out, &serde_json::json!({ "totals": totals }))?;
                    out.write_all(b"\n")?;
                }
                for r in authors
                    .values()
                    .filter(|r| author.is_none_or(|a| a == r.author_id))
                {
                    serde_json::to_writer(&mut out, r)?;
                    out.write_all(b"\n")?;
                }
            }
            Format::Csv => {
                out.write_all(b"author_id,metric,day,value\n")?;
                if author.is_none() {
                    if let Some(t) = totals.as_of_ms {
                        writeln!(out, ",as_of_ms,,{t}")?;
                    }
                    writeln!(out, ",deep_pairs,,{}", totals.deep_pairs)?;
                    writeln!(out, ",weekly_gifted_users,,{}", totals.weekly_gifted_users)?;
                    writeln!(out, ",revenue_milli,,{}", totals.revenue_milli)?;
                    writeln!(out, ",new_fans,,{}", totals.new_fans)?;
                }
                for r in authors
                    .values()
                    .filter(|r| author.is_none_or(|a| a == r.author_id))
                {
                    let a = r.author_id;
                    writeln!(out, "{a},deep_pairs,,{}", r.deep_pairs)?;
                    writeln!(out, "{a},weekly_gifted_users,,{}", r.weekly_gifted_users)?;
                    writeln!(out, "{a},revenue_milli,,{}", r.revenue_milli)?;
                    for (day, n) in &r.new_fans {
                        writeln!(out, "{a},new_fans,{day},{n}")?;
                    }
                }
            }
        }
        out.flush()
    })();
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
