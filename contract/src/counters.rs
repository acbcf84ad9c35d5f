//! The dynamic features `f_ua` of one (user, author) pair and their compact
//! on-disk encoding.

use crate::DecodeError;

/// The pair key: (user_id, author_id). Encoded big-endian so that RocksDB's
/// byte order is the contract's dump order and a user's pairs are one prefix.
#[derive(
    Copy,
    Clone,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct PairKey {
    pub user_id: u64,
    pub author_id: u64,
}

impl PairKey {
    pub const ENCODED_LEN: usize = 16;

    pub fn new(user_id: u64, author_id: u64) -> Self {
        PairKey { user_id, author_id }
    }

    pub fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.user_id.to_be_bytes());
        out[8..].copy_from_slice(&self.author_id.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() != Self::ENCODED_LEN {
            return Err(DecodeError(format!(
                "pair key has {} bytes, expected 16",
                bytes.len()
            )));
        }
        let mut u = [0u8; 8];
        let mut a = [0u8; 8];
        u.copy_from_slice(&bytes[..8]);
        a.copy_from_slice(&bytes[8..]);
        Ok(PairKey::new(u64::from_be_bytes(u), u64::from_be_bytes(a)))
    }

    /// A stable 64-bit hash used to shard pairs over workers.
    pub fn shard_hash(&self) -> u64 {
        mix64(self.user_id ^ mix64(self.author_id.wrapping_add(0x9E37_79B9_7F4A_7C15)))
    }

    /// The process that owns this pair when the job runs on `processes`
    /// processes: [`user_process`] of its user.
    pub fn process(&self, processes: usize) -> usize {
        user_process(self.user_id, processes)
    }
}

/// The process that owns every pair of `user_id` in a job on `processes`
/// processes (cluster mode shards the pair state by user, so that a user's
/// pairs, `rliv dump --user` and a /rank request's lookups are on one shard).
/// Independent of the pair's worker within the process
/// ([`PairKey::shard_hash`]). 0 when `processes` is 0 or 1.
pub fn user_process(user_id: u64, processes: usize) -> usize {
    if processes <= 1 {
        return 0;
    }
    (mix64(user_id ^ 0xD1B5_4A32_D192_ED03) % processes as u64) as usize
}

/// SplitMix64 finalizer: a cheap, well-mixing, stable hash of a u64.
pub fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The five interaction counters that make up the ASA state (`state`,
/// `next_state` in a transition).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct StateCounts {
    pub exposures: u64,
    pub clicks: u64,
    pub watches: u64,
    pub follows: u64,
    pub gifts: u64,
}

/// The pair's state as a transition carries it (`state`, `next_state`): the
/// five contract counters, plus the additive fields the contract allows
/// (totals and the first and last closed exposure times; 0 while the pair
/// has no exposure). Readers of older transitions get 0 for the extras.
#[derive(Copy, Clone, Debug, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct PairSnapshot {
    pub exposures: u64,
    pub clicks: u64,
    pub watches: u64,
    pub follows: u64,
    pub gifts: u64,
    #[serde(default)]
    pub watch_sec_total: f64,
    #[serde(default)]
    pub gift_total: f64,
    #[serde(default)]
    pub first_ts_ms: i64,
    #[serde(default)]
    pub last_ts_ms: i64,
}

impl PairSnapshot {
    /// The five contract counters.
    pub fn counts(&self) -> StateCounts {
        StateCounts {
            exposures: self.exposures,
            clicks: self.clicks,
            watches: self.watches,
            follows: self.follows,
            gifts: self.gifts,
        }
    }
}

impl From<&PairCounters> for PairSnapshot {
    fn from(p: &PairCounters) -> Self {
        let c = &p.counts;
        PairSnapshot {
            exposures: c.exposures,
            clicks: c.clicks,
            watches: c.watches,
            follows: c.follows,
            gifts: c.gifts,
            watch_sec_total: p.watch_sec_total,
            gift_total: p.gift_total,
            first_ts_ms: p.first_ts_ms,
            last_ts_ms: p.last_ts_ms,
        }
    }
}

/// The rewards of one labeled interaction.
#[derive(Copy, Clone, Debug, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Rewards {
    pub click: f64,
    pub watch: f64,
    pub follow: f64,
    pub gift: f64,
}

/// Everything the job keeps for one pair: the contract's counters, totals and
/// first/last exposure times.
#[derive(Copy, Clone, Debug, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct PairCounters {
    pub counts: StateCounts,
    pub watch_sec_total: f64,
    pub gift_total: f64,
    pub first_ts_ms: i64,
    pub last_ts_ms: i64,
}

impl PairCounters {
    /// Applies one closed interaction at `ts_ms` with `rewards` (the paper's
    /// Eq. 4 for the counters, plus the totals and times).
    pub fn apply(&mut self, ts_ms: i64, r: &Rewards) {
        let c = &mut self.counts;
        if c.exposures == 0 {
            self.first_ts_ms = ts_ms;
        }
        c.exposures += 1;
        c.clicks += u64::from(r.click > 0.0);
        c.watches += u64::from(r.watch > 0.0);
        c.follows += u64::from(r.follow > 0.0);
        c.gifts += u64::from(r.gift > 0.0);
        self.watch_sec_total += r.watch;
        self.gift_total += r.gift;
        self.last_ts_ms = ts_ms;
    }

