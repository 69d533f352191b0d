//! A storage host's side: publishing and maintaining its grid service announcement (GSA).
//!
//! Idempotent, so that a timer can run it: the first run creates the GSA and saves its writecap (0600); later runs
//! rewrite it when the announcement changed, and republish it when a server it now knows of lacks a share. That is
//! how a server's announcement reaches servers that join the grid after it.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::client::{Connector, GridSource, GsdClient};
use super::format::Announcement;
use super::operator::one_share_each;
use crate::cap::{Cap, FileCap, MutableAccess, MutableCap, MutableFormat};
use crate::config::write_private_file;
use crate::grid::ServerInfo;
use crate::grid::client::{Grid, GridServer};
use crate::mutable::{MutableError, MutableFile, MutableOptions};

/// How long the node itself gets to answer.
const SELF_CHECK_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error("{0}")]
    Refused(String),
    #[error("{path}: {problem}")]
    Writecap { path: String, problem: String },
    #[error(transparent)]
    Mutable(#[from] MutableError),
}

/// What an announce run did.
#[derive(Debug)]
pub struct AnnounceReport {
    pub readcap: MutableCap,
    /// The GSA was made by this run.
    pub created: bool,
    /// The version now published, if this run published one.
    pub published: Option<u64>,
    /// Servers the GSA was published to (or found complete on).
    pub servers: usize,
    /// Servers where our lease on the GSA was renewed without a publish (a publish renews by itself): storage
    /// servers that expire leases would otherwise drop an announcement that never changes.
    pub leases_renewed: usize,
    pub warnings: Vec<String>,
}

