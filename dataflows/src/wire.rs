//! The input records as they are on the wire, before validation: what the
//! fast scanner (`fastjson`) and serde both produce, and `event` checks.

use std::borrow::Cow;

use rliv_contract::Feats;
use serde::Deserialize;

#[derive(Deserialize)]
pub(crate) struct ExposureWire {
    pub(crate) request_id: u64,
    pub(crate) user_id: u64,
    pub(crate) item_id: u64,
    pub(crate) author_id: u64,
    pub(crate) ts_ms: i64,
    #[serde(default)]
    pub(crate) position: Option<u32>,
    #[serde(default)]
    pub(crate) user_feats: Option<Feats>,
    #[serde(default)]
    pub(crate) item_feats: Option<Feats>,
}

#[derive(Deserialize)]
pub(crate) struct ActionWire<'a> {
    pub(crate) request_id: u64,
    pub(crate) user_id: u64,
    pub(crate) item_id: u64,
    pub(crate) ts_ms: i64,
    #[serde(borrow)]
    pub(crate) action: Cow<'a, str>,
    #[serde(default)]
    pub(crate) value: Option<f64>,
}
