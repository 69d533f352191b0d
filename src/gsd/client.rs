//! The client side of the grid service directory: from an invitation (or a GSD readcap and bootstrap NURLs) to
//! the set of servers a running process uses, kept current by polling.
//!
//! A refresh reads the GSD from a few servers (the bootstrap servers and some known ones), then every GSA, each
//! from one server that holds the GSD first and from the others only if that fails. k = 1, so one share is a whole
//! copy. Versions older than one accepted before are passed over with a warning (rollback protection); what was
//! accepted is cached (`cache`), so a later start works when every bootstrap server is gone.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Mutex, Semaphore, watch};

use super::cache::{CacheError, CacheFile, CachedAnnouncement, GridCache};
use super::format::{
    Announcement, FormatError, GsdEntry, Invitation, gsd_entries, parse_gsd_readcap,
};
use crate::cap::{Cap, FileCap, MutableCap};
use crate::dirnode::{Access, unpack};
use crate::grid::ServerInfo;
use crate::grid::client::{Grid, GridServer};
use crate::mutable::{MutableFile, MutableOptions, Version};
use crate::storage::gbs::{GbsOptions, GbsServer};
use crate::storage::nurl::Nurl;
use crate::storage::{StorageError, StorageServer};

/// How often a running client re-reads the GSD by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(300);
/// GSA reads in flight at once during a refresh.
const PARALLEL_READS: usize = 32;

/// Why a grid cannot be joined or refreshed.
#[derive(Debug, thiserror::Error)]
pub enum GsdError {
    #[error("{0}")]
    Source(String),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("cannot read the grid service directory: {0}")]
    Unreachable(String),
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// Which grid to join: its GSD readcap and the servers to ask first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridSource {
    pub gsd: MutableCap,
    pub bootstrap: Vec<Nurl>,
}

impl GridSource {
    /// Reads `--grid` (an invitation as JSON text, `@FILE` holding one, or a GSD readcap) and `--bootstrap` NURLs
    /// (added to an invitation's; required with a bare readcap). Returns warnings about unusable addresses.
    pub fn parse(grid: &str, bootstrap: &[String]) -> Result<(GridSource, Vec<String>), GsdError> {
        let text = match grid.strip_prefix('@') {
            Some(path) => read_invitation_file(Path::new(path))?,
            None => grid.to_owned(),
        };
        let text = text.trim();
        let mut warnings = Vec::new();
        let mut source = if text.starts_with('{') {
            let invitation = Invitation::parse(text)?;
            warnings.extend(
                invitation
                    .skipped
                    .iter()
                    .map(|s| format!("invitation: {s}")),
            );
            GridSource {
                gsd: invitation.gsd,
                bootstrap: invitation.bootstrap,
            }
        } else {
            GridSource {
                gsd: parse_gsd_readcap(text).map_err(GsdError::Source)?,
                bootstrap: Vec::new(),
            }
        };
        for nurl in bootstrap {
            let parsed = nurl
                .parse::<Nurl>()
                .map_err(|e| GsdError::Source(format!("--bootstrap {nurl}: {e}")))?;
            if !source.bootstrap.contains(&parsed) {
                source.bootstrap.push(parsed);
            }
        }
        if source.bootstrap.is_empty() {
            return Err(GsdError::Source(
                "a GSD readcap needs at least one --bootstrap NURL (or give an invitation instead)"
                    .into(),
            ));
        }
        Ok((source, warnings))
    }
}

fn read_invitation_file(path: &Path) -> Result<String, GsdError> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| {
            f.take(super::format::MAX_INVITATION_BYTES as u64 + 1)
                .read_to_string(&mut text)
        })
        .map_err(|e| GsdError::Source(format!("--grid @{}: {e}", path.display())))?;
    Ok(text)
}

/// Makes storage clients for servers: over HTTPS for real grids, in-process for tests.
pub trait Connector: Send + Sync {
    fn connect(&self, info: &ServerInfo) -> Result<Arc<dyn StorageServer>, StorageError>;
}

/// Tahoe's HTTP storage protocol, to the first NURL of each server.
pub struct GbsConnector(pub GbsOptions);

impl Connector for GbsConnector {
    fn connect(&self, info: &ServerInfo) -> Result<Arc<dyn StorageServer>, StorageError> {
        let nurl = info.nurls.first().ok_or_else(|| StorageError::Connect {
            server: info.display_name().to_owned(),
            reason: "no NURL to connect to".into(),
        })?;
        Ok(Arc::new(GbsServer::new(
            nurl,
            Some(info.display_name()),
            self.0.clone(),
        )?))
    }
}

