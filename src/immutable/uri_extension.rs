//! The URI extension block (UEB) of an immutable file (`allmydata/uri.py` `pack_extension` /
//! `unpack_extension`): `key:netstring(value)` pairs in sorted key order, stored at the end of every share. Its
//! SHA-256d (tagged) is in the CHK cap, so a reader trusts it only after checking that hash.

use std::collections::BTreeMap;

use crate::crypto::netstring::append_netstring;

/// A UEB that cannot be read, saying where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("URI extension block: {0}")]
pub struct UriExtensionError(String);

/// The fields of a UEB, by name. Values are bytes; numbers are written in decimal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UriExtension {
    fields: BTreeMap<String, Vec<u8>>,
}

/// The fields Tahoe reads as numbers.
const NUMERIC: [&str; 5] = [
    "size",
    "segment_size",
    "num_segments",
    "needed_shares",
    "total_shares",
];

impl UriExtension {
    pub fn new() -> UriExtension {
        UriExtension::default()
    }

    /// Sets a field. Keys are letters, `_` and `-`, as Tahoe requires.
    pub fn set(&mut self, key: &str, value: impl Into<Vec<u8>>) -> Result<(), UriExtensionError> {
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphabetic() || b == b'_' || b == b'-')
        {
            return Err(UriExtensionError(format!(
                "key {key:?} is not letters, '_' and '-'"
            )));
        }
        self.fields.insert(key.to_owned(), value.into());
        Ok(())
    }

    pub fn set_number(&mut self, key: &str, value: u64) -> Result<(), UriExtensionError> {
        self.set(key, value.to_string())
    }

    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.fields.get(key).map(Vec::as_slice)
    }

    /// A numeric field, or an error naming it if missing or not a decimal number.
    pub fn number(&self, key: &str) -> Result<u64, UriExtensionError> {
        let value = self
            .get(key)
            .ok_or_else(|| UriExtensionError(format!("no {key}")))?;
        std::str::from_utf8(value)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| UriExtensionError(format!("{key} is not a decimal number")))
    }

    /// A 32-byte hash field (`crypttext_hash`, `crypttext_root_hash`, `share_root_hash`).
    pub fn hash(&self, key: &str) -> Result<[u8; 32], UriExtensionError> {
        let value = self
            .get(key)
            .ok_or_else(|| UriExtensionError(format!("no {key}")))?;
        value
            .try_into()
            .map_err(|_| UriExtensionError(format!("{key} is {} bytes, not 32", value.len())))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.fields.keys().map(String::as_str)
    }

    /// The bytes Tahoe stores: fields in sorted key order, each `key:len:value,`.
    pub fn pack(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (key, value) in &self.fields {
            out.extend_from_slice(key.as_bytes());
            out.push(b':');
            append_netstring(&mut out, value);
        }
        out
    }

    /// Reads packed bytes. Stricter than Tahoe (which would also take a signed or spaced length): any byte
    /// that is not where the format puts it is an error naming its offset.
    pub fn unpack(mut data: &[u8]) -> Result<UriExtension, UriExtensionError> {
        let total = data.len();
        let mut ueb = UriExtension::new();
        while !data.is_empty() {
            let at = total - data.len();
            let colon = data
                .iter()
                .position(|&b| b == b':')
                .ok_or_else(|| UriExtensionError(format!("no ':' after the key at byte {at}")))?;
            let key = std::str::from_utf8(&data[..colon])
                .map_err(|_| UriExtensionError(format!("key at byte {at} is not UTF-8")))?
                .to_owned();
            data = &data[colon + 1..];
            let digits = data.iter().take_while(|b| b.is_ascii_digit()).count();
            if digits == 0 || digits > 19 || data.get(digits) != Some(&b':') {
                return Err(UriExtensionError(format!(
                    "bad length of {key:?} at byte {}",
                    total - data.len()
                )));
            }
            let length: usize = std::str::from_utf8(&data[..digits])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| UriExtensionError(format!("length of {key:?} overflows")))?;
            data = &data[digits + 1..];
            if data.len() < length + 1 || data[length] != b',' {
                return Err(UriExtensionError(format!(
                    "value of {key:?} is truncated or not ','-terminated"
                )));
            }
            ueb.fields.insert(key, data[..length].to_vec());
            data = &data[length + 1..];
        }
        for key in NUMERIC {
            if ueb.fields.contains_key(key) {
                ueb.number(key)?;
            }
        }
        Ok(ueb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_and_unpack() {
        let mut ueb = UriExtension::new();
        ueb.set("codec_name", "crs").unwrap();
        ueb.set_number("size", 56).unwrap();
        ueb.set("crypttext_hash", vec![1u8; 32]).unwrap();
        let packed = ueb.pack();
        assert!(packed.starts_with(b"codec_name:3:crs,crypttext_hash:32:"));
        let back = UriExtension::unpack(&packed).unwrap();
        assert_eq!(back, ueb);
        assert_eq!(back.number("size").unwrap(), 56);
        assert_eq!(back.hash("crypttext_hash").unwrap(), [1u8; 32]);
        assert!(ueb.set("bad key", "x").is_err());
    }

    #[test]
    fn malformed_blocks_are_errors() {
        for bad in [
            &b"size"[..],
            b"size:",
            b"size:2:5",
            b"size:2:55;",
            b"size:x:5,",
            b"size:-1:5,",
            b"size:1:x,",
        ] {
            assert!(
                UriExtension::unpack(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(UriExtension::unpack(b"").unwrap().keys().next().is_none());
        assert!(UriExtension::unpack(b"size:99999999999999999999:5,").is_err());
    }
}
