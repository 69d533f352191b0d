//! Keeping what a cap names alive: checking its shares, verifying their bytes, renewing our leases on them and
//! repairing it, as Tahoe's `tahoe check` does (`allmydata/immutable/checker.py` and `repairer.py`, their
//! `mutable/` twins, `web/check_results.py`); [`deep`] does the same for a whole tree below a directory.
//!
//! This layer picks the right checker for a cap's kind and judges the result the same way for every kind: Tahoe's
//! health (every share found, one recoverable version), and one step stricter, the shares on at least *happy*
//! distinct servers of the grid. Only servers of the grid are asked, so shares on a server that left the grid
//! count as lost.

pub mod deep;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::cap::{Cap, ChkCap, FileCap, MutableCap};
use crate::config::Secret;
use crate::grid::census::{Census, LeaseTally};
use crate::grid::client::Grid;
use crate::immutable::upload::UploadOptions;
use crate::mutable::check::MutableCheck;
use crate::mutable::{FileKeys, MutableFile, MutableOptions};
use crate::storage::{ShareNumber, StorageIndex};

/// What to do to each object.
#[derive(Clone)]
pub struct CheckOptions {
    /// Read and check every byte of every share, not only count them.
    pub verify: bool,
    /// Renew (or add) our lease on every server holding a share.
    pub add_lease: bool,
    /// Repair what is unhealthy.
    pub repair: bool,
    /// Servers of happiness a healthy object's shares must reach (capped by its N).
    pub happy: u16,
    /// The client's lease secret: leases are renewed, and repairs write, under it.
    pub lease_secret: Secret,
    /// Where an immutable file's bytes wait while it is repaired (an unnamed file; as much room as the file).
    pub scratch: PathBuf,
    /// How long a server may take to answer one request.
    pub timeout: Duration,
}

impl CheckOptions {
    pub fn new(lease_secret: Secret) -> CheckOptions {
        CheckOptions {
            verify: false,
            add_lease: false,
            repair: false,
            happy: 7,
            lease_secret,
            scratch: std::env::temp_dir(),
            timeout: Duration::from_secs(30),
        }
    }

    fn upload_options(&self, needed: u16, total: u16) -> UploadOptions {
        // The key is the cap's, so no convergence secret is used: an empty one stands in.
        let mut options = UploadOptions::new(Secret::new(Vec::new()), self.lease_secret.clone());
        options.params.needed = needed;
        options.params.total = total;
        options.params.happy = self.happy.min(total);
        options.query_timeout = self.timeout;
        options
    }
}

/// How one object stood when it was looked at.
#[derive(Debug, Clone, Default)]
pub struct Health {
    pub healthy: bool,
    pub recoverable: bool,
    pub needed: u16,
    pub total: u16,
    /// The happiness a healthy object reaches (the options' happy, capped by N).
    pub happy: u16,
    /// Each good share with the names of the servers holding it.
    pub shares: BTreeMap<ShareNumber, Vec<String>>,
    pub happiness: usize,
    /// (server, share, why) for every share whose bytes were wrong.
    pub corrupt: Vec<(String, ShareNumber, String)>,
    /// Shares of other versions than the best (mutable files).
    pub wrong_shares: usize,
    /// Why it is not healthy (empty when it is).
    pub problems: Vec<String>,
    /// Servers that did not answer, with why.
    pub unreachable: Vec<String>,
}

impl Health {
    fn literal() -> Health {
        Health {
            healthy: true,
            recoverable: true,
            ..Default::default()
        }
    }

    fn judge(grid: &Grid, census: &Census, needed: u16, total: u16, happy: u16) -> Health {
        let name = |server: usize| grid.servers()[server].name().to_owned();
        let problems = census.shortfalls(needed, total, happy);
        Health {
            healthy: problems.is_empty(),
            recoverable: census.distinct_shares().len() >= usize::from(needed),
            needed,
            total,
            happy: happy.min(total),
            shares: census
                .by_share()
                .into_iter()
                .map(|(share, servers)| (share, servers.into_iter().map(name).collect()))
                .collect(),
            happiness: census.happiness(),
            corrupt: census
                .corrupt
                .iter()
                .map(|(server, share, why)| (name(*server), *share, why.clone()))
                .collect(),
            wrong_shares: 0,
            problems,
            unreachable: census.unreachable.values().cloned().collect(),
        }
    }

