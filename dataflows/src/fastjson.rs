//! A schema-specific fast path for the two input line formats.
//!
//! It accepts a strict subset of JSON: one flat object whose keys are exactly
//! the contract's fields (no escapes, each at most once), with plain integers,
//! `null`, integer arrays, printable-ASCII strings without escapes, and (for
//! `value`) non-negative decimal numbers. On that subset it yields exactly what
//! `serde_json` yields. Anything else (unknown keys, escapes, floats where an
//! integer is expected, overflow, syntax errors, ...) returns `None` and the
//! caller falls back to `serde_json`, which then either accepts the line with
//! the same result or explains precisely what is wrong with it. So the fast
//! path changes speed, never results; `tests::fast_path_agrees_with_serde`
//! checks that on random and mutated lines.

use std::borrow::Cow;

use crate::wire::{ActionWire, ExposureWire};
use rliv_contract::Feats;

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    #[inline]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn eat(&mut self, c: u8) -> Option<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    /// A string of printable ASCII without escapes (the quotes excluded)
    /// for an action name: the contract's four names need no UTF-8 check.
    #[inline]
    fn action_name(&mut self) -> Option<&'a str> {
        Some(match self.plain_bytes()? {
            b"click" => "click",
            b"watch" => "watch",
            b"follow" => "follow",
            b"gift" => "gift",
            other => std::str::from_utf8(other).ok()?,
        })
    }

    /// [`Scan::action_name`] as bytes: printable ASCII is valid UTF-8, and the
    /// keys are compared as bytes (no validation pass per key).
    #[inline]
    fn plain_bytes(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            match self.peek()? {
                b'"' => break,
                b'\\' => return None,
                0x20..=0x7E => self.i += 1,
                _ => return None,
            }
        }
        let s = &self.b[start..self.i];
        self.i += 1;
        Some(s)
    }

    /// An unsigned JSON integer (no sign, fraction or exponent; no leading zero).
    #[inline]
    fn uint(&mut self) -> Option<u64> {
        let start = self.i;
        let mut v: u64 = 0;
        while let Some(&c) = self.b.get(self.i) {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            // Wraps only past 19 digits, which are checked again below.
            v = v.wrapping_mul(10).wrapping_add(u64::from(d));
            self.i += 1;
        }
        let digits = &self.b[start..self.i];
        if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
            return None;
        }
        if digits.len() > 19 {
            v = 0;
            for &c in digits {
                v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
            }
        }
        // A fraction or exponent makes it a float: let serde_json judge it.
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(v)
    }

    #[inline]
    fn int(&mut self) -> Option<i64> {
        if self.eat(b'-').is_some() {
            let v = self.uint()?;
            if v > i64::MAX as u64 + 1 {
                return None;
            }
            Some((v as i64).wrapping_neg())
        } else {
            i64::try_from(self.uint()?).ok()
        }
    }

    #[inline]
    fn null(&mut self) -> Option<()> {
        if self.b.get(self.i..self.i + 4) == Some(b"null") {
            self.i += 4;
            Some(())
        } else {
            None
        }
    }

    fn opt_u32(&mut self) -> Option<Option<u32>> {
        if self.peek() == Some(b'n') {
            self.null()?;
            return Some(None);
        }
        Some(Some(u32::try_from(self.uint()?).ok()?))
    }

    fn opt_feats(&mut self) -> Option<Option<Feats>> {
        // Compact `[1,2,3]` first; anything else is read again by the
        // general walk below.
        let start = self.i;
        if let Some(f) = self.compact_feats() {
            return Some(Some(f));
        }
        self.i = start;
        if self.peek() == Some(b'n') {
            self.null()?;
            return Some(None);
        }
        self.eat(b'[')?;
        let mut v = Feats::new();
        self.ws();
        if self.eat(b']').is_some() {
            return Some(Some(v));
        }
        loop {
            self.ws();
            v.push(u32::try_from(self.uint()?).ok()?);
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(Some(v));
                }
                _ => return None,
            }
        }
    }

    /// An integer array without whitespace, or `None`.
    #[inline]
    fn compact_feats(&mut self) -> Option<Feats> {
        self.eat(b'[')?;
        let mut v = Feats::new();
        if self.eat(b']').is_some() {
            return Some(v);
        }
        loop {
            v.push(u32::try_from(self.uint()?).ok()?);
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(v);
                }
                _ => return None,
            }
        }
    }

    /// A non-negative JSON number as f64 (negative values go to serde_json,
    /// which also reports them; it also has its own rules for `-0`).
    fn opt_f64(&mut self) -> Option<Option<f64>> {
        if self.peek() == Some(b'n') {
            self.null()?;
            return Some(None);
        }
        let start = self.i;
        let digits = |s: &mut Self| {
            let st = s.i;
            while let Some(b'0'..=b'9') = s.peek() {
                s.i += 1;
            }
            s.i - st
        };
        let int_len = digits(self);
        if int_len == 0 || (int_len > 1 && self.b[start] == b'0') {
            return None;
        }
        if self.eat(b'.').is_some() && digits(self) == 0 {
            return None;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if digits(self) == 0 {
                return None;
            }
        }
        let text = std::str::from_utf8(&self.b[start..self.i]).ok()?;
        // Rust's parser is correctly rounded, as is serde_json's
        // `float_roundtrip`; out-of-range values are left to serde_json.
        let v: f64 = text.parse().ok()?;
        v.is_finite().then_some(Some(v))
    }

    /// Walks `{ "key": value, ... }`, calling `field` with the field number
    /// of each key in `keys` (each written as `"name":`); `field` parses the
    /// value and returns `None` to give up, as does a key not in `keys`. The
    /// keys are expected in the table's order first: a line in that layout
    /// then costs one comparison per key instead of a scan of it.
    fn object(
        &mut self,
        keys: &[Key],
        mut field: impl FnMut(&mut Self, usize) -> Option<()>,
    ) -> Option<()> {
        self.ws();
        self.eat(b'{')?;
        self.ws();
        let mut next = 0;
        if self.eat(b'}').is_none() {
            loop {
                self.ws();
                let rest = &self.b[self.i..];
                let at = match keys.get(next) {
                    Some(k) if k.starts(rest) => {
                        self.i += k.len;
                        next
                    }
                    _ => {
                        let name = self.plain_bytes()?;
                        self.ws();
                        self.eat(b':')?;
                        keys.iter().position(|k| k.name() == name)?
                    }
                };
                next = at + 1;
                self.ws();
                field(self, keys.get(at)?.field)?;
                self.ws();
                match self.peek()? {
                    b',' => self.i += 1,
                    b'}' => {
                        self.i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.ws();
        (self.i == self.b.len()).then_some(())
    }
}

/// The fields both records have, and which of all fields were seen (each
/// at most once: serde_json rejects a repeated field).
#[derive(Default)]
struct Common {
    seen: u32,
    request_id: u64,
    user_id: u64,
    item_id: u64,
    ts_ms: i64,
}

/// Fields 0-3 are the common ones; 4 is required too (author_id, action).
const REQUIRED: u32 = 0b1_1111;

/// A key as it is written before its value (`"name":`, at most 15 bytes,
/// so that a separator can go before it), with the field number the parser
/// gives it (0-3 are the common fields, see [`Common::field`]).
#[derive(Clone, Copy)]
struct Key {
    /// `"name":`, without any separator.
    text: &'static [u8],
    /// The bytes to match (`text`, or a separator and `text`) as a
    /// little-endian word, zero-padded, and the mask of those bytes: a line
    /// starts with the key when its next 16 bytes, masked, equal it.
    word: u128,
    mask: u128,
    len: usize,
    field: usize,
}

impl Key {
    const fn new(text: &'static [u8], field: usize) -> Key {
        let mut word = 0u128;
        let mut i = 0;
        while i < text.len() {
            word |= (text[i] as u128) << (8 * i);
            i += 1;
        }
        let mask = if text.len() >= 16 {
            u128::MAX
        } else {
            (1u128 << (8 * text.len())) - 1
        };
        Key {
            text,
            word,
            mask,
            len: text.len(),
            field,
        }
    }

    /// The key with byte `sep` before it (a compact line's `{` or `,`).
    const fn after(self, sep: u8) -> Key {
        // Evaluated at compile time: a key too long to take a separator
        // fails the build.
        assert!(self.len < 16);
        Key {
            word: self.word << 8 | sep as u128,
            mask: self.mask << 8 | 0xFF,
            len: self.len + 1,
            ..self
        }
    }

    /// Whether `rest` starts with this key: one masked compare of 16 bytes
    /// (a line has them after every key but a short last one).
    #[inline]
    fn starts(&self, rest: &[u8]) -> bool {
        let head = match rest.first_chunk::<16>() {
            Some(head) => *head,
            None if rest.len() >= self.len => {
                let mut head = [0u8; 16];
                head[..rest.len()].copy_from_slice(rest);
                head
            }
            None => return false,
        };
        u128::from_le_bytes(head) & self.mask == self.word
    }

    /// The key's name, without the quotes and the colon.
    fn name(&self) -> &'static [u8] {
        match self.text.get(1..self.len.saturating_sub(2)) {
            Some(name) => name,
            None => &[],
        }
    }
}

/// The keys of each record in their canonical order (the generator's and the
/// contract's).
const EXPOSURE_KEYS: [Key; 8] = [
    Key::new(b"\"request_id\":", 0),
    Key::new(b"\"user_id\":", 1),
    Key::new(b"\"item_id\":", 2),
    Key::new(b"\"author_id\":", 4),
    Key::new(b"\"ts_ms\":", 3),
    Key::new(b"\"position\":", 5),
    Key::new(b"\"user_feats\":", 6),
    Key::new(b"\"item_feats\":", 7),
];
const ACTION_KEYS: [Key; 6] = [
    Key::new(b"\"request_id\":", 0),
    Key::new(b"\"user_id\":", 1),
    Key::new(b"\"item_id\":", 2),
    Key::new(b"\"ts_ms\":", 3),
    Key::new(b"\"action\":", 4),
    Key::new(b"\"value\":", 5),
];

/// The compact canonical layouts (no whitespace, every key in the table's
/// order): each key literal includes the separator before it, so a line in
/// that layout costs one masked compare per key and no dispatch. The
/// exposure's three optional fields are present (possibly `null`); the
/// action's `value` may be absent.
const EXPOSURE_COMPACT: [Key; 8] = compact(EXPOSURE_KEYS);
const ACTION_COMPACT: [Key; 6] = compact(ACTION_KEYS);

/// `keys` as a compact line writes them: `{` before the first, `,` before
/// each other.
const fn compact<const N: usize>(mut keys: [Key; N]) -> [Key; N] {
    let mut i = 0;
    while i < N {
        keys[i] = keys[i].after(if i == 0 { b'{' } else { b',' });
        i += 1;
    }
    keys
}

impl Scan<'_> {
    /// Consumes `key` if the line continues with it.
    #[inline(always)]
    fn lit(&mut self, key: &Key) -> Option<()> {
        let rest = self.b.get(self.i..)?;
        if key.starts(rest) {
            self.i += key.len;
            Some(())
        } else {
            None
        }
    }

    /// The closing brace, which must end the line.
    #[inline]
    fn close(&mut self) -> Option<()> {
        self.eat(b'}')?;
        (self.i == self.b.len()).then_some(())
    }
}

/// The three ids both records start with in the compact layout.
#[inline(always)]
fn compact_ids(s: &mut Scan<'_>, k: &[Key]) -> Option<(u64, u64, u64)> {
    s.lit(k.first()?)?;
    let request_id = s.uint()?;
    s.lit(k.get(1)?)?;
    let user_id = s.uint()?;
    s.lit(k.get(2)?)?;
    Some((request_id, user_id, s.uint()?))
}

/// An exposure in the compact canonical layout, or `None` (the caller then
/// tries the general walk).
fn exposure_compact(line: &[u8]) -> Option<ExposureWire> {
    let k = &EXPOSURE_COMPACT;
    let mut s = Scan { b: line, i: 0 };
    let (request_id, user_id, item_id) = compact_ids(&mut s, k)?;
    s.lit(&k[3])?;
    let author_id = s.uint()?;
    s.lit(&k[4])?;
    let ts_ms = s.int()?;
    s.lit(&k[5])?;
    let position = s.opt_u32()?;
    s.lit(&k[6])?;
    let user_feats = s.opt_feats()?;
    s.lit(&k[7])?;
    let item_feats = s.opt_feats()?;
    s.close()?;
    Some(ExposureWire {
        request_id,
        user_id,
        item_id,
        author_id,
        ts_ms,
        position,
        user_feats,
        item_feats,
    })
}

/// An action in the compact canonical layout, or `None`.
fn action_compact(line: &[u8]) -> Option<ActionWire<'_>> {
    let k = &ACTION_COMPACT;
    let mut s = Scan { b: line, i: 0 };
    let (request_id, user_id, item_id) = compact_ids(&mut s, k)?;
    s.lit(&k[3])?;
    let ts_ms = s.int()?;
    s.lit(&k[4])?;
    let action = s.action_name()?;
    let value = if s.peek() == Some(b',') {
        s.lit(&k[5])?;
        s.opt_f64()?
    } else {
        None
    };
    s.close()?;
    Some(ActionWire {
        request_id,
        user_id,
        item_id,
        ts_ms,
        action: Cow::Borrowed(action),
        value,
    })
}

