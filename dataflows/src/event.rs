//! Input events of the contract (exposures, actions), their validation, and
//! the labeled interactions and transitions the job produces.

use rliv_state::{mix64, PairKey, Rewards};

pub use rliv_contract::{Feats, Transition};
use serde::{Deserialize, Serialize};

use crate::metrics::Reason;
use crate::wire::{ActionWire, ExposureWire};

/// Where a record came from: an index into the job's file table and a 1-based
/// line number. Carried so every dead letter can say `file:line`.
#[derive(
    Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Origin {
    pub file: u32,
    pub line: u64,
}

/// The two input streams. Each has its own event-time progress.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Source {
    Exposures = 0,
    Actions = 1,
}

impl Source {
    pub const ALL: [Source; 2] = [Source::Exposures, Source::Actions];
    pub fn name(self) -> &'static str {
        match self {
            Source::Exposures => "exposures",
            Source::Actions => "actions",
        }
    }
}

/// One item shown to one user in one request (contract "Exposure").
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Exposure {
    pub request_id: u64,
    pub item_id: u64,
    pub ts_ms: i64,
    pub user_id: u64,
    pub author_id: u64,
    pub position: u32,
    pub user_feats: Feats,
    pub item_feats: Feats,
    pub origin: Origin,
}

impl Exposure {
    pub fn key(&self) -> (u64, u64) {
        (self.request_id, self.item_id)
    }
    pub fn pair(&self) -> PairKey {
        PairKey::new(self.user_id, self.author_id)
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ActionKind {
    Click = 0,
    Watch = 1,
    Follow = 2,
    Gift = 3,
}

impl ActionKind {
    pub fn parse(s: &str) -> Option<ActionKind> {
        Some(match s {
            "click" => ActionKind::Click,
            "watch" => ActionKind::Watch,
            "follow" => ActionKind::Follow,
            "gift" => ActionKind::Gift,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        ["click", "watch", "follow", "gift"][self as usize]
    }
}

/// Delayed feedback on one exposure (contract "Action").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub request_id: u64,
    pub item_id: u64,
    pub ts_ms: i64,
    pub kind: ActionKind,
    pub value: f64,
    pub user_id: u64,
    pub origin: Origin,
}

impl Action {
    pub fn key(&self) -> (u64, u64) {
        (self.request_id, self.item_id)
    }
    /// The contract's duplicate identity within one exposure.
    pub fn identity(&self) -> (i64, ActionKind, u64) {
        (self.ts_ms, self.kind, self.value.to_bits())
    }
    /// A total order used to process actions deterministically.
    pub fn sort_key(&self) -> (u64, u64, i64, ActionKind, u64, u64, Origin) {
        (
            self.request_id,
            self.item_id,
            self.ts_ms,
            self.kind,
            self.value.to_bits(),
            self.user_id,
            self.origin,
        )
    }
}

/// Routing hash of an exposure identity `(request_id, item_id)`: the label
/// join is sharded by it.
pub fn exposure_route(request_id: u64, item_id: u64) -> u64 {
    mix64(request_id ^ mix64(item_id ^ 0x5851_F42D_4C95_7F2D))
}

/// A closed exposure with its rewards: exactly one per exposure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    pub exposure: Exposure,
    pub rewards: Rewards,
}

impl Interaction {
    /// The contract's order of a pair's interactions.
    pub fn order_key(&self) -> (PairKey, i64, u64, u64) {
        let e = &self.exposure;
        (e.pair(), e.ts_ms, e.request_id, e.item_id)
    }
}

/// Why an input line was rejected, with a human detail.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    pub reason: Reason,
    pub detail: String,
}

impl Rejection {
    fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

/// Largest accepted `watch`/`gift` value: keeps sums finite so every output
/// line stays valid JSON.
pub const MAX_VALUE: f64 = 1.0e12;

/// Parses and validates one exposure line.
pub fn parse_exposure(line: &[u8], origin: Origin) -> Result<Exposure, Rejection> {
    let wire = match crate::fastjson::exposure(line) {
        Some(w) => Ok(w),
        None => serde_json::from_slice::<ExposureWire>(line),
    };
    match wire {
        Ok(w) => Ok(Exposure {
            request_id: w.request_id,
            item_id: w.item_id,
            ts_ms: w.ts_ms,
            user_id: w.user_id,
            author_id: w.author_id,
            position: w.position.unwrap_or(0),
            user_feats: w.user_feats.unwrap_or_default(),
            item_feats: w.item_feats.unwrap_or_default(),
            origin,
        }),
        Err(e) => Err(classify(line, e, Source::Exposures)),
    }
}

/// Parses and validates one action line.
pub fn parse_action(line: &[u8], origin: Origin) -> Result<Action, Rejection> {
    let w = match crate::fastjson::action(line) {
        Some(w) => w,
        None => match serde_json::from_slice::<ActionWire<'_>>(line) {
            Ok(w) => w,
            Err(e) => return Err(classify(line, e, Source::Actions)),
        },
    };
    let Some(kind) = ActionKind::parse(&w.action) else {
        return Err(Rejection::new(
            Reason::UnknownAction,
            format!(
                "action {:?} is not one of click, watch, follow, gift",
                w.action
            ),
        ));
    };
    let value = w.value.unwrap_or(1.0);
    match kind {
        ActionKind::Watch if value < 0.0 => {
            return Err(Rejection::new(
                Reason::NegativeWatch,
                format!("watch value {value} < 0"),
            ))
        }
        ActionKind::Gift if value <= 0.0 => {
            return Err(Rejection::new(
                Reason::NonPositiveGift,
                format!("gift value {value} <= 0"),
            ))
        }
        _ => {}
    }
    if !value.is_finite() || value.abs() > MAX_VALUE {
        return Err(Rejection::new(
            Reason::OutOfRange,
            format!("value {value} exceeds the accepted maximum {MAX_VALUE:e}"),
        ));
    }
    Ok(Action {
        request_id: w.request_id,
        item_id: w.item_id,
        ts_ms: w.ts_ms,
        kind,
        value,
        user_id: w.user_id,
        origin,
    })
}

/// Slow path: explains precisely why a line did not deserialize.
fn classify(line: &[u8], err: serde_json::Error, source: Source) -> Rejection {
    let v: serde_json::Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(_) => return Rejection::new(Reason::MalformedJson, err.to_string()),
    };
    let Some(obj) = v.as_object() else {
        return Rejection::new(Reason::NotAnObject, "a line must be one JSON object");
    };
    let required: &[(&str, Kind)] = match source {
        Source::Exposures => &[
            ("request_id", Kind::U64),
            ("user_id", Kind::U64),
            ("item_id", Kind::U64),
            ("author_id", Kind::U64),
            ("ts_ms", Kind::I64),
        ],
        Source::Actions => &[
            ("request_id", Kind::U64),
            ("user_id", Kind::U64),
            ("item_id", Kind::U64),
            ("ts_ms", Kind::I64),
            ("action", Kind::Str),
        ],
    };
    let optional: &[(&str, Kind)] = match source {
        Source::Exposures => &[
            ("position", Kind::U32),
            ("user_feats", Kind::U32s),
            ("item_feats", Kind::U32s),
        ],
        Source::Actions => &[("value", Kind::F64)],
    };
    for (name, kind) in required {
        match obj.get(*name) {
            None => return Rejection::new(Reason::MissingField, format!("missing field `{name}`")),
            Some(v) => {
                if let Some(r) = check(name, v, *kind) {
                    return r;
                }
            }
        }
    }
    for (name, kind) in optional {
        if let Some(v) = obj.get(*name).filter(|v| !v.is_null()) {
            if let Some(r) = check(name, v, *kind) {
                return r;
            }
        }
    }
    Rejection::new(Reason::WrongType, err.to_string())
}

