//! What a directory entry points at: a cap Tahoe knows, or an unknown (future) cap kept byte for byte, and Tahoe's
//! rules for which caps may stand in an entry's write and read slots (`nodemaker.create_from_cap`,
//! `uri.from_string` with its `ro.`/`imm.` prefixes, and `unknown.UnknownNode`).
//!
//! A known cap is held in the strongest form the reader could see: the writecap when the directory was read with its
//! writekey and the child has one, else the readcap. An unknown cap is held as Tahoe holds it in memory: its read
//! form carries an `ro.` prefix (or `imm.` inside an immutable directory) that says what it may grant; packing
//! strips the prefix the directory implies and unpacking puts it back.

use crate::cap::{Cap, FileCap, MutableAccess, MutableCap, UnknownCap};
use crate::crypto::base32;
use std::fmt;
use thiserror::Error;

const READONLY_PREFIX: &[u8] = b"ro.";
const IMMUTABLE_PREFIX: &[u8] = b"imm.";

/// Why a cap may not be a directory child where it was offered: Tahoe's `CapConstraintError` family. Tahoe leaves
/// such an entry out when it reads a directory, and refuses it when one is added.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChildCapError {
    /// A mutable cap (or a cap not alleged immutable) where only immutable ones may go.
    #[error("{0} used in an immutable context")]
    MustBeDeepImmutable(String),
    /// A writecap where only read-only caps may go (an `ro.` prefix on a writecap).
    #[error("{0} used in a read-only context")]
    MustBeReadonly(String),
    /// An unknown cap given only as a writecap: it cannot be reduced to a readcap, so it is refused rather than
    /// risk handing out write authority.
    #[error("cannot attach an unknown cap given only as a writecap{}", if *.0 { " to an immutable directory" } else { "" })]
    UnknownWriteOnly(bool),
    /// A cap of a kind Tahoe knows that is malformed.
    #[error("malformed cap: {0}")]
    Malformed(String),
}

/// The cap(s) of one child.
#[derive(Clone, PartialEq, Eq)]
pub enum Child {
    /// A file or directory cap of a kind Tahoe 1.20 makes a node from: LIT, CHK, SSK/MDMF write and read caps, and
    /// their directory forms. Never [`Cap::Unknown`].
    Known(Cap),
    /// Anything else, including verify caps and caps of future formats.
    Unknown(UnknownChild),
}

/// Caps Tahoe does not know (or cannot use as a child), as given. Both may be absent: such an entry is kept too.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct UnknownChild {
    write: Option<Vec<u8>>,
    /// With its `ro.` or `imm.` prefix.
    read: Option<Vec<u8>>,
}

impl UnknownChild {
    /// The writecap, exactly as stored.
    pub fn write_cap(&self) -> Option<&[u8]> {
        self.write.as_deref()
    }

    /// The readcap, with the `ro.` or `imm.` prefix Tahoe gives it.
    pub fn read_cap(&self) -> Option<&[u8]> {
        self.read.as_deref()
    }
}

impl fmt::Debug for UnknownChild {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Unknown caps may be secrets: show only which are present.
        write!(
            f,
            "UnknownChild {{ write: {}, read: {} }}",
            if self.write.is_some() {
                "<cap>"
            } else {
                "none"
            },
            if self.read.is_some() { "<cap>" } else { "none" }
        )
    }
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Child::Known(cap) => write!(f, "Known({cap:?})"),
            Child::Unknown(unknown) => write!(f, "{unknown:?}"),
        }
    }
}

impl Child {
    /// The child a single cap names, as Tahoe's `set_uri(name, cap)` takes it: a known cap in whatever form it is,
    /// an unknown one only if it carries an `ro.` or `imm.` prefix.
    pub fn from_cap(cap: &Cap) -> Result<Child, ChildCapError> {
        Child::from_caps(Some(cap.to_string().as_bytes()), None, false)
    }

