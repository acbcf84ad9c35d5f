//! Hand-rolled JSON writers for the contract's hot output lines (pair dumps,
//! transitions): no intermediate `serde_json::Value`, no allocation per field.

use crate::{PairCounters, PairKey, PairSnapshot, StateCounts};

/// Writes a finite `f64` as the shortest JSON number that round-trips;
/// integral values are written without a fraction (`0`, `5`), as in the
/// contract's examples. Non-finite values (never produced from validated
/// input) are written as `null` so the line stays valid JSON.
pub fn write_f64(out: &mut Vec<u8>, v: f64) {
    if !v.is_finite() {
        out.extend_from_slice(b"null");
    } else if v == v.trunc() && v.abs() < 9.0e15 {
        let mut b = itoa::Buffer::new();
        out.extend_from_slice(b.format(v as i64).as_bytes());
    } else {
        let mut b = ryu::Buffer::new();
        out.extend_from_slice(b.format_finite(v).as_bytes());
    }
}

pub fn write_u64(out: &mut Vec<u8>, v: u64) {
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b.format(v).as_bytes());
}

pub fn write_i64(out: &mut Vec<u8>, v: i64) {
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b.format(v).as_bytes());
}

/// `{"exposures":4,"clicks":2,"watches":2,"follows":0,"gifts":0}`
pub fn write_state_counts(out: &mut Vec<u8>, c: &StateCounts) {
    out.push(b'{');
    write_counts_fields(out, c);
    out.push(b'}');
}

/// `"exposures":4,"clicks":2,"watches":2,"follows":0,"gifts":0`
fn write_counts_fields(out: &mut Vec<u8>, c: &StateCounts) {
    out.extend_from_slice(b"\"exposures\":");
    write_u64(out, c.exposures);
    out.extend_from_slice(b",\"clicks\":");
    write_u64(out, c.clicks);
    out.extend_from_slice(b",\"watches\":");
    write_u64(out, c.watches);
    out.extend_from_slice(b",\"follows\":");
    write_u64(out, c.follows);
    out.extend_from_slice(b",\"gifts\":");
    write_u64(out, c.gifts);
}

/// A transition's `state` / `next_state`: the five counters, then the
/// additive fields (`watch_sec_total`, `gift_total`, `first_ts_ms`,
/// `last_ts_ms`), as in a pair dump.
pub fn write_pair_snapshot(out: &mut Vec<u8>, c: &PairSnapshot) {
    out.push(b'{');
    write_snapshot_fields(out, c);
    out.push(b'}');
}

/// The counters, totals and times, without braces.
fn write_snapshot_fields(out: &mut Vec<u8>, c: &PairSnapshot) {
    write_counts_fields(out, &c.counts());
    out.extend_from_slice(b",\"watch_sec_total\":");
    write_f64(out, c.watch_sec_total);
    out.extend_from_slice(b",\"gift_total\":");
    write_f64(out, c.gift_total);
    out.extend_from_slice(b",\"first_ts_ms\":");
    write_i64(out, c.first_ts_ms);
    out.extend_from_slice(b",\"last_ts_ms\":");
    write_i64(out, c.last_ts_ms);
}

/// One pair dump line (contract "Pair dump"), newline included.
pub fn write_pair_jsonl(out: &mut Vec<u8>, k: &PairKey, c: &PairCounters) {
    out.extend_from_slice(b"{\"user_id\":");
    write_u64(out, k.user_id);
    out.extend_from_slice(b",\"author_id\":");
    write_u64(out, k.author_id);
    out.push(b',');
    write_snapshot_fields(out, &PairSnapshot::from(c));
    out.extend_from_slice(b"}\n");
}

pub const PAIR_CSV_HEADER: &str = "user_id,author_id,exposures,clicks,watches,follows,gifts,watch_sec_total,gift_total,first_ts_ms,last_ts_ms\n";

/// One pair dump line in CSV, in the column order of [`PAIR_CSV_HEADER`].
pub fn write_pair_csv(out: &mut Vec<u8>, k: &PairKey, c: &PairCounters) {
    let ints = [
        k.user_id,
        k.author_id,
        c.counts.exposures,
        c.counts.clicks,
        c.counts.watches,
    ];
    for v in ints {
        write_u64(out, v);
        out.push(b',');
    }
    write_u64(out, c.counts.follows);
    out.push(b',');
    write_u64(out, c.counts.gifts);
    out.push(b',');
    write_f64(out, c.watch_sec_total);
    out.push(b',');
    write_f64(out, c.gift_total);
    out.push(b',');
    write_i64(out, c.first_ts_ms);
    out.push(b',');
    write_i64(out, c.last_ts_ms);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;
    use crate::Rewards;

    #[test]
    fn pair_line_matches_the_contract_example() -> TestResult {
        let mut c = PairCounters::default();
        c.apply(
            1699990000000,
            &Rewards {
                click: 1.0,
                watch: 10.0,
                follow: 0.0,
                gift: 0.0,
            },
        );
        c.apply(
            1699995000000,
            &Rewards {
                click: 1.0,
                watch: 18.0,
                follow: 0.0,
                gift: 0.0,
            },
        );
        c.apply(1699996000000, &Rewards::default());
        c.apply(1699997000000, &Rewards::default());
        c.apply(
            1700000000000,
            &Rewards {
                click: 1.0,
                watch: 12.5,
                follow: 0.0,
                gift: 0.0,
            },
        );
        let mut out = Vec::new();
        write_pair_jsonl(&mut out, &PairKey::new(1, 3), &c);
        assert_eq!(
            String::from_utf8(out)?,
            "{\"user_id\":1,\"author_id\":3,\"exposures\":5,\"clicks\":3,\"watches\":3,\"follows\":0,\"gifts\":0,\
             \"watch_sec_total\":40.5,\"gift_total\":0,\"first_ts_ms\":1699990000000,\"last_ts_ms\":1700000000000}\n"
        );
        Ok(())
    }

    #[test]
    fn numbers_round_trip_through_a_json_parser() -> TestResult {
        for v in [0.0, 1.0, 12.5, 0.1 + 0.2, 1e-7, 123456789.125, 5e20] {
            let mut out = Vec::new();
            write_f64(&mut out, v);
            let back: f64 = serde_json::from_slice(&out)?;
            assert_eq!(
                back.to_bits(),
                v.to_bits(),
                "{}",
                String::from_utf8_lossy(&out)
            );
        }
        Ok(())
    }
}
