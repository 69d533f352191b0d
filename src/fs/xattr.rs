//! Extended attributes: kept in the entry's metadata beside the mode and times (see [`super::meta`]), so that
//! `rsync -X`, `cp --preserve=xattr` and desktop tools that tag files keep them on the grid. The `user.`,
//! `trusted.` and `security.` namespaces are stored (the kernel checks who may set which); `system.` ones
//! (POSIX ACLs) are refused, since the mount does not enforce ACLs and storing one would pretend it did.

use std::time::SystemTime;

use super::{Fs, FsError, FsResult, ROOT_INO, meta};

/// The longest value (Linux's `XATTR_SIZE_MAX`).
const MAX_VALUE: usize = 64 * 1024;
/// The most bytes of names and values one entry keeps: each publish rewrites the whole directory.
const MAX_TOTAL: usize = 64 * 1024;
const NAMESPACES: [&str; 3] = ["user.", "trusted.", "security."];

/// How `setxattr` may change an attribute (its `XATTR_CREATE` and `XATTR_REPLACE` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XattrMode {
    /// Create it or replace it.
    #[default]
    Either,
    /// Fail if it exists.
    Create,
    /// Fail if it does not.
    Replace,
}

fn check_namespace(name: &str) -> FsResult<()> {
    if NAMESPACES
        .iter()
        .any(|ns| name.len() > ns.len() && name.starts_with(ns))
    {
        Ok(())
    } else {
        Err(FsError::Unsupported(
            "only user., trusted. and security. extended attributes are kept",
        ))
    }
}

impl Fs {
    /// The value of extended attribute `name` of `ino`.
    pub fn getxattr(&self, ino: u64, name: &str) -> FsResult<Vec<u8>> {
        let state = self.state();
        let inode = state.inodes.get(&ino).ok_or(FsError::NotFound)?;
        meta::xattr(&inode.metadata, name).ok_or(FsError::NoAttribute)
    }

    /// The names of `ino`'s extended attributes.
    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<String>> {
        let state = self.state();
        let inode = state.inodes.get(&ino).ok_or(FsError::NotFound)?;
        Ok(meta::xattrs(&inode.metadata).into_keys().collect())
    }

    /// Sets extended attribute `name` of `ino` to `value` (or removes it: `None`), journaled with the entry like
    /// a `chmod`. Its ctime moves.
    pub fn setxattr(
        &self,
        ino: u64,
        name: &str,
        value: Option<&[u8]>,
        mode: XattrMode,
    ) -> FsResult<()> {
        check_namespace(name)?;
        if value.is_some_and(|v| v.len() > MAX_VALUE) {
            return Err(FsError::TooBig(
                "an extended attribute's value is 64 KiB at most",
            ));
        }
        let mut state = self.state();
        self.check_changeable(&state, ino)?;
        if ino == ROOT_INO {
            return Err(FsError::Unsupported(
                "the root has no directory entry to keep extended attributes in",
            ));
        }
        let inode = state.inodes.get_mut(&ino).ok_or(FsError::NotFound)?;
        let mut xattrs = meta::xattrs(&inode.metadata);
        let exists = xattrs.contains_key(name);
        match (value, mode, exists) {
            (Some(_), XattrMode::Create, true) => return Err(FsError::Exists),
            (Some(_), XattrMode::Replace, false) | (None, _, false) => {
                return Err(FsError::NoAttribute);
            }
            _ => {}
        }
        match value {
            Some(value) => xattrs.insert(name.to_owned(), value.to_vec()),
            None => xattrs.remove(name),
        };
        let total: usize = xattrs.iter().map(|(n, v)| n.len() + v.len()).sum();
        if total > MAX_TOTAL {
            return Err(FsError::TooBig(
                "a file's extended attributes are 64 KiB at most, names and values together",
            ));
        }
        meta::set_xattr(&mut inode.metadata, name, value);
        meta::set_ctime(&mut inode.metadata, SystemTime::now());
        self.relink(&mut state, ino, false)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_namespaces_the_mount_can_honour_are_kept() {
        for ok in ["user.a", "trusted.overlay.opaque", "security.capability"] {
            assert!(check_namespace(ok).is_ok(), "{ok}");
        }
        for refused in ["system.posix_acl_access", "user.", "plain", ""] {
            assert!(
                matches!(check_namespace(refused), Err(FsError::Unsupported(_))),
                "{refused}"
            );
        }
    }
}
