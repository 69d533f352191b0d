//! Pure batch edits of a [`Directory`]: a list of changes applied in order, all or nothing, with link metadata kept
//! as Tahoe's `Adder`, `Deleter`, `MetadataSetter` and `move_child_to` keep it. The caller supplies the time, so an
//! edit is a function of its inputs and can be retried against newer contents (as a mutable file's modify loop
//! does).

use super::child::Child;
use super::metadata::Metadata;
use super::path::{PathError, validate_name};
use super::{Directory, Entry};
use thiserror::Error;

/// What linking a name does when the name is already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Fail: add only if absent (Tahoe's `overwrite=False`).
    Never,
    /// Replace whatever is there (`overwrite=True`).
    Always,
    /// Replace a file or unknown child, but fail on a directory (`overwrite=ONLY_FILES`).
    OnlyFiles,
    /// Replace only: fail if the name is absent.
    ExistingOnly,
}

/// One change to a directory.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Links `name` to `child`. Without `metadata`, a replaced entry's metadata is kept (a new one gets `{}`);
    /// with it, everything but `tahoe` is replaced. Link times are then updated as Tahoe updates them.
    Link {
        name: String,
        child: Child,
        metadata: Option<Metadata>,
        replace: Replace,
    },
    /// Removes `name`, which must exist.
    Unlink { name: String },
    /// Moves the entry at `from` to `to` in the same directory, as Tahoe's `move_child_to`: the entry's metadata
    /// goes along except `tahoe`, which is that of a new link (or of the replaced entry's). Renaming a name to
    /// itself changes nothing (but the name must exist).
    Rename {
        from: String,
        to: String,
        replace: Replace,
    },
    /// Replaces an existing entry's metadata (all but `tahoe`) and updates its link times.
    SetMetadata { name: String, metadata: Metadata },
}

/// Why a batch was refused. `change` is the position of the offending change in the batch.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EditError {
    #[error("change {change}: {source}")]
    BadName {
        change: usize,
        #[source]
        source: PathError,
    },
    #[error("change {change}: no child named {name:?}")]
    NoSuchChild { change: usize, name: String },
    #[error("change {change}: a child named {name:?} already exists")]
    ChildExists { change: usize, name: String },
    #[error("change {change}: a child named {name:?} already exists as a directory")]
    ExistsAsDirectory { change: usize, name: String },
}

impl Directory {
    /// The directory after `changes`, applied in order at time `now` (seconds since the epoch, as Tahoe's
    /// `time.time()`); if any change fails, the error and no directory.
    pub fn apply(&self, changes: &[Change], now: f64) -> Result<Directory, EditError> {
        let mut result = self.clone();
        for (index, change) in changes.iter().enumerate() {
            result.apply_one(index, change, now)?;
        }
        Ok(result)
    }

    fn apply_one(&mut self, change: usize, edit: &Change, now: f64) -> Result<(), EditError> {
        let name_of = |name: &str| {
            validate_name(name).map_err(|source| EditError::BadName { change, source })
        };
        let missing = |name: String| EditError::NoSuchChild { change, name };
        match edit {
            Change::Link {
                name,
                child,
                metadata,
                replace,
            } => {
                let name = name_of(name)?;
                self.link(
                    change,
                    name,
                    child.clone(),
                    metadata.as_ref(),
                    *replace,
                    now,
                )
            }
            Change::Unlink { name } => {
                let name = name_of(name)?;
                self.entries
                    .remove(&name)
                    .map(drop)
                    .ok_or_else(|| missing(name))
            }
            Change::Rename { from, to, replace } => {
                let (from, to) = (name_of(from)?, name_of(to)?);
                let Some(moved) = self.entries.get(&from).cloned() else {
                    return Err(missing(from));
                };
                if from == to {
                    return Ok(());
                }
                self.link(
                    change,
                    to,
                    moved.child,
                    Some(&moved.metadata),
                    *replace,
                    now,
                )?;
                self.entries.remove(&from);
                Ok(())
            }
            Change::SetMetadata { name, metadata } => {
                let name = name_of(name)?;
                let Some(entry) = self.entries.get_mut(&name) else {
                    return Err(missing(name));
                };
                entry.metadata = Metadata::updated(Some(&entry.metadata), Some(metadata), now);
                if entry.metadata.no_write() {
                    entry.child = entry.child.readonly();
                }
                Ok(())
            }
        }
    }

