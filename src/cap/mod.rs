//! Capability strings (`allmydata/uri.py`): parsing and printing every cap kind Tahoe-LAFS 1.20 knows, the
//! relations between them (read-only and verify caps, storage indexes), and unknown future caps kept as opaque text.
//!
//! A cap names a file or directory and carries the keys to it. There are nine file kinds (LIT, CHK, CHK-Verifier,
//! SSK, SSK-RO, SSK-Verifier, MDMF, MDMF-RO, MDMF-Verifier), and a directory cap (`URI:DIR2…`) is any of them
//! wrapped, so [`Cap::Directory`] holds a [`FileCap`]. Printing is canonical and byte-identical to Tahoe's
//! `to_string()`.
//!
//! Where this parser is stricter than Tahoe's regular expressions, it is on purpose and only for caps no Tahoe
//! writes: share counts outside 1 ≤ k ≤ N ≤ 256, numbers that overflow 64 bits, and trailing text after a
//! CHK-Verifier cap (Tahoe's pattern there lacks its `$`). Like Tahoe, MDMF caps may carry extra `:…` fields,
//! which are ignored, and numbers may have leading zeros. Errors name the cap kind and the field, never the
//! secret bytes, and `Debug` shows no keys, so caps can be logged by their `Debug` form.

use crate::crypto::base32;
use crate::crypto::hashutil::{self, Hash, Key};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// Why a string that claims to be a cap of a known kind is not one.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("malformed {kind} cap: {field}: {problem}")]
pub struct CapError {
    /// The cap kind, e.g. `URI:CHK`.
    pub kind: String,
    /// Which part of it, e.g. `key` or `total_shares`.
    pub field: &'static str,
    pub problem: String,
}

/// The two mutable file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MutableFormat {
    /// Small Distributed Mutable File: one segment.
    Sdmf,
    /// Medium Distributed Mutable File: many segments, random access.
    Mdmf,
}

/// What a mutable cap grants.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum MutableAccess {
    Write { writekey: Key },
    Read { readkey: Key },
    Verify { storage_index: Key },
}

/// A cap to a mutable file (SSK = SDMF, or MDMF), of any access level.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MutableCap {
    pub format: MutableFormat,
    pub access: MutableAccess,
    /// Hash of the file's RSA public key: binds the cap to the key that signs every version.
    pub fingerprint: Hash,
}

impl MutableCap {
    pub fn writekey(&self) -> Option<Key> {
        match self.access {
            MutableAccess::Write { writekey } => Some(writekey),
            _ => None,
        }
    }

    pub fn readkey(&self) -> Option<Key> {
        match self.access {
            MutableAccess::Write { writekey } => Some(hashutil::ssk_readkey_hash(&writekey)),
            MutableAccess::Read { readkey } => Some(readkey),
            MutableAccess::Verify { .. } => None,
        }
    }

    pub fn storage_index(&self) -> Key {
        match self.access {
            MutableAccess::Verify { storage_index } => storage_index,
            _ => hashutil::ssk_storage_index_hash(
                &self.readkey().expect("write and read caps have a readkey"),
            ),
        }
    }

    pub fn readonly(&self) -> MutableCap {
        match self.readkey() {
            Some(readkey) => MutableCap {
                access: MutableAccess::Read { readkey },
                ..*self
            },
            None => *self,
        }
    }

    pub fn verifier(&self) -> MutableCap {
        MutableCap {
            access: MutableAccess::Verify {
                storage_index: self.storage_index(),
            },
            ..*self
        }
    }
}

/// A CHK immutable file cap: the AES key, the hash of the URI extension block, the encoding and the size.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChkCap {
    pub key: Key,
    pub ueb_hash: Hash,
    pub needed_shares: u16,
    pub total_shares: u16,
    pub size: u64,
}

impl ChkCap {
    pub fn storage_index(&self) -> Key {
        hashutil::storage_index_hash(&self.key)
    }

    pub fn verifier(&self) -> ChkVerifierCap {
        ChkVerifierCap {
            storage_index: self.storage_index(),
            ueb_hash: self.ueb_hash,
            needed_shares: self.needed_shares,
            total_shares: self.total_shares,
            size: self.size,
        }
    }
}