impl Common {
    /// Marks field `bit` seen; a repeated field gives up.
    fn once(&mut self, bit: u32) -> Option<()> {
        if self.seen & (1 << bit) != 0 {
            return None;
        }
        self.seen |= 1 << bit;
        Some(())
    }

    /// Parses common field `at` (0-3): `Some(true)`;
    /// `Some(false)`: not a common field; `None`: give up.
    fn field(&mut self, s: &mut Scan<'_>, at: usize) -> Option<bool> {
        match at {
            0 => {
                self.once(0)?;
                self.request_id = s.uint()?;
            }
            1 => {
                self.once(1)?;
                self.user_id = s.uint()?;
            }
            2 => {
                self.once(2)?;
                self.item_id = s.uint()?;
            }
            3 => {
                self.once(3)?;
                self.ts_ms = s.int()?;
            }
            _ => return Some(false),
        }
        Some(true)
    }

    fn complete(&self) -> Option<()> {
        (self.seen & REQUIRED == REQUIRED).then_some(())
    }
}

pub(crate) fn exposure(line: &[u8]) -> Option<ExposureWire> {
    if let Some(w) = exposure_compact(line) {
        return Some(w);
    }
    let mut s = Scan { b: line, i: 0 };
    let mut c = Common::default();
    let mut author_id = 0;
    let (mut position, mut user_feats, mut item_feats) = (None, None, None);
    s.object(&EXPOSURE_KEYS, |s, at| {
        if c.field(s, at)? {
            return Some(());
        }
        match at {
            4 => {
                c.once(4)?;
                author_id = s.uint()?;
            }
            5 => {
                c.once(5)?;
                position = s.opt_u32()?;
            }
            6 => {
                c.once(6)?;
                user_feats = s.opt_feats()?;
            }
            7 => {
                c.once(7)?;
                item_feats = s.opt_feats()?;
            }
            _ => return None,
        }
        Some(())
    })?;
    c.complete()?;
    Some(ExposureWire {
        request_id: c.request_id,
        user_id: c.user_id,
        item_id: c.item_id,
        author_id,
        ts_ms: c.ts_ms,
        position,
        user_feats,
        item_feats,
    })
}

