//! `#[serde(with = "crate::raw_bytes")]` for `Vec<u8>` fields that cross
//! processes in cluster mode: written as one byte string (a length and a
//! copy), where serde's default writes a `Vec<u8>` as a sequence of single
//! bytes, one call each (measured: a tenth of a cluster process's CPU on
//! the input chunks alone).

use serde::de::{Error, SeqAccess, Visitor};
use serde::{Deserializer, Serializer};

pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(v)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    d.deserialize_byte_buf(BytesVisitor)
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    // Formats without byte strings (JSON) write a sequence.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Holder {
        #[serde(with = "super")]
        data: Vec<u8>,
    }

    #[test]
    fn bytes_round_trip_through_bincode_and_json() {
        let h = Holder {
            data: (0..=255u8).collect(),
        };
        let cfg = bincode::config::standard();
        let bin = bincode::serde::encode_to_vec(&h, cfg).expect("encode");
        // A length and the bytes, not one varint per element (bytes >= 128 take two).
        assert!(bin.len() <= 256 + 3, "{} bytes", bin.len());
        let (back, _): (Holder, usize) =
            bincode::serde::decode_from_slice(&bin, cfg).expect("decode");
        assert_eq!(back, h);
        let json = serde_json::to_string(&h).expect("json");
        assert_eq!(serde_json::from_str::<Holder>(&json).expect("json back"), h);
    }
}
