//! What a directory entry's metadata says about a file beyond its cap: its modification time, permission bits and,
//! for a symbolic link, its target. Tahoe keeps none of these itself, so they live in the entry's metadata:
//!
//! - `mtime`: seconds since the epoch as a float, the key Tahoe's SFTP frontend and `tahoe backup` use, so other
//!   Tahoe tools show the same time;
//! - `tahoe-mount`: an object of ours with `mtime_ns` (the exact time in nanoseconds, which a float cannot hold, so
//!   that `rsync -a` and `cp -p` round-trip), `mode` (the permission bits) and `symlink` (a link's target; the
//!   linked file holds the target too, so `tahoe ls` and `tahoe get` show something sane).
//!
//! A float `mtime` that disagrees with `mtime_ns` by more than a millisecond was set by another tool after us, and
//! wins.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// A symbolic link's target, if the entry is one.
pub fn symlink_target(metadata: &Metadata) -> Option<&str> {
    ours(metadata)?.get("symlink")?.as_str()
}

pub fn set_symlink_target(metadata: &mut Metadata, target: &str) {
    ours_mut(metadata).insert("symlink", Json::String(target.to_owned()));
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
}