/// Where a client learned of a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Enrolled in the GSD under this petname.
    Directory { petname: String },
    /// Named by the invitation or `--bootstrap` only: asked for the GSD, never given data.
    Bootstrap,
}

/// An enrolled server as the client knows it.
#[derive(Debug, Clone)]
pub struct KnownServer {
    pub petname: String,
    pub info: ServerInfo,
    /// The sequence number of its GSA.
    pub announcement_seqnum: u64,
    pub announcement: Announcement,
}

/// The grid as a client sees it at one moment.
#[derive(Debug, Clone, Default)]
pub struct GridView {
    /// The GSD version these servers come from; 0 before the first read.
    pub gsd_seqnum: u64,
    /// Enrolled servers, by petname.
    pub servers: Vec<KnownServer>,
    /// When the GSD was last read from a server (seconds since the epoch); 0 if never.
    pub refreshed_at: u64,
}

impl GridView {
    pub fn server_infos(&self) -> Vec<ServerInfo> {
        self.servers.iter().map(|s| s.info.clone()).collect()
    }
}

/// What one refresh found.
#[derive(Debug, Clone, Default)]
pub struct RefreshReport {
    pub gsd_seqnum: u64,
    /// Petnames enrolled since the last view, removed from it, and whose announcement changed.
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    /// No server offered a GSD version at least as new as the cached one, so the cached one was kept.
    pub kept_cached: bool,
    /// Entries skipped, servers passed over, announcements unreadable: each says what and where.
    pub warnings: Vec<String>,
}

impl RefreshReport {
    pub fn changed_anything(&self) -> bool {
        !(self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty())
    }
}

struct Snapshot {
    view: Arc<GridView>,
    grid: Grid,
}

struct State {
    cache: GridCache,
    /// Storage clients by server, reused while a server's description stays the same (so are its connections).
    connections: HashMap<String, GridServer>,
}

/// A client's live membership in one grid.
pub struct GsdClient {
    source: GridSource,
    connector: Arc<dyn Connector>,
    cache_file: Option<CacheFile>,
    options: MutableOptions,
    state: Mutex<State>,
    current: RwLock<Arc<Snapshot>>,
    generation: watch::Sender<u64>,
}

impl GsdClient {
    /// Joins a grid: loads its cache from `cache_dir` (if given and present) so that [`GsdClient::grid`] has the
    /// cached servers at once, with no network I/O. Warnings (an unreadable cache) are returned, not fatal.
    pub fn new(
        source: GridSource,
        connector: Arc<dyn Connector>,
        cache_dir: Option<&Path>,
        options: MutableOptions,
    ) -> (GsdClient, Vec<String>) {
        let cache_file = cache_dir.map(|dir| CacheFile::for_grid(dir, &source.gsd));
        let mut warnings = Vec::new();
        let cache = match cache_file.as_ref().map(CacheFile::load) {
            Some(Ok(Some(cache))) => cache,
            Some(Err(e)) => {
                warnings.push(format!("{e}: starting without it"));
                GridCache::default()
            }
            _ => GridCache::default(),
        };
        let view = view_from_cache(&cache, &mut warnings);
        let mut state = State {
            cache,
            connections: HashMap::new(),
        };
        let grid = build_grid(&view, &*connector, &mut state.connections, &mut warnings);
        let client = GsdClient {
            source,
            connector,
            cache_file,
            options,
            state: Mutex::new(state),
            current: RwLock::new(Arc::new(Snapshot {
                view: Arc::new(view),
                grid,
            })),
            generation: watch::channel(0).0,
        };
        (client, warnings)
    }

    pub fn source(&self) -> &GridSource {
        &self.source
    }