/// A CHK verify cap: enough to check and repair shares, not to read them.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChkVerifierCap {
    pub storage_index: Key,
    pub ueb_hash: Hash,
    pub needed_shares: u16,
    pub total_shares: u16,
    pub size: u64,
}

/// A cap to a file of any kind.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum FileCap {
    /// The file's bytes are in the cap itself.
    Literal(Vec<u8>),
    Chk(ChkCap),
    ChkVerifier(ChkVerifierCap),
    Mutable(MutableCap),
}

impl FileCap {
    pub fn is_readonly(&self) -> bool {
        !matches!(
            self,
            FileCap::Mutable(MutableCap {
                access: MutableAccess::Write { .. },
                ..
            })
        )
    }

    pub fn is_mutable(&self) -> bool {
        matches!(
            self,
            FileCap::Mutable(MutableCap {
                access: MutableAccess::Write { .. } | MutableAccess::Read { .. },
                ..
            })
        )
    }

    /// Where the shares live; a literal file has none.
    pub fn storage_index(&self) -> Option<Key> {
        match self {
            FileCap::Literal(_) => None,
            FileCap::Chk(c) => Some(c.storage_index()),
            FileCap::ChkVerifier(v) => Some(v.storage_index),
            FileCap::Mutable(m) => Some(m.storage_index()),
        }
    }

    pub fn readonly(&self) -> FileCap {
        match self {
            FileCap::Mutable(m) => FileCap::Mutable(m.readonly()),
            other => other.clone(),
        }
    }

    /// The verify cap; a literal file has none (there is nothing on the grid to verify).
    pub fn verifier(&self) -> Option<FileCap> {
        match self {
            FileCap::Literal(_) => None,
            FileCap::Chk(c) => Some(FileCap::ChkVerifier(c.verifier())),
            FileCap::ChkVerifier(_) => Some(self.clone()),
            FileCap::Mutable(m) => Some(FileCap::Mutable(m.verifier())),
        }
    }

    /// The file's size, where the cap says it.
    pub fn size(&self) -> Option<u64> {
        match self {
            FileCap::Literal(data) => Some(data.len() as u64),
            FileCap::Chk(c) => Some(c.size),
            FileCap::ChkVerifier(v) => Some(v.size),
            FileCap::Mutable(_) => None,
        }
    }

    fn kind(&self) -> Kind {
        match self {
            FileCap::Literal(_) => Kind::Lit,
            FileCap::Chk(_) => Kind::Chk,
            FileCap::ChkVerifier(_) => Kind::ChkVerifier,
            FileCap::Mutable(m) => Kind::Mutable(m.format, access_level(&m.access)),
        }
    }
}

/// A cap that is not of a kind Tahoe 1.20 knows: kept as it was, so it can be stored and passed on untouched.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct UnknownCap(pub String);

/// Any capability string.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Cap {
    File(FileCap),
    Directory(FileCap),
    Unknown(UnknownCap),
}

impl Cap {
    /// Parses a cap, including Tahoe's `ro.` and `imm.` prefixes (which allege that the cap is read-only or
    /// immutable: a cap that is not is an error). Unknown kinds become [`Cap::Unknown`]; a malformed cap of a known
    /// kind is an error that says which field is wrong.
    pub fn parse(text: &str) -> Result<Cap, CapError> {
        let (alleged, rest) = if let Some(rest) = text.strip_prefix("imm.") {
            (Some(Alleged::Immutable), rest)
        } else if let Some(rest) = text.strip_prefix("ro.") {
            (Some(Alleged::ReadOnly), rest)
        } else {
            (None, text)
        };
        let Some((is_directory, kind, body)) = split_kind(rest) else {
            return Ok(Cap::Unknown(UnknownCap(text.to_owned())));
        };
        let file = parse_body(kind, body, &prefix_of(is_directory, kind))?;
        let cap = if is_directory {
            Cap::Directory(file)
        } else {
            Cap::File(file)
        };
        match alleged {
            Some(Alleged::Immutable) if cap.is_mutable() || !cap.is_readonly() => Err(CapError {
                kind: prefix_of(is_directory, kind),
                field: "prefix",
                problem: "a mutable or writeable cap where an immutable one was alleged (imm.)"
                    .into(),
            }),
            Some(Alleged::ReadOnly) if !cap.is_readonly() => Err(CapError {
                kind: prefix_of(is_directory, kind),
                field: "prefix",
                problem: "a writecap where a read-only cap was alleged (ro.)".into(),
            }),
            _ => Ok(cap),
        }
    }