    fn of_mutable(grid: &Grid, check: &MutableCheck, happy: u16) -> Health {
        let (needed, total) = check
            .best
            .map_or((0, 0), |b| (u16::from(b.needed), u16::from(b.total)));
        let mut health = Health::judge(grid, &check.census, needed, total, happy);
        // Tahoe's judgement of versions comes first; the census's count of shares repeats its own.
        let mut problems = check.problems.clone();
        problems.extend(
            health
                .problems
                .iter()
                .filter(|p| !p.contains(" shares found"))
                .cloned(),
        );
        health.problems = problems;
        health.healthy = health.problems.is_empty();
        health.recoverable = check.recoverable();
        health.wrong_shares = check.wrong_shares;
        health
    }

    /// One line in Tahoe's words: "Healthy", or "Not Healthy: …".
    pub fn summary(&self) -> String {
        if self.healthy {
            "Healthy".to_owned()
        } else if !self.recoverable {
            format!("Unrecoverable: {}", self.problems.join("; "))
        } else {
            format!("Not Healthy: {}", self.problems.join("; "))
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "healthy": self.healthy,
            "recoverable": self.recoverable,
            "summary": self.summary(),
            "count-shares-needed": self.needed,
            "count-shares-expected": self.total,
            "count-shares-good": self.shares.len(),
            "count-happiness": self.happiness,
            "happiness-wanted": self.happy,
            "count-wrong-shares": self.wrong_shares,
            "sharemap": self.shares.iter().map(|(s, servers)| (s.to_string(), json!(servers))).collect::<serde_json::Map<_, _>>(),
            "list-corrupt-shares": self.corrupt.iter().map(|(server, share, why)| json!([server, share, why])).collect::<Vec<_>>(),
            "problems": self.problems,
            "servers-unreachable": self.unreachable,
        })
    }
}

/// What a repair did.
#[derive(Debug, Clone)]
pub struct RepairOutcome {
    pub successful: bool,
    /// What was done, or why it failed or could not be tried.
    pub message: String,
}

impl RepairOutcome {
    /// A repair that did `done` (or failed with why), judged by the check after it.
    fn after(done: Result<String, String>, post: &Health) -> RepairOutcome {
        match done {
            Ok(what) => RepairOutcome {
                successful: post.healthy,
                message: if post.healthy {
                    what
                } else {
                    format!("{what}; still not healthy")
                },
            },
            Err(why) => RepairOutcome {
                successful: false,
                message: why,
            },
        }
    }
}

/// Everything a check of one object found and did.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub storage_index: Option<StorageIndex>,
    /// `lit`, `chk`, `sdmf` or `mdmf`, with `dir-` before it for a directory.
    pub kind: String,
    pub pre: Health,
    /// Present when a repair was wanted: attempted, or why it was not.
    pub repair: Option<RepairOutcome>,
    /// The check after a repair attempt.
    pub post: Option<Health>,
    pub leases: LeaseTally,
}

impl CheckResult {
    /// The object's health now: after the repair if there was one.
    pub fn health(&self) -> &Health {
        self.post.as_ref().unwrap_or(&self.pre)
    }

    pub fn repair_attempted(&self) -> bool {
        self.post.is_some()
    }