    /// The child for a writecap and a readcap, either possibly absent or empty, as `nodemaker.create_from_cap`
    /// makes it: the writecap wins if there is one. With `deep_immutable`, only immutable caps are accepted.
    pub fn from_caps(
        write: Option<&[u8]>,
        read: Option<&[u8]>,
        deep_immutable: bool,
    ) -> Result<Child, ChildCapError> {
        let write = write.filter(|w| !w.is_empty());
        let read = read.filter(|r| !r.is_empty());
        let Some(strongest) = write.or(read) else {
            return Ok(Child::Unknown(UnknownChild::default()));
        };
        match from_string(strongest, deep_immutable) {
            Ok(Some(cap)) if is_node_kind(&cap) => Ok(Child::Known(cap)),
            _ => unknown_node(write, read, deep_immutable).map(Child::Unknown),
        }
    }

    /// The known cap, if this is one.
    pub fn cap(&self) -> Option<&Cap> {
        match self {
            Child::Known(cap) => Some(cap),
            Child::Unknown(_) => None,
        }
    }

    pub fn is_directory(&self) -> bool {
        matches!(self, Child::Known(Cap::Directory(_)))
    }

    pub fn is_unknown(&self) -> bool {
        matches!(self, Child::Unknown(_))
    }

    /// The writecap Tahoe packs for this child (`get_write_uri`), if any.
    pub fn write_uri(&self) -> Option<Vec<u8>> {
        match self {
            Child::Known(cap) if !cap.is_readonly() => Some(cap.to_string().into_bytes()),
            Child::Known(_) => None,
            Child::Unknown(u) => u.write.clone(),
        }
    }

    /// The readcap Tahoe packs for this child (`get_readonly_uri`), if any; unknown caps keep their prefix.
    pub fn read_uri(&self) -> Option<Vec<u8>> {
        match self {
            Child::Known(cap) => cap.readonly().map(|ro| ro.to_string().into_bytes()),
            Child::Unknown(u) => u.read.clone(),
        }
    }

    /// The read-only form, as Tahoe makes it for an entry whose metadata says `no-write`.
    pub fn readonly(&self) -> Child {
        match self {
            Child::Known(cap) => cap.readonly().map_or_else(|| self.clone(), Child::Known),
            Child::Unknown(u) => Child::Unknown(UnknownChild {
                write: None,
                read: u.read.clone(),
            }),
        }
    }

    /// Whether Tahoe lets this child into an immutable directory: immutable known caps, and unknown caps that have
    /// only a read form.
    pub fn is_allowed_in_immutable_directory(&self) -> bool {
        match self {
            Child::Known(cap) => !cap.is_mutable(),
            Child::Unknown(u) => u.write.is_none(),
        }
    }
}

/// The cap kinds Tahoe's nodemaker makes nodes from. Verify caps are left out: Tahoe makes no node from the
/// mutable and directory ones, and the node it makes from a CHK verify cap cannot be listed or packed, so all of
/// them are kept here as unknown caps.
fn is_node_kind(cap: &Cap) -> bool {
    match cap {
        Cap::File(file) | Cap::Directory(file) => match file {
            FileCap::Literal(_) | FileCap::Chk(_) => true,
            FileCap::ChkVerifier(_) => false,
            FileCap::Mutable(MutableCap { access, .. }) => {
                !matches!(access, MutableAccess::Verify { .. })
            }
        },
        Cap::Unknown(_) => false,
    }
}

/// What a known kind requires of its context.
enum Requires {
    Nothing,
    /// A mutable readcap: the context must allow mutable caps.
    Mutable,
    /// A writecap: the context must allow writeable caps.
    Writeable,
}

