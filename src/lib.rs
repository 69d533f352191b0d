//! tahoe-mount: a Tahoe-LAFS client library and FUSE filesystem that finds its storage servers through a grid
//! service directory instead of an introducer.
//!
//! Layers, lowest first (data flows downward; no module reaches up): `erasure`, `crypto`, `cap`, then storage,
//! immutable and mutable files, directories, the grid service directory, the filesystem and the FUSE adapter.

pub mod cap;
pub mod check;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod daemon_log;
pub mod dirnode;
pub mod erasure;
pub mod filenode;
pub mod fs;
pub mod fuse;
pub mod grid;
pub mod gsd;
pub mod immutable;
pub mod maintain;
pub mod mutable;
pub mod storage;