    pub fn cache_path(&self) -> Option<&Path> {
        self.cache_file.as_ref().map(CacheFile::path)
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The enrolled servers now, to hand to uploads, downloads and directories.
    pub fn grid(&self) -> Grid {
        self.snapshot().grid.clone()
    }

    pub fn view(&self) -> Arc<GridView> {
        self.snapshot().view.clone()
    }

    /// Changes whenever a refresh changes the view (for caches and views that follow the grid).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Whether the view is at most `max_age` old.
    pub fn is_fresh(&self, max_age: Duration) -> bool {
        let refreshed_at = self.view().refreshed_at;
        refreshed_at > 0 && unix_now().saturating_sub(refreshed_at) <= max_age.as_secs()
    }

    /// Refreshes unless the cached view is at most `max_age` old; if the refresh fails but a cached view exists,
    /// goes on with it and says so in the warnings. For one-shot commands.
    pub async fn ensure_fresh(&self, max_age: Duration) -> Result<Vec<String>, GsdError> {
        if self.is_fresh(max_age) {
            return Ok(Vec::new());
        }
        match self.refresh().await {
            Ok(report) => Ok(report.warnings),
            Err(e) if !self.view().servers.is_empty() => Ok(vec![format!(
                "{e}; using the {} servers cached from GSD version {}",
                self.view().servers.len(),
                self.view().gsd_seqnum
            )]),
            Err(e) => Err(e),
        }
    }

    /// Reads the GSD and every GSA, applies what changed, and caches it.
    pub async fn refresh(&self) -> Result<RefreshReport, GsdError> {
        let mut state = self.state.lock().await;
        let mut report = RefreshReport::default();
        let old_view = self.view();
        let candidates = self.candidates(&old_view, &mut state, &mut report.warnings);

        // Every known server is asked for the GSD: a server that missed publishes must not decide what the client
        // sees, and the newest version anyone offers wins (older ones are passed over).
        let floor = state.cache.floor(&self.source.gsd);
        let batches = vec![candidates.clone()];
        let read = read_newest(
            batches,
            self.source.gsd,
            floor,
            "the GSD",
            &self.options,
            &mut report.warnings,
        )
        .await;
        let Some((gsd, holders)) = read else {
            if state.cache.gsd_seqnum > 0 {
                report.kept_cached = true;
                report.gsd_seqnum = state.cache.gsd_seqnum;
                report.warnings.push(format!(
                    "no server offered a GSD version at least as new as version {} (cached): kept it",
                    state.cache.gsd_seqnum
                ));
                return Ok(report);
            }
            return Err(GsdError::Unreachable(report.warnings.join("; ")));
        };
        report.gsd_seqnum = gsd.seqnum;
        // The source is always a readcap (GridSource refuses others).
        let listing = unpack(&gsd.contents, &Access::ReadOnly)
            .map_err(|e| GsdError::Unreachable(format!("GSD version {}: {e}", gsd.seqnum)))?;
        for skipped in &listing.skipped {
            report.warnings.push(format!(
                "GSD entry {:?} skipped: {}",
                skipped.name, skipped.reason
            ));
        }
        let found = gsd_entries(&listing.directory);
        report.warnings.extend(found.warnings);

        // A server's own copy of its announcement is the one it keeps current, so it is asked first.
        let own: Vec<Option<usize>> = found
            .entries
            .iter()
            .map(|entry| {
                let known = old_view
                    .servers
                    .iter()
                    .find(|s| s.petname == entry.petname)?;
                candidates
                    .iter()
                    .position(|c| c.info.server_id == known.info.server_id)
            })
            .collect();
        let gsas = self
            .read_announcements(&found.entries, &own, &candidates, &holders, &state.cache)
            .await;
        let mut cache = state.cache.clone();
        cache.raise_floor(&self.source.gsd, gsd.seqnum);
        cache.gsd_seqnum = gsd.seqnum;
        cache.refreshed_at = unix_now();
        cache.entries.clear();
        let mut announcements = BTreeMap::new();
        let mut servers: Vec<KnownServer> = Vec::new();
        for (entry, outcome) in found.entries.iter().zip(gsas) {
            let cap_text = Cap::File(FileCap::Mutable(entry.announcement)).to_string();
            cache
                .entries
                .insert(entry.petname.clone(), cap_text.clone());
            let cached = state.cache.announcements.get(&cap_text);
            let (seqnum, text) = match outcome {
                Ok(version) => {
                    cache.raise_floor(&entry.announcement, version.seqnum);
                    match String::from_utf8(version.contents) {
                        Ok(text) => (version.seqnum, text),
                        Err(_) => {
                            report.warnings.push(format!(
                                "server {:?}: its announcement is not UTF-8: skipped",
                                entry.petname
                            ));
                            continue;
                        }
                    }
                }
                Err(why) => match cached {
                    Some(cached) => {
                        report.warnings.push(format!(
                            "server {:?}: {why}; using its cached announcement (version {})",
                            entry.petname, cached.seqnum
                        ));
                        (cached.seqnum, cached.text.clone())
                    }
                    None => {
                        report
                            .warnings
                            .push(format!("server {:?}: {why}; skipped", entry.petname));
                        continue;
                    }
                },
            };
            announcements.insert(
                cap_text,
                CachedAnnouncement {
                    seqnum,
                    text: text.clone(),
                },
            );
            if let Some(server) = known_server(entry, seqnum, &text, &servers, &mut report.warnings)
            {
                servers.push(server);
            }
        }
        cache.announcements = announcements;

        let view = GridView {
            gsd_seqnum: gsd.seqnum,
            servers,
            refreshed_at: cache.refreshed_at,
        };
        diff_views(&old_view, &view, &mut report);
        if let Some(file) = &self.cache_file
            && let Err(e) = file.save(&cache)
        {
            report
                .warnings
                .push(format!("{e}: the next start will not have this refresh"));
        }
        state.cache = cache;
        let grid = build_grid(
            &view,
            &*self.connector,
            &mut state.connections,
            &mut report.warnings,
        );
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Snapshot {
            view: Arc::new(view),
            grid,
        });
        if report.changed_anything() {
            self.generation.send_modify(|g| *g += 1);
        }
        Ok(report)
    }