/// Every kind token after `URI:` that Tahoe recognises, with what it requires and how its errors name it.
const KNOWN_KINDS: [(&str, Requires, &str); 18] = [
    ("CHK", Requires::Nothing, ""),
    ("CHK-Verifier", Requires::Nothing, ""),
    ("LIT", Requires::Nothing, ""),
    ("SSK", Requires::Writeable, "URI:SSK file writecap"),
    (
        "SSK-RO",
        Requires::Mutable,
        "URI:SSK-RO readcap to a mutable file",
    ),
    ("SSK-Verifier", Requires::Nothing, ""),
    ("MDMF", Requires::Writeable, "URI:MDMF file writecap"),
    (
        "MDMF-RO",
        Requires::Mutable,
        "URI:MDMF-RO readcap to a mutable file",
    ),
    ("MDMF-Verifier", Requires::Nothing, ""),
    ("DIR2", Requires::Writeable, "URI:DIR2 directory writecap"),
    (
        "DIR2-RO",
        Requires::Mutable,
        "URI:DIR2-RO readcap to a mutable directory",
    ),
    ("DIR2-Verifier", Requires::Nothing, ""),
    ("DIR2-CHK", Requires::Nothing, ""),
    ("DIR2-CHK-Verifier", Requires::Nothing, ""),
    ("DIR2-LIT", Requires::Nothing, ""),
    (
        "DIR2-MDMF",
        Requires::Writeable,
        "URI:DIR2-MDMF directory writecap",
    ),
    (
        "DIR2-MDMF-RO",
        Requires::Mutable,
        "URI:DIR2-MDMF-RO readcap to a mutable directory",
    ),
    ("DIR2-MDMF-Verifier", Requires::Nothing, ""),
];

/// `uri.from_string(text, deep_immutable)`: a known cap, `None` for an unknown one, or the constraint it breaks. A
/// CHK verify cap that only Tahoe's looser pattern accepts comes back as `Cap::Unknown`: accepted, but no node.
fn from_string(text: &[u8], deep_immutable: bool) -> Result<Option<Cap>, ChildCapError> {
    let (mut can_be_mutable, mut can_be_writeable) = (!deep_immutable, !deep_immutable);
    let bare = if let Some(rest) = text.strip_prefix(IMMUTABLE_PREFIX) {
        (can_be_mutable, can_be_writeable) = (false, false);
        rest
    } else if let Some(rest) = text.strip_prefix(READONLY_PREFIX) {
        can_be_writeable = false;
        rest
    } else {
        text
    };
    let violated = |kind: &str| {
        if !can_be_mutable {
            ChildCapError::MustBeDeepImmutable(kind.to_owned())
        } else {
            ChildCapError::MustBeReadonly(kind.to_owned())
        }
    };
    // Tahoe's hooks for testing how future caps behave in constrained contexts.
    if bare.starts_with(b"x-tahoe-future-test-writeable:") && !can_be_writeable {
        return Err(violated("x-tahoe-future-test-writeable: testing cap"));
    }
    if bare.starts_with(b"x-tahoe-future-test-mutable:") && !can_be_mutable {
        return Err(violated("x-tahoe-future-test-mutable: testing cap"));
    }
    let Some(kind) = bare.strip_prefix(b"URI:").and_then(|rest| {
        let token = &rest[..rest.iter().position(|&b| b == b':')?];
        KNOWN_KINDS
            .iter()
            .find(|(name, _, _)| name.as_bytes() == token)
    }) else {
        return Ok(None);
    };
    // Tahoe checks the context before it parses, so a writecap in a read-only slot is a constraint error even when
    // it is also malformed.
    match kind.1 {
        Requires::Writeable if !can_be_writeable => return Err(violated(kind.2)),
        Requires::Mutable if !can_be_mutable => return Err(violated(kind.2)),
        _ => {}
    }
    let bare = std::str::from_utf8(bare)
        .map_err(|_| ChildCapError::Malformed(format!("URI:{} cap is not UTF-8", kind.0)))?;
    match Cap::parse(bare) {
        Ok(cap) => Ok(Some(cap)),
        Err(e) => match kind.0 {
            // Tahoe's CHK verify cap pattern has no `$`: any text after the size's digits is accepted (and
            // ignored). Such caps are kept as unknown caps anyway, so only whether they are refused matters.
            // Its share counts are not checked either (this crate's parser requires 1 ≤ k ≤ N ≤ 256).
            "CHK-Verifier" | "DIR2-CHK-Verifier" if tahoe_accepts_chk_verifier(bare) => {
                Ok(Some(Cap::Unknown(UnknownCap(bare.to_owned()))))
            }
            _ => Err(ChildCapError::Malformed(e.to_string())),
        },
    }
}

