//! What a directory entry's metadata says about a file beyond its cap: its times, permission bits, owner, node type
//! and, for a symbolic link, its target. Tahoe keeps none of these itself, so they live in the entry's metadata:
//!
//! - `mtime`: seconds since the epoch as a float, the key Tahoe's SFTP frontend and `tahoe backup` use, so other
//!   Tahoe tools show the same time;
//! - `tahoe-mount`: an object of ours with `mtime_ns` (the exact time in nanoseconds, which a float cannot hold, so
//!   that `rsync -a` and `cp -p` round-trip), `atime_ns` (only when set explicitly: reads never write), `ctime_ns`,
//!   `mode` (the permission bits), `uid` and `gid` (only when set: an entry without shows the mounting user),
//!   `type` and `rdev` for special files (`fifo`, `socket`, `char`, `block`: an empty file whose entry says what it
//!   stands for), `symlink` (a link's target; the linked file holds the target too, so `tahoe ls` and `tahoe get`
//!   show something sane), `link` (the hard-link group: every name carrying the same group and cap is one file)
//!   `links` (how many names the group had when the entry was written) and `xattrs` (extended attributes: name to
//!   value in base64).
//!
//! A float `mtime` that disagrees with `mtime_ns` by more than a millisecond was set by another tool after us, and
//! wins.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use data_encoding::BASE64;

use crate::dirnode::Metadata;
use crate::dirnode::json::{Json, Object};

const OURS: &str = "tahoe-mount";

fn ours(metadata: &Metadata) -> Option<&Object> {
    metadata.get(OURS)?.as_object()
}

fn ours_mut(metadata: &mut Metadata) -> &mut Object {
    if !matches!(metadata.get(OURS), Some(Json::Object(_))) {
        metadata.insert(OURS, Json::Object(Object::new()));
    }
    match metadata.as_object_mut().get_mut(OURS) {
        Some(Json::Object(object)) => object,
        _ => unreachable!("just made an object"),
    }
}

/// Nanoseconds since the epoch (negative before it).
pub fn to_nanos(time: SystemTime) -> i128 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_nanos() as i128,
        Err(before) => -(before.duration().as_nanos() as i128),
    }
}

pub fn from_nanos(nanos: i128) -> SystemTime {
    let magnitude = Duration::new(
        (nanos.unsigned_abs() / 1_000_000_000) as u64,
        (nanos.unsigned_abs() % 1_000_000_000) as u32,
    );
    if nanos >= 0 {
        UNIX_EPOCH.checked_add(magnitude).unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH.checked_sub(magnitude).unwrap_or(UNIX_EPOCH)
    }
}

fn from_seconds(seconds: f64) -> Option<SystemTime> {
    if !seconds.is_finite() || seconds.abs() > 1e12 {
        return None;
    }
    Some(from_nanos((seconds * 1e9).round() as i128))
}

/// The file's modification time: ours, else `mtime`, else when the link last changed.
pub fn mtime(metadata: &Metadata) -> Option<SystemTime> {
    let float = metadata.mtime();
    let exact = ours(metadata)
        .and_then(|o| o.get("mtime_ns"))
        .and_then(|n| match n {
            Json::Int(digits) => digits.parse::<i128>().ok(),
            _ => None,
        });
    match (exact, float) {
        (Some(ns), Some(seconds)) if (ns as f64 / 1e9 - seconds).abs() <= 1e-3 => {
            Some(from_nanos(ns))
        }
        (Some(ns), None) => Some(from_nanos(ns)),
        (_, Some(seconds)) => from_seconds(seconds),
        (None, None) => metadata.link_modification_time().and_then(from_seconds),
    }
}

pub fn set_mtime(metadata: &mut Metadata, time: SystemTime) {
    let ns = to_nanos(time);
    metadata.insert("mtime", Json::Float(ns as f64 / 1e9));
    ours_mut(metadata).insert("mtime_ns", Json::Int(ns.to_string()));
}

/// The permission bits (and set-id/sticky bits) the entry was given, if any.
pub fn mode(metadata: &Metadata) -> Option<u32> {
    let digits = match ours(metadata)?.get("mode")? {
        Json::Int(digits) => digits,
        _ => return None,
    };
    digits.parse::<u32>().ok().map(|m| m & 0o7777)
}

pub fn set_mode(metadata: &mut Metadata, mode: u32) {
    ours_mut(metadata).insert("mode", Json::int(i64::from(mode & 0o7777)));
}

