//! Keeping a tree alive without being asked: the maintainer a mount (or `tahoe-mount maintain` from a timer) runs
//! in the background. On a Tahoe grid nothing but the client keeps data: leases lapse 31 days after their last
//! renewal, and shares lost with a server are never rebuilt. So the maintainer
//! - walks everything reachable from the root (and the root) once per renewal interval (7 days by default, well
//!   inside the lease period), renewing our lease on every share and repairing whatever is unhealthy;
//! - starts a pass at once when a server leaves the grid (the grid service directory dropped it), and checks and
//!   repairs at once the objects it is told are damaged (a read that found missing or corrupt shares), before
//!   the rest of the tree;
//! - stays in the background: few requests in flight, and it waits while the user reads and writes;
//! - survives unmounts and crashes: a pass in progress is written down next to the journal (the storage indexes
//!   already done) and resumes where it stopped.
//!
//! Files still waiting in the spool are not its business: their upload takes a fresh lease on every share.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::cap::Cap;
use crate::check::deep::{Walk, deep_check};
use crate::check::{CheckOptions, CheckResult, check};
use crate::grid::client::Grid;

/// How often the tree is renewed, by default: a week, a quarter of the 31-day lease.
pub const DEFAULT_RENEW_INTERVAL: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long a mount waits before its first pass, by default.
pub const DEFAULT_START_DELAY: Duration = Duration::from_secs(60);

/// How often the maintainer looks at the grid's server list for servers that left.
const GRID_WATCH: Duration = Duration::from_secs(5);

/// How the maintainer works.
#[derive(Clone)]
pub struct MaintainOptions {
    /// What each object gets: leases renewed, repair when unhealthy (set by [`Maintainer::start`]).
    pub check: CheckOptions,
    /// Time from the start of one full pass to the start of the next.
    pub renew_interval: Duration,
    /// Objects checked at once: few, so the user's own requests go first.
    pub concurrency: usize,
    /// How long after starting the first pass may begin: a mount is busiest just after it is mounted.
    pub start_delay: Duration,
}

impl MaintainOptions {
    pub fn new(check: CheckOptions) -> MaintainOptions {
        MaintainOptions {
            check,
            renew_interval: DEFAULT_RENEW_INTERVAL,
            concurrency: 2,
            start_delay: DEFAULT_START_DELAY,
        }
    }
}

/// The current grid (the grid service directory's poller may change it).
pub type GridSource = Arc<dyn Fn() -> Grid + Send + Sync>;
/// Whether the user is busy now (the maintainer then waits).
pub type BusySource = Arc<dyn Fn() -> bool + Send + Sync>;

/// One pass over the tree, as recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassRecord {
    /// Seconds since the epoch.
    pub started: u64,
    pub finished: Option<u64>,
    /// Why it ran: "scheduled", "servers left the grid", "resumed".
    pub reason: String,
    pub objects: u64,
    /// Servers on which a lease was renewed, summed over objects.
    pub leases_renewed: u64,
    /// Renewals answered "no such share": shares lost since the last look.
    pub leases_missing: u64,
    pub unhealthy: u64,
    pub repaired: u64,
    pub unrecoverable: u64,
    pub errors: u64,
}

impl PassRecord {
    fn count(&mut self, result: &CheckResult) {
        self.objects += 1;
        self.leases_renewed += result.leases.renewed as u64;
        self.leases_missing += result.leases.missing as u64;
        if !result.pre.healthy {
            self.unhealthy += 1;
        }
        if result.repair.as_ref().is_some_and(|r| r.successful) {
            self.repaired += 1;
        }
        if !result.health().recoverable {
            self.unrecoverable += 1;
        }
    }
}

/// What is written down between runs (`state.json`, 0600).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SavedState {
    /// The last pass that finished.
    last: Option<PassRecord>,
    /// The pass under way, if one was interrupted.
    current: Option<PassRecord>,
}

/// What `status` shows.
#[derive(Debug, Clone, Default)]
pub struct MaintainStatus {
    pub last: Option<PassRecord>,
    pub current: Option<PassRecord>,
    /// Seconds since the epoch when the next pass is due.
    pub next_due: u64,
    /// Damaged objects waiting to be checked.
    pub suspects: usize,
    /// Objects checked out of turn because they were reported damaged, and of those repaired.
    pub suspects_checked: u64,
    pub suspects_repaired: u64,
    /// The last thing that went wrong, if any.
    pub last_error: Option<String>,
}

