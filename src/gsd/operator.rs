//! The grid operator's side: the state file holding the GSD writecap, and creating, enrolling in, removing from,
//! listing and inviting to a GSD.
//!
//! Every publish of the GSD is 1-of-N over every enrolled server (and the bootstrap servers), so N grows and
//! shrinks with the grid and any one server can serve the whole directory.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::client::{Connector, GridSource, GsdClient, GsdError, KnownServer};
use super::format::{Announcement, ENTRY_PREFIX, Invitation, check_petname};
use crate::cap::{Cap, FileCap, MutableAccess, MutableCap, MutableFormat};
use crate::config::write_private_file;
use crate::dirnode::{Change, Child, Directory, DirectoryError, DirectoryNode};
use crate::grid::ServerInfo;
use crate::grid::client::{Grid, GridServer};
use crate::mutable::{MutableError, MutableFile, MutableOptions, MutableParams};
use crate::storage::nurl::Nurl;

/// How long each server gets to answer the reachability check before a publish.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("{path}: {problem}")]
    State { path: String, problem: String },
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Gsd(#[from] GsdError),
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error(transparent)]
    Mutable(#[from] MutableError),
}

/// The operator's state: the GSD writecap and the bootstrap servers named in invitations. Kept in a 0600 JSON file
/// (`{"version": 1, "cap": "URI:DIR2:…", "furls": […]}`), never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct OperatorState {
    pub gsd: MutableCap,
    pub bootstrap: Vec<Nurl>,
}

impl std::fmt::Debug for OperatorState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperatorState(..)")
    }
}

