//! The three documents of the grid service directory, parsed and written: the grid service announcement (GSA) a
//! storage server publishes about itself, the GSD's `v1.<petname>` entries, and the invitation a client is given.
//!
//! Everything here comes from the network or from users, so every parser bounds its input, says what is wrong and
//! where, and never panics. Unknown keys of an announcement are kept, so a rewrite does not lose what a newer
//! server added.

use serde_json::{Map, Value};

use crate::cap::{Cap, FileCap, MutableAccess, MutableCap};
use crate::dirnode::Directory;
use crate::grid::{GridError, ServerInfo};
use crate::storage::nurl::Nurl;

/// Largest GSA accepted: a real one is well under 2 KiB; a hostile one must not cost memory.
pub const MAX_ANNOUNCEMENT_BYTES: usize = 64 * 1024;
/// Largest invitation accepted.
pub const MAX_INVITATION_BYTES: usize = 64 * 1024;
/// Most GSD entries used; the rest are skipped with a warning (a grid of more servers than this is not ours to
/// imagine, and every entry costs a read).
pub const MAX_GSD_ENTRIES: usize = 4096;
/// Longest petname accepted.
pub const MAX_PETNAME_BYTES: usize = 200;

/// The prefix of GSD entry names this version reads; other names are left to future versions.
pub const ENTRY_PREFIX: &str = "v1.";

/// Something in a GSD document that cannot be used, saying which document and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {problem}")]
pub struct FormatError {
    pub what: String,
    pub problem: String,
}

fn format_error(what: impl Into<String>, problem: impl Into<String>) -> FormatError {
    FormatError {
        what: what.into(),
        problem: problem.into(),
    }
}

/// A grid service announcement: `{"v0-<server key>": {"ann": {…}}}`, UTF-8 JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Announcement {
    /// `v0-` and 52 base32 characters: the server's node key, as Tahoe names servers.
    pub server_id: String,
    /// The keys a Tahoe storage server announces, and any others, kept as they were.
    pub ann: Map<String, Value>,
    /// Keys beside `ann` in the server's mapping, kept as they were.
    pub other: Map<String, Value>,
}

impl Announcement {
    pub fn new(server_id: &str, ann: Map<String, Value>) -> Announcement {
        Announcement {
            server_id: server_id.to_owned(),
            ann,
            other: Map::new(),
        }
    }

    /// Parses a GSA's contents. `what` names it in errors (its petname, say).
    pub fn parse(bytes: &[u8], what: &str) -> Result<Announcement, FormatError> {
        if bytes.len() > MAX_ANNOUNCEMENT_BYTES {
            return Err(format_error(
                what,
                format!(
                    "the announcement is {} bytes, more than the {MAX_ANNOUNCEMENT_BYTES} allowed",
                    bytes.len()
                ),
            ));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| format_error(what, format!("the announcement is not UTF-8: {e}")))?;
        let document: Value = serde_json::from_str(text)
            .map_err(|e| format_error(what, format!("the announcement is not JSON: {e}")))?;
        let Value::Object(top) = document else {
            return Err(format_error(what, "the announcement is not a JSON object"));
        };
        let mut top = top.into_iter();
        let (Some((server_id, body)), None) = (top.next(), top.next()) else {
            return Err(format_error(
                what,
                "the announcement must hold exactly one server (one top-level key)",
            ));
        };
        check_server_id(&server_id).map_err(|problem| format_error(what, problem))?;
        let Value::Object(mut other) = body else {
            return Err(format_error(
                what,
                format!("{server_id}: not a mapping with an `ann` key"),
            ));
        };
        let Some(Value::Object(ann)) = other.remove("ann") else {
            return Err(format_error(what, format!("{server_id}: no `ann` mapping")));
        };
        Ok(Announcement {
            server_id,
            ann,
            other,
        })
    }

    /// The bytes to publish: compact JSON, keys sorted, so equal announcements are equal bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut body = self.other.clone();
        body.insert("ann".into(), Value::Object(self.ann.clone()));
        let mut top = Map::new();
        top.insert(self.server_id.clone(), Value::Object(body));
        // Serializing a map of JSON values cannot fail.
        serde_json::to_vec(&Value::Object(top)).unwrap_or_default()
    }

    /// The server as a client uses it (NURLs, fURL, nickname, permutation seed), checked.
    pub fn server_info(&self) -> Result<ServerInfo, GridError> {
        ServerInfo::from_announcement(&self.server_id, &Value::Object(self.ann.clone()))
    }

    pub fn nickname(&self) -> Option<&str> {
        self.ann.get("nickname").and_then(Value::as_str)
    }
}

