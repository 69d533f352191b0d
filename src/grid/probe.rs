//! Asking every known server for its version at once: the health check behind `tahoe-mount servers` and the
//! client's liveness polling.

use std::time::{Duration, Instant};

use super::ServerInfo;
use crate::storage::gbs::{GbsOptions, GbsServer};
use crate::storage::{ServerVersion, StorageError, StorageServer};

/// A server's answer to a version request.
#[derive(Debug)]
pub struct ProbeResult {
    pub server: ServerInfo,
    /// The version and the round-trip time of a request on an open connection, or why it failed (after
    /// trying each of its NURLs).
    pub outcome: Result<(ServerVersion, Duration), StorageError>,
}

/// Asks each server for its version, all concurrently; results come back in the given order.
pub async fn probe_all(servers: Vec<ServerInfo>, options: &GbsOptions) -> Vec<ProbeResult> {
    let tasks: Vec<_> = servers
        .into_iter()
        .map(|server| {
            let options = options.clone();
            tokio::spawn(async move {
                let outcome = probe(&server, &options).await;
                ProbeResult { server, outcome }
            })
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        // A probe task only panics on a bug; the join error then says so rather than aborting the listing.
        if let Ok(result) = task.await {
            results.push(result);
        }
    }
    results
}

async fn probe(
    server: &ServerInfo,
    options: &GbsOptions,
) -> Result<(ServerVersion, Duration), StorageError> {
    let mut last_error = None;
    for nurl in &server.nurls {
        let client = GbsServer::new(nurl, Some(server.display_name()), options.clone())?;
        // The first request pays for TCP and TLS set-up; the second, on the kept-alive connection, measures
        // the round trip itself.
        let answer = async {
            client.version().await?;
            let started = Instant::now();
            let version = client.version().await?;
            Ok::<_, StorageError>((version, started.elapsed()))
        };
        match answer.await {
            Ok(result) => return Ok(result),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| StorageError::Connect {
        server: server.display_name().to_owned(),
        reason: "no NURL to connect to".into(),
    }))
}
