//! In-memory grids for tests: servers named `mem0`, `mem1`, … whose faults a test sets, and the `Grid` over them.

use std::sync::Arc;

use tahoe_mount::grid::ServerInfo;
use tahoe_mount::grid::client::{Grid, GridServer};
use tahoe_mount::storage::StorageServer;
use tahoe_mount::storage::memory::MemoryServer;

pub fn servers(count: usize) -> Vec<Arc<MemoryServer>> {
    (0..count)
        .map(|i| Arc::new(MemoryServer::new(format!("mem{i}"))))
        .collect()
}

pub fn grid_of(servers: &[Arc<MemoryServer>]) -> Grid {
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
