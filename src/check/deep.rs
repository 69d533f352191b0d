//! Checking a whole tree (`tahoe deep-check`, `allmydata/web/check_results.py` and `dirnode.py`'s deep
//! traversal): every object reachable from a directory, each once however often the tree links it, directories
//! before files (a directory must be readable, and repaired if need be, before its children can be found), with a
//! bounded number of checks in flight and bounded memory: the objects seen are kept as storage indexes only, and
//! files wait in a queue that makes the walk turn to files once it holds [`FILE_QUEUE_LIMIT`] of them.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use tokio::task::JoinSet;

use super::{CheckOptions, CheckResult, check};
use crate::cap::Cap;
use crate::dirnode::{Child, DirectoryNode};
use crate::grid::census::LeaseTally;
use crate::grid::client::Grid;
use crate::mutable::MutableOptions;

/// Files waiting beyond this many make the walk check files before listing more directories.
pub const FILE_QUEUE_LIMIT: usize = 10_000;

/// Totals of a deep check, in Tahoe's words.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeepSummary {
    pub objects: usize,
    /// Before any repair.
    pub healthy: usize,
    pub unhealthy: usize,
    pub repairs_attempted: usize,
    pub repairs_successful: usize,
    /// After the repairs (the same as before without `--repair`).
    pub post_healthy: usize,
    pub post_unhealthy: usize,
    /// Objects that could not be read at all (fewer than k shares), after any repair.
    pub unrecoverable: usize,
    pub leases: LeaseTally,
    /// Objects that could not be checked or directories that could not be listed, with why.
    pub errors: Vec<String>,
}

impl DeepSummary {
    /// Whether everything ended healthy.
    pub fn all_healthy(&self) -> bool {
        self.post_unhealthy == 0 && self.unrecoverable == 0 && self.errors.is_empty()
    }

    fn count(&mut self, result: &CheckResult) {
        self.objects += 1;
        if result.pre.healthy {
            self.healthy += 1;
        } else {
            self.unhealthy += 1;
        }
        if result.repair_attempted() {
            self.repairs_attempted += 1;
            if result.repair.as_ref().is_some_and(|r| r.successful) {
                self.repairs_successful += 1;
            }
        }
        let now = result.health();
        if now.healthy {
            self.post_healthy += 1;
        } else {
            self.post_unhealthy += 1;
        }
        if !now.recoverable {
            self.unrecoverable += 1;
        }
        self.leases.add(result.leases);
    }
}

/// What one check task hands back: the object's path and result (none if it was skipped), and for a directory
/// its children.
struct Done {
    path: Vec<String>,
    result: Option<Result<CheckResult, String>>,
    children: Result<Vec<(String, Cap)>, String>,
}

/// How a walk goes, beyond what is done to each object.
#[derive(Clone, Default)]
pub struct Walk {
    /// Checks in flight at once (at least one).
    pub concurrency: usize,
    /// Objects (by storage index) not to check again: a resumed walk's. Directories among them are still listed.
    pub skip: HashSet<[u8; 16]>,
    /// Says whether to hold back: asked before each check starts; while it says so, the walk waits (up to
    /// [`MAX_YIELD`] per check, so that maintenance still ends on a machine that is never idle).
    pub yield_to: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
}

/// The longest a walk waits for [`Walk::yield_to`] before it starts a check anyway.
pub const MAX_YIELD: std::time::Duration = std::time::Duration::from_secs(600);

impl Walk {
    pub fn with_concurrency(concurrency: usize) -> Walk {
        Walk {
            concurrency,
            ..Walk::default()
        }
    }