fn number(metadata: &Metadata, key: &str) -> Option<i128> {
    match ours(metadata)?.get(key)? {
        Json::Int(digits) => digits.parse::<i128>().ok(),
        _ => None,
    }
}

fn set_number(metadata: &mut Metadata, key: &str, value: i128) {
    ours_mut(metadata).insert(key, Json::Int(value.to_string()));
}

/// The access time, if one was set explicitly (`utimensat`, `touch -a`).
pub fn atime(metadata: &Metadata) -> Option<SystemTime> {
    number(metadata, "atime_ns").map(from_nanos)
}

pub fn set_atime(metadata: &mut Metadata, time: SystemTime) {
    set_number(metadata, "atime_ns", to_nanos(time));
}

/// When the file's attributes or names last changed here.
pub fn ctime(metadata: &Metadata) -> Option<SystemTime> {
    number(metadata, "ctime_ns").map(from_nanos)
}

pub fn set_ctime(metadata: &mut Metadata, time: SystemTime) {
    set_number(metadata, "ctime_ns", to_nanos(time));
}

/// The owner and group, if set.
pub fn owner(metadata: &Metadata) -> (Option<u32>, Option<u32>) {
    let id = |key| number(metadata, key).and_then(|n| u32::try_from(n).ok());
    (id("uid"), id("gid"))
}

pub fn set_owner(metadata: &mut Metadata, uid: Option<u32>, gid: Option<u32>) {
    if let Some(uid) = uid {
        set_number(metadata, "uid", i128::from(uid));
    }
    if let Some(gid) = gid {
        set_number(metadata, "gid", i128::from(gid));
    }
}

/// What a special file stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    Fifo,
    Socket,
    Char(u64),
    Block(u64),
}

impl Special {
    /// From `mknod`'s mode (its `S_IFMT` bits) and device number; `None` for a regular file.
    pub fn from_mode(mode: u32, rdev: u64) -> Option<Special> {
        match mode & libc::S_IFMT {
            libc::S_IFIFO => Some(Special::Fifo),
            libc::S_IFSOCK => Some(Special::Socket),
            libc::S_IFCHR => Some(Special::Char(rdev)),
            libc::S_IFBLK => Some(Special::Block(rdev)),
            _ => None,
        }
    }

    pub fn rdev(self) -> u64 {
        match self {
            Special::Char(rdev) | Special::Block(rdev) => rdev,
            Special::Fifo | Special::Socket => 0,
        }
    }
}

pub fn special(metadata: &Metadata) -> Option<Special> {
    let rdev = number(metadata, "rdev")
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0);
    match ours(metadata)?.get("type")?.as_str()? {
        "fifo" => Some(Special::Fifo),
        "socket" => Some(Special::Socket),
        "char" => Some(Special::Char(rdev)),
        "block" => Some(Special::Block(rdev)),
        _ => None,
    }
}

pub fn set_special(metadata: &mut Metadata, special: Special) {
    let name = match special {
        Special::Fifo => "fifo",
        Special::Socket => "socket",
        Special::Char(_) => "char",
        Special::Block(_) => "block",
    };
    ours_mut(metadata).insert("type", Json::String(name.to_owned()));
    if special.rdev() != 0 {
        set_number(metadata, "rdev", i128::from(special.rdev()));
    }
}

/// The hard-link group the entry belongs to, if it was ever given a second name.
pub fn link_group(metadata: &Metadata) -> Option<&str> {
    ours(metadata)?.get("link")?.as_str()
}

pub fn set_link_group(metadata: &mut Metadata, group: &str) {
    ours_mut(metadata).insert("link", Json::String(group.to_owned()));
}

/// How many names the hard-link group had when this entry was last written (so that a later run shows the count
/// before it has listed every directory holding one).
pub fn link_count(metadata: &Metadata) -> Option<u32> {
    number(metadata, "links").and_then(|n| u32::try_from(n).ok())
}

pub fn set_link_count(metadata: &mut Metadata, count: u32) {
    set_number(metadata, "links", i128::from(count));
}

/// A symbolic link's target, if the entry is one.
pub fn symlink_target(metadata: &Metadata) -> Option<&str> {
    ours(metadata)?.get("symlink")?.as_str()
}

pub fn set_symlink_target(metadata: &mut Metadata, target: &str) {
    ours_mut(metadata).insert("symlink", Json::String(target.to_owned()));
}

fn xattr_object(metadata: &Metadata) -> Option<&Object> {
    ours(metadata)?.get("xattrs")?.as_object()
}