/// Tahoe's server ids for real nodes: `v0-` and the 32-byte ed25519 key in 52 lower-case base32 characters.
fn check_server_id(id: &str) -> Result<(), String> {
    let key = id
        .strip_prefix("v0-")
        .ok_or_else(|| format!("server id {:?} does not start with v0-", shorten(id)))?;
    if key.len() != 52 || !key.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7')) {
        return Err(format!(
            "server id {:?} is not v0- and 52 base32 characters",
            shorten(id)
        ));
    }
    Ok(())
}

/// A string cut short for an error message (a hostile document may hold megabytes).
fn shorten(text: &str) -> String {
    const LIMIT: usize = 80;
    match text.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// One usable GSD entry: a petname and the readcap of its server's announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GsdEntry {
    pub petname: String,
    pub announcement: MutableCap,
}

/// The GSD's entries: those a client uses, and warnings for those it skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GsdEntries {
    pub entries: Vec<GsdEntry>,
    pub warnings: Vec<String>,
}

/// Reads the `v1.<petname>` entries of a GSD listing. Names without the prefix are ignored (they belong to other
/// versions or other kinds of service); an entry whose child is not a mutable file's cap is skipped with a warning.
/// A writecap child is reduced to its readcap: a client never needs more.
pub fn gsd_entries(directory: &Directory) -> GsdEntries {
    let mut out = GsdEntries::default();
    for (name, entry) in directory.iter() {
        let Some(petname) = name.strip_prefix(ENTRY_PREFIX) else {
            continue;
        };
        if let Err(problem) = check_petname(petname) {
            out.warnings
                .push(format!("GSD entry {:?} skipped: {problem}", shorten(name)));
            continue;
        }
        if out.entries.len() == MAX_GSD_ENTRIES {
            out.warnings.push(format!(
                "GSD entry {name:?} and later ones skipped: more than {MAX_GSD_ENTRIES} entries"
            ));
            break;
        }
        match entry.child.cap() {
            Some(Cap::File(FileCap::Mutable(cap)))
                if !matches!(cap.access, MutableAccess::Verify { .. }) =>
            {
                out.entries.push(GsdEntry {
                    petname: petname.to_owned(),
                    announcement: cap.readonly(),
                });
            }
            _ => out.warnings.push(format!(
                "GSD entry {name:?} skipped: it does not link a mutable file's readcap"
            )),
        }
    }
    out
}

/// Petnames are names in a directory and words on a command line: printable, no slashes, not too long.
pub fn check_petname(petname: &str) -> Result<(), String> {
    if petname.is_empty() {
        return Err("the petname is empty".into());
    }
    if petname.len() > MAX_PETNAME_BYTES {
        return Err(format!(
            "the petname is longer than {MAX_PETNAME_BYTES} bytes"
        ));
    }
    if petname.chars().any(|c| c == '/' || c.is_control()) {
        return Err(format!(
            "the petname {petname:?} holds a slash or a control character"
        ));
    }
    Ok(())
}

/// What a client is given to join a grid: the GSD readcap and the NURLs of servers to bootstrap from (PR 882's
/// `{"version": 1, "cap": …, "furls": […]}`; `furls` carries NURLs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    /// The GSD's readcap (a mutable directory's read-only cap).
    pub gsd: MutableCap,
    pub bootstrap: Vec<Nurl>,
    /// Addresses in the invitation that cannot be used (Foolscap-only fURLs, say), with why.
    pub skipped: Vec<String>,
}

impl Invitation {
    pub fn parse(text: &str) -> Result<Invitation, FormatError> {
        const WHAT: &str = "invitation";
        if text.len() > MAX_INVITATION_BYTES {
            return Err(format_error(
                WHAT,
                format!("longer than {MAX_INVITATION_BYTES} bytes"),
            ));
        }
        let document: Value =
            serde_json::from_str(text).map_err(|e| format_error(WHAT, format!("not JSON: {e}")))?;
        let Value::Object(top) = document else {
            return Err(format_error(WHAT, "not a JSON object"));
        };
        match top.get("version") {
            Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
            Some(other) => {
                return Err(format_error(
                    WHAT,
                    format!(
                        "version {} is not one this tahoe-mount reads (1)",
                        shorten(&other.to_string())
                    ),
                ));
            }
            None => return Err(format_error(WHAT, "no \"version\"")),
        }
        let cap_text = top
            .get("cap")
            .and_then(Value::as_str)
            .ok_or_else(|| format_error(WHAT, "no \"cap\" string"))?;
        let gsd = parse_gsd_readcap(cap_text).map_err(|problem| format_error(WHAT, problem))?;
        let furls = match top.get("furls") {
            Some(Value::Array(list)) => list,
            _ => return Err(format_error(WHAT, "no \"furls\" list")),
        };
        let mut bootstrap = Vec::new();
        let mut skipped = Vec::new();
        for (i, value) in furls.iter().enumerate() {
            let Some(text) = value.as_str() else {
                skipped.push(format!("furls[{i}] is not a string"));
                continue;
            };
            match text.parse::<Nurl>() {
                Ok(nurl) if nurl.tor => {
                    skipped.push(format!("furls[{i}] is reachable over Tor only"))
                }
                Ok(nurl) => bootstrap.push(nurl),
                Err(e) => skipped.push(format!("furls[{i}]: {e}")),
            }
        }
        if bootstrap.is_empty() {
            let why = if skipped.is_empty() {
                "the list is empty".to_owned()
            } else {
                skipped.join("; ")
            };
            return Err(format_error(
                WHAT,
                format!("no usable bootstrap NURL in \"furls\" ({why})"),
            ));
        }
        Ok(Invitation {
            gsd,
            bootstrap,
            skipped,
        })
    }

