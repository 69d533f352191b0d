//! Talking to storage servers: their addresses (NURLs and fURLs), the `StorageServer` interface the rest of the
//! code uses, the HTTPS client for Tahoe's HTTP storage protocol, and an in-memory server for tests.

pub mod nurl;
