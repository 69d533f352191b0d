//! Tahoe immutable files: literal caps for small files and CHK files for the rest — their share layout, URI
//! extension block and geometry, the upload and download pipelines, and checking and repair.

pub mod check;
pub mod download;
pub mod layout;
pub mod params;
pub mod repair;
pub mod upload;
pub mod uri_extension;
