//! Child names and `CAP/name/name…` paths: names are Unicode in NFC, as Tahoe normalizes every name going into and
//! out of a directory (`encodingutil.normalize`), and a name given by a user must be non-empty and free of `/`.

use crate::cap::{Cap, CapError};
use thiserror::Error;
use unicode_normalization::UnicodeNormalization;

/// Why a name or path is unusable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PathError {
    #[error("empty name")]
    EmptyName,
    #[error("name {0:?} contains '/'")]
    SlashInName(String),
    // Paths start with a cap, a secret: errors name positions, never the path itself.
    #[error("path: name {index} after the cap is empty (doubled '/')")]
    EmptySegment { index: usize },
    #[error("path does not start with a valid cap: {0}")]
    BadCap(#[source] CapError),
    #[error("path does not start with a cap of a known kind")]
    UnknownCap,
}

/// The NFC form of `name`, as Tahoe stores and looks up names.
pub fn normalize_name(name: &str) -> String {
    name.nfc().collect()
}

/// Checks a name a user gives for a child and returns its NFC form.
pub fn validate_name(name: &str) -> Result<String, PathError> {
    if name.is_empty() {
        return Err(PathError::EmptyName);
    }
    if name.contains('/') {
        return Err(PathError::SlashInName(name.to_owned()));
    }
    Ok(normalize_name(name))
}

/// Splits `CAP[/name…]` into the cap and the NFC names below it. One trailing `/` is allowed; an empty name
/// elsewhere is an error. The cap may be of any known kind (the caller decides what it may be).
pub fn split_path(path: &str) -> Result<(Cap, Vec<String>), PathError> {
    let (cap_text, rest) = path.split_once('/').unwrap_or((path, ""));
    let cap = Cap::parse(cap_text).map_err(PathError::BadCap)?;
    if matches!(cap, Cap::Unknown(_)) {
        return Err(PathError::UnknownCap);
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Ok((cap, Vec::new()));
    }
    let names = rest
        .split('/')
        .enumerate()
        .map(|(index, segment)| {
            if segment.is_empty() {
                Err(PathError::EmptySegment { index })
            } else {
                Ok(normalize_name(segment))
            }
        })
        .collect::<Result<_, _>>()?;
    Ok((cap, names))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::base32;

    #[test]
    fn names_are_nfc_and_checked() {
        assert_eq!(validate_name("e\u{301}").unwrap(), "\u{e9}");
        assert_eq!(validate_name(""), Err(PathError::EmptyName));
        assert!(matches!(
            validate_name("a/b"),
            Err(PathError::SlashInName(_))
        ));
    }

    #[test]
    fn paths_split_into_cap_and_names() {
        let cap = format!(
            "URI:DIR2:{}:{}",
            base32::encode(&[1; 16]),
            base32::encode(&[2; 32])
        );
        let (parsed, names) = split_path(&cap).unwrap();
        assert_eq!(parsed.to_string(), cap);
        assert!(names.is_empty());
        let (_, names) = split_path(&format!("{cap}/a/e\u{301}/")).unwrap();
        assert_eq!(names, vec!["a".to_owned(), "\u{e9}".to_owned()]);
        assert!(matches!(
            split_path(&format!("{cap}/a//b")),
            Err(PathError::EmptySegment { index: 1 })
        ));
        assert!(matches!(
            split_path("alias:x/y"),
            Err(PathError::UnknownCap)
        ));
        assert!(matches!(
            split_path("URI:DIR2:x/y"),
            Err(PathError::BadCap(_))
        ));
    }
}