impl MaintainStatus {
    /// Lines for `tahoe-mount status`.
    pub fn describe(&self, now: u64) -> String {
        let mut text = String::new();
        let ago = |t: u64| human_age(now.saturating_sub(t));
        match &self.current {
            Some(pass) => text.push_str(&format!(
                "maintenance: pass under way ({}), started {} ago: {} objects so far, {} leases renewed, {} \
                 unhealthy, {} repaired, {} unrecoverable\n",
                pass.reason,
                ago(pass.started),
                pass.objects,
                pass.leases_renewed,
                pass.unhealthy,
                pass.repaired,
                pass.unrecoverable
            )),
            None => text.push_str("maintenance: idle\n"),
        }
        match &self.last {
            Some(pass) => {
                text.push_str(&format!(
                    "  last pass: finished {} ago ({}): {} objects, {} leases renewed, {} unhealthy, {} repaired, \
                     {} unrecoverable, {} errors\n",
                    ago(pass.finished.unwrap_or(pass.started)),
                    pass.reason,
                    pass.objects,
                    pass.leases_renewed,
                    pass.unhealthy,
                    pass.repaired,
                    pass.unrecoverable,
                    pass.errors
                ));
                text.push_str(&format!(
                    "  oldest lease relied on: {} old (every object was renewed after that pass started)\n",
                    ago(pass.started)
                ));
            }
            None => text.push_str("  last pass: none finished yet\n"),
        }
        if self.current.is_none() {
            let due = if self.next_due <= now {
                "now".to_owned()
            } else {
                format!("in {}", human_age(self.next_due - now))
            };
            text.push_str(&format!("  next pass: {due}\n"));
        }
        if self.suspects > 0 || self.suspects_checked > 0 {
            text.push_str(&format!(
                "  reported damaged: {} waiting, {} checked, {} repaired\n",
                self.suspects, self.suspects_checked, self.suspects_repaired
            ));
        }
        if let Some(error) = &self.last_error {
            text.push_str(&format!("  last problem: {error}\n"));
        }
        text
    }
}

fn human_age(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 2 * 86400 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86400),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Debug, thiserror::Error)]
pub enum MaintainError {
    #[error("the maintainer's state in {path}: {problem}")]
    State { path: String, problem: String },
}

struct Inner {
    root: Cap,
    grid: GridSource,
    busy: Option<BusySource>,
    options: MaintainOptions,
    /// `state.json` and `done` live here.
    dir: PathBuf,
    status: Mutex<MaintainStatus>,
    suspects: Mutex<VecDeque<Cap>>,
    wake: Notify,
}

/// The maintainer of one root. Cheap to clone.
#[derive(Clone)]
pub struct Maintainer {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Maintainer {
    /// A maintainer for the tree below `root`, keeping its progress in `dir` (made 0700 if missing). Every object
    /// it checks gets its lease renewed and, when unhealthy, a repair, whatever `options.check` said.
    pub fn new(
        root: Cap,
        grid: GridSource,
        busy: Option<BusySource>,
        mut options: MaintainOptions,
        dir: &Path,
    ) -> Result<Maintainer, MaintainError> {
        let state_error = |problem: String| MaintainError::State {
            path: dir.display().to_string(),
            problem,
        };
        crate::config::create_private_dir(dir).map_err(|e| state_error(e.to_string()))?;
        options.check.add_lease = true;
        options.check.repair = true;
        let saved = load_state(dir).map_err(state_error)?;
        let next_due = next_due(&saved, options.renew_interval);
        let status = MaintainStatus {
            last: saved.last,
            current: saved.current,
            next_due,
            ..Default::default()
        };
        Ok(Maintainer {
            inner: Arc::new(Inner {
                root,
                grid,
                busy,
                options,
                dir: dir.to_owned(),
                status: Mutex::new(status),
                suspects: Mutex::new(VecDeque::new()),
                wake: Notify::new(),
            }),
        })
    }

    pub fn status(&self) -> MaintainStatus {
        let mut status = lock(&self.inner.status).clone();
        status.suspects = lock(&self.inner.suspects).len();
        status
    }

    /// Asks for `cap` to be checked and repaired soon, ahead of the rest (a read found it damaged).
    pub fn report_damaged(&self, cap: Cap) {
        {
            let mut suspects = lock(&self.inner.suspects);
            if suspects.len() >= 1024 || suspects.contains(&cap) {
                return;
            }
            suspects.push_back(cap);
        }
        self.inner.wake.notify_one();
    }

    /// Runs for ever: passes when due, at once when servers leave, damaged objects as they are reported.
    pub async fn run(self) {
        let mut known_servers = server_ids(&(self.inner.grid)());
        tokio::time::sleep(self.inner.options.start_delay).await;
        let mut servers_left = false;
        loop {
            self.check_suspects().await;
            let now = unix_now();
            let (due, resuming) = {
                let status = lock(&self.inner.status);
                (status.next_due, status.current.is_some())
            };
            if resuming || servers_left || due <= now {
                let reason = if servers_left {
                    "servers left the grid"
                } else if resuming {
                    "resumed"
                } else {
                    "scheduled"
                };
                self.pass(reason).await;
                // Servers that left during the pass may have taken shares already checked: look again.
                let now_known = server_ids(&(self.inner.grid)());
                servers_left = !known_servers.is_subset(&now_known);
                known_servers = now_known;
                continue;
            }
            let wait = Duration::from_secs(due - now).min(GRID_WATCH);
            let _ = tokio::time::timeout(wait, self.inner.wake.notified()).await;
            let now_known = server_ids(&(self.inner.grid)());
            if !known_servers.is_subset(&now_known) {
                servers_left = true;
            }
            known_servers = now_known;
        }
    }

