//! The grid service directory commands: joining a grid for the other commands (`--grid`), the operator's
//! `gsd create|enroll|remove|list|invite`, a storage host's `announce`, and `servers --grid`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use super::directories::{read_options, write_options};
use super::{human_bytes, runtime};
use crate::cap::{Cap, FileCap};
use crate::gsd::client::{GbsConnector, GridSource, GsdClient};
use crate::gsd::operator::{self, OperatorState};
use crate::storage::gbs::GbsOptions;
use crate::storage::nurl::Nurl;

/// A grid joined for one command.
pub(super) type Joined = Arc<GsdClient>;

fn warn(warning: &str) {
    eprintln!("tahoe-mount: warning: {warning}");
}

fn connector() -> Arc<GbsConnector> {
    Arc::new(GbsConnector(GbsOptions::default()))
}

/// Joins the grid named by `--grid` (and `--bootstrap`): from the cache if it is at most `max_age` seconds old,
/// else by reading the GSD (falling back on the cache, with a warning, when no server answers).
pub(super) fn join(grid: &str, bootstrap: &[String], max_age: u64) -> anyhow::Result<Joined> {
    join_on(runtime()?, grid, bootstrap, max_age)
}

/// As [`join`], on `runtime`: connections belong to the runtime that made them, so a long-running command joins
/// on the runtime it goes on with.
pub(super) fn join_on(
    runtime: &tokio::runtime::Runtime,
    grid: &str,
    bootstrap: &[String],
    max_age: u64,
) -> anyhow::Result<Joined> {
    let (source, warnings) = GridSource::parse(grid, bootstrap)?;
    warnings.iter().for_each(|w| warn(w));
    let cache_dir = crate::gsd::cache::default_cache_dir();
    if cache_dir.is_none() {
        warn(
            "no cache directory (HOME is not set): the server list is not kept for the next start",
        );
    }
    let (client, warnings) =
        GsdClient::new(source, connector(), cache_dir.as_deref(), read_options());
    warnings.iter().for_each(|w| warn(w));
    let client = Arc::new(client);
    let warnings = runtime
        .block_on(client.ensure_fresh(Duration::from_secs(max_age)))
        .context("cannot join the grid")?;
    warnings.iter().for_each(|w| warn(w));
    anyhow::ensure!(
        !client.view().servers.is_empty(),
        "the grid service directory (version {}) lists no usable server",
        client.view().gsd_seqnum
    );
    Ok(client)
}

/// `servers --grid`: every enrolled server with where it came from, and every bootstrap server.
pub(super) fn list_grid_servers(joined: &Joined, options: &GbsOptions) -> anyhow::Result<()> {
    let view = joined.view();
    let age = (crate::dirnode::now() as u64).saturating_sub(view.refreshed_at);
    println!(
        "grid: GSD version {}, {} servers, read from the grid {age} s ago{}",
        view.gsd_seqnum,
        view.servers.len(),
        joined
            .cache_path()
            .map(|p| format!(" (cache {})", p.display()))
            .unwrap_or_default()
    );
    let mut rows: Vec<(String, crate::grid::ServerInfo)> = view
        .servers
        .iter()
        .map(|s| {
            (
                format!("GSD v1.{} (GSA v{})", s.petname, s.announcement_seqnum),
                s.info.clone(),
            )
        })
        .collect();
    for nurl in &joined.source().bootstrap {
        match rows.iter_mut().find(|(_, info)| info.nurls.contains(nurl)) {
            Some((origin, _)) => origin.push_str(" + bootstrap"),
            None => rows.push((
                "bootstrap only (not enrolled)".into(),
                crate::grid::ServerInfo::from_nurl(nurl.clone()),
            )),
        }
    }
    let infos = rows.iter().map(|(_, info)| info.clone()).collect();
    let results = runtime()?.block_on(crate::grid::probe::probe_all(infos, options));
    println!(
        "{:<20} {:<36} {:<14} {:>12} {:>10}  ORIGIN",
        "SERVER", "ID", "STATE", "AVAILABLE", "RTT"
    );
    let mut failed = 0;
    for ((origin, info), result) in rows.iter().zip(&results) {
        let id: String = info.server_id.chars().take(36).collect();
        match &result.outcome {
            Ok((version, rtt)) => println!(
                "{:<20} {:<36} {:<14} {:>12} {:>7.1} ms  {origin}",
                info.display_name(),
                id,
                "connected",
                human_bytes(version.available_space),
                rtt.as_secs_f64() * 1000.0
            ),
            Err(e) => {
                failed += 1;
                println!(
                    "{:<20} {:<36} {:<14} {:>12} {:>10}  {origin}\n    {e}",
                    info.display_name(),
                    id,
                    "FAILED",
                    "-",
                    "-"
                );
            }
        }
    }
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} servers did not answer",
        results.len()
    );
    Ok(())
}

