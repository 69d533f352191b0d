//! A directory entry's metadata: the JSON object Tahoe stores beside each child, with every key kept (in order) and
//! accessors for the keys Tahoe itself writes, and Tahoe's rule for updating it when a link is made or its metadata
//! set (`dirnode.update_metadata`).
//!
//! Tahoe ≥ 1.4 records link times under `tahoe`: `linkcrtime` (when the name was first linked) and `linkmotime`
//! (when the link last changed). Older Tahoe wrote top-level `ctime` and `mtime`; clients such as `tahoe backup`
//! still do, and an old `ctime` seeds `linkcrtime`. Times are seconds since the epoch, as floats.

use super::json::{self, Json, JsonError, Object};

/// An entry's metadata: always a JSON object.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Metadata(Object);

impl Metadata {
    /// Empty metadata (`{}`), as Tahoe gives a child added without any.
    pub fn new() -> Metadata {
        Metadata::default()
    }

    pub fn from_object(object: Object) -> Metadata {
        Metadata(object)
    }

    pub fn as_object(&self) -> &Object {
        &self.0
    }

    pub fn as_object_mut(&mut self) -> &mut Object {
        &mut self.0
    }

    pub fn get(&self, key: &str) -> Option<&Json> {
        self.0.get(key)
    }

    /// Sets a key, keeping its position if present.
    pub fn insert(&mut self, key: impl Into<String>, value: Json) {
        self.0.insert(key, value);
    }

    pub fn remove(&mut self, key: &str) -> Option<Json> {
        self.0.remove(key)
    }

    /// Parses stored metadata: JSON that must be an object.
    pub fn parse(text: &[u8]) -> Result<Metadata, MetadataError> {
        match json::loads(text).map_err(MetadataError::Json)? {
            Json::Object(object) => Ok(Metadata(object)),
            _ => Err(MetadataError::NotAnObject),
        }
    }

    /// The bytes Tahoe stores: `json.dumps(metadata)`.
    pub fn to_json(&self) -> String {
        Json::Object(self.0.clone()).dumps()
    }

    fn tahoe_time(&self, key: &str) -> Option<f64> {
        self.0.get("tahoe")?.as_object()?.get(key)?.as_f64()
    }

    /// `tahoe.linkcrtime`: when this name was first linked.
    pub fn link_creation_time(&self) -> Option<f64> {
        self.tahoe_time("linkcrtime")
    }

    /// `tahoe.linkmotime`: when this link last changed.
    pub fn link_modification_time(&self) -> Option<f64> {
        self.tahoe_time("linkmotime")
    }

    /// The top-level `ctime` of older Tahoe and of `tahoe backup` (the file's change time when backed up).
    pub fn ctime(&self) -> Option<f64> {
        self.0.get("ctime")?.as_f64()
    }

    /// The top-level `mtime` of older Tahoe and of `tahoe backup` (the file's modification time when backed up).
    pub fn mtime(&self) -> Option<f64> {
        self.0.get("mtime")?.as_f64()
    }

    /// Whether the link is marked read-only (`no-write`, by Python truth): Tahoe then keeps only the child's readcap.
    pub fn no_write(&self) -> bool {
        self.0.get("no-write").is_some_and(Json::is_truthy)
    }

    /// `update_metadata(old, new, now)`: the metadata of a link being made or changed at `now`. With `new`, every
    /// key but `tahoe` is replaced by `new`'s (whose own `tahoe` is ignored); `tahoe.linkmotime` becomes `now`, and
    /// `tahoe.linkcrtime` is set once: to an old top-level `ctime` if there is one, else to `now`.
    pub fn updated(old: Option<&Metadata>, new: Option<&Metadata>, now: f64) -> Metadata {
        let old = old.cloned().unwrap_or_default();
        let old_ctime = old.0.get("ctime").cloned();
        let mut metadata = match new {
            Some(new) => {
                let mut replaced = new.0.clone();
                replaced.remove("tahoe");
                if let Some(tahoe) = old.0.get("tahoe") {
                    replaced.insert("tahoe", tahoe.clone());
                }
                replaced
            }
            None => old.0,
        };
        // Hostile or foreign metadata may hold a `tahoe` that is not an object, where Tahoe itself would fail;
        // here it is replaced, so that the link can still be updated.
        let mut tahoe = match metadata.get("tahoe") {
            Some(Json::Object(object)) => object.clone(),
            _ => Object::new(),
        };
        if !tahoe.contains_key("linkcrtime") {
            tahoe.insert("linkcrtime", old_ctime.unwrap_or(Json::Float(now)));
        }
        tahoe.insert("linkmotime", Json::Float(now));
        metadata.insert("tahoe", Json::Object(tahoe));
        Metadata(metadata)
    }
}

/// Why stored metadata is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata is not valid JSON: {0}")]
    Json(JsonError),
    #[error("metadata is JSON but not an object")]
    NotAnObject,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(text: &str) -> Metadata {
        Metadata::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn new_links_get_both_times() {
        let m = Metadata::updated(None, Some(&Metadata::new()), 5.5);
        assert_eq!(
            m.to_json(),
            r#"{"tahoe": {"linkcrtime": 5.5, "linkmotime": 5.5}}"#
        );
        assert_eq!(m.link_creation_time(), Some(5.5));
    }

    #[test]
    fn relinking_keeps_creation_time_and_old_ctime_seeds_it() {
        let old = md(r#"{"tahoe": {"linkmotime": 1.0, "linkcrtime": 1.0}, "x": 1}"#);
        let m = Metadata::updated(Some(&old), None, 2.0);
        assert_eq!(
            m.to_json(),
            r#"{"tahoe": {"linkmotime": 2.0, "linkcrtime": 1.0}, "x": 1}"#
        );
        let new = md(r#"{"y": 2, "tahoe": {"linkcrtime": 9}}"#);
        let m = Metadata::updated(Some(&old), Some(&new), 3.0);
        assert_eq!(
            m.to_json(),
            r#"{"y": 2, "tahoe": {"linkmotime": 3.0, "linkcrtime": 1.0}}"#
        );
        let legacy = md(r#"{"ctime": 7, "mtime": 8}"#);
        let m = Metadata::updated(Some(&legacy), None, 9.0);
        assert_eq!(m.link_creation_time(), Some(7.0));
        assert_eq!((m.ctime(), m.mtime()), (Some(7.0), Some(8.0)));
        // The old ctime seeds linkcrtime even when the new metadata replaces it.
        let m = Metadata::updated(Some(&legacy), Some(&Metadata::new()), 9.0);
        assert_eq!(
            m.to_json(),
            r#"{"tahoe": {"linkcrtime": 7, "linkmotime": 9.0}}"#
        );
    }

    #[test]
    fn non_object_tahoe_is_replaced_and_no_write_is_python_truth() {
        let m = Metadata::updated(Some(&md(r#"{"tahoe": [1]}"#)), None, 1.0);
        assert_eq!(m.link_modification_time(), Some(1.0));
        assert!(md(r#"{"no-write": 1}"#).no_write());
        assert!(!md(r#"{"no-write": ""}"#).no_write());
        assert!(matches!(
            Metadata::parse(b"[]"),
            Err(MetadataError::NotAnObject)
        ));
    }
}
