//! Reading a transitions file (the JSONL `rliv replay --transitions` writes,
//! `.gz` too) into the trainer's channel. A bad line is counted and written
//! to the dead-letter file with `file:line` and the reason; reading goes on.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use rliv_contract::Transition;

#[derive(Clone, Debug, Default)]
pub struct ReadStats {
    pub lines: u64,
    pub sent: u64,
    pub skipped: u64,
    pub bad: u64,
}

/// Hands the transitions of `path` to `send`, skipping the first `skip` valid
/// ones (a resumed run already trained on them; `skipped` receives those, to
/// refill the sample buffer). Bad lines before the skip point were reported
/// by the earlier run and are not reported again. Stops early, without
/// error, when `send` returns false (its receiver hung up).
pub fn read_file(
    path: &Path,
    skip: u64,
    send: &mut dyn FnMut(Transition) -> bool,
    skipped: &mut dyn FnMut(Transition),
    dead: &mut dyn Write,
) -> std::io::Result<ReadStats> {
    let file = std::fs::File::open(path)?;
    let reader: Box<dyn BufRead> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(file)))
    } else {
        Box::new(BufReader::with_capacity(1 << 20, file))
    };
    let mut stats = ReadStats::default();
    let name = path.display().to_string();
    for line in reader.split(b'\n') {
        let line = line?;
        stats.lines += 1;
        let body = line.strip_suffix(b"\r").unwrap_or(&line);
        if body.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Transition>(body) {
            Ok(t) => {
                if stats.skipped < skip {
                    stats.skipped += 1;
                    skipped(t);
                    continue;
                }
                if !send(t) {
                    break;
                }
                stats.sent += 1;
            }
            Err(_) if stats.skipped < skip => {}
            Err(e) => {
                stats.bad += 1;
                let rec = serde_json::json!({
                    "file": name,
                    "line": stats.lines,
                    "reason": "bad_transition",
                    "detail": e.to_string(),
                    "raw": String::from_utf8_lossy(body),
                });
                writeln!(dead, "{rec}")?;
            }
        }
    }
    Ok(stats)
}