    pub fn is_readonly(&self) -> bool {
        match self {
            Cap::File(f) | Cap::Directory(f) => f.is_readonly(),
            Cap::Unknown(_) => false,
        }
    }

    pub fn is_mutable(&self) -> bool {
        match self {
            Cap::File(f) | Cap::Directory(f) => f.is_mutable(),
            Cap::Unknown(_) => false,
        }
    }

    pub fn is_directory(&self) -> bool {
        matches!(self, Cap::Directory(_))
    }

    pub fn storage_index(&self) -> Option<Key> {
        match self {
            Cap::File(f) | Cap::Directory(f) => f.storage_index(),
            Cap::Unknown(_) => None,
        }
    }

    /// The read-only form (the cap itself if it already is one); none for unknown caps.
    pub fn readonly(&self) -> Option<Cap> {
        match self {
            Cap::File(f) => Some(Cap::File(f.readonly())),
            Cap::Directory(f) => Some(Cap::Directory(f.readonly())),
            Cap::Unknown(_) => None,
        }
    }

    /// The verify cap: itself for verify caps, none for literal files and directories and for unknown caps.
    pub fn verifier(&self) -> Option<Cap> {
        match self {
            Cap::File(f) => f.verifier().map(Cap::File),
            Cap::Directory(f) => f.verifier().map(Cap::Directory),
            Cap::Unknown(_) => None,
        }
    }
}

impl FromStr for Cap {
    type Err = CapError;
    fn from_str(text: &str) -> Result<Cap, CapError> {
        Cap::parse(text)
    }
}