    /// Appends the compact value encoding to `out`.
    ///
    /// Layout: a flags byte, five LEB128 counters, zigzag `first_ts_ms`,
    /// `last_ts_ms - first_ts_ms`, then each total either absent (zero), as
    /// LEB128 thousandths when that round-trips bit-exactly, or as 8 raw bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (wf, wv) = encode_total(self.watch_sec_total);
        let (gf, gv) = encode_total(self.gift_total);
        out.push(VERSION << 4 | wf << 2 | gf);
        let c = &self.counts;
        for v in [c.exposures, c.clicks, c.watches, c.follows, c.gifts] {
            put_varint(out, v);
        }
        put_varint(out, zigzag(self.first_ts_ms));
        put_varint(
            out,
            (self.last_ts_ms as i128 - self.first_ts_ms as i128).clamp(0, u64::MAX as i128) as u64,
        );
        put_total(out, wf, wv);
        put_total(out, gf, gv);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(24);
        self.encode(&mut v);
        v
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader { bytes, pos: 0 };
        let flags = r.byte()?;
        if flags >> 4 != VERSION {
            return Err(DecodeError(format!(
                "pair value version {} (expected {VERSION})",
                flags >> 4
            )));
        }
        let counts = StateCounts {
            exposures: r.varint()?,
            clicks: r.varint()?,
            watches: r.varint()?,
            follows: r.varint()?,
            gifts: r.varint()?,
        };
        let first_ts_ms = unzigzag(r.varint()?);
        let span = r.varint()?;
        let watch_sec_total = r.total((flags >> 2) & 3)?;
        let gift_total = r.total(flags & 3)?;
        if r.pos != bytes.len() {
            return Err(DecodeError(format!(
                "pair value has {} trailing bytes",
                bytes.len() - r.pos
            )));
        }
        Ok(PairCounters {
            counts,
            watch_sec_total,
            gift_total,
            first_ts_ms,
            last_ts_ms: first_ts_ms.wrapping_add(span as i64),
        })
    }
}

const VERSION: u8 = 1;
const TOTAL_ZERO: u8 = 0;
const TOTAL_MILLIS: u8 = 1;
const TOTAL_RAW: u8 = 2;

fn encode_total(v: f64) -> (u8, u64) {
    if v == 0.0 && v.is_sign_positive() {
        return (TOTAL_ZERO, 0);
    }
    let m = (v * 1000.0).round();
    if m.is_sign_positive() && (0.0..9.0e15).contains(&m) && (m / 1000.0).to_bits() == v.to_bits() {
        return (TOTAL_MILLIS, m as u64);
    }
    (TOTAL_RAW, v.to_bits())
}

fn put_total(out: &mut Vec<u8>, flag: u8, v: u64) {
    match flag {
        TOTAL_MILLIS => put_varint(out, v),
        TOTAL_RAW => out.extend_from_slice(&v.to_le_bytes()),
        _ => {}
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// LEB128 unsigned varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or_else(|| DecodeError("pair value truncated".into()))?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            if shift == 63 && b > 1 {
                return Err(DecodeError("varint overflows u64".into()));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError("varint too long".into()))
    }

    fn total(&mut self, flag: u8) -> Result<f64, DecodeError> {
        match flag {
            TOTAL_ZERO => Ok(0.0),
            TOTAL_MILLIS => Ok(self.varint()? as f64 / 1000.0),
            TOTAL_RAW => {
                let end = self.pos + 8;
                let raw = self
                    .bytes
                    .get(self.pos..end)
                    .ok_or_else(|| DecodeError("pair total truncated".into()))?;
                self.pos = end;
                let mut b = [0u8; 8];
                b.copy_from_slice(raw);
                Ok(f64::from_bits(u64::from_le_bytes(b)))
            }
            other => Err(DecodeError(format!("unknown total encoding {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;
    use proptest::prelude::*;

    #[test]
    fn key_order_is_user_then_author() -> TestResult {
        let a = PairKey::new(1, u64::MAX).encode();
        let b = PairKey::new(2, 0).encode();
        assert!(a < b);
        assert_eq!(PairKey::decode(&a)?, PairKey::new(1, u64::MAX));
        Ok(())
    }

    #[test]
    fn typical_value_is_small() -> TestResult {
        let mut c = PairCounters::default();
        c.apply(
            1_700_000_000_000,
            &Rewards {
                click: 1.0,
                watch: 28.5,
                follow: 0.0,
                gift: 0.0,
            },
        );
        c.apply(1_700_000_600_000, &Rewards::default());
        let bytes = c.to_bytes();
        assert!(bytes.len() <= 20, "{} bytes", bytes.len());
        assert_eq!(PairCounters::decode(&bytes)?, c);
        Ok(())
    }

    #[test]
    fn truncated_value_is_an_error_not_a_panic() -> TestResult {
        let mut c = PairCounters::default();
        c.apply(
            5,
            &Rewards {
                click: 1.0,
                watch: 0.1 + 0.2,
                follow: 1.0,
                gift: 3.0,
            },
        );
        let bytes = c.to_bytes();
        for n in 0..bytes.len() {
            assert!(
                PairCounters::decode(&bytes[..n]).is_err(),
                "prefix of {n} bytes decoded"
            );
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn encoding_round_trips_bit_exactly(
            counts in proptest::array::uniform5(any::<u64>()),
            w in any::<f64>(), g in any::<f64>(),
            first in any::<i64>(), span in 0i64..1_000_000_000_000,
        ) {
            let c = PairCounters {
                counts: StateCounts { exposures: counts[0], clicks: counts[1], watches: counts[2], follows: counts[3], gifts: counts[4] },
                watch_sec_total: w, gift_total: g,
                first_ts_ms: first, last_ts_ms: first.saturating_add(span),
            };
            let d = PairCounters::decode(&c.to_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(d.counts, c.counts);
            prop_assert_eq!(d.watch_sec_total.to_bits(), w.to_bits());
            prop_assert_eq!(d.gift_total.to_bits(), g.to_bits());
            prop_assert_eq!(d.first_ts_ms, c.first_ts_ms);
            prop_assert_eq!(d.last_ts_ms, c.last_ts_ms);
        }
    }
}