    /// One entry of Tahoe's `Adder.modify`.
    fn link(
        &mut self,
        change: usize,
        name: String,
        child: Child,
        metadata: Option<&Metadata>,
        replace: Replace,
        now: f64,
    ) -> Result<(), EditError> {
        let existing = self.entries.get(&name);
        match (existing, replace) {
            (Some(_), Replace::Never) => return Err(EditError::ChildExists { change, name }),
            (Some(old), Replace::OnlyFiles) if old.child.is_directory() => {
                return Err(EditError::ExistsAsDirectory { change, name });
            }
            (None, Replace::ExistingOnly) => return Err(EditError::NoSuchChild { change, name }),
            _ => {}
        }
        let metadata = Metadata::updated(existing.map(|e| &e.metadata), metadata, now);
        let child = if metadata.no_write() {
            child.readonly()
        } else {
            child
        };
        self.entries.insert(name, Entry { child, metadata });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cap::Cap;
    use crate::dirnode::json::Json;

    fn lit(data: &str) -> Child {
        let cap = format!("URI:LIT:{}", crate::crypto::base32::encode(data.as_bytes()));
        Child::from_cap(&Cap::parse(&cap).unwrap()).unwrap()
    }

    fn link(name: &str, child: Child, replace: Replace) -> Change {
        Change::Link {
            name: name.into(),
            child,
            metadata: None,
            replace,
        }
    }

    #[test]
    fn links_keep_creation_time_and_refuse_collisions() {
        let d = Directory::new()
            .apply(&[link("a", lit("1"), Replace::Never)], 10.0)
            .unwrap();
        let a = d.get("a").unwrap();
        assert_eq!(a.metadata.link_creation_time(), Some(10.0));
        let d2 = d
            .apply(&[link("a", lit("2"), Replace::Always)], 20.0)
            .unwrap();
        let a2 = d2.get("a").unwrap();
        assert_eq!(a2.child, lit("2"));
        assert_eq!(a2.metadata.link_creation_time(), Some(10.0));
        assert_eq!(a2.metadata.link_modification_time(), Some(20.0));
        assert_eq!(
            d.apply(&[link("a", lit("3"), Replace::Never)], 30.0),
            Err(EditError::ChildExists {
                change: 0,
                name: "a".into()
            })
        );
        assert!(matches!(
            d.apply(&[link("b", lit("3"), Replace::ExistingOnly)], 30.0),
            Err(EditError::NoSuchChild { .. })
        ));
        assert!(matches!(
            d.apply(&[link("x/y", lit("3"), Replace::Always)], 30.0),
            Err(EditError::BadName { change: 0, .. })
        ));
    }

    #[test]
    fn batches_are_all_or_nothing_and_renames_move_metadata() {
        let mut extra = Metadata::new();
        extra.insert("mtime", Json::Float(5.0));
        let d = Directory::new()
            .apply(
                &[Change::Link {
                    name: "a".into(),
                    child: lit("1"),
                    metadata: Some(extra),
                    replace: Replace::Never,
                }],
                10.0,
            )
            .unwrap();
        let batch = [
            Change::Rename {
                from: "a".into(),
                to: "b".into(),
                replace: Replace::Never,
            },
            Change::Unlink { name: "a".into() },
        ];
        assert_eq!(
            d.apply(&batch, 20.0),
            Err(EditError::NoSuchChild {
                change: 1,
                name: "a".into()
            })
        );
        let moved = d.apply(&batch[..1], 20.0).unwrap();
        assert!(!moved.contains("a"));
        let b = moved.get("b").unwrap();
        assert_eq!(b.metadata.mtime(), Some(5.0));
        // A rename is a new link: Tahoe gives it fresh link times.
        assert_eq!(b.metadata.link_creation_time(), Some(20.0));
        assert_eq!(
            d.apply(
                &[Change::Rename {
                    from: "a".into(),
                    to: "a".into(),
                    replace: Replace::Never
                }],
                1.0
            ),
            Ok(d.clone())
        );
    }

    #[test]
    fn no_write_metadata_keeps_only_the_readcap() {
        let ssk = format!(
            "URI:SSK:{}:{}",
            crate::crypto::base32::encode(&[1; 16]),
            crate::crypto::base32::encode(&[2; 32])
        );
        let writeable = Child::from_cap(&Cap::parse(&ssk).unwrap()).unwrap();
        let mut no_write = Metadata::new();
        no_write.insert("no-write", Json::Bool(true));
        let d = Directory::new()
            .apply(&[link("f", writeable.clone(), Replace::Never)], 1.0)
            .unwrap()
            .apply(
                &[Change::SetMetadata {
                    name: "f".into(),
                    metadata: no_write,
                }],
                2.0,
            )
            .unwrap();
        let f = d.get("f").unwrap();
        assert_eq!(f.child, writeable.readonly());
        assert!(f.child.write_uri().is_none());
    }
}
