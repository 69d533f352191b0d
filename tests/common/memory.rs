//! In-memory grids for tests: servers named `mem0`, `mem1`, … whose faults a test sets, and the `Grid` over them.

use std::sync::Arc;

use tahoe_mount::grid::ServerInfo;
use tahoe_mount::grid::client::{Grid, GridServer};
use tahoe_mount::storage::StorageServer;
use tahoe_mount::storage::faulty::FaultyServer;
use tahoe_mount::storage::memory::MemoryServer;

/// The server tests use: the in-memory one, with faults a test sets and its calls counted.
pub type TestServer = FaultyServer<MemoryServer>;

pub fn servers(count: usize) -> Vec<Arc<TestServer>> {
    (0..count)
        .map(|i| Arc::new(TestServer::new(MemoryServer::new(format!("mem{i}")))))
        .collect()
}

pub fn grid_of(servers: &[Arc<TestServer>]) -> Grid {
    Grid::new(
        servers
            .iter()
            .map(|s| {
                GridServer::new(
                    ServerInfo::named(s.name()),
                    s.clone() as Arc<dyn StorageServer>,
                )
            })
            .collect(),
    )
}

/// In-memory servers that look like real ones to the grid service directory: each has a NURL (a made-up pin and
/// `127.0.0.1:<10000 + i>`) and a `v0-` server id, and [`MemoryConnector`] finds it by its NURL.
pub mod addressed {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use sha2::Digest;
    use tahoe_mount::grid::ServerInfo;
    use tahoe_mount::gsd::client::Connector;
    use tahoe_mount::storage::nurl::Nurl;

    use super::TestServer;
    use tahoe_mount::storage::{StorageError, StorageServer};

    pub fn nurl_of(name: &str, port: u16) -> Nurl {
        let pin = sha2::Sha256::digest(name.as_bytes());
        format!(
            "pb://{}@127.0.0.1:{port}/swiss{name}#v=1",
            data_encoding::BASE64URL_NOPAD.encode(&pin)
        )
        .parse()
        .unwrap()
    }

    pub fn server_id_of(name: &str) -> String {
        let key = sha2::Sha256::digest(format!("key {name}").as_bytes());
        format!("v0-{}", tahoe_mount::crypto::base32::encode(&key))
    }

    /// The `ann` a real node would announce, for memory server `name` at `nurl`.
    pub fn ann_of(
        name: &str,
        nickname: &str,
        nurl: &Nurl,
    ) -> serde_json::Map<String, serde_json::Value> {
        let seed = sha2::Sha256::digest(format!("seed {name}").as_bytes());
        serde_json::json!({
            "anonymous-storage-NURLs": [nurl.to_string()],
            "nickname": nickname,
            "permutation-seed-base32": tahoe_mount::crypto::base32::encode(&seed),
            "service-name": "storage",
        })
        .as_object()
        .unwrap()
        .clone()
    }

    /// Connects NURLs to the memory servers registered under them; any other NURL is refused.
    #[derive(Default)]
    pub struct MemoryConnector {
        servers: Mutex<HashMap<String, Arc<TestServer>>>,
    }

    impl MemoryConnector {
        pub fn add(&self, nurl: &Nurl, server: Arc<TestServer>) {
            self.servers
                .lock()
                .unwrap()
                .insert(nurl.to_string(), server);
        }
    }

    impl Connector for MemoryConnector {
        fn connect(&self, info: &ServerInfo) -> Result<Arc<dyn StorageServer>, StorageError> {
            let servers = self.servers.lock().unwrap();
            info.nurls
                .iter()
                .find_map(|n| servers.get(&n.to_string()))
                .map(|s| s.clone() as Arc<dyn StorageServer>)
                .ok_or_else(|| StorageError::Connect {
                    server: info.display_name().to_owned(),
                    reason: "no such memory server".into(),
                })
        }
    }
}
