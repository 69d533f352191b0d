//! `tahoe-mount check` and `deep-check`: Tahoe's commands of the same names and flags, on our client, with a
//! summary in Tahoe's words, `--json` records, and an exit status that says whether everything ended healthy.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::Context;

use super::{ServerArgs, directories, runtime};
use crate::cap::Cap;
use crate::check::deep::{DeepSummary, Walk, deep_check, display_path};
use crate::check::{CheckOptions, CheckResult, check};
use crate::config::{ConfigDir, Secret};

/// What the user asked of `check` and `deep-check`.
#[derive(clap::Args, Debug, Clone)]
pub(super) struct CheckArgs {
    /// Download and check every byte of every share, not only count the shares.
    #[arg(long)]
    verify: bool,
    /// Repair what is unhealthy: rebuild missing shares, spread shares to reach happiness.
    #[arg(long)]
    repair: bool,
    /// Renew our lease on every share (or add one), so servers that expire leases keep it.
    #[arg(long)]
    add_lease: bool,
    /// One JSON record per object on standard output instead of the text report.
    #[arg(long)]
    json: bool,
    /// Servers of happiness a healthy object's shares must reach, and repairs aim for (capped by N).
    #[arg(long, default_value_t = 7)]
    shares_happy: u16,
    /// Seconds to wait for a server's answer.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
}

impl CheckArgs {
    fn options(&self, config_dir: Option<&Path>) -> anyhow::Result<CheckOptions> {
        anyhow::ensure!(
            self.timeout.is_finite() && self.timeout > 0.0,
            "--timeout must be a positive number of seconds"
        );
        // Only renewing and repairing act under our lease secret; a plain check must not make one.
        let lease_secret = if self.add_lease || self.repair {
            ConfigDir::locate(config_dir)?.lease_secret()?
        } else {
            Secret::new(Vec::new())
        };
        let mut options = CheckOptions::new(lease_secret);
        options.verify = self.verify;
        options.repair = self.repair;
        options.add_lease = self.add_lease;
        options.happy = self.shares_happy;
        options.timeout = std::time::Duration::from_secs_f64(self.timeout);
        Ok(options)
    }
}

/// The object a TARGET argument names (a cap, or DIRCAP/path).
fn target_cap(grid: &crate::grid::client::Grid, target: &str) -> anyhow::Result<Cap> {
    let options = directories::read_options();
    let entry = runtime()?.block_on(directories::entry_of(grid, target, &options))?;
    entry
        .child
        .cap()
        .cloned()
        .with_context(|| format!("{}: an unknown kind of cap", directories::redact(target)))
}

pub(super) fn check_one(
    servers: &ServerArgs,
    config_dir: Option<&Path>,
    args: &CheckArgs,
    target: &str,
) -> anyhow::Result<()> {
    let options = args.options(config_dir)?;
    let grid = servers.connect()?;
    let cap = target_cap(&grid, target)?;
    let result = runtime()?.block_on(check(&grid, &cap, &options))?;
    if args.json {
        println!("{}", result.to_json(&[]));
    } else {
        print_report(&result, args);
    }
    anyhow::ensure!(
        result.health().healthy,
        "{}",
        if result.health().recoverable {
            "not healthy"
        } else {
            "unrecoverable"
        }
    );
    Ok(())
}

/// Tahoe's `check` report, and what we add: who holds each share, happiness, leases renewed.
fn print_report(result: &CheckResult, args: &CheckArgs) {
    let pre = &result.pre;
    if args.repair {
        println!(
            "Summary: {}",
            if pre.healthy {
                "healthy"
            } else {
                "not healthy"
            }
        );
    } else {
        println!("Summary: {}", pre.summary());
    }
    let si = result.storage_index.map_or_else(
        || "(literal: the cap holds the data)".to_owned(),
        |si| si.to_string(),
    );
    println!(" storage index: {si}");
    println!(" kind: {}", result.kind);
    if result.storage_index.is_some() {
        println!(
            " good-shares: {} (encoding is {}-of-{})",
            pre.shares.len(),
            pre.needed,
            pre.total
        );
        println!(" wrong-shares: {}", pre.wrong_shares);
        println!(" happiness: {} (wanted {})", pre.happiness, pre.happy);
        for (share, servers) in &pre.shares {
            println!("  share {share}: {}", servers.join(", "));
        }
        if !pre.corrupt.is_empty() {
            println!(" corrupt shares:");
            for (server, share, why) in &pre.corrupt {
                println!("  {server} share {share}: {why}");
            }
        }
        for why in &pre.unreachable {
            println!(" unreachable: {why}");
        }
    }
    if args.add_lease {
        println!(
            " leases renewed: {} (missing {}, failed {})",
            result.leases.renewed, result.leases.missing, result.leases.failed
        );
    }
    if let Some(repair) = &result.repair {
        let word = if repair.successful {
            "repair successful"
        } else if result.repair_attempted() {
            "repair failed"
        } else {
            "repair not attempted"
        };
        println!(" {word}: {}", repair.message);
        if let Some(post) = &result.post {
            println!(" post-repair: {}", post.summary());
        }
    }
}

