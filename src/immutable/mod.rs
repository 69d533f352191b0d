//! Tahoe immutable files (CHK and LIT): the share layout and the URI extension block so far; upload and
//! download build on these.

pub mod layout;
pub mod uri_extension;
