//! Canonical byte encoding of signed artifacts and the field encodings used inside them.
//!
//! Signed artifacts are JSON. What is signed is the *canonical* encoding of the value: object
//! keys sorted by their UTF-8 bytes, no insignificant white space, strings escaped as
//! `serde_json` does (RFC 8785 for the ASCII keys used here), integers only (a float anywhere is
//! an error). So a file may be re-indented or its keys re-ordered and its signature still holds,
//! while any change of meaning breaks it. `docs/FORMATS.md` specifies it byte for byte.

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// Largest JSON artifact accepted, in bytes (licenses and headers are a few KiB).
pub const MAX_JSON_ARTIFACT: usize = 1 << 20;

/// Returns the canonical encoding of `value`.
///
/// Fails if the value holds a non-integer number.
pub fn canonical_json(value: &Value) -> Result<Vec<u8>> {
    check_integers(value)?;
    // serde_json's `Map` is a BTreeMap (the `preserve_order` feature is not enabled anywhere in
    // this workspace), so serialising a `Value` emits keys in sorted order, compactly.
    serde_json::to_vec(value).map_err(|e| Error::malformed("canonical JSON", e.to_string()))
}

/// Serialises `t` and returns its canonical encoding.
pub fn to_canonical<T: Serialize>(t: &T) -> Result<Vec<u8>> {
    let value =
        serde_json::to_value(t).map_err(|e| Error::malformed("canonical JSON", e.to_string()))?;
    canonical_json(&value)
}

fn check_integers(value: &Value) -> Result<()> {
    match value {
        Value::Number(n) if !(n.is_u64() || n.is_i64()) => Err(Error::malformed(
            "canonical JSON",
            format!("non-integer number {n} (artifacts carry integers only)"),
        )),
        Value::Array(items) => items.iter().try_for_each(check_integers),
        Value::Object(map) => map.values().try_for_each(check_integers),
        _ => Ok(()),
    }
}

/// Serde adapter: bytes as standard base64 with padding.
pub mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises bytes as base64.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    /// Deserialises base64 into bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        decode(&s).map_err(serde::de::Error::custom)
    }

    /// Decodes a base64 string with a readable error.
    pub fn decode(s: &str) -> Result<Vec<u8>, String> {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| format!("invalid base64: {e}"))
    }

    /// Encodes bytes as base64.
    pub fn encode(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }
}

/// Serde adapter: optional bytes as base64 (or `null`).
pub mod b64_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises optional bytes.
    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&super::b64::encode(v)),
            None => s.serialize_none(),
        }
    }

    /// Deserialises optional base64.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| super::b64::decode(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Serde adapter: a list of byte strings as base64 strings.
pub mod b64_vec {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Serialises a list of byte strings.
    pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|x| super::b64::encode(x))
            .collect::<Vec<_>>()
            .serialize(s)
    }

    /// Deserialises a list of base64 strings.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Vec::<String>::deserialize(d)?
            .into_iter()
            .map(|t| super::b64::decode(&t).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// Serde adapter: secret bytes as base64, held in a zeroizing buffer.
pub mod b64_secret {
    use serde::{Deserializer, Serializer};
    use zeroize::Zeroizing;

    /// Serialises secret bytes as base64.
    pub fn serialize<S: Serializer>(bytes: &Zeroizing<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        let encoded = Zeroizing::new(super::b64::encode(bytes));
        s.serialize_str(&encoded)
    }

    /// Deserialises base64 into a zeroizing buffer (the encoded text is wiped too).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Zeroizing<Vec<u8>>, D::Error> {
        use serde::Deserialize;
        let text = Zeroizing::new(String::deserialize(d)?);
        super::b64::decode(&text)
            .map(Zeroizing::new)
            .map_err(serde::de::Error::custom)
    }
}

/// Serde adapter: a 32-byte digest as lowercase hex.
pub mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises a digest as hex.
    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    /// Deserialises 64 hex digits.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s, &mut out)
            .map_err(|e| serde::de::Error::custom(format!("expected 64 hex digits: {e}")))?;
        Ok(out)
    }
}

/// Serde adapter: variable-length bytes as lowercase hex.
pub mod hexbytes {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises bytes as hex.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    /// Deserialises hex digits.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(&s).map_err(|e| serde::de::Error::custom(format!("invalid hex: {e}")))
    }
}

/// Current time as RFC 3339 (UTC, whole seconds).
pub fn now_rfc3339() -> String {
    format_rfc3339(time::OffsetDateTime::now_utc())
}

/// Formats a timestamp as RFC 3339 (UTC, whole seconds).
pub fn format_rfc3339(t: time::OffsetDateTime) -> String {
    let t = t
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Parses an RFC 3339 timestamp.
pub fn parse_rfc3339(s: &str) -> Result<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| Error::InvalidInput(format!("'{s}' is not an RFC 3339 timestamp: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_sorts_keys_and_strips_whitespace() {
        let a: Value = serde_json::from_str(r#"{ "b": 1, "a": {"y": [1, 2], "x": "s"} }"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":"s","y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(canonical_json(&a).unwrap(), canonical_json(&b).unwrap());
        assert_eq!(
            canonical_json(&a).unwrap(),
            br#"{"a":{"x":"s","y":[1,2]},"b":1}"#.to_vec()
        );
    }

    #[test]
    fn canonical_rejects_floats() {
        let v: Value = serde_json::from_str(r#"{"a": [1.5]}"#).unwrap();
        assert!(matches!(canonical_json(&v), Err(Error::Malformed { .. })));
    }

    #[test]
    fn canonical_escapes_control_characters() {
        let v = Value::String("a\u{1}\n\"\\é".into());
        assert_eq!(
            canonical_json(&v).unwrap(),
            "\"a\\u0001\\n\\\"\\\\é\"".as_bytes()
        );
    }

    #[test]
    fn rfc3339_round_trip() {
        let s = "2026-01-02T03:04:05Z";
        assert_eq!(format_rfc3339(parse_rfc3339(s).unwrap()), s);
        assert!(parse_rfc3339("yesterday").is_err());
    }
}
