//! The storage servers a client knows: who they are (from announcements or Tahoe's `servers.yaml`), the order
//! Tahoe visits them in for a storage index, and how each has been answering lately.
//!
//! Identity and order follow `allmydata/storage_client.py` exactly (`_parse_announcement`,
//! `get_servers_for_psi`), so shares land on, and are looked for at, the same servers as with Python clients.

pub mod census;
pub mod client;
pub mod placement;
pub mod probe;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sha1::Digest;

use crate::crypto::base32;
use crate::storage::nurl::{Furl, Nurl};

/// A server description that cannot be used, saying which server and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {problem}")]
pub struct GridError {
    pub what: String,
    pub problem: String,
}

fn grid_error(what: impl Into<String>, problem: impl Into<String>) -> GridError {
    GridError {
        what: what.into(),
        problem: problem.into(),
    }
}

/// One storage server as announced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerInfo {
    /// The announcement key, `v0-` and 52 base32 characters for a real node.
    pub server_id: String,
    pub nickname: Option<String>,
    /// Where it speaks the HTTP storage protocol; at least one.
    pub nurls: Vec<Nurl>,
    /// Its Foolscap fURL, if announced: the source of the tubid that lease secrets are derived from.
    pub furl: Option<Furl>,
    /// The bytes hashed with a storage index to place this server in the permuted order.
    pub permutation_seed: Vec<u8>,
}

impl ServerInfo {
    /// Reads a storage announcement (the `ann` dict of Tahoe's announcements and `servers.yaml`).
    pub fn from_announcement(
        server_id: &str,
        ann: &serde_json::Value,
    ) -> Result<ServerInfo, GridError> {
        let what = format!("server {server_id}");
        let ann = ann
            .as_object()
            .ok_or_else(|| grid_error(&what, "the announcement is not a mapping"))?;
        let text = |key: &str| -> Result<Option<&str>, GridError> {
            match ann.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(grid_error(&what, format!("{key} is not a string"))),
            }
        };
        let nurls = match ann.get("anonymous-storage-NURLs") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .map(|v| {
                    let s = v.as_str().ok_or_else(|| {
                        grid_error(&what, "anonymous-storage-NURLs holds a non-string")
                    })?;
                    s.parse::<Nurl>()
                        .map_err(|e| grid_error(&what, e.to_string()))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(grid_error(&what, "anonymous-storage-NURLs is not a list")),
        };
        if nurls.is_empty() {
            return Err(grid_error(
                &what,
                "no anonymous-storage-NURLs: tahoe-mount speaks only Tahoe's HTTP storage protocol, which 1.20 \
                 nodes announce unless [storage] force_foolscap is set",
            ));
        }
        let furl = text("anonymous-storage-FURL")?
            .map(|f| {
                f.parse::<Furl>()
                    .map_err(|e| grid_error(&what, e.to_string()))
            })
            .transpose()?;
        let permutation_seed = match text("permutation-seed-base32")? {
            Some(seed) => base32::decode(seed)
                .map_err(|e| grid_error(&what, format!("permutation-seed-base32: {e}")))?,
            None => default_permutation_seed(server_id),
        };
        Ok(ServerInfo {
            server_id: server_id.to_owned(),
            nickname: text("nickname")?.map(str::to_owned),
            nurls,
            furl,
            permutation_seed,
        })
    }

    /// A server known only by a NURL (given on the command line): its id is made from the pinned key and it
    /// is called by its address.
    pub fn from_nurl(nurl: Nurl) -> ServerInfo {
        let server_id = format!("nurl-{}", nurl.spki_hash_b64());
        ServerInfo {
            permutation_seed: default_permutation_seed(&server_id),
            server_id,
            nickname: Some(nurl.endpoint()),
            nurls: vec![nurl],
            furl: None,
        }
    }

    /// A server known only by a name, with no address: for in-process servers (tests, the in-memory grid).
    pub fn named(name: &str) -> ServerInfo {
        ServerInfo {
            server_id: name.to_owned(),
            nickname: Some(name.to_owned()),
            nurls: Vec::new(),
            furl: None,
            permutation_seed: default_permutation_seed(name),
        }
    }

    /// The nickname if announced, else the server id.
    pub fn display_name(&self) -> &str {
        self.nickname.as_deref().unwrap_or(&self.server_id)
    }
}

/// Tahoe's seed when an announcement has none: the key bytes of a `v0-` id, else SHA-256 of the id (which
/// Tahoe warns "may not converge with other clients").
fn default_permutation_seed(server_id: &str) -> Vec<u8> {
    let key = server_id
        .strip_prefix("v0-")
        .filter(|k| k.len() == 52 && k.bytes().all(|b| b.is_ascii_alphanumeric()));
    key.and_then(|k| base32::decode(k).ok())
        .unwrap_or_else(|| sha2::Sha256::digest(server_id.as_bytes()).to_vec())
}