enum Alleged {
    ReadOnly,
    Immutable,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Level {
    Write,
    Read,
    Verify,
}

fn access_level(access: &MutableAccess) -> Level {
    match access {
        MutableAccess::Write { .. } => Level::Write,
        MutableAccess::Read { .. } => Level::Read,
        MutableAccess::Verify { .. } => Level::Verify,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Lit,
    Chk,
    ChkVerifier,
    Mutable(MutableFormat, Level),
}

/// Every kind with its file and directory spellings (the part between `URI:` and the next `:`).
const KINDS: [(Kind, &str, &str); 9] = [
    (Kind::Lit, "LIT", "DIR2-LIT"),
    (Kind::Chk, "CHK", "DIR2-CHK"),
    (Kind::ChkVerifier, "CHK-Verifier", "DIR2-CHK-Verifier"),
    (
        Kind::Mutable(MutableFormat::Sdmf, Level::Write),
        "SSK",
        "DIR2",
    ),
    (
        Kind::Mutable(MutableFormat::Sdmf, Level::Read),
        "SSK-RO",
        "DIR2-RO",
    ),
    (
        Kind::Mutable(MutableFormat::Sdmf, Level::Verify),
        "SSK-Verifier",
        "DIR2-Verifier",
    ),
    (
        Kind::Mutable(MutableFormat::Mdmf, Level::Write),
        "MDMF",
        "DIR2-MDMF",
    ),
    (
        Kind::Mutable(MutableFormat::Mdmf, Level::Read),
        "MDMF-RO",
        "DIR2-MDMF-RO",
    ),
    (
        Kind::Mutable(MutableFormat::Mdmf, Level::Verify),
        "MDMF-Verifier",
        "DIR2-MDMF-Verifier",
    ),
];

fn split_kind(text: &str) -> Option<(bool, Kind, &str)> {
    let rest = text.strip_prefix("URI:")?;
    let (token, body) = rest.split_once(':')?;
    KINDS.iter().find_map(|&(kind, file, dir)| {
        if token == file {
            Some((false, kind, body))
        } else if token == dir {
            Some((true, kind, body))
        } else {
            None
        }
    })
}

fn prefix_of(is_directory: bool, kind: Kind) -> String {
    let (_, file, dir) = KINDS
        .iter()
        .find(|(k, _, _)| *k == kind)
        .expect("every kind is listed");
    format!("URI:{}", if is_directory { dir } else { file })
}

fn parse_body(kind: Kind, body: &str, kind_name: &str) -> Result<FileCap, CapError> {
    let err = |field: &'static str, problem: String| CapError {
        kind: kind_name.to_owned(),
        field,
        problem,
    };
    let key = |field: &'static str, text: &str| -> Result<Key, CapError> {
        base32::decode_array::<16>(text)
            .map_err(|e| err(field, format!("{e} (expected 26 base32 characters)")))
    };
    let hash = |field: &'static str, text: &str| -> Result<Hash, CapError> {
        base32::decode_array::<32>(text)
            .map_err(|e| err(field, format!("{e} (expected 52 base32 characters)")))
    };
    let number = |field: &'static str, text: &str| -> Result<u64, CapError> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err(field, "not a decimal number".into()));
        }
        text.parse()
            .map_err(|_| err(field, "number too large".into()))
    };
    let fields: Vec<&str> = body.split(':').collect();
    match kind {
        Kind::Lit => {
            let data = base32::decode(body).map_err(|e| err("data", e.to_string()))?;
            Ok(FileCap::Literal(data))
        }
        Kind::Chk | Kind::ChkVerifier => {
            let [first, ueb, k, n, size] = fields[..] else {
                return Err(err(
                    "fields",
                    format!("expected 5 ':'-separated fields, found {}", fields.len()),
                ));
            };
            let first_field = if kind == Kind::Chk {
                "key"
            } else {
                "storage_index"
            };
            let first = key(first_field, first)?;
            let ueb_hash = hash("ueb_hash", ueb)?;
            let needed = number("needed_shares", k)?;
            let total = number("total_shares", n)?;
            if !(1..=256).contains(&needed) {
                return Err(err("needed_shares", format!("{needed} is outside 1..=256")));
            }
            if !(needed..=256).contains(&total) {
                return Err(err(
                    "total_shares",
                    format!("{total} is outside needed_shares ({needed})..=256"),
                ));
            }
            let (needed_shares, total_shares) = (needed as u16, total as u16);
            let size = number("size", size)?;
            Ok(if kind == Kind::Chk {
                FileCap::Chk(ChkCap {
                    key: first,
                    ueb_hash,
                    needed_shares,
                    total_shares,
                    size,
                })
            } else {
                FileCap::ChkVerifier(ChkVerifierCap {
                    storage_index: first,
                    ueb_hash,
                    needed_shares,
                    total_shares,
                    size,
                })
            })
        }
        Kind::Mutable(format, level) => {
            // MDMF caps may carry further `:`-separated fields (reserved for extensions); SDMF caps may not.
            let allowed_extra = format == MutableFormat::Mdmf;
            if fields.len() < 2 || (fields.len() > 2 && !allowed_extra) {
                return Err(err(
                    "fields",
                    format!("expected 2 ':'-separated fields, found {}", fields.len()),
                ));
            }
            let (key_field, fingerprint) = (fields[0], hash("fingerprint", fields[1])?);
            let access = match level {
                Level::Write => MutableAccess::Write {
                    writekey: key("writekey", key_field)?,
                },
                Level::Read => MutableAccess::Read {
                    readkey: key("readkey", key_field)?,
                },
                Level::Verify => MutableAccess::Verify {
                    storage_index: key("storage_index", key_field)?,
                },
            };
            Ok(FileCap::Mutable(MutableCap {
                format,
                access,
                fingerprint,
            }))
        }
    }
}

fn write_body(f: &mut fmt::Formatter<'_>, cap: &FileCap) -> fmt::Result {
    match cap {
        FileCap::Literal(data) => f.write_str(&base32::encode(data)),
        FileCap::Chk(c) => write!(
            f,
            "{}:{}:{}:{}:{}",
            base32::encode(&c.key),
            base32::encode(&c.ueb_hash),
            c.needed_shares,
            c.total_shares,
            c.size
        ),
        FileCap::ChkVerifier(v) => write!(
            f,
            "{}:{}:{}:{}:{}",
            base32::encode(&v.storage_index),
            base32::encode(&v.ueb_hash),
            v.needed_shares,
            v.total_shares,
            v.size
        ),
        FileCap::Mutable(m) => {
            let key = match &m.access {
                MutableAccess::Write { writekey: k }
                | MutableAccess::Read { readkey: k }
                | MutableAccess::Verify { storage_index: k } => k,
            };
            write!(
                f,
                "{}:{}",
                base32::encode(key),
                base32::encode(&m.fingerprint)
            )
        }
    }
}

