//! The grid service directory (GSD): how a client finds a grid's storage servers without an introducer.
//!
//! The grid operator keeps a mutable directory, encoded 1-of-N with a share on every enrolled server, whose
//! entries `v1.<petname>` link the readcaps of grid service announcements (GSAs): small mutable JSON files in which
//! each storage server describes itself. `docs/gsd.md` describes the formats and the protocol.

pub mod announce;
pub mod cache;
pub mod client;
pub mod format;
pub mod node_dir;
pub mod operator;