    async fn wait_turn(&self) {
        let Some(busy) = &self.yield_to else { return };
        let started = tokio::time::Instant::now();
        while busy() && started.elapsed() < MAX_YIELD {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
}

/// Checks every object below (and including) `root`, as `walk` says, calling `report` with each object's path
/// (names from `root`) and result as it is done.
pub async fn deep_check(
    grid: &Grid,
    root: Cap,
    options: &CheckOptions,
    walk: &Walk,
    mut report: impl FnMut(&[String], &CheckResult),
) -> DeepSummary {
    let concurrency = walk.concurrency;
    let options = Arc::new(options.clone());
    let mut summary = DeepSummary::default();
    let mut seen: HashSet<[u8; 16]> = HashSet::new();
    let mut directories: VecDeque<(Vec<String>, Cap)> = VecDeque::new();
    let mut files: VecDeque<(Vec<String>, Cap)> = VecDeque::new();
    if let Some(si) = root.storage_index() {
        seen.insert(si);
    }
    if root.is_directory() {
        directories.push_back((Vec::new(), root));
    } else {
        files.push_back((Vec::new(), root));
    }
    let mut running: JoinSet<Done> = JoinSet::new();
    loop {
        while running.len() < concurrency.max(1) {
            let next = if files.len() >= FILE_QUEUE_LIMIT {
                files.pop_front().or_else(|| directories.pop_front())
            } else {
                directories.pop_front().or_else(|| files.pop_front())
            };
            let Some((path, cap)) = next else { break };
            let skipped = cap
                .storage_index()
                .is_some_and(|si| walk.skip.contains(&si));
            if !skipped {
                walk.wait_turn().await;
            }
            running.spawn(check_one(
                grid.clone(),
                path,
                cap,
                options.clone(),
                !skipped,
            ));
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let done = match joined {
            Ok(done) => done,
            Err(e) => {
                summary.errors.push(format!("a check task failed: {e}"));
                continue;
            }
        };
        let shown = display_path(&done.path);
        match &done.result {
            None => {}
            Some(Ok(result)) => {
                summary.count(result);
                report(&done.path, result);
            }
            Some(Err(why)) => {
                summary.objects += 1;
                summary.unhealthy += 1;
                summary.post_unhealthy += 1;
                summary.errors.push(format!("{shown}: {why}"));
            }
        }
        match done.children {
            Ok(children) => {
                for (name, cap) in children {
                    if let Some(si) = cap.storage_index()
                        && !seen.insert(si)
                    {
                        continue;
                    }
                    let mut path = done.path.clone();
                    path.push(name);
                    if cap.is_directory() {
                        directories.push_back((path, cap));
                    } else {
                        files.push_back((path, cap));
                    }
                }
            }
            Err(why) => summary
                .errors
                .push(format!("{shown}: cannot list the directory: {why}")),
        }
    }
    summary
}

/// `a/b/c`, or `<root>` for the root itself.
pub fn display_path(path: &[String]) -> String {
    if path.is_empty() {
        "<root>".to_owned()
    } else {
        path.join("/")
    }
}

async fn check_one(
    grid: Grid,
    path: Vec<String>,
    cap: Cap,
    options: Arc<CheckOptions>,
    check_it: bool,
) -> Done {
    let result = if check_it {
        Some(
            check(&grid, &cap, &options)
                .await
                .map_err(|e| e.to_string()),
        )
    } else {
        None
    };
    let children = if cap.is_directory() {
        list_children(&grid, &cap).await
    } else {
        Ok(Vec::new())
    };
    Done {
        path,
        result,
        children,
    }
}

/// A directory's children that name objects on the grid (unknown caps have nothing to check).
async fn list_children(grid: &Grid, cap: &Cap) -> Result<Vec<(String, Cap)>, String> {
    let node = DirectoryNode::open(grid.clone(), cap.clone(), MutableOptions::new(Vec::new()))
        .map_err(|e| e.to_string())?;
    let listing = node.list().await.map_err(|e| e.to_string())?;
    Ok(listing
        .directory
        .iter()
        .filter_map(|(name, entry)| match &entry.child {
            Child::Known(cap) => Some((name.to_owned(), cap.clone())),
            Child::Unknown(_) => None,
        })
        .collect())
}