impl fmt::Display for FileCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", prefix_of(false, self.kind()))?;
        write_body(f, self)
    }
}

/// The file cap's text (`URI:SSK:…`, `URI:MDMF-RO:…`); a directory wraps it as `Cap::Directory`.
impl fmt::Display for MutableCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", FileCap::Mutable(*self))
    }
}

impl fmt::Display for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cap::File(file) => write!(f, "{file}"),
            Cap::Directory(file) => {
                write!(f, "{}:", prefix_of(true, file.kind()))?;
                write_body(f, file)
            }
            Cap::Unknown(UnknownCap(text)) => f.write_str(text),
        }
    }
}

/// Shows the kind and the first characters of the storage index, never a key: safe to log.
fn debug_summary(
    f: &mut fmt::Formatter<'_>,
    prefix: &str,
    storage_index: Option<Key>,
) -> fmt::Result {
    match storage_index {
        Some(si) => write!(f, "<{prefix} si={}…>", &base32::encode(&si)[..6]),
        None => write!(f, "<{prefix}>"),
    }
}

impl fmt::Debug for FileCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_summary(f, &prefix_of(false, self.kind()), self.storage_index())
    }
}

impl fmt::Debug for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cap::File(file) => fmt::Debug::fmt(file, f),
            Cap::Directory(file) => {
                debug_summary(f, &prefix_of(true, file.kind()), file.storage_index())
            }
            Cap::Unknown(_) => f.write_str("<unknown cap>"),
        }
    }
}

impl fmt::Debug for UnknownCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<unknown cap>")
    }
}

impl fmt::Debug for MutableCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&FileCap::Mutable(*self), f)
    }
}

impl fmt::Debug for MutableAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match access_level(self) {
            Level::Write => "Write",
            Level::Read => "Read",
            Level::Verify => "Verify",
        })
    }
}

impl fmt::Debug for ChkCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&FileCap::Chk(*self), f)
    }
}

impl fmt::Debug for ChkVerifierCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&FileCap::ChkVerifier(*self), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chk() -> String {
        format!(
            "URI:CHK:{}:{}:3:10:1000",
            base32::encode(&[1; 16]),
            base32::encode(&[2; 32])
        )
    }

    #[test]
    fn errors_name_kind_and_field_but_not_secrets() {
        let key = base32::encode(&[1; 16]);
        let bad_k = chk().replace(":3:10:", ":0:10:");
        let e = Cap::parse(&bad_k).unwrap_err();
        assert_eq!((e.kind.as_str(), e.field), ("URI:CHK", "needed_shares"));
        assert!(!e.to_string().contains(&key));
        let e = Cap::parse(&chk().replace(":3:10:", ":3:257:")).unwrap_err();
        assert_eq!(e.field, "total_shares");
        let e = Cap::parse(&chk().replace(&key, &key[1..])).unwrap_err();
        assert_eq!(e.field, "key");
        let e = Cap::parse(&format!(
            "{}:99999999999999999999999",
            &chk()[..chk().len() - 5]
        ))
        .unwrap_err();
        assert!(e.field == "fields" || e.field == "size", "{e}");
        let e = Cap::parse("URI:DIR2-MDMF-RO:xyz").unwrap_err();
        assert_eq!(e.kind, "URI:DIR2-MDMF-RO");
    }

    #[test]
    fn debug_hides_keys() {
        let cap = Cap::parse(&chk()).unwrap();
        let shown = format!("{cap:?}");
        assert!(shown.starts_with("<URI:CHK si="), "{shown}");
        assert!(!shown.contains(&base32::encode(&[1; 16])));
    }

    #[test]
    fn unknown_caps_are_kept_verbatim() {
        for text in ["URI:FUTURE:abc", "", "hello", "ro.URI:FUTURE:x"] {
            let cap = Cap::parse(text).unwrap();
            assert!(matches!(cap, Cap::Unknown(_)));
            assert_eq!(cap.to_string(), text);
        }
    }
}
