//! Tahoe immutable files: literal caps for small files and CHK files for the rest — their share layout, URI
//! extension block and geometry, and the upload and download pipelines.

pub mod download;
pub mod layout;
pub mod params;
pub mod upload;
pub mod uri_extension;