/// The operator's commands.
#[derive(clap::Subcommand, Debug)]
pub(super) enum GsdCommand {
    /// Keep the GSD alive: renew our leases on it and on every announcement it links, and put a full copy
    /// (1-of-N) back on every enrolled server that lacks one. Run it from a timer, weekly.
    Repair {
        #[command(flatten)]
        state: StateArg,
        #[command(flatten)]
        config: super::ConfigArgs,
    },
    /// Create an empty GSD with a share on each server, save its writecap in the state file (0600) and print its
    /// readcap.
    Create {
        #[command(flatten)]
        state: StateArg,
        /// A storage server's NURL (also the invitation's bootstrap server); give it once per server.
        #[arg(long = "server", value_name = "NURL", required = true)]
        servers: Vec<String>,
        #[command(flatten)]
        config: super::ConfigArgs,
    },
    /// Link a server's announcement (its GSA readcap, printed by `tahoe-mount announce`) as PETNAME and
    /// republish the GSD with a share on every enrolled server.
    Enroll {
        #[command(flatten)]
        state: StateArg,
        petname: String,
        gsa_readcap: String,
        #[command(flatten)]
        config: super::ConfigArgs,
    },
    /// Unlink a server's announcement and republish the GSD over the servers that remain.
    Remove {
        #[command(flatten)]
        state: StateArg,
        petname: String,
        #[command(flatten)]
        config: super::ConfigArgs,
    },
    /// List the enrolled servers: petname, server id, nickname, NURLs, and whether each answers now.
    List {
        #[command(flatten)]
        state: StateArg,
    },
    /// Print the invitation clients join with: the GSD readcap and the bootstrap NURLs, as JSON.
    Invite {
        #[command(flatten)]
        state: StateArg,
    },
}

#[derive(clap::Args, Debug)]
pub(super) struct StateArg {
    /// The operator's state file (the GSD writecap; keep it safe and private).
    #[arg(long, value_name = "FILE")]
    state: PathBuf,
}