impl OperatorState {
    pub fn load(path: &Path) -> Result<OperatorState, OperatorError> {
        let problem = |problem: String| OperatorError::State {
            path: path.display().to_string(),
            problem,
        };
        let text = std::fs::read_to_string(path).map_err(|e| problem(e.to_string()))?;
        let json: Value =
            serde_json::from_str(&text).map_err(|e| problem(format!("not JSON: {e}")))?;
        if json.get("version").and_then(Value::as_u64) != Some(1) {
            return Err(problem("not a version 1 GSD state file".into()));
        }
        let gsd = match json.get("cap").and_then(Value::as_str).map(Cap::parse) {
            Some(Ok(Cap::Directory(FileCap::Mutable(cap))))
                if matches!(cap.access, MutableAccess::Write { .. }) =>
            {
                cap
            }
            _ => {
                return Err(problem(
                    "\"cap\" is not a mutable directory's writecap".into(),
                ));
            }
        };
        let bootstrap = json
            .get("furls")
            .and_then(Value::as_array)
            .ok_or_else(|| problem("no \"furls\" list".into()))?
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| problem("\"furls\" holds a non-string".into()))?
                    .parse::<Nurl>()
                    .map_err(|e| problem(format!("\"furls\": {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(OperatorState { gsd, bootstrap })
    }

    /// Writes a new state file; refuses to replace one (that would lose a GSD).
    pub fn save_new(&self, path: &Path) -> Result<(), OperatorError> {
        let json = serde_json::json!({
            "version": 1,
            "cap": Cap::Directory(FileCap::Mutable(self.gsd)).to_string(),
            "furls": self.bootstrap.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&json).unwrap_or_default() + "\n";
        write_private_file(path, text.as_bytes(), false).map_err(|e| OperatorError::State {
            path: e.path.display().to_string(),
            problem: e.problem,
        })
    }

    pub fn readcap(&self) -> MutableCap {
        self.gsd.readonly()
    }

    pub fn invitation(&self) -> Invitation {
        Invitation {
            gsd: self.readcap(),
            bootstrap: self.bootstrap.clone(),
            skipped: Vec::new(),
        }
    }

    pub fn source(&self) -> GridSource {
        GridSource {
            gsd: self.readcap(),
            bootstrap: self.bootstrap.clone(),
        }
    }
}

/// What a publish reached, for the operator to read.
#[derive(Debug, Default)]
pub struct PublishReport {
    pub servers: usize,
    /// Servers that did not answer: they did not get the new version, and keep an older one until a later publish.
    pub unreachable: Vec<String>,
    pub warnings: Vec<String>,
}

/// The servers of `grid` that do not answer a version request within the timeout: their indices and why.
pub async fn check_reachable(grid: &Grid) -> Vec<(usize, String)> {
    let checks = grid.servers().iter().map(|server| async move {
        let answer = tokio::time::timeout(PROBE_TIMEOUT, server.storage.version()).await;
        match answer {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(format!("{}: {e}", server.name())),
            Err(_) => Some(format!(
                "{}: no answer within {PROBE_TIMEOUT:?}",
                server.name()
            )),
        }
    });
    futures_util::future::join_all(checks)
        .await
        .into_iter()
        .enumerate()
        .filter_map(|(i, failure)| failure.map(|why| (i, why)))
        .collect()
}

fn descriptions(failures: Vec<(usize, String)>) -> Vec<String> {
    failures.into_iter().map(|(_, why)| why).collect()
}

/// 1-of-N over the whole of `grid`, content when every server that answers holds a share.
pub async fn one_share_each(grid: &Grid) -> Result<(MutableParams, Vec<String>), OperatorError> {
    let unreachable = descriptions(check_reachable(grid).await);
    let reachable = grid.len() - unreachable.len();
    if reachable == 0 {
        return Err(OperatorError::Refused(format!(
            "no server answers: {}",
            unreachable.join("; ")
        )));
    }
    let mut params = MutableParams::one_share_per_server(MutableFormat::Sdmf, grid.len());
    params.happy = u8::try_from(reachable).unwrap_or(u8::MAX).min(params.total);
    Ok((params, unreachable))
}

/// Creates an empty GSD with a share on each of `servers` (all must answer), and writes its state file.
pub async fn create(
    state_path: &Path,
    servers: Vec<Nurl>,
    connector: &dyn Connector,
    options: MutableOptions,
) -> Result<OperatorState, OperatorError> {
    if state_path.exists() {
        return Err(OperatorError::State {
            path: state_path.display().to_string(),
            problem: "already exists: it may hold a GSD's writecap; not replaced".into(),
        });
    }
    if servers.is_empty() {
        return Err(OperatorError::Refused(
            "give at least one --server NURL".into(),
        ));
    }
    let grid = connect_all(
        servers.iter().cloned().map(ServerInfo::from_nurl),
        connector,
    )?;
    let unreachable = descriptions(check_reachable(&grid).await);
    if !unreachable.is_empty() {
        return Err(OperatorError::Refused(format!(
            "{} of {} servers do not answer, and a new GSD needs a share on each: {}",
            unreachable.len(),
            grid.len(),
            unreachable.join("; ")
        )));
    }
    let params = MutableParams::one_share_per_server(MutableFormat::Sdmf, grid.len());
    let node = DirectoryNode::create(grid, &Directory::new(), params, options).await?;
    let Cap::Directory(FileCap::Mutable(gsd)) = node.cap().clone() else {
        return Err(OperatorError::Refused(
            "the new directory is not mutable".into(),
        ));
    };
    let state = OperatorState {
        gsd,
        bootstrap: servers,
    };
    state.save_new(state_path)?;
    Ok(state)
}

fn connect_all(
    infos: impl Iterator<Item = ServerInfo>,
    connector: &dyn Connector,
) -> Result<Grid, OperatorError> {
    let servers = infos
        .map(|info| {
            connector
                .connect(&info)
                .map(|storage| GridServer::new(info.clone(), storage))
                .map_err(|e| OperatorError::Refused(format!("{}: {e}", info.display_name())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Grid::new(servers))
}

/// The GSD as it is now, read through a client that does not cache (the operator's view must be the grid's).
pub async fn current(
    state: &OperatorState,
    connector: Arc<dyn Connector>,
    options: MutableOptions,
) -> Result<(GsdClient, Vec<String>), OperatorError> {
    let (client, mut warnings) = GsdClient::new(state.source(), connector, None, options);
    let report = client.refresh().await?;
    warnings.extend(report.warnings);
    Ok((client, warnings))
}

/// The servers a GSD publish goes to: every enrolled server, plus the bootstrap servers not among them.
fn publish_servers(state: &OperatorState, enrolled: &[ServerInfo]) -> Vec<ServerInfo> {
    let mut servers: Vec<ServerInfo> = enrolled.to_vec();
    for nurl in &state.bootstrap {
        if !servers.iter().any(|s| s.nurls.contains(nurl)) {
            servers.push(ServerInfo::from_nurl(nurl.clone()));
        }
    }
    servers
}

async fn publish_change(
    state: &OperatorState,
    enrolled: &[ServerInfo],
    change: Change,
    connector: &dyn Connector,
    options: MutableOptions,
    mut warnings: Vec<String>,
) -> Result<PublishReport, OperatorError> {
    let grid = connect_all(publish_servers(state, enrolled).into_iter(), connector)?;
    let (params, unreachable) = one_share_each(&grid).await?;
    let node = DirectoryNode::open(
        grid.clone(),
        Cap::Directory(FileCap::Mutable(state.gsd)),
        options,
    )?;
    node.modify_with_params(&[change], Some(params)).await?;
    warnings.extend(
        unreachable.iter().map(|u| {
            format!("{u}: it keeps an older GSD version until the next publish reaches it")
        }),
    );
    Ok(PublishReport {
        servers: grid.len(),
        unreachable,
        warnings,
    })
}

/// Links `petname` to the server announcement `gsa` (read and checked first) and republishes the GSD with a
/// share on every enrolled server, the new one included.
pub async fn enroll(
    state: &OperatorState,
    petname: &str,
    gsa: MutableCap,
    connector: Arc<dyn Connector>,
    options: MutableOptions,
) -> Result<(PublishReport, KnownServer), OperatorError> {
    check_petname(petname).map_err(OperatorError::Refused)?;
    let gsa = gsa.readonly();
    let (client, warnings) = current(state, connector.clone(), options.clone()).await?;
    let view = client.view();
    let enrolled: Vec<ServerInfo> = view.server_infos();
    // The announcement is read from every server known: the new server has pushed it at least to itself and to
    // the bootstrap servers.
    let everyone = connect_all(publish_servers(state, &enrolled).into_iter(), &*connector)?;
    let version = MutableFile::open(everyone, gsa, options.clone())
        .read()
        .await
        .map_err(|e| {
            OperatorError::Refused(format!("cannot read the announcement to enroll: {e}"))
        })?;
    let announcement = Announcement::parse(
        &version.contents,
        &format!("the announcement of {petname:?}"),
    )
    .map_err(|e| OperatorError::Refused(e.to_string()))?;
    let info = announcement
        .server_info()
        .map_err(|e| OperatorError::Refused(format!("the announcement of {petname:?}: {e}")))?;
    if let Some(other) = view
        .servers
        .iter()
        .find(|s| s.info.server_id == info.server_id && s.petname != petname)
    {
        return Err(OperatorError::Refused(format!(
            "server {} is already enrolled as {:?}; remove that entry first",
            info.server_id, other.petname
        )));
    }
    let mut servers: Vec<ServerInfo> = enrolled
        .into_iter()
        .filter(|s| s.server_id != info.server_id)
        .collect();
    servers.push(info.clone());
    let change = Change::Link {
        name: format!("{ENTRY_PREFIX}{petname}"),
        child: Child::from_cap(&Cap::File(FileCap::Mutable(gsa)))
            .map_err(|e| OperatorError::Refused(e.to_string()))?,
        metadata: None,
        replace: crate::dirnode::Replace::Always,
    };
    let report = publish_change(state, &servers, change, &*connector, options, warnings).await?;
    let known = KnownServer {
        petname: petname.to_owned(),
        info,
        announcement_seqnum: version.seqnum,
        announcement,
    };
    Ok((report, known))
}

/// Unlinks `petname` and republishes the GSD over the servers that remain.
pub async fn remove(
    state: &OperatorState,
    petname: &str,
    connector: Arc<dyn Connector>,
    options: MutableOptions,
) -> Result<PublishReport, OperatorError> {
    let (client, warnings) = current(state, connector.clone(), options.clone()).await?;
    let view = client.view();
    let servers: Vec<ServerInfo> = view
        .servers
        .iter()
        .filter(|s| s.petname != petname)
        .map(|s| s.info.clone())
        .collect();
    let change = Change::Unlink {
        name: format!("{ENTRY_PREFIX}{petname}"),
    };
    publish_change(state, &servers, change, &*connector, options, warnings).await
}

/// What `gsd repair` found and did.
#[derive(Debug)]
pub struct RepairReport {
    /// The GSD's health before: its shares, and whether they were on every enrolled server.
    pub before: crate::check::CheckResult,
    /// The version published by the repair, if one was needed.
    pub republished: Option<u64>,
    /// The GSD and the announcements it links: objects checked, leases renewed (each on every server holding it).
    pub walk: crate::check::deep::DeepSummary,
    pub servers: usize,
    pub unreachable: Vec<String>,
}

/// Keeps the GSD alive: renews our lease on it and on every announcement it links, and republishes it 1-of-N with
/// a share on every enrolled (and bootstrap) server when any lacks one, or when N no longer matches the grid.
/// Announcements themselves can only be repaired by their servers (`announce` holds their writecaps).
pub async fn repair(
    state: &OperatorState,
    connector: Arc<dyn Connector>,
    options: MutableOptions,
) -> Result<RepairReport, OperatorError> {
    use crate::check::deep::{Walk, deep_check};
    use crate::check::{CheckOptions, check};
    let (client, _) = current(state, connector.clone(), options.clone()).await?;
    let enrolled = client.view().server_infos();
    let grid = connect_all(publish_servers(state, &enrolled).into_iter(), &*connector)?;
    let (params, unreachable) = one_share_each(&grid).await?;
    let cap = Cap::Directory(FileCap::Mutable(state.gsd));
    let mut check_options =
        CheckOptions::new(crate::config::Secret::new(options.lease_secret.clone()));
    check_options.happy = u16::from(params.happy);
    check_options.timeout = options.timeout;
    let before = check(&grid, &cap, &check_options)
        .await
        .map_err(|e| OperatorError::Refused(e.to_string()))?;
    let republished = if !before.pre.healthy || before.pre.total != u16::from(params.total) {
        let file = MutableFile::open(grid.clone(), state.gsd, options);
        Some(file.repair(params.happy, Some(params)).await?)
    } else {
        None
    };
    check_options.add_lease = true;
    let walk = deep_check(
        &grid,
        cap,
        &check_options,
        &Walk::with_concurrency(4),
        |_, _| {},
    )
    .await;
    Ok(RepairReport {
        before,
        republished,
        walk,
        servers: grid.len(),
        unreachable,
    })
}
