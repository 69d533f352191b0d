//! Netstrings (`<decimal length>:<bytes>,`), as `allmydata/util/netstring.py` writes and splits them. Tahoe hashes
//! tags and pairs as netstrings and packs directory entries with them, so the parser faces bytes from servers: it
//! bounds every length and never panics.

use thiserror::Error;

/// Why a byte string does not hold the netstrings asked for. `offset` is where in the input the problem is.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NetstringError {
    #[error("netstring at byte {offset}: no ':' after the length")]
    MissingColon { offset: usize },
    #[error("netstring at byte {offset}: the length is not a decimal number")]
    BadLength { offset: usize },
    #[error("netstring at byte {offset}: declares {declared} bytes but only {available} remain")]
    Truncated {
        offset: usize,
        declared: u64,
        available: usize,
    },
    #[error("netstring at byte {offset}: missing the ',' terminator")]
    MissingComma { offset: usize },
    #[error("expected {expected} netstrings, found {found}")]
    TooFew { expected: usize, found: usize },
    #[error("unexpected bytes after the netstrings at byte {offset}")]
    BadTrailer { offset: usize },
}

/// Encodes `data` as a netstring.
pub fn netstring(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 24);
    append_netstring(&mut out, data);
    out
}

/// Appends `data` as a netstring to `out`.
pub fn append_netstring(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(data.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(data);
    out.push(b',');
}

/// Reads one netstring starting at `position`; returns its contents and the position after its comma.
pub fn read_netstring(data: &[u8], position: usize) -> Result<(&[u8], usize), NetstringError> {
    let rest = data.get(position..).unwrap_or_default();
    let colon = rest
        .iter()
        .position(|&b| b == b':')
        .ok_or(NetstringError::MissingColon { offset: position })?;
    let digits = &rest[..colon];
    // Tahoe writes plain decimal; 20 digits already exceed any length a buffer can hold.
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(NetstringError::BadLength { offset: position });
    }
    let declared: u64 = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(NetstringError::BadLength { offset: position })?;
    let body = &rest[colon + 1..];
    let len = usize::try_from(declared)
        .ok()
        .filter(|&len| len <= body.len())
        .ok_or(NetstringError::Truncated {
            offset: position,
            declared,
            available: body.len(),
        })?;
    if body.get(len) != Some(&b',') {
        return Err(NetstringError::MissingComma {
            offset: position + colon + 1 + len,
        });
    }
    Ok((&body[..len], position + colon + 1 + len + 1))
}

/// Reads exactly `count` netstrings starting at `position`, like Tahoe's `split_netstring`. With `required_trailer`,
/// the rest of the input must equal it exactly (and counts as consumed). Returns the strings and the new position.
pub fn split_netstring<'a>(
    data: &'a [u8],
    count: usize,
    mut position: usize,
    required_trailer: Option<&[u8]>,
) -> Result<(Vec<&'a [u8]>, usize), NetstringError> {
    let mut elements = Vec::with_capacity(count);
    while elements.len() < count && position < data.len() {
        let (element, next) = read_netstring(data, position)?;
        elements.push(element);
        position = next;
    }
    if elements.len() < count {
        return Err(NetstringError::TooFew {
            expected: count,
            found: elements.len(),
        });
    }
    match required_trailer {
        Some(trailer) if data.get(position..) != Some(trailer) => {
            Err(NetstringError::BadTrailer { offset: position })
        }
        Some(trailer) => Ok((elements, position + trailer.len())),
        None => Ok((elements, position)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_hostile_lengths() {
        let packed = [netstring(b"abc"), netstring(b"")].concat();
        let (parts, end) = split_netstring(&packed, 2, 0, Some(b"")).unwrap();
        assert_eq!(parts, vec![&b"abc"[..], &b""[..]]);
        assert_eq!(end, packed.len());
        assert!(matches!(
            read_netstring(b"9999999999999999999:x,", 0),
            Err(NetstringError::Truncated { .. })
        ));
        assert!(matches!(
            read_netstring(b"999999999999999999999:x,", 0),
            Err(NetstringError::BadLength { .. })
        ));
        assert!(matches!(
            read_netstring(b"-1:x,", 0),
            Err(NetstringError::BadLength { .. })
        ));
        assert!(matches!(
            read_netstring(b"1:x", 0),
            Err(NetstringError::MissingComma { .. })
        ));
        assert!(matches!(
            read_netstring(b"1:x,", 10),
            Err(NetstringError::MissingColon { offset: 10 })
        ));
    }
}