    /// Servers to read the GSD from: the bootstrap servers first, then the enrolled ones in a random order (so
    /// that polls spread over the grid and a stale server is not asked every time).
    fn candidates(
        &self,
        view: &GridView,
        state: &mut State,
        warnings: &mut Vec<String>,
    ) -> Vec<GridServer> {
        let mut enrolled: Vec<&ServerInfo> = view.servers.iter().map(|s| &s.info).collect();
        let mut infos: Vec<ServerInfo> = Vec::new();
        for nurl in &self.source.bootstrap {
            // A bootstrap NURL of an enrolled server is that server.
            match enrolled.iter().position(|s| s.nurls.contains(nurl)) {
                Some(i) => infos.push(enrolled.remove(i).clone()),
                None => infos.push(ServerInfo::from_nurl(nurl.clone())),
            }
        }
        shuffle(&mut enrolled);
        infos.extend(enrolled.into_iter().cloned());
        infos
            .iter()
            .filter_map(|info| connection(info, &*self.connector, &mut state.connections, warnings))
            .collect()
    }

    /// Every entry's GSA: first from the server itself (when known) and one server that served the GSD (taking
    /// turns), then from two more, then from all the others. A server seen for the first time is then asked for a
    /// newer copy of its own announcement.
    async fn read_announcements(
        &self,
        entries: &[GsdEntry],
        own: &[Option<usize>],
        candidates: &[GridServer],
        holders: &[usize],
        cache: &GridCache,
    ) -> Vec<Result<Version, String>> {
        let limit = Arc::new(Semaphore::new(PARALLEL_READS));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, entry) in entries.iter().enumerate() {
            let holder = holders.get(i % holders.len().max(1)).copied();
            let mut first: Vec<usize> = own[i].into_iter().collect();
            if let Some(h) = holder.filter(|h| !first.contains(h)) {
                first.push(h);
            }
            let mut rest: Vec<usize> = (0..candidates.len())
                .filter(|c| !first.contains(c))
                .collect();
            let second: Vec<usize> = rest.drain(..rest.len().min(2)).collect();
            let pick = |indices: &[usize]| -> Vec<GridServer> {
                indices.iter().map(|&c| candidates[c].clone()).collect()
            };
            let batches = vec![pick(&first), pick(&second), pick(&rest)];
            let asked_itself = own[i].is_some();
            let connector = self.connector.clone();
            let cap = entry.announcement;
            let floor = cache.floor(&cap);
            let options = self.options.clone();
            let limit = limit.clone();
            let what = format!("the announcement of {:?}", entry.petname);
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let mut warnings = Vec::new();
                let read = read_newest(batches, cap, floor, &what, &options, &mut warnings).await;
                let mut outcome = read
                    .map(|(version, _)| version)
                    .ok_or_else(|| format!("cannot read {what} ({})", warnings.join("; ")));
                if let Ok(version) = &outcome
                    && !asked_itself
                    && let Some(itself) = own_server(&version.contents, &*connector)
                {
                    let mut ignored = Vec::new();
                    if let Some((newer, _)) = read_newest(
                        vec![vec![itself]],
                        cap,
                        version.seqnum + 1,
                        &what,
                        &options,
                        &mut ignored,
                    )
                    .await
                    {
                        outcome = Ok(newer);
                    }
                }
                (i, outcome)
            });
        }
        let mut out: Vec<Result<Version, String>> =
            entries.iter().map(|_| Err("not read".to_owned())).collect();
        while let Some(joined) = tasks.join_next().await {
            if let Ok((i, outcome)) = joined {
                out[i] = outcome;
            }
        }
        out
    }

    /// Refreshes every `interval` (±25 %, so clients started together do not poll together) until the task is
    /// aborted, handing each outcome to `on_refresh`.
    pub fn spawn_poller<F>(
        self: &Arc<Self>,
        interval: Duration,
        on_refresh: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: Fn(Result<RefreshReport, GsdError>) + Send + 'static,
    {
        let client = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval.mul_f64(0.75 + 0.5 * random_fraction())).await;
                // The poller ends with the client.
                let Some(client) = client.upgrade() else {
                    return;
                };
                let outcome = client.refresh().await;
                drop(client);
                on_refresh(outcome);
            }
        })
    }
}

