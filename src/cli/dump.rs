//! `rliv dump`: the pair state as JSON Lines or CSV.

use std::io::Write;

use anyhow::{bail, Result};
use clap::ValueEnum;
use rliv_state::{PairKey, Store};

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
    let store = Store::open_read_only(state)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut line = Vec::with_capacity(256);
    if let Format::Csv = format {
        out.write_all(rliv_state::json::PAIR_CSV_HEADER.as_bytes())?;
    }
    let mut n = 0u64;
    let mut emit = |k: &PairKey, c: &rliv_state::PairCounters| -> Result<bool> {
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
        if let Some(c) = store.get_pair(PairKey::new(u, a))? {
            emit(&PairKey::new(u, a), &c)?;
        }
    } else {
        for item in store.scan_pairs(user)? {
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