/// Whether Tahoe's pattern for CHK verify caps matches: `URI:KIND:SI:UEB:K:N:SIZE` with base32 keys of the right
/// lengths and decimal numbers, and anything after SIZE's digits.
fn tahoe_accepts_chk_verifier(cap: &str) -> bool {
    let mut fields = cap.splitn(7, ':').skip(2);
    let (Some(si), Some(ueb), Some(k), Some(n), Some(size)) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return false;
    };
    let digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    base32::decode_array::<16>(si).is_ok()
        && base32::decode_array::<32>(ueb).is_ok()
        && digits(k)
        && digits(n)
        && size.bytes().next().is_some_and(|b| b.is_ascii_digit())
}

/// `UnknownNode(rw_uri, ro_uri, deep_immutable)`: which unknown caps may be kept, and the prefix the read form
/// gets. `write` and `read` are non-empty if present.
fn unknown_node<'a>(
    mut write: Option<&'a [u8]>,
    mut read: Option<&'a [u8]>,
    deep_immutable: bool,
) -> Result<UnknownChild, ChildCapError> {
    if let Some(given_write) = write {
        if deep_immutable {
            if read.is_some() {
                return Err(ChildCapError::MustBeDeepImmutable(
                    "an unknown writecap as an immutable child".into(),
                ));
            }
            if !given_write.starts_with(IMMUTABLE_PREFIX) {
                return Err(ChildCapError::UnknownWriteOnly(true));
            }
        }
        match read {
            None => {
                // A lone cap may be used as a readcap only if its prefix already says it is one.
                if !(given_write.starts_with(READONLY_PREFIX)
                    || given_write.starts_with(IMMUTABLE_PREFIX))
                {
                    return Err(ChildCapError::UnknownWriteOnly(false));
                }
                (read, write) = (Some(given_write), None);
            }
            Some(given_read) if given_read.starts_with(IMMUTABLE_PREFIX) => {
                return Err(ChildCapError::MustBeDeepImmutable(
                    "a child with both a writecap and an imm. readcap".into(),
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(given_read) = read {
        from_string(given_read, deep_immutable)?;
    }
    let read = read.map(|r| {
        if deep_immutable {
            // Inside an immutable directory every read form is alleged immutable, even one that came as `ro.`.
            let bare = r
                .strip_prefix(IMMUTABLE_PREFIX)
                .or_else(|| r.strip_prefix(READONLY_PREFIX))
                .unwrap_or(r);
            [IMMUTABLE_PREFIX, bare].concat()
        } else if r.starts_with(READONLY_PREFIX) || r.starts_with(IMMUTABLE_PREFIX) {
            r.to_vec()
        } else {
            [READONLY_PREFIX, r].concat()
        }
    });
    Ok(UnknownChild {
        // Deep-immutable contexts returned early above for any writecap that stayed one.
        write: write.map(<[u8]>::to_vec),
        read,
    })
}

/// The read slot's bytes for a read form (`unknown.strip_prefix_for_ro`): the prefix the directory implies is left
/// out (`ro.` always; `imm.` only in an immutable directory, where every child is immutable).
pub(super) fn strip_prefix_for_read_slot(read: &[u8], deep_immutable: bool) -> &[u8] {
    if let Some(rest) = read.strip_prefix(IMMUTABLE_PREFIX) {
        if deep_immutable { rest } else { read }
    } else {
        read.strip_prefix(READONLY_PREFIX).unwrap_or(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown(c: &Child) -> (Option<&[u8]>, Option<&[u8]>) {
        match c {
            Child::Unknown(u) => (u.write_cap(), u.read_cap()),
            Child::Known(_) => panic!("expected an unknown child"),
        }
    }

    #[test]
    fn unknown_caps_follow_tahoes_slot_rules() {
        let f = Some(&b"x-future:abc"[..]);
        // A lone unprefixed unknown cap cannot be a child.
        assert_eq!(
            Child::from_caps(f, None, false),
            Err(ChildCapError::UnknownWriteOnly(false))
        );
        // In the read slot it gets an ro. prefix; in an immutable directory imm.
        let c = Child::from_caps(None, f, false).unwrap();
        assert_eq!(unknown(&c), (None, Some(&b"ro.x-future:abc"[..])));
        let c = Child::from_caps(None, f, true).unwrap();
        assert_eq!(unknown(&c), (None, Some(&b"imm.x-future:abc"[..])));
        let c = Child::from_caps(None, Some(b"ro.x-future:abc"), true).unwrap();
        assert_eq!(unknown(&c), (None, Some(&b"imm.x-future:abc"[..])));
        // A prefixed lone writecap moves to the read slot.
        let c = Child::from_caps(Some(b"imm.x-future:abc"), None, false).unwrap();
        assert_eq!(unknown(&c), (None, Some(&b"imm.x-future:abc"[..])));
        let c = Child::from_caps(f, Some(b"x-future:ro"), false).unwrap();
        assert_eq!(
            unknown(&c),
            (Some(&b"x-future:abc"[..]), Some(&b"ro.x-future:ro"[..]))
        );
        assert!(Child::from_caps(f, Some(b"imm.x"), false).is_err());
        assert!(Child::from_caps(f, Some(b"x"), true).is_err());
        // Nothing at all is an empty unknown child.
        assert_eq!(
            Child::from_caps(Some(b""), None, false),
            Ok(Child::Unknown(UnknownChild::default()))
        );
    }

    #[test]
    fn constraints_on_known_caps() {
        let ssk_ro = format!(
            "URI:SSK-RO:{}:{}",
            crate::crypto::base32::encode(&[1; 16]),
            crate::crypto::base32::encode(&[2; 32])
        );
        assert!(matches!(
            Child::from_caps(None, Some(ssk_ro.as_bytes()), true),
            Err(ChildCapError::MustBeDeepImmutable(_))
        ));
        assert!(Child::from_caps(None, Some(ssk_ro.as_bytes()), false).is_ok());
        let ssk = ssk_ro.replace("SSK-RO", "SSK");
        assert!(matches!(
            Child::from_caps(None, Some(format!("ro.{ssk}").as_bytes()), false),
            Err(ChildCapError::MustBeReadonly(_))
        ));
        assert!(matches!(
            Child::from_caps(None, Some(b"URI:CHK:bad"), false),
            Err(ChildCapError::Malformed(_))
        ));
        // A verify cap is kept as an unknown cap.
        let verifier = ssk_ro.replace("SSK-RO", "SSK-Verifier");
        let c = Child::from_caps(None, Some(verifier.as_bytes()), false).unwrap();
        assert!(c.is_unknown());
    }

    #[test]
    fn read_slot_prefixes() {
        assert_eq!(strip_prefix_for_read_slot(b"ro.x", false), b"x");
        assert_eq!(strip_prefix_for_read_slot(b"imm.x", false), b"imm.x");
        assert_eq!(strip_prefix_for_read_slot(b"imm.x", true), b"x");
        assert_eq!(strip_prefix_for_read_slot(b"x", true), b"x");
    }
}