/// Reads Tahoe's static server list (`private/servers.yaml`: `storage: {<id>: {ann: {…}}}`).
pub fn parse_servers_yaml(text: &str) -> Result<Vec<ServerInfo>, GridError> {
    let document: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| grid_error("servers.yaml", e.to_string()))?;
    let storage = document
        .get("storage")
        .and_then(|s| s.as_object())
        .ok_or_else(|| grid_error("servers.yaml", "no `storage:` mapping of server ids"))?;
    storage
        .iter()
        .map(|(id, entry)| {
            let ann = entry.get("ann").ok_or_else(|| {
                grid_error(format!("servers.yaml: server {id}"), "no `ann:` mapping")
            })?;
            ServerInfo::from_announcement(id, ann)
        })
        .collect()
}

/// The permuted order of `servers` for a storage index (Tahoe's peer selection index): ascending
/// SHA-1(storage index ‖ permutation seed), ties kept in the given order (Python's sort is stable).
pub fn permuted_order(servers: &[ServerInfo], storage_index: &[u8]) -> Vec<usize> {
    order_by_seed(
        servers.iter().map(|s| s.permutation_seed.as_slice()),
        storage_index,
    )
}

pub(super) fn order_by_seed<'s>(
    seeds: impl Iterator<Item = &'s [u8]>,
    storage_index: &[u8],
) -> Vec<usize> {
    let mut keyed: Vec<([u8; 20], usize)> = seeds
        .enumerate()
        .map(|(i, seed)| {
            let mut hasher = sha1::Sha1::new();
            hasher.update(storage_index);
            hasher.update(seed);
            (hasher.finalize().into(), i)
        })
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, i)| i).collect()
}

/// How a server has been answering.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerHealth {
    pub last_success: Option<Instant>,
    pub last_round_trip: Option<Duration>,
    pub available_space: Option<u64>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
}

/// What a client should make of a server now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    /// Never tried.
    Unknown,
    /// Answered its last request.
    Connected,
    /// Its last request failed.
    Failing,
}

impl ServerHealth {
    pub fn record_success(&mut self, round_trip: Duration, available_space: Option<u64>) {
        self.last_success = Some(Instant::now());
        self.last_round_trip = Some(round_trip);
        if available_space.is_some() {
            self.available_space = available_space;
        }
        self.consecutive_failures = 0;
        self.last_error = None;
    }

    pub fn record_failure(&mut self, error: impl std::fmt::Display) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.last_error = Some(error.to_string());
    }

    pub fn state(&self) -> ServerState {
        match (self.consecutive_failures, self.last_success) {
            (0, None) => ServerState::Unknown,
            (0, Some(_)) => ServerState::Connected,
            _ => ServerState::Failing,
        }
    }
}

/// The servers a client knows, by server id, with their health.
#[derive(Debug, Default)]
pub struct KnownServers {
    servers: BTreeMap<String, (ServerInfo, ServerHealth)>,
}

impl KnownServers {
    /// Adds or replaces a server's description, keeping its health record.
    pub fn upsert(&mut self, info: ServerInfo) {
        match self.servers.get_mut(&info.server_id) {
            Some(entry) => entry.0 = info,
            None => {
                self.servers
                    .insert(info.server_id.clone(), (info, ServerHealth::default()));
            }
        }
    }

    pub fn remove(&mut self, server_id: &str) -> Option<ServerInfo> {
        self.servers.remove(server_id).map(|(info, _)| info)
    }

    pub fn get(&self, server_id: &str) -> Option<&(ServerInfo, ServerHealth)> {
        self.servers.get(server_id)
    }