fn decode_xattr(value: &Json) -> Option<Vec<u8>> {
    BASE64.decode(value.as_str()?.as_bytes()).ok()
}

/// The entry's extended attributes, by name. Values that do not decode are left out.
pub fn xattrs(metadata: &Metadata) -> BTreeMap<String, Vec<u8>> {
    xattr_object(metadata).map_or_else(BTreeMap::new, |object| {
        object
            .iter()
            .filter_map(|(name, value)| Some((name.to_owned(), decode_xattr(value)?)))
            .collect()
    })
}

/// One extended attribute's value. The kernel asks for `security.capability` before writes, so this decodes only
/// the value asked for.
pub fn xattr(metadata: &Metadata, name: &str) -> Option<Vec<u8>> {
    decode_xattr(xattr_object(metadata)?.get(name)?)
}

/// Sets (`Some`) or removes (`None`) one extended attribute.
pub fn set_xattr(metadata: &mut Metadata, name: &str, value: Option<&[u8]>) {
    let object = ours_mut(metadata);
    if !matches!(object.get("xattrs"), Some(Json::Object(_))) {
        object.insert("xattrs", Json::Object(Object::new()));
    }
    let Some(Json::Object(xattrs)) = object.get_mut("xattrs") else {
        unreachable!("just made an object")
    };
    match value {
        Some(value) => xattrs.insert(name, Json::String(BASE64.encode(value))),
        None => {
            xattrs.remove(name);
        }
    }
    if xattrs.is_empty() {
        object.remove("xattrs");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanosecond_mtimes_round_trip_and_a_later_float_wins() {
        let mut m = Metadata::new();
        let t = from_nanos(1_700_000_000_123_456_789);
        set_mtime(&mut m, t);
        assert_eq!(mtime(&m), Some(t));
        let text = m.to_json();
        let back = Metadata::parse(text.as_bytes()).unwrap();
        assert_eq!(mtime(&back), Some(t));
        // Another tool sets only the float: it wins.
        m.insert("mtime", Json::Float(1_600_000_000.5));
        assert_eq!(mtime(&m), Some(from_nanos(1_600_000_000_500_000_000)));
        let before_epoch = from_nanos(-1_500_000_000);
        set_mtime(&mut m, before_epoch);
        assert_eq!(mtime(&m), Some(before_epoch));
    }

    #[test]
    fn mode_and_symlink_are_kept_beside_foreign_keys() {
        let mut m = Metadata::parse(br#"{"tahoe-mount": 7, "other": 1}"#).unwrap();
        assert_eq!(mode(&m), None);
        set_mode(&mut m, 0o100755);
        set_symlink_target(&mut m, "../a b");
        assert_eq!(mode(&m), Some(0o755));
        assert_eq!(symlink_target(&m), Some("../a b"));
        assert!(m.get("other").is_some());
        assert_eq!(mtime(&Metadata::parse(br#"{"mtime": "x"}"#).unwrap()), None);
    }

    #[test]
    fn owners_special_files_times_and_link_groups_round_trip() {
        let mut m = Metadata::new();
        assert_eq!(owner(&m), (None, None));
        assert_eq!(special(&m), None);
        set_owner(&mut m, Some(1000), None);
        set_owner(&mut m, None, Some(4_000_000_000));
        let device = Special::from_mode(libc::S_IFCHR | 0o600, 0x0103).unwrap();
        set_special(&mut m, device);
        let t = from_nanos(1_700_000_000_000_000_001);
        set_atime(&mut m, t);
        set_ctime(&mut m, t);
        set_link_group(&mut m, "5eed");
        set_link_count(&mut m, 3);
        let back = Metadata::parse(m.to_json().as_bytes()).unwrap();
        assert_eq!(owner(&back), (Some(1000), Some(4_000_000_000)));
        assert_eq!(special(&back), Some(Special::Char(0x0103)));
        assert_eq!((atime(&back), ctime(&back)), (Some(t), Some(t)));
        assert_eq!(link_group(&back), Some("5eed"));
        assert_eq!(link_count(&back), Some(3));
        assert_eq!(Special::from_mode(libc::S_IFREG | 0o644, 0), None);
        assert_eq!(Special::from_mode(libc::S_IFIFO, 9), Some(Special::Fifo));
        // Hostile values are ignored, not trusted.
        let odd = Metadata::parse(br#"{"tahoe-mount": {"uid": -1, "type": "pipe", "rdev": "x"}}"#)
            .unwrap();
        assert_eq!((owner(&odd), special(&odd)), ((None, None), None));
    }
}