/// Reads the newest version of `cap` at least as new as `floor`, asking one batch of servers after another.
/// Returns it with the indices (into the concatenated batches) of the servers that hold it. Servers offering
/// older versions are named in `warnings`, as are the batches that failed.
async fn read_newest(
    batches: Vec<Vec<GridServer>>,
    cap: MutableCap,
    floor: u64,
    what: &str,
    options: &MutableOptions,
    warnings: &mut Vec<String>,
) -> Option<(Version, Vec<usize>)> {
    let mut offset = 0;
    for batch in batches {
        if batch.is_empty() {
            continue;
        }
        let names: Vec<String> = batch.iter().map(|s| s.name().to_owned()).collect();
        let size = batch.len();
        let file = MutableFile::open(Grid::new(batch), cap, options.clone());
        let map = match file.servermap().await {
            Ok(map) => map,
            Err(e) => {
                warnings.push(format!("{what} from {}: {e}", names.join(", ")));
                offset += size;
                continue;
            }
        };
        let mut stale: BTreeMap<usize, u64> = BTreeMap::new();
        for record in &map.shares {
            if record.prefix.seqnum < floor {
                let seqnum = stale.entry(record.server).or_insert(record.prefix.seqnum);
                *seqnum = (*seqnum).max(record.prefix.seqnum);
            }
        }
        for (server, seqnum) in stale {
            warnings.push(format!(
                "{}: offers {what} at version {seqnum}, older than version {floor} already seen: passed over",
                names[server]
            ));
        }
        // The storage error already names the server.
        warnings.extend(map.unreachable.values().cloned());
        let newest = map.best_recoverable().map(|(prefix, _)| prefix.seqnum);
        if newest.is_some_and(|seqnum| seqnum >= floor) {
            match file.read_from(&map).await {
                Ok(version) => {
                    let holders = map
                        .shares
                        .iter()
                        .filter(|r| r.prefix.seqnum == version.seqnum)
                        .map(|r| offset + r.server)
                        .collect();
                    return Some((version, holders));
                }
                Err(e) => warnings.push(format!("{what} from {}: {e}", names.join(", "))),
            }
        } else if newest.is_none() && map.unreachable.len() < size {
            warnings.push(format!("{}: no copy of {what}", names.join(", ")));
        }
        offset += size;
    }
    None
}

/// The storage client of the server an announcement describes, if it can be made.
fn own_server(contents: &[u8], connector: &dyn Connector) -> Option<GridServer> {
    let info = Announcement::parse(contents, "").ok()?.server_info().ok()?;
    let storage = connector.connect(&info).ok()?;
    Some(GridServer::new(info, storage))
}

/// A server from its announcement, unless it is unusable or another petname already announced the same server.
fn known_server(
    entry: &GsdEntry,
    seqnum: u64,
    text: &str,
    so_far: &[KnownServer],
    warnings: &mut Vec<String>,
) -> Option<KnownServer> {
    let what = format!("server {:?}", entry.petname);
    let announcement = match Announcement::parse(text.as_bytes(), &what) {
        Ok(a) => a,
        Err(e) => {
            warnings.push(format!("{e}: skipped"));
            return None;
        }
    };
    let info = match announcement.server_info() {
        Ok(info) => info,
        Err(e) => {
            warnings.push(format!("{what}: {e}: skipped"));
            return None;
        }
    };
    if let Some(first) = so_far.iter().find(|s| s.info.server_id == info.server_id) {
        warnings.push(format!(
            "{what} announces the same server as {:?} ({}): skipped",
            first.petname, info.server_id
        ));
        return None;
    }
    Some(KnownServer {
        petname: entry.petname.clone(),
        info,
        announcement_seqnum: seqnum,
        announcement,
    })
}

