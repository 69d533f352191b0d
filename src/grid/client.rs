//! A client's working set of servers: each known server with the storage client that talks to it, and the
//! order Tahoe visits them in for a storage index. Uploads and downloads take a [`Grid`].

use std::sync::Arc;

use super::{ServerInfo, order_by_seed};
use crate::storage::gbs::{GbsOptions, GbsServer};
use crate::storage::{StorageError, StorageIndex, StorageServer};

/// One server and its storage client.
#[derive(Clone)]
pub struct GridServer {
    pub info: ServerInfo,
    pub storage: Arc<dyn StorageServer>,
}

impl GridServer {
    pub fn new(info: ServerInfo, storage: Arc<dyn StorageServer>) -> GridServer {
        GridServer { info, storage }
    }

    pub fn name(&self) -> &str {
        self.info.display_name()
    }
}

/// The servers a transfer may use.
#[derive(Clone, Default)]
pub struct Grid {
    servers: Vec<GridServer>,
}

impl Grid {
    pub fn new(servers: Vec<GridServer>) -> Grid {
        Grid { servers }
    }

    /// Storage clients for announced servers over Tahoe's HTTP storage protocol (the first NURL of each). No
    /// connection is made until a request needs one.
    pub fn connect(servers: Vec<ServerInfo>, options: &GbsOptions) -> Result<Grid, StorageError> {
        let servers = servers
            .into_iter()
            .map(|info| {
                let nurl = info.nurls.first().ok_or_else(|| StorageError::Connect {
                    server: info.display_name().to_owned(),
                    reason: "no NURL to connect to".into(),
                })?;
                let client = GbsServer::new(nurl, Some(info.display_name()), options.clone())?;
                Ok(GridServer::new(info, Arc::new(client)))
            })
            .collect::<Result<_, StorageError>>()?;
        Ok(Grid { servers })
    }

    pub fn servers(&self) -> &[GridServer] {
        &self.servers
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Indices into [`Grid::servers`] in Tahoe's permuted order for `storage_index`.
    pub fn permuted(&self, storage_index: &StorageIndex) -> Vec<usize> {
        order_by_seed(
            self.servers
                .iter()
                .map(|s| s.info.permutation_seed.as_slice()),
            &storage_index.0,
        )
    }
}