#[derive(Copy, Clone)]
enum Kind {
    U64,
    I64,
    U32,
    F64,
    Str,
    U32s,
}

fn check(name: &str, v: &serde_json::Value, kind: Kind) -> Option<Rejection> {
    use serde_json::Value;
    let wrong = |want: &str| {
        Some(Rejection::new(
            Reason::WrongType,
            format!("field `{name}`: expected {want}, got {}", type_name(v)),
        ))
    };
    let range = |want: &str| {
        Some(Rejection::new(
            Reason::OutOfRange,
            format!("field `{name}`: {v} is not {want}"),
        ))
    };
    match (kind, v) {
        (Kind::U64, Value::Number(n)) if n.is_u64() => None,
        (Kind::U64, Value::Number(n)) if n.is_i64() => range("an unsigned 64-bit id"),
        (Kind::U64, Value::Number(_)) => range("an unsigned 64-bit integer"),
        (Kind::U64, _) => wrong("an unsigned integer"),
        (Kind::I64, Value::Number(n)) if n.is_i64() => None,
        (Kind::I64, Value::Number(_)) => range("a signed 64-bit integer"),
        (Kind::I64, _) => wrong("an integer"),
        (Kind::U32, Value::Number(n)) if n.as_u64().is_some_and(|x| x <= u64::from(u32::MAX)) => {
            None
        }
        (Kind::U32, Value::Number(_)) => range("an unsigned 32-bit integer"),
        (Kind::U32, _) => wrong("an unsigned integer"),
        (Kind::F64, Value::Number(_)) => None,
        (Kind::F64, _) => wrong("a number"),
        (Kind::Str, Value::String(_)) => None,
        (Kind::Str, _) => wrong("a string"),
        (Kind::U32s, Value::Array(items)) => {
            for item in items {
                match item {
                    Value::Number(n) if n.as_u64().is_some_and(|x| x <= u64::from(u32::MAX)) => {}
                    Value::Number(_) => return range("a list of unsigned 32-bit integers"),
                    _ => return wrong("a list of unsigned integers"),
                }
            }
            None
        }
        (Kind::U32s, _) => wrong("a list of unsigned integers"),
    }
}