pub(crate) fn action(line: &[u8]) -> Option<ActionWire<'_>> {
    if let Some(w) = action_compact(line) {
        return Some(w);
    }
    let mut s = Scan { b: line, i: 0 };
    let mut c = Common::default();
    let (mut action, mut value) = ("", None);
    s.object(&ACTION_KEYS, |s, at| {
        if c.field(s, at)? {
            return Some(());
        }
        match at {
            4 => {
                c.once(4)?;
                action = s.action_name()?;
            }
            5 => {
                c.once(5)?;
                value = s.opt_f64()?;
            }
            _ => return None,
        }
        Some(())
    })?;
    c.complete()?;
    Some(ActionWire {
        request_id: c.request_id,
        user_id: c.user_id,
        item_id: c.item_id,
        ts_ms: c.ts_ms,
        action: Cow::Borrowed(action),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;
    use proptest::prelude::*;

    fn serde_exposure(line: &[u8]) -> Option<ExposureWire> {
        serde_json::from_slice(line).ok()
    }
    fn serde_action(line: &[u8]) -> Option<ActionWire<'_>> {
        serde_json::from_slice(line).ok()
    }

    #[test]
    fn canonical_lines_take_the_fast_path() -> TestResult {
        // The generator's and the contract's layouts must not fall back
        // (a fallback is correct but slow).
        let e = br#"{"request_id":1,"user_id":9,"item_id":18000001,"author_id":18,"ts_ms":1700000000814,"position":1,"user_feats":[7,1,1],"item_feats":[6,1]}"#;
        let w = exposure_compact(e).ok_or("the compact path declined")?;
        assert_eq!(
            (w.request_id, w.item_id, w.ts_ms),
            (1, 18_000_001, 1_700_000_000_814)
        );
        assert_eq!(w.user_feats.as_deref(), Some(&[7, 1, 1][..]));
        let a = br#"{"request_id":2,"user_id":226,"item_id":261000002,"ts_ms":1700000008946,"action":"watch","value":1.7}"#;
        let w = action_compact(a).ok_or("the compact path declined")?;
        assert_eq!((w.action.as_ref(), w.value), ("watch", Some(1.7)));
        let a = br#"{"request_id":2,"user_id":226,"item_id":261000002,"ts_ms":1700000009698,"action":"click"}"#;
        let w = action_compact(a).ok_or("the compact path declined")?;
        assert_eq!((w.action.as_ref(), w.value), ("click", None));
        // Spaced out: not compact, but still the fast path.
        let spaced = br#"{"request_id":1, "user_id":9,"item_id":18000001,"author_id":18,"ts_ms":1700000000814,"position":1,"user_feats":[7,1,1],"item_feats":[6,1]}"#;
        assert!(exposure_compact(spaced).is_none());
        assert_eq!(exposure(spaced).ok_or("the fast path declined")?.user_id, 9);
        let a = br#"{ "request_id" : 2 , "user_id":1,"item_id":3,"ts_ms":-5,"action":"click" }"#;
        assert_eq!(action(a).ok_or("the fast path declined")?.ts_ms, -5);
        Ok(())
    }

    #[test]
    fn unusual_lines_fall_back() -> TestResult {
        for line in [
            &br#"{"request_id":1,"user_id":1,"item_id":1,"author_id":1,"ts_ms":1,"extra":0}"#[..],
            br#"{"request_id":1,"request_id":2,"user_id":1,"item_id":1,"author_id":1,"ts_ms":1}"#,
            br#"{"request_id":1.0,"user_id":1,"item_id":1,"author_id":1,"ts_ms":1}"#,
            br#"{"request_id":01,"user_id":1,"item_id":1,"author_id":1,"ts_ms":1}"#,
            br#"{"request_id":18446744073709551616,"user_id":1,"item_id":1,"author_id":1,"ts_ms":1}"#,
            br#"{"request_id":1,"user_id":1,"item_id":1,"author_id":1}"#,
            br#"{"request_id":1,"user_id":1,"item_id":1,"author_id":1,"ts_ms":1} x"#,
        ] {
            assert!(exposure(line).is_none(), "{}", String::from_utf8_lossy(line));
        }
        for line in [
            &br#"{"request_id":1,"user_id":1,"item_id":1,"ts_ms":1,"action":"cl\u0069ck"}"#[..],
            br#"{"request_id":1,"user_id":1,"item_id":1,"ts_ms":1,"action":"watch","value":-0}"#,
            br#"{"request_id":1,"user_id":1,"item_id":1,"ts_ms":1,"action":"gift","value":1e999}"#,
        ] {
            assert!(action(line).is_none(), "{}", String::from_utf8_lossy(line));
        }
        Ok(())
    }

    fn same_exposure(a: &ExposureWire, b: &ExposureWire) -> bool {
        (
            a.request_id,
            a.user_id,
            a.item_id,
            a.author_id,
            a.ts_ms,
            a.position,
        ) == (
            b.request_id,
            b.user_id,
            b.item_id,
            b.author_id,
            b.ts_ms,
            b.position,
        ) && a.user_feats == b.user_feats
            && a.item_feats == b.item_feats
    }

    fn same_action(a: &ActionWire<'_>, b: &ActionWire<'_>) -> bool {
        (a.request_id, a.user_id, a.item_id, a.ts_ms)
            == (b.request_id, b.user_id, b.item_id, b.ts_ms)
            && a.action == b.action
            && a.value.map(f64::to_bits) == b.value.map(f64::to_bits)
    }

    /// Pieces that lines are assembled from: valid values, near misses and junk.
    fn value_text() -> impl Strategy<Value = String> {
        prop_oneof![
            (0u64..u64::MAX).prop_map(|v| v.to_string()),
            (i64::MIN..0).prop_map(|v| v.to_string()),
            Just("18446744073709551616".to_string()),
            Just("4294967296".to_string()),
            Just("0".to_string()),
            Just("00".to_string()),
            Just("-0".to_string()),
            Just("null".to_string()),
            Just("true".to_string()),
            Just("\"click\"".to_string()),
            Just("\"watch\"".to_string()),
            Just("\"wa\\u0074ch\"".to_string()),
            Just("\"\"".to_string()),
            any::<f64>().prop_map(|v| format!("{v:?}")),
            (0.0f64..1e6).prop_map(|v| format!("{v}")),
            (0.0f64..1e6).prop_map(|v| format!("{v:e}")),
            Just("1.5E+3".to_string()),
            Just("1.".to_string()),
            Just(".5".to_string()),
            proptest::collection::vec(0u64..5_000_000_000, 0..4).prop_map(|v| format!("{v:?}")),
            Just("[1,]".to_string()),
            Just("[ 1 , 2 ]".to_string()),
            Just("{}".to_string()),
        ]
    }

    fn line() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just("request_id"),
            Just("user_id"),
            Just("item_id"),
            Just("author_id"),
            Just("ts_ms"),
            Just("position"),
            Just("user_feats"),
            Just("item_feats"),
            Just("action"),
            Just("value"),
            Just("other"),
        ];
        let sep = prop_oneof![Just(""), Just(" "), Just("\t"), Just("\r")];
        proptest::collection::vec((key, value_text(), sep), 0..10).prop_map(|fields| {
            let body: Vec<String> = fields
                .into_iter()
                .map(|(k, v, s)| format!("{s}\"{k}\"{s}:{s}{v}{s}"))
                .collect();
            format!("{{{}}}", body.join(","))
        })
    }

    /// Complete records of either kind with one free value each, so that
    /// lines the fast path accepts are frequent.
    fn record_like() -> impl Strategy<Value = String> {
        (
            0u64..1000,
            0u64..1000,
            -5i64..5_000_000,
            prop_oneof![Just("click"), Just("watch"), Just("gift"), Just("x")],
            value_text(),
            value_text(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(r, u, t, a, v, f, is_action, compact)| {
                // Compact lines take `exposure_compact` / `action_compact`.
                match (is_action, compact) {
                    (true, false) => format!(
                        r#"{{"request_id":{r},"user_id":{u},"item_id":{r},"ts_ms":{t},"action":"{a}","value":{v}}}"#
                    ),
                    (true, true) => format!(
                        r#"{{"request_id":{r},"user_id":{u},"item_id":{r},"ts_ms":{t},"action":"{a}"}}"#
                    ),
                    (false, false) => format!(
                        r#"{{"request_id":{r},"user_id":{u},"item_id":{r},"author_id":{u},"ts_ms":{t},"position":{v},"user_feats":{f},"item_feats":[1, 2]}}"#
                    ),
                    (false, true) => format!(
                        r#"{{"request_id":{r},"user_id":{u},"item_id":{r},"author_id":{u},"ts_ms":{t},"position":{v},"user_feats":{f},"item_feats":[1,2]}}"#
                    ),
                }
            })
    }

    #[test]
    fn fast_path_agrees_with_serde() -> TestResult {
        // The line as is, truncated, and with one byte changed. Whenever the
        // fast path accepts a line, serde_json must accept it with the same
        // values; the counts make sure the property is not vacuous.
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(4000));
        let fast_hits = std::cell::Cell::new(0usize);
        let compact_hits = std::cell::Cell::new(0usize);
        let strategy = (
            prop_oneof![line(), record_like()],
            0usize..400,
            any::<(usize, u8)>(),
        );
        runner.run(&strategy, |(l, cut, flip)| {
            let mut mutated = l.clone().into_bytes();
            if !mutated.is_empty() {
                let at = flip.0 % mutated.len();
                mutated[at] = flip.1;
            }
            let cut = &l.as_bytes()[..cut.min(l.len())];
            for bytes in [l.as_bytes(), cut, &mutated[..]] {
                let compact = exposure_compact(bytes).is_some() || action_compact(bytes).is_some();
                compact_hits.set(compact_hits.get() + usize::from(compact));
                if let Some(fast) = exposure(bytes) {
                    fast_hits.set(fast_hits.get() + 1);
                    let slow = serde_exposure(bytes);
                    prop_assert!(
                        slow.as_ref().is_some_and(|s| same_exposure(&fast, s)),
                        "exposure fast path disagrees on {}",
                        String::from_utf8_lossy(bytes)
                    );
                }
                if let Some(fast) = action(bytes) {
                    fast_hits.set(fast_hits.get() + 1);
                    let slow = serde_action(bytes);
                    prop_assert!(
                        slow.as_ref().is_some_and(|s| same_action(&fast, s)),
                        "action fast path disagrees on {}",
                        String::from_utf8_lossy(bytes)
                    );
                }
            }
            Ok(())
        })?;
        assert!(
            fast_hits.get() > 200 && compact_hits.get() > 100,
            "only {} lines took the fast path, {} the compact one",
            fast_hits.get(),
            compact_hits.get()
        );
        Ok(())
    }
}