/// Publishes the announcement `ann` of server `server_id` (whose NURLs are in it) to itself, to the grid's
/// bootstrap servers and to every server in the GSD. The node must answer at its own NURL: its software version is
/// announced, and a node that cannot be reached should not be announced.
pub async fn announce(
    server_id: &str,
    mut ann: Map<String, Value>,
    source: &GridSource,
    writecap_file: &Path,
    connector: Arc<dyn Connector>,
    options: MutableOptions,
) -> Result<AnnounceReport, AnnounceError> {
    let mut warnings = Vec::new();
    let own = Announcement::new(server_id, ann.clone())
        .server_info()
        .map_err(|e| AnnounceError::Refused(format!("this node's announcement: {e}")))?;
    let own_storage = connector
        .connect(&own)
        .map_err(|e| AnnounceError::Refused(format!("this node: {e}")))?;
    let version = tokio::time::timeout(SELF_CHECK_TIMEOUT, own_storage.version())
        .await
        .map_err(|_| "no answer".to_owned())
        .and_then(|answer| answer.map_err(|e| e.to_string()))
        .map_err(|why| {
            AnnounceError::Refused(format!(
                "this node does not answer at {} ({why}): is it running?",
                own.nurls[0]
            ))
        })?;
    ann.insert(
        "my-version".into(),
        Value::String(version.application_version),
    );

    // Every server we can learn of: ourselves, the bootstrap servers, and the GSD's.
    let mut servers = vec![GridServer::new(own.clone(), own_storage)];
    let (client, client_warnings) =
        GsdClient::new(source.clone(), connector.clone(), None, options.clone());
    warnings.extend(client_warnings);
    match client.refresh().await {
        Ok(report) => warnings.extend(report.warnings),
        Err(e) => warnings.push(format!("{e}: publishing to the bootstrap servers only")),
    }
    let mut infos: Vec<ServerInfo> = client.view().server_infos();
    for nurl in &source.bootstrap {
        if !infos.iter().any(|s| s.nurls.contains(nurl)) {
            infos.push(ServerInfo::from_nurl(nurl.clone()));
        }
    }
    for info in infos {
        let same = |s: &GridServer| {
            s.info.server_id == info.server_id
                || s.info.nurls.iter().any(|n| info.nurls.contains(n))
        };
        if servers.iter().any(same) {
            continue;
        }
        match connector.connect(&info) {
            Ok(storage) => servers.push(GridServer::new(info, storage)),
            Err(e) => warnings.push(format!("{}: {e}", info.display_name())),
        }
    }
    let grid = Grid::new(servers);
    let (params, unreachable) = one_share_each(&grid)
        .await
        .map_err(|e| AnnounceError::Refused(e.to_string()))?;
    warnings.extend(
        unreachable
            .iter()
            .map(|u| format!("{u}: not published there this time")),
    );

    let existing = read_writecap(writecap_file)?;
    let Some(writecap) = existing else {
        let bytes = Announcement::new(server_id, ann).to_bytes();
        let file = MutableFile::create(grid.clone(), &bytes, params, options).await?;
        let text = format!("{}\n", Cap::File(FileCap::Mutable(*file.cap())));
        write_private_file(writecap_file, text.as_bytes(), false).map_err(|e| {
            AnnounceError::Writecap {
                path: e.path.display().to_string(),
                problem: format!("the new GSA could not be saved: {}", e.problem),
            }
        })?;
        return Ok(AnnounceReport {
            readcap: file.cap().readonly(),
            created: true,
            published: Some(1),
            servers: grid.len(),
            leases_renewed: 0,
            warnings,
        });
    };

    let file = MutableFile::open(grid.clone(), writecap, options.clone());
    let map = file.servermap().await?;
    let current = file.read_from(&map).await.map_err(|e| match e {
        MutableError::NotFound(_) => AnnounceError::Refused(format!(
            "no reachable server holds the GSA of {}: delete it to make a new GSA, and have it enrolled again",
            writecap_file.display()
        )),
        other => other.into(),
    })?;
    // Keys the node does not make (added by hand, or by a newer tahoe-mount) are kept.
    let mut announcement = match Announcement::parse(&current.contents, "the current GSA") {
        Ok(old) if old.server_id == server_id => old,
        Ok(old) => {
            warnings.push(format!(
                "the current GSA announced server {}, not this node ({server_id}): replaced",
                old.server_id
            ));
            Announcement::new(server_id, Map::new())
        }
        Err(e) => {
            warnings.push(format!("{e}: replaced"));
            Announcement::new(server_id, Map::new())
        }
    };
    announcement.ann.extend(ann);
    let bytes = announcement.to_bytes();
    let holders: BTreeSet<usize> = map
        .shares
        .iter()
        .filter(|r| r.prefix.seqnum == current.seqnum)
        .map(|r| r.server)
        .collect();
    let missing = map.reachable.iter().any(|s| !holders.contains(s));
    let lease_secret = options.lease_secret.clone();
    let timeout = options.timeout;
    let published = if bytes != current.contents || missing || current.params.total != params.total
    {
        Some(file.overwrite(&bytes, Some(params)).await?)
    } else {
        None
    };
    let mut leases_renewed = 0;
    if published.is_none() {
        let holding = map.holding_servers();
        let si = crate::storage::StorageIndex(writecap.storage_index());
        let renewals =
            crate::grid::census::renew_leases(&grid, si, &lease_secret, &holding, timeout).await;
        leases_renewed = renewals.tally.renewed;
        warnings.extend(
            renewals
                .failed
                .values()
                .map(|why| format!("lease renewal: {why}")),
        );
    }
    Ok(AnnounceReport {
        readcap: writecap.readonly(),
        created: false,
        published,
        servers: grid.len(),
        leases_renewed,
        warnings,
    })
}

/// The GSA writecap saved by an earlier run, if any.
fn read_writecap(path: &Path) -> Result<Option<MutableCap>, AnnounceError> {
    let problem = |problem: String| AnnounceError::Writecap {
        path: path.display().to_string(),
        problem,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(problem(e.to_string())),
    };
    match Cap::parse(text.trim()) {
        Ok(Cap::File(FileCap::Mutable(cap)))
            if matches!(cap.access, MutableAccess::Write { .. })
                && cap.format == MutableFormat::Sdmf =>
        {
            Ok(Some(cap))
        }
        _ => Err(problem(
            "does not hold an SDMF mutable file's writecap (URI:SSK:…)".into(),
        )),
    }
}