fn type_name(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    const O: Origin = Origin { file: 0, line: 1 };

    #[test]
    fn contract_example_exposure_parses_with_defaults() -> TestResult {
        let e = parse_exposure(
            br#"{"request_id":2,"user_id":10,"item_id":102,"author_id":7,"ts_ms":1700000600000,"extra":"ignored"}"#,
            O,
        )
        .map_err(|r| r.detail)?;
        assert_eq!(
            (e.request_id, e.item_id, e.user_id, e.author_id),
            (2, 102, 10, 7)
        );
        assert_eq!(e.position, 0);
        assert!(e.user_feats.is_empty() && e.item_feats.is_empty());
        Ok(())
    }

    #[test]
    fn every_invalid_contract_example_gets_its_reason() -> TestResult {
        let cases: &[(&str, Reason)] = &[
            (
                r#"{"request_id":1,"user_id":10,"item_id":100,"ts_ms":1700000001500}"#,
                Reason::MissingField,
            ),
            (
                r#"{"request_id":"one","user_id":10,"item_id":100,"ts_ms":1,"action":"click"}"#,
                Reason::WrongType,
            ),
            (
                r#"{"request_id":1,"user_id":10,"item_id":100,"ts_ms":1,"action":"watch","value":-3}"#,
                Reason::NegativeWatch,
            ),
            (
                r#"{"request_id":1,"user_id":10,"item_id":100,"ts_ms":1,"action":"share"}"#,
                Reason::UnknownAction,
            ),
            (
                r#"{"request_id":1,"user_id":10,"item_id":100,"ts_ms":1,"action":"gift","value":0}"#,
                Reason::NonPositiveGift,
            ),
            ("not json at all", Reason::MalformedJson),
            (
                r#"{"request_id":1,"user_id":-10,"item_id":100,"ts_ms":1,"action":"click"}"#,
                Reason::OutOfRange,
            ),
            (r#"[1,2]"#, Reason::NotAnObject),
            (
                r#"{"request_id":1,"user_id":1,"item_id":1,"ts_ms":1,"action":"watch","value":"9"}"#,
                Reason::WrongType,
            ),
            (
                r#"{"request_id":1,"user_id":1,"item_id":1,"ts_ms":1,"action":"gift","value":1e300}"#,
                Reason::OutOfRange,
            ),
        ];
        for (line, reason) in cases {
            let r = parse_action(line.as_bytes(), O).unwrap_err();
            assert_eq!(r.reason, *reason, "{line}: {}", r.detail);
        }
        Ok(())
    }

    #[test]
    fn missing_field_detail_names_the_field() -> TestResult {
        let r = parse_exposure(
            br#"{"request_id":1,"user_id":10,"item_id":100,"ts_ms":5}"#,
            O,
        )
        .unwrap_err();
        assert_eq!(r.reason, Reason::MissingField);
        assert!(r.detail.contains("author_id"), "{}", r.detail);
        let r = parse_exposure(br#"{"request_id":1,"user_id":1,"item_id":1,"author_id":1,"ts_ms":5,"user_feats":[1,-2]}"#, O)
            .unwrap_err();
        assert_eq!(r.reason, Reason::OutOfRange);
        assert!(r.detail.contains("user_feats"), "{}", r.detail);
        Ok(())
    }

    #[test]
    fn escaped_action_names_still_parse() -> TestResult {
        let a = parse_action(
            br#"{"request_id":1,"user_id":1,"item_id":1,"ts_ms":1,"action":"cl\u0069ck"}"#,
            O,
        )
        .map_err(|r| r.detail)?;
        assert_eq!(a.kind, ActionKind::Click);
        assert_eq!(a.value, 1.0);
        Ok(())
    }

    #[test]
    fn watch_of_zero_seconds_is_valid() -> TestResult {
        let a = parse_action(
            br#"{"request_id":1,"user_id":1,"item_id":1,"ts_ms":1,"action":"watch","value":0}"#,
            O,
        )
        .map_err(|r| r.detail)?;
        assert_eq!(a.value, 0.0);
        Ok(())
    }
}