    /// The invitation as JSON text, one line.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "version": 1,
            "cap": Cap::Directory(FileCap::Mutable(self.gsd)).to_string(),
            "furls": self.bootstrap.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })
        .to_string()
    }
}

/// A GSD readcap: a mutable directory's read-only cap. A writecap is refused rather than reduced, since whoever
/// handed it out has leaked the operator's key and should know.
pub fn parse_gsd_readcap(text: &str) -> Result<MutableCap, String> {
    let prefix: String = text.trim().chars().take(14).collect();
    match Cap::parse(text.trim()) {
        Ok(Cap::Directory(FileCap::Mutable(cap))) => match cap.access {
            MutableAccess::Read { .. } => Ok(cap),
            MutableAccess::Write { .. } => Err(format!(
                "the GSD cap ({prefix}…) is a writecap: only the operator may hold it; give clients the readcap \
                 (`tahoe-mount gsd invite` prints an invitation with it)"
            )),
            MutableAccess::Verify { .. } => Err(format!(
                "the GSD cap ({prefix}…) is a verify cap, which cannot read the directory"
            )),
        },
        Ok(_) => Err(format!(
            "the GSD cap ({prefix}…) is not a mutable directory's readcap (URI:DIR2-RO: or URI:DIR2-MDMF-RO:)"
        )),
        Err(e) => Err(format!("the GSD cap is malformed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::base32;
    use crate::dirnode::{Child, Entry};

    const NURL: &str = "pb://E7aJj9qNPfms6PZTKWCaMD8qmBMumLbjdt6oAZ69lT8@127.0.0.1:24601/cdynbizisajfk3wr6wgdogct3hkc6g2u#v=1";
    const SERVER: &str = "v0-h2td7zxfrdl5de5kjrl3ktjrjy26psavks4saal2xb7eksobdjxq";

    fn gsd_readcap() -> MutableCap {
        MutableCap {
            format: crate::cap::MutableFormat::Sdmf,
            access: MutableAccess::Read { readkey: [5; 16] },
            fingerprint: [6; 32],
        }
    }

    #[test]
    fn an_announcement_round_trips_with_unknown_keys() {
        let text = format!(
            r#"{{"{SERVER}": {{"ann": {{"nickname": "n1", "anonymous-storage-NURLs": ["{NURL}"], "future": [1, {{"x": 2}}]}}, "sig": "kept"}}}}"#
        );
        let ann = Announcement::parse(text.as_bytes(), "gsa").unwrap();
        assert_eq!(ann.server_id, SERVER);
        assert_eq!(ann.nickname(), Some("n1"));
        assert_eq!(ann.other["sig"], "kept");
        let again = Announcement::parse(&ann.to_bytes(), "gsa").unwrap();
        assert_eq!(again, ann);
        let info = ann.server_info().unwrap();
        assert_eq!(info.nurls[0].to_string(), NURL);
    }

    #[test]
    fn broken_announcements_say_what_is_wrong() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![0xff, 0xfe], "UTF-8"),
            (b"[1]".to_vec(), "object"),
            (b"{not json".to_vec(), "JSON"),
            (b"{}".to_vec(), "exactly one"),
            (
                format!(r#"{{"{SERVER}": {{"ann": {{}}}}, "v0-b": {{}}}}"#).into_bytes(),
                "exactly one",
            ),
            (br#"{"v1-x": {"ann": {}}}"#.to_vec(), "v0-"),
            (br#"{"v0-short": {"ann": {}}}"#.to_vec(), "52 base32"),
            (format!(r#"{{"{SERVER}": 3}}"#).into_bytes(), "mapping"),
            (
                format!(r#"{{"{SERVER}": {{"ann": []}}}}"#).into_bytes(),
                "ann",
            ),
            (vec![b' '; MAX_ANNOUNCEMENT_BYTES + 1], "allowed"),
        ];
        for (bytes, expected) in cases {
            let err = Announcement::parse(&bytes, "gsa of s1").unwrap_err();
            assert_eq!(err.what, "gsa of s1");
            assert!(err.problem.contains(expected), "{err} lacks {expected}");
        }
    }

    #[test]
    fn gsd_entries_keep_v1_mutable_readcaps_only() {
        let mut dir = Directory::new();
        let readcap = Cap::File(FileCap::Mutable(gsd_readcap()));
        let writecap = Cap::File(FileCap::Mutable(MutableCap {
            access: MutableAccess::Write { writekey: [7; 16] },
            ..gsd_readcap()
        }));
        let chk = Cap::parse(&format!(
            "URI:CHK:{}:{}:1:3:100",
            base32::encode(&[1; 16]),
            base32::encode(&[2; 32])
        ))
        .unwrap();
        let entry = |cap: &Cap| Entry {
            child: Child::from_cap(cap).unwrap(),
            metadata: Default::default(),
        };
        dir.insert("v1.alpha", entry(&readcap)).unwrap();
        dir.insert("v1.beta", entry(&writecap)).unwrap();
        dir.insert("v1.gamma", entry(&chk)).unwrap();
        dir.insert("v2.future", entry(&chk)).unwrap();
        dir.insert("README", entry(&chk)).unwrap();
        dir.insert("v1.", entry(&readcap)).unwrap();
        let found = gsd_entries(&dir);
        let names: Vec<_> = found.entries.iter().map(|e| e.petname.as_str()).collect();
        assert_eq!(names, ["alpha", "beta"]);
        assert!(
            found
                .entries
                .iter()
                .all(|e| matches!(e.announcement.access, MutableAccess::Read { .. }))
        );
        assert_eq!(found.warnings.len(), 2, "{:?}", found.warnings);
        assert!(found.warnings.iter().any(|w| w.contains("v1.gamma")));
        assert!(found.warnings.iter().any(|w| w.contains("empty")));
    }

    #[test]
    fn invitations_round_trip_and_refuse_what_they_must() {
        let invitation = Invitation {
            gsd: gsd_readcap(),
            bootstrap: vec![NURL.parse().unwrap()],
            skipped: Vec::new(),
        };
        let text = invitation.to_json();
        assert_eq!(Invitation::parse(&text).unwrap(), invitation);

        let furl = "pb://5tle46leisxf2nljqldkdeucnvrc73wk@tcp:127.0.0.1:24601/swiss";
        let cap = Cap::Directory(FileCap::Mutable(gsd_readcap())).to_string();
        let mixed =
            format!(r#"{{"version": 1, "cap": "{cap}", "furls": ["{furl}", "{NURL}", 7]}}"#);
        let parsed = Invitation::parse(&mixed).unwrap();
        assert_eq!(parsed.bootstrap.len(), 1);
        assert_eq!(parsed.skipped.len(), 2, "{:?}", parsed.skipped);

        let writecap = Cap::Directory(FileCap::Mutable(MutableCap {
            access: MutableAccess::Write { writekey: [7; 16] },
            ..gsd_readcap()
        }))
        .to_string();
        let cases = [
            (
                format!(r#"{{"version": 2, "cap": "{cap}", "furls": ["{NURL}"]}}"#),
                "version 2",
            ),
            (
                format!(r#"{{"cap": "{cap}", "furls": ["{NURL}"]}}"#),
                "version",
            ),
            (
                format!(r#"{{"version": 1, "cap": "{writecap}", "furls": ["{NURL}"]}}"#),
                "writecap",
            ),
            (
                format!(r#"{{"version": 1, "cap": "URI:LIT:mfrgg", "furls": ["{NURL}"]}}"#),
                "readcap",
            ),
            (
                format!(r#"{{"version": 1, "cap": "{cap}", "furls": ["{furl}"]}}"#),
                "no usable",
            ),
            (
                format!(r#"{{"version": 1, "cap": "{cap}", "furls": []}}"#),
                "empty",
            ),
            (format!(r#"{{"version": 1, "cap": "{cap}"}}"#), "furls"),
            ("[]".to_owned(), "object"),
            ("{".to_owned(), "JSON"),
        ];
        for (text, expected) in cases {
            let err = Invitation::parse(&text).unwrap_err();
            assert!(err.problem.contains(expected), "{err} lacks {expected}");
            assert!(
                !err.to_string().contains(&writecap[14..]),
                "{err} leaks the writecap"
            );
        }
    }
}