fn view_from_cache(cache: &GridCache, warnings: &mut Vec<String>) -> GridView {
    let mut servers = Vec::new();
    for (petname, cap_text) in &cache.entries {
        let Ok(Cap::File(FileCap::Mutable(cap))) = Cap::parse(cap_text) else {
            warnings.push(format!(
                "grid cache: entry {petname:?} holds no mutable cap: skipped"
            ));
            continue;
        };
        let Some(cached) = cache.announcements.get(cap_text) else {
            continue;
        };
        let entry = GsdEntry {
            petname: petname.clone(),
            announcement: cap,
        };
        if let Some(server) = known_server(&entry, cached.seqnum, &cached.text, &servers, warnings)
        {
            servers.push(server);
        }
    }
    GridView {
        gsd_seqnum: cache.gsd_seqnum,
        servers,
        refreshed_at: cache.refreshed_at,
    }
}

fn diff_views(old: &GridView, new: &GridView, report: &mut RefreshReport) {
    let old_by_name: BTreeMap<&str, &KnownServer> = old
        .servers
        .iter()
        .map(|s| (s.petname.as_str(), s))
        .collect();
    let new_by_name: BTreeMap<&str, &KnownServer> = new
        .servers
        .iter()
        .map(|s| (s.petname.as_str(), s))
        .collect();
    for (name, server) in &new_by_name {
        match old_by_name.get(name) {
            None => report.added.push((*name).to_owned()),
            Some(old) if old.info != server.info || old.announcement != server.announcement => {
                report.changed.push((*name).to_owned())
            }
            Some(_) => {}
        }
    }
    for name in old_by_name.keys() {
        if !new_by_name.contains_key(name) {
            report.removed.push((*name).to_owned());
        }
    }
}

/// The storage client for `info`: the existing one if the server's description has not changed.
fn connection(
    info: &ServerInfo,
    connector: &dyn Connector,
    connections: &mut HashMap<String, GridServer>,
    warnings: &mut Vec<String>,
) -> Option<GridServer> {
    let key = connection_key(info);
    if let Some(existing) = connections.get(&key)
        && existing.info == *info
    {
        return Some(existing.clone());
    }
    // The same address already connected (a bootstrap server, now known by its announcement): one connection.
    if let Some(storage) = connections
        .values()
        .find(|c| !c.info.nurls.is_empty() && c.info.nurls.first() == info.nurls.first())
        .map(|c| c.storage.clone())
    {
        let server = GridServer::new(info.clone(), storage);
        connections.insert(key, server.clone());
        return Some(server);
    }
    match connector.connect(info) {
        Ok(storage) => {
            let server = GridServer::new(info.clone(), storage);
            connections.insert(key, server.clone());
            Some(server)
        }
        Err(e) => {
            warnings.push(format!("{}: {e}", info.display_name()));
            None
        }
    }
}

fn connection_key(info: &ServerInfo) -> String {
    let nurls: Vec<String> = info.nurls.iter().map(ToString::to_string).collect();
    format!("{} {}", info.server_id, nurls.join(" "))
}

fn build_grid(
    view: &GridView,
    connector: &dyn Connector,
    connections: &mut HashMap<String, GridServer>,
    warnings: &mut Vec<String>,
) -> Grid {
    let servers: Vec<GridServer> = view
        .servers
        .iter()
        .filter_map(|s| connection(&s.info, connector, connections, warnings))
        .collect();
    // Servers no longer in the view are let go (their connections close once no transfer holds them).
    let keep: std::collections::HashSet<String> =
        servers.iter().map(|s| connection_key(&s.info)).collect();
    connections
        .retain(|key, server| keep.contains(key) || server.info.server_id.starts_with("nurl-"));
    Grid::new(servers)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A uniform fraction in [0, 1) from the OS's randomness (jitter needs no more).
fn random_fraction() -> f64 {
    let mut bytes = [0u8; 4];
    let _ = getrandom::fill(&mut bytes);
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

fn shuffle<T>(items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = (random_fraction() * (i + 1) as f64) as usize;
        items.swap(i, j.min(i));
    }
}
