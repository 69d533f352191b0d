//! Limits on CBOR replies before they are decoded. A server's reply is bounded in bytes by its endpoint, but a
//! few bytes of CBOR can stand for many decoded values (an empty array is one byte, and 48 once decoded into a
//! `ciborium::Value`), so the items are counted, and the nesting measured, by walking the item headers without
//! decoding anything.

/// Items (of any kind, at any depth) a reply may hold: Tahoe's largest, a read-test-write answer, has a few per
/// share and at most 256 shares.
pub const MAX_ITEMS: usize = 10_000;
/// Nesting a reply may have (Tahoe's go three or four deep).
const MAX_DEPTH: usize = 32;

/// Checks that `bytes` start with one well-formed CBOR item of at most `max_items` items in all, nested at most
/// [`MAX_DEPTH`] deep; says what is wrong otherwise. Bytes after the item are not looked at.
pub fn check_items(bytes: &[u8], max_items: usize) -> Result<(), String> {
    let mut at = 0usize;
    // For each open container, the items it still expects; `None` for an indefinite one, which ends at a break.
    let mut open: Vec<Option<u64>> = vec![Some(1)];
    let mut items = 0usize;
    loop {
        while let Some(Some(0)) = open.last() {
            open.pop();
        }
        if open.is_empty() {
            return Ok(());
        }
        let byte = *bytes
            .get(at)
            .ok_or_else(|| format!("CBOR ends inside an item at byte {at}"))?;
        at += 1;
        if byte == 0xff {
            match open.pop() {
                Some(None) => continue,
                _ => {
                    return Err(format!(
                        "CBOR break outside an indefinite item at byte {at}"
                    ));
                }
            }
        }
        if let Some(Some(left)) = open.last_mut() {
            *left -= 1;
        }
        items += 1;
        if items > max_items {
            return Err(format!("more than {max_items} CBOR items"));
        }
        let (major, info) = (byte >> 5, byte & 0x1f);
        let argument = match info {
            0..=23 => Some(u64::from(info)),
            24..=27 => {
                let width = 1usize << (info - 24);
                let field = bytes
                    .get(at..at + width)
                    .ok_or_else(|| format!("CBOR ends inside an item header at byte {at}"))?;
                at += width;
                Some(field.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b)))
            }
            31 if matches!(major, 2..=5) => None,
            _ => return Err(format!("malformed CBOR item header {byte:#04x}")),
        };
        match (major, argument) {
            (2 | 3, Some(length)) => {
                at = usize::try_from(length)
                    .ok()
                    .and_then(|length| at.checked_add(length))
                    .filter(|&end| end <= bytes.len())
                    .ok_or_else(|| format!("CBOR string of {length} bytes runs past the end"))?;
            }
            (4, count) => open.push(count),
            (5, pairs) => open.push(match pairs {
                Some(pairs) => Some(
                    pairs
                        .checked_mul(2)
                        .ok_or_else(|| format!("CBOR map of {pairs} pairs"))?,
                ),
                None => None,
            }),
            (2 | 3, None) => open.push(None),
            (6, _) => open.push(Some(1)),
            _ => {} // integers, simple values and floats: the header was all
        }
        if open.len() > MAX_DEPTH + 1 {
            return Err(format!("CBOR nested more than {MAX_DEPTH} deep"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cbor(value: &ciborium::Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(value, &mut out).unwrap();
        out
    }

    #[test]
    fn counts_every_item_of_well_formed_cbor() {
        use ciborium::Value;
        let value = Value::Map(vec![
            (
                Value::Text("shares".into()),
                Value::Tag(258, Box::new(Value::Array(vec![0.into(), 7.into()]))),
            ),
            (Value::Bytes(vec![1; 300]), Value::Float(1.5)),
            (Value::Integer(1_000_000.into()), Value::Bool(true)),
        ]);
        let bytes = cbor(&value);
        // The map, 3 keys, 3 values, the tag's array and its 2 integers: 10.
        assert_eq!(check_items(&bytes, 10), Ok(()));
        assert!(check_items(&bytes, 9).is_err());
        // Indefinite-length array and string (0x9f … 0xff, 0x5f chunks 0xff).
        assert_eq!(
            check_items(&[0x9f, 0x01, 0x5f, 0x41, 0xaa, 0xff, 0xff], 10),
            Ok(())
        );
    }

    #[test]
    fn refuses_amplifying_truncated_and_malformed_cbor() {
        // A million empty arrays in an array: 1 MB here, ~48 MB decoded.
        let mut many = vec![0x9a, 0x00, 0x0f, 0x42, 0x40];
        many.extend(std::iter::repeat_n(0x80, 1_000_000));
        let refused = check_items(&many, MAX_ITEMS).unwrap_err();
        assert!(refused.contains("more than 10000"), "{refused}");
        // Deep nesting.
        assert!(
            check_items(&[0x81; 100], MAX_ITEMS)
                .unwrap_err()
                .contains("nested")
        );
        // A string longer than the bytes, a header cut short, an array with items missing.
        assert!(check_items(&[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], 10).is_err());
        assert!(check_items(&[0x19, 0x01], 10).is_err());
        assert!(check_items(&[0x83, 0x01], 10).is_err());
        assert!(check_items(&[], 10).is_err());
        // A lone break, and a reserved header.
        assert!(check_items(&[0xff], 10).is_err());
        assert!(check_items(&[0x1c], 10).is_err());
    }
}