    pub fn health_mut(&mut self, server_id: &str) -> Option<&mut ServerHealth> {
        self.servers.get_mut(server_id).map(|(_, h)| h)
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &(ServerInfo, ServerHealth)> {
        self.servers.values()
    }

    /// The servers in Tahoe's permuted order for `storage_index`, those that are failing last (Tahoe only
    /// considers connected servers; a failing one is still worth a try after the others).
    pub fn permuted(&self, storage_index: &[u8]) -> Vec<&ServerInfo> {
        let infos: Vec<&(ServerInfo, ServerHealth)> = self.servers.values().collect();
        let order = order_by_seed(
            infos.iter().map(|(i, _)| i.permutation_seed.as_slice()),
            storage_index,
        );
        let (mut good, mut failing): (Vec<&ServerInfo>, Vec<&ServerInfo>) =
            (Vec::new(), Vec::new());
        for i in order {
            let (info, health) = infos[i];
            if health.state() == ServerState::Failing {
                failing.push(info);
            } else {
                good.push(info);
            }
        }
        good.extend(failing);
        good
    }
}

/// Awaits `next` unless `deadline` (if any) passes first: `None` when it did. The loops that ask every server and
/// stop waiting for the slow ones a while after enough have answered all take their next answer this way.
pub async fn before_deadline<T>(
    deadline: Option<tokio::time::Instant>,
    next: impl std::future::Future<Output = T>,
) -> Option<T> {
    match deadline {
        Some(at) => tokio::time::timeout_at(at, next).await.ok(),
        None => Some(next.await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NURL: &str = "pb://E7aJj9qNPfms6PZTKWCaMD8qmBMumLbjdt6oAZ69lT8@127.0.0.1:24601/cdynbizisajfk3wr6wgdogct3hkc6g2u#v=1";
    const FURL: &str = "pb://5tle46leisxf2nljqldkdeucnvrc73wk@tcp:127.0.0.1:24601/cdynbizisajfk3wr6wgdogct3hkc6g2u";

    #[test]
    fn reads_a_servers_yaml_as_tahoe_writes_it() {
        let yaml = format!(
            "storage:\n  v0-h2td7zxfrdl5de5kjrl3ktjrjy26psavks4saal2xb7eksobdjxq:\n    ann:\n      nickname: storage1\n      \
             anonymous-storage-FURL: {FURL}\n      permutation-seed-base32: \
             nazhizbxpj4gm4tenq2wizjvnnvhe3btnn2gu4tkpezdm4dtmf3gw4zuonqwc3bspbrdozllonxwezdkpbyq\n      \
             anonymous-storage-NURLs:\n      - {NURL}\n"
        );
        let servers = parse_servers_yaml(&yaml).unwrap();
        assert_eq!(servers.len(), 1);
        let s = &servers[0];
        assert_eq!(s.display_name(), "storage1");
        assert_eq!(
            s.permutation_seed,
            b"h2td7zxfrdl5de5kjrl3ktjrjy26psavks4saal2xb7eksobdjxq"
        );
        assert_eq!(
            s.furl.as_ref().unwrap().tubid_base32(),
            "5tle46leisxf2nljqldkdeucnvrc73wk"
        );
        assert_eq!(s.nurls[0].endpoint(), "127.0.0.1:24601");
    }

    #[test]
    fn bad_server_lists_say_what_is_wrong() {
        assert!(
            parse_servers_yaml("storage: [1, 2]")
                .unwrap_err()
                .problem
                .contains("storage")
        );
        assert!(parse_servers_yaml(": : :\n  - [").is_err());
        let no_nurl =
            format!("storage:\n  v0-x:\n    ann:\n      anonymous-storage-FURL: {FURL}\n");
        let err = parse_servers_yaml(&no_nurl).unwrap_err();
        assert!(
            err.what.contains("v0-x") && err.problem.contains("force_foolscap"),
            "{err}"
        );
        let bad_nurl =
            "storage:\n  v0-y:\n    ann:\n      anonymous-storage-NURLs: [ 'pb://x@y/z#v=1' ]\n";
        assert!(
            parse_servers_yaml(bad_nurl)
                .unwrap_err()
                .what
                .contains("v0-y")
        );
    }

    #[test]
    fn health_states() {
        let mut h = ServerHealth::default();
        assert_eq!(h.state(), ServerState::Unknown);
        h.record_failure("refused");
        assert_eq!(h.state(), ServerState::Failing);
        h.record_success(Duration::from_millis(3), Some(10));
        assert_eq!(h.state(), ServerState::Connected);
        assert_eq!(h.available_space, Some(10));
        assert!(h.last_error.is_none());
    }

    #[test]
    fn failing_servers_go_last() {
        let mut known = KnownServers::default();
        for i in 0..4 {
            let mut info = ServerInfo::from_nurl(NURL.parse().unwrap());
            info.server_id = format!("s{i}");
            info.permutation_seed = vec![i];
            known.upsert(info);
        }
        let si = [9u8; 16];
        let before: Vec<String> = known
            .permuted(&si)
            .iter()
            .map(|s| s.server_id.clone())
            .collect();
        known.health_mut(&before[0]).unwrap().record_failure("down");
        let after: Vec<String> = known
            .permuted(&si)
            .iter()
            .map(|s| s.server_id.clone())
            .collect();
        assert_eq!(after[..3], before[1..]);
        assert_eq!(after[3], before[0]);
    }
}