    /// One JSON record: the storage index, the kind, the shares and their servers, health before and after.
    pub fn to_json(&self, path: &[String]) -> Value {
        json!({
            "path": path,
            "storage-index": self.storage_index.map(|si| si.to_string()).unwrap_or_default(),
            "kind": self.kind,
            "healthy": self.health().healthy,
            "recoverable": self.health().recoverable,
            "repair-attempted": self.repair_attempted(),
            "repair-successful": self.repair.as_ref().is_some_and(|r| r.successful),
            "repair-message": self.repair.as_ref().map(|r| r.message.clone()),
            "pre-repair-results": self.pre.to_json(),
            "post-repair-results": self.post.as_ref().map(Health::to_json),
            "leases": {"renewed": self.leases.renewed, "missing": self.leases.missing, "failed": self.leases.failed},
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("cannot check {0}: tahoe-mount does not know this kind of cap")]
    UnknownCap(String),
    #[error("{0}")]
    Mutable(#[from] crate::mutable::MutableError),
}

/// Checks (and, as `options` say, verifies, renews leases on and repairs) the object `cap` names. Only the object
/// itself: a directory's children are [`deep`]'s.
pub async fn check(
    grid: &Grid,
    cap: &Cap,
    options: &CheckOptions,
) -> Result<CheckResult, CheckError> {
    let (file, prefix) = match cap {
        Cap::File(file) => (file, ""),
        Cap::Directory(file) => (file, "dir-"),
        Cap::Unknown(unknown) => {
            return Err(CheckError::UnknownCap(unknown.0.chars().take(12).collect()));
        }
    };
    match file {
        FileCap::Literal(_) => Ok(CheckResult {
            storage_index: None,
            kind: format!("{prefix}lit"),
            pre: Health::literal(),
            repair: None,
            post: None,
            leases: LeaseTally::default(),
        }),
        FileCap::Chk(chk) => Ok(check_chk(
            grid,
            StorageIndex(chk.storage_index()),
            chk.needed_shares,
            chk.total_shares,
            Some(chk),
            options,
            format!("{prefix}chk"),
        )
        .await),
        FileCap::ChkVerifier(v) => Ok(check_chk(
            grid,
            StorageIndex(v.storage_index),
            v.needed_shares,
            v.total_shares,
            None,
            options,
            format!("{prefix}chk"),
        )
        .await),
        FileCap::Mutable(m) => check_mutable(grid, m, options, prefix).await,
    }
}

async fn check_chk(
    grid: &Grid,
    storage_index: StorageIndex,
    needed: u16,
    total: u16,
    readcap: Option<&ChkCap>,
    options: &CheckOptions,
    kind: String,
) -> CheckResult {
    use crate::immutable::{check as checker, repair as repairer};
    let mut census = checker::census(grid, storage_index, total, options.timeout).await;
    // A verify cap's shares are counted only: verifying reads them through the readcap's checks.
    if options.verify
        && let Some(cap) = readcap
    {
        checker::verify(grid, cap, &mut census, options.timeout).await;
    }
    if options.add_lease {
        census
            .renew_leases(
                grid,
                storage_index,
                options.lease_secret.bytes(),
                options.timeout,
            )
            .await;
    }
    let pre = Health::judge(grid, &census, needed, total, options.happy);
    let mut result = CheckResult {
        storage_index: Some(storage_index),
        kind,
        pre,
        repair: None,
        post: None,
        leases: census.leases,
    };
    if !options.repair || result.pre.healthy {
        return result;
    }
    let Some(cap) = readcap else {
        result.repair = Some(RepairOutcome {
            successful: false,
            message: "needs repair, but a verify cap cannot repair a CHK file: give its readcap"
                .into(),
        });
        return result;
    };
    if !result.pre.recoverable {
        result.repair = Some(RepairOutcome {
            successful: false,
            message: format!(
                "unrecoverable: {} of the {needed} shares needed were found, nothing can rebuild it",
                result.pre.shares.len()
            ),
        });
        return result;
    }
    let upload = options.upload_options(needed, total);
    let outcome = repairer::repair(grid, cap, &census, &upload, &options.scratch).await;
    let after = checker::census(grid, storage_index, total, options.timeout).await;
    let post = Health::judge(grid, &after, needed, total, options.happy);
    let done =
        outcome.map(|uploaded| format!("shares placed with happiness {}", uploaded.happiness));
    result.repair = Some(RepairOutcome::after(done.map_err(|e| e.to_string()), &post));
    result.post = Some(post);
    result
}

async fn check_mutable(
    grid: &Grid,
    cap: &MutableCap,
    options: &CheckOptions,
    prefix: &str,
) -> Result<CheckResult, CheckError> {
    use crate::mutable::check::check as checker;
    let keys = FileKeys::from_cap(cap);
    let lease_secret = options.add_lease.then(|| options.lease_secret.bytes());
    let checked = checker(grid, &keys, options.verify, lease_secret, options.timeout).await?;
    let pre = Health::of_mutable(grid, &checked, options.happy);
    let format = match cap.format {
        crate::cap::MutableFormat::Sdmf => "sdmf",
        crate::cap::MutableFormat::Mdmf => "mdmf",
    };
    let mut result = CheckResult {
        storage_index: Some(keys.storage_index),
        kind: format!("{prefix}{format}"),
        pre,
        repair: None,
        post: None,
        leases: checked.census.leases,
    };
    if !options.repair || result.pre.healthy {
        return Ok(result);
    }
    if keys.writekey.is_none() {
        result.repair = Some(RepairOutcome {
            successful: false,
            message: "needs repair, but this is a read-only cap: repairing a mutable file needs its writecap"
                .into(),
        });
        return Ok(result);
    }
    let file = MutableFile::open(
        grid.clone(),
        *cap,
        MutableOptions::new(options.lease_secret.bytes().to_vec()),
    );
    let happy = u8::try_from(options.happy).unwrap_or(u8::MAX);
    let outcome = file.repair(happy, None).await;
    let after = checker(grid, &keys, false, None, options.timeout).await?;
    let post = Health::of_mutable(grid, &after, options.happy);
    let done = outcome.map(|seqnum| format!("published again as version {seqnum}"));
    result.repair = Some(RepairOutcome::after(done.map_err(|e| e.to_string()), &post));
    result.post = Some(post);
    Ok(result)
}