pub(super) fn deep(
    servers: &ServerArgs,
    config_dir: Option<&Path>,
    args: &CheckArgs,
    verbose: bool,
    concurrency: usize,
    target: &str,
) -> anyhow::Result<()> {
    let options = args.options(config_dir)?;
    let grid = servers.connect()?;
    let cap = target_cap(&grid, target)?;
    let progress = std::io::stderr().is_terminal().then(Instant::now);
    let mut stdout = std::io::stdout().lock();
    let mut done = 0usize;
    let summary = runtime()?.block_on(deep_check(
        &grid,
        cap,
        &options,
        &Walk::with_concurrency(concurrency),
        |path, result| {
            done += 1;
            if args.json {
                let _ = writeln!(stdout, "{}", result.to_json(path));
            } else {
                print_deep_line(&mut stdout, path, result, verbose, args.repair);
            }
            if let Some(started) = progress {
                let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
                eprint!("\r{done} objects checked ({rate:.0}/s)  ");
            }
        },
    ));
    if progress.is_some() {
        eprintln!();
    }
    if !args.json {
        print_deep_summary(&summary, args);
    }
    for error in &summary.errors {
        eprintln!("tahoe-mount: {error}");
    }
    anyhow::ensure!(
        summary.all_healthy(),
        "{} of {} objects not healthy ({} unrecoverable, {} errors)",
        summary.post_unhealthy,
        summary.objects,
        summary.unrecoverable,
        summary.errors.len()
    );
    Ok(())
}

/// With `-v`, one line per object; always the corrupt shares and the repairs, as Tahoe prints them.
fn print_deep_line(
    out: &mut impl Write,
    path: &[String],
    result: &CheckResult,
    verbose: bool,
    repair: bool,
) {
    if verbose {
        let summary = if repair {
            if result.pre.healthy {
                "healthy".to_owned()
            } else {
                "not healthy".to_owned()
            }
        } else {
            result.pre.summary()
        };
        let _ = writeln!(out, "{}: {summary}", display_path(path));
    }
    for (server, share, _) in &result.pre.corrupt {
        let si = result
            .storage_index
            .map(|s| s.to_string())
            .unwrap_or_default();
        let _ = writeln!(out, " corrupt: server {server}, SI {si}, shnum {share}");
    }
    if let Some(outcome) = &result.repair
        && result.repair_attempted()
    {
        let word = if outcome.successful {
            "repair successful"
        } else {
            "repair failed"
        };
        if verbose || !outcome.successful {
            let _ = writeln!(out, " {word}: {}", outcome.message);
        } else {
            let _ = writeln!(out, " {word}");
        }
    }
}

fn print_deep_summary(summary: &DeepSummary, args: &CheckArgs) {
    if args.repair {
        println!("done: {} objects checked", summary.objects);
        println!(
            " pre-repair: {} healthy, {} unhealthy",
            summary.healthy, summary.unhealthy
        );
        println!(
            " {} repairs attempted, {} successful, {} failed",
            summary.repairs_attempted,
            summary.repairs_successful,
            summary.repairs_attempted - summary.repairs_successful
        );
        println!(
            " post-repair: {} healthy, {} unhealthy",
            summary.post_healthy, summary.post_unhealthy
        );
    } else {
        println!(
            "done: {} objects checked, {} healthy, {} unhealthy",
            summary.objects, summary.healthy, summary.unhealthy
        );
    }
    println!(" unrecoverable: {}", summary.unrecoverable);
    if args.add_lease {
        println!(
            " leases renewed: {} (on servers that no longer held the share: {}, failed: {})",
            summary.leases.renewed, summary.leases.missing, summary.leases.failed
        );
    }
}
