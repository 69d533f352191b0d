//! The CBOR replies of Tahoe's storage protocol (GBS) as this client decodes them: item counts checked first
//! ([`super::cbor`]), then decoded into the shapes 1.20 sends. Separate from the HTTP client so the decoding can be
//! tested and fuzzed on bytes alone.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::cbor;
use super::{ServerVersion, ShareNumber};

pub(super) const VERSION_KEY: &str = "http://allmydata.org/tahoe/protocols/storage/v1";

/// Decodes one reply, refusing it first if it holds too many items or nests too deep.
pub(super) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    cbor::check_items(body, cbor::MAX_ITEMS)
        .map_err(|problem| format!("refused CBOR reply: {problem}"))?;
    ciborium::from_reader(body).map_err(|e| format!("malformed CBOR reply: {e}"))
}

/// Decodes `body` as every kind of reply in turn (for fuzzing: none may panic, each is `Ok` or `Err`); returns
/// how many decoded.
pub fn decode_as_every_reply(body: &[u8]) -> usize {
    [
        decode::<ciborium::Value>(body)
            .and_then(|v| parse_version(&v))
            .is_ok(),
        decode::<ShareSet>(body).is_ok(),
        decode::<AllocateResponse>(body).is_ok(),
        decode::<PatchResponse>(body).is_ok(),
        decode::<ReadTestWriteResponse>(body).is_ok(),
    ]
    .iter()
    .filter(|&&ok| ok)
    .count()
}

pub(super) fn parse_version(value: &ciborium::Value) -> Result<ServerVersion, String> {
    fn key_is(key: &ciborium::Value, name: &str) -> bool {
        match key {
            ciborium::Value::Bytes(b) => b == name.as_bytes(),
            ciborium::Value::Text(t) => t == name,
            _ => false,
        }
    }
    fn lookup<'v>(map: &'v ciborium::Value, name: &str) -> Option<&'v ciborium::Value> {
        map.as_map()?
            .iter()
            .find(|(k, _)| key_is(k, name))
            .map(|(_, v)| v)
    }
    fn number(map: &ciborium::Value, name: &str) -> Result<u64, String> {
        let value = lookup(map, name).ok_or(format!("no {name:?}"))?;
        value
            .as_integer()
            .and_then(|i| u64::try_from(i).ok())
            .ok_or(format!("{name:?} is not a non-negative integer"))
    }
    let v1 = lookup(value, VERSION_KEY).ok_or(format!("no {VERSION_KEY:?} section"))?;
    let application_version = match lookup(value, "application-version") {
        Some(ciborium::Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(ciborium::Value::Text(t)) => t.clone(),
        _ => String::new(),
    };
    Ok(ServerVersion {
        maximum_immutable_share_size: number(v1, "maximum-immutable-share-size")?,
        maximum_mutable_share_size: number(v1, "maximum-mutable-share-size")?,
        available_space: number(v1, "available-space")?,
        application_version,
    })
}

/// A CBOR set: tag 258 around an array. Sent tagged (1.20 rejects untagged); accepted either way.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
pub(super) struct ShareSet(pub(super) ciborium::tag::Accepted<BTreeSet<ShareNumber>, 258>);

#[derive(Deserialize)]
pub(super) struct AllocateResponse {
    #[serde(rename = "already-have")]
    pub(super) already_have: ShareSet,
    pub(super) allocated: ShareSet,
}

#[derive(Deserialize)]
pub(super) struct PatchResponse {
    pub(super) required: Vec<RequiredRange>,
}

#[derive(Deserialize)]
pub(super) struct RequiredRange {
    pub(super) begin: u64,
    pub(super) end: u64,
}

#[derive(Deserialize)]
pub(super) struct ReadTestWriteResponse {
    pub(super) success: bool,
    pub(super) data: BTreeMap<ShareNumber, Vec<serde_bytes::ByteBuf>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_with_byte_keys() {
        use ciborium::Value;
        let bytes = |s: &str| Value::Bytes(s.as_bytes().to_vec());
        let v1 = Value::Map(vec![
            (
                bytes("maximum-immutable-share-size"),
                Value::Integer(10.into()),
            ),
            (
                bytes("maximum-mutable-share-size"),
                Value::Integer(20.into()),
            ),
            (bytes("available-space"), Value::Integer(30.into())),
        ]);
        let value = Value::Map(vec![
            (bytes(VERSION_KEY), v1),
            (bytes("application-version"), bytes("tahoe-lafs/1.20.0")),
        ]);
        let v = parse_version(&value).unwrap();
        assert_eq!(
            (
                v.maximum_immutable_share_size,
                v.maximum_mutable_share_size,
                v.available_space
            ),
            (10, 20, 30)
        );
        assert_eq!(v.application_version, "tahoe-lafs/1.20.0");
        assert!(
            parse_version(&Value::Map(vec![]))
                .unwrap_err()
                .contains("section")
        );
        let negative = Value::Map(vec![(
            bytes(VERSION_KEY),
            Value::Map(vec![(
                bytes("maximum-immutable-share-size"),
                Value::Integer((-1).into()),
            )]),
        )]);
        assert!(
            parse_version(&negative)
                .unwrap_err()
                .contains("non-negative")
        );
    }

    #[test]
    fn every_reply_kind_decodes_what_tahoe_sends_and_refuses_garbage() {
        // {"required": [{"begin": 0, "end": 5}]}: a PATCH answer, and a map like no other reply.
        let mut patch = Vec::new();
        ciborium::into_writer(
            &ciborium::Value::Map(vec![(
                ciborium::Value::Text("required".into()),
                ciborium::Value::Array(vec![ciborium::Value::Map(vec![
                    (ciborium::Value::Text("begin".into()), 0.into()),
                    (ciborium::Value::Text("end".into()), 5.into()),
                ])]),
            )]),
            &mut patch,
        )
        .unwrap();
        assert_eq!(decode_as_every_reply(&patch), 1);
        // Tag 258 around [0, 7]: a share set.
        assert_eq!(
            decode_as_every_reply(&[0xd9, 0x01, 0x02, 0x82, 0x00, 0x07]),
            1
        );
        assert_eq!(decode_as_every_reply(b"\xff\xfe garbage"), 0);
    }
}