pub(super) fn run(command: GsdCommand) -> anyhow::Result<()> {
    match command {
        GsdCommand::Create {
            state,
            servers,
            config,
        } => {
            let nurls = servers
                .iter()
                .map(|s| s.parse::<Nurl>().with_context(|| format!("--server {s}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let options = write_options(config.config_dir.as_deref())?;
            let created = runtime()?
                .block_on(operator::create(
                    &state.state,
                    nurls,
                    &*connector(),
                    options,
                ))
                .context("cannot create the GSD")?;
            eprintln!(
                "tahoe-mount: the GSD's writecap is in {}: back it up; losing it means a new GSD and new \
                 invitations for every client",
                state.state.display()
            );
            println!("{}", dir_readcap(&created));
            Ok(())
        }
        GsdCommand::Enroll {
            state,
            petname,
            gsa_readcap,
            config,
        } => {
            let operator_state = OperatorState::load(&state.state)?;
            let gsa = match Cap::parse(gsa_readcap.trim()) {
                Ok(Cap::File(FileCap::Mutable(cap))) => cap,
                _ => bail!("{gsa_readcap:.14}…: not a mutable file's cap (URI:SSK-RO:…)"),
            };
            let options = write_options(config.config_dir.as_deref())?;
            let (report, known) = runtime()?
                .block_on(operator::enroll(
                    &operator_state,
                    &petname,
                    gsa,
                    connector(),
                    options,
                ))
                .with_context(|| format!("cannot enroll {petname:?}"))?;
            report.warnings.iter().for_each(|w| warn(w));
            println!(
                "enrolled {petname:?}: server {} ({}); the GSD now has a share on {} of {} servers",
                known.info.server_id,
                known.info.display_name(),
                report.servers - report.unreachable.len(),
                report.servers
            );
            Ok(())
        }
        GsdCommand::Remove {
            state,
            petname,
            config,
        } => {
            let operator_state = OperatorState::load(&state.state)?;
            let options = write_options(config.config_dir.as_deref())?;
            let report = runtime()?
                .block_on(operator::remove(
                    &operator_state,
                    &petname,
                    connector(),
                    options,
                ))
                .with_context(|| format!("cannot remove {petname:?}"))?;
            report.warnings.iter().for_each(|w| warn(w));
            println!(
                "removed {petname:?}; the GSD now has a share on {} of {} servers",
                report.servers - report.unreachable.len(),
                report.servers
            );
            Ok(())
        }
        GsdCommand::List { state } => {
            let operator_state = OperatorState::load(&state.state)?;
            let (client, warnings) = runtime()?
                .block_on(operator::current(
                    &operator_state,
                    connector(),
                    read_options(),
                ))
                .context("cannot read the GSD")?;
            warnings.iter().for_each(|w| warn(w));
            let view = client.view();
            let grid = client.grid();
            let failures = runtime()?.block_on(operator::check_reachable(&grid));
            let down: std::collections::BTreeSet<&str> = failures
                .iter()
                .map(|(i, _)| grid.servers()[*i].info.server_id.as_str())
                .collect();
            println!(
                "GSD version {}: {} servers",
                view.gsd_seqnum,
                view.servers.len()
            );
            println!(
                "{:<16} {:<56} {:<16} {:<9}  NURLS",
                "PETNAME", "SERVER ID", "NICKNAME", "STATE"
            );
            for server in &view.servers {
                let down = down.contains(server.info.server_id.as_str());
                let nurls: Vec<String> =
                    server.info.nurls.iter().map(ToString::to_string).collect();
                println!(
                    "{:<16} {:<56} {:<16} {:<9}  {}",
                    server.petname,
                    server.info.server_id,
                    server.announcement.nickname().unwrap_or("-"),
                    if down { "down" } else { "reachable" },
                    nurls.join(" ")
                );
            }
            Ok(())
        }
        GsdCommand::Repair { state, config } => {
            let operator_state = OperatorState::load(&state.state)?;
            let options = write_options(config.config_dir.as_deref())?;
            let report = runtime()?
                .block_on(operator::repair(&operator_state, connector(), options))
                .context("cannot repair the GSD")?;
            let before = &report.before.pre;
            println!(
                "GSD before: {} ({} shares of {} on {} servers)",
                before.summary(),
                before.shares.len(),
                before.total,
                before.happiness
            );
            match report.republished {
                Some(seqnum) => println!(
                    "GSD republished as version {seqnum}, one full copy on each of {} servers",
                    report.servers
                ),
                None => println!("GSD already had a full copy on every server"),
            }
            for u in &report.unreachable {
                warn(&format!(
                    "{u}: it has no copy of the GSD until a later repair reaches it"
                ));
            }
            let walk = &report.walk;
            println!(
                "leases renewed: {} on the GSD and its {} announcements ({} unhealthy: only their servers can                  repair them, with `tahoe-mount announce`)",
                walk.leases.renewed,
                walk.objects.saturating_sub(1),
                walk.post_unhealthy
            );
            anyhow::ensure!(
                report.unreachable.is_empty(),
                "{} servers did not answer",
                report.unreachable.len()
            );
            Ok(())
        }
        GsdCommand::Invite { state } => {
            let operator_state = OperatorState::load(&state.state)?;
            println!("{}", operator_state.invitation().to_json());
            Ok(())
        }
    }
}

fn dir_readcap(state: &OperatorState) -> Cap {
    Cap::Directory(FileCap::Mutable(state.readcap()))
}

/// `announce`: publish or refresh this storage node's GSA and print its readcap.
pub(super) fn announce(
    node_dir: &Path,
    grid: &str,
    bootstrap: &[String],
    writecap_file: Option<&Path>,
    config_dir: Option<&Path>,
) -> anyhow::Result<()> {
    let (source, warnings) = GridSource::parse(grid, bootstrap)?;
    warnings.iter().for_each(|w| warn(w));
    let node = crate::gsd::node_dir::read_node_dir(node_dir)?;
    let writecap_file = writecap_file
        .map(Path::to_owned)
        .unwrap_or_else(|| crate::gsd::node_dir::default_gsa_writecap_path(node_dir));
    let options = write_options(config_dir)?;
    let report = runtime()?
        .block_on(crate::gsd::announce::announce(
            &node.server_id,
            node.ann,
            &source,
            &writecap_file,
            connector(),
            options,
        ))
        .context("cannot publish the announcement")?;
    report.warnings.iter().for_each(|w| warn(w));
    match (report.created, report.published) {
        (true, _) => eprintln!(
            "tahoe-mount: created the announcement; its writecap is in {} (keep it: it is how this server \
             updates its announcement)",
            writecap_file.display()
        ),
        (false, Some(seqnum)) => eprintln!(
            "tahoe-mount: published version {seqnum} of the announcement to {} servers",
            report.servers
        ),
        (false, None) => eprintln!(
            "tahoe-mount: the announcement is current on every reachable server ({}); lease renewed on {}",
            report.servers, report.leases_renewed
        ),
    }
    println!("{}", Cap::File(FileCap::Mutable(report.readcap)));
    Ok(())
}