    /// One full pass (resuming an interrupted one), then any damaged objects reported meanwhile. Returns the
    /// pass's record.
    pub async fn run_once(&self) -> PassRecord {
        let resuming = lock(&self.inner.status).current.is_some();
        let record = self
            .pass(if resuming { "resumed" } else { "on request" })
            .await;
        self.check_suspects().await;
        record
    }

    async fn check_suspects(&self) {
        loop {
            let Some(cap) = lock(&self.inner.suspects).pop_front() else {
                return;
            };
            let grid = (self.inner.grid)();
            let result = check(&grid, &cap, &self.inner.options.check).await;
            let mut status = lock(&self.inner.status);
            status.suspects_checked += 1;
            match result {
                Ok(result) if result.repair.as_ref().is_some_and(|r| r.successful) => {
                    status.suspects_repaired += 1;
                }
                Ok(result) if !result.health().healthy => {
                    status.last_error = Some(format!(
                        "a damaged object ({}) is still not healthy: {}",
                        result.kind,
                        result.health().problems.join("; ")
                    ));
                }
                Ok(_) => {}
                Err(e) => status.last_error = Some(e.to_string()),
            }
        }
    }

    async fn pass(&self, reason: &str) -> PassRecord {
        let inner = &self.inner;
        let (mut record, skip) = {
            let status = lock(&inner.status);
            match &status.current {
                Some(current) => (current.clone(), load_done(&inner.dir)),
                None => (
                    PassRecord {
                        started: unix_now(),
                        reason: reason.to_owned(),
                        ..Default::default()
                    },
                    HashSet::new(),
                ),
            }
        };
        if skip.is_empty() {
            // A new pass: nothing is done yet.
            let _ = std::fs::remove_file(inner.dir.join("done"));
        }
        lock(&inner.status).current = Some(record.clone());
        self.save();
        let mut done_log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(inner.dir.join("done"))
            .ok();
        let walk = Walk {
            concurrency: inner.options.concurrency,
            skip,
            yield_to: inner.busy.clone(),
        };
        let grid = (inner.grid)();
        let mut since_save = 0;
        let summary = deep_check(
            &grid,
            inner.root.clone(),
            &inner.options.check,
            &walk,
            |_, result| {
                record.count(result);
                if let (Some(log), Some(si)) = (done_log.as_mut(), result.storage_index) {
                    let _ = writeln!(log, "{si}");
                }
                since_save += 1;
                if since_save >= 100 {
                    since_save = 0;
                    lock(&inner.status).current = Some(record.clone());
                    self.save();
                }
            },
        )
        .await;
        record.errors = summary.errors.len() as u64;
        record.finished = Some(unix_now());
        {
            let mut status = lock(&inner.status);
            status.current = None;
            status.last = Some(record.clone());
            status.next_due = record.started + inner.options.renew_interval.as_secs();
            if let Some(first) = summary.errors.first() {
                status.last_error = Some(first.clone());
            }
        }
        self.save();
        let _ = std::fs::remove_file(inner.dir.join("done"));
        record
    }

    /// Writes the state down; a failure is shown in `status` (the next save tries again).
    fn save(&self) {
        let saved = {
            let status = lock(&self.inner.status);
            SavedState {
                last: status.last.clone(),
                current: status.current.clone(),
            }
        };
        let path = self.inner.dir.join("state.json");
        let bytes = serde_json::to_vec_pretty(&saved).unwrap_or_default();
        if let Err(e) = crate::config::write_private_file(&path, &bytes, true) {
            lock(&self.inner.status).last_error = Some(e.to_string());
        }
    }
}

fn server_ids(grid: &Grid) -> BTreeSet<String> {
    grid.servers()
        .iter()
        .map(|s| s.info.server_id.clone())
        .collect()
}

fn next_due(saved: &SavedState, interval: Duration) -> u64 {
    match (&saved.current, &saved.last) {
        (Some(_), _) | (None, None) => 0,
        (None, Some(last)) => last.started.saturating_add(interval.as_secs()),
    }
}

fn load_state(dir: &Path) -> Result<SavedState, String> {
    match std::fs::read(dir.join("state.json")) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("state.json: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SavedState::default()),
        Err(e) => Err(format!("state.json: {e}")),
    }
}

/// The storage indexes an interrupted pass had done (a torn last line is ignored).
fn load_done(dir: &Path) -> HashSet<[u8; 16]> {
    let Ok(text) = std::fs::read_to_string(dir.join("done")) else {
        return HashSet::new();
    };
    text.lines()
        .filter_map(|line| crate::crypto::base32::decode(line.trim()).ok())
        .filter_map(|bytes| <[u8; 16]>::try_from(bytes).ok())
        .collect()
}
