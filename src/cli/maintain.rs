//! `tahoe-mount maintain`: the mount's maintainer without a mount, for machines that do not keep the grid mounted
//! (a systemd timer runs `maintain --once`): renew every lease of the tree and repair what is unhealthy.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::mount::{maintain_dir, saved_root, saved_root_path};
use super::{ServerArgs, runtime};
use crate::cap::Cap;
use crate::check::CheckOptions;
use crate::config::ConfigDir;
use crate::maintain::{MaintainOptions, Maintainer};

#[derive(clap::Args, Debug)]
pub(super) struct MaintainArgs {
    #[command(flatten)]
    servers: ServerArgs,
    /// The directory to keep alive (default: this grid's root, as the mount saved it). `-` reads it from
    /// standard input, `@FILE` from a file, so a writecap stays out of the process list.
    #[arg(long, value_name = "DIRCAP")]
    root: Option<String>,
    /// One pass (or the end of an interrupted one), then exit: non-zero if anything stays unhealthy.
    #[arg(long)]
    once: bool,
    /// Seconds between passes when running on.
    #[arg(long, value_name = "SECONDS", default_value_t = crate::maintain::DEFAULT_RENEW_INTERVAL.as_secs())]
    renew_interval: u64,
    /// Servers of happiness a healthy object's shares must reach (capped by N and by the grid's size).
    #[arg(long, default_value_t = 7)]
    shares_happy: u16,
    #[command(flatten)]
    config: super::ConfigArgs,
    /// Where progress is kept (default: the mount's data directory).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

pub(super) fn maintain(args: &MaintainArgs) -> anyhow::Result<()> {
    let config = ConfigDir::locate(args.config.config_dir.as_deref())?;
    let joined = args.servers.join_grid()?;
    let root = match (&args.root, &joined) {
        (Some(root), _) => Cap::parse(&super::cap_argument(root)?)?,
        (None, Some(joined)) => {
            let path = saved_root_path(&config, joined);
            saved_root(&path)?.with_context(|| {
                format!(
                    "no root saved for this grid at {}: mount it once, or give --root",
                    path.display()
                )
            })?
        }
        (None, None) => {
            anyhow::bail!("give --root DIRCAP (or --grid, to use the root the mount saved)")
        }
    };
    anyhow::ensure!(root.is_directory(), "--root: not a directory cap");
    let grid_source: crate::maintain::GridSource = match &joined {
        Some(joined) => {
            let joined = joined.clone();
            Arc::new(move || joined.grid())
        }
        None => {
            let grid = args.servers.connect()?;
            Arc::new(move || grid.clone())
        }
    };
    let servers = grid_source().len().max(1);
    let data = super::mount::data_dir(args.data_dir.as_deref())?;
    let mut check = CheckOptions::new(config.lease_secret()?);
    check.happy = args.shares_happy.min(servers.min(255) as u16);
    check.scratch = data.clone();
    let mut options = MaintainOptions::new(check);
    options.renew_interval = Duration::from_secs(args.renew_interval.max(1));
    let maintainer = Maintainer::new(
        root.clone(),
        grid_source,
        None,
        options,
        &maintain_dir(&data, &root),
    )?;
    let runtime = runtime()?;
    if !args.once {
        if let Some(joined) = &joined {
            let _entered = runtime.enter();
            joined.spawn_poller(crate::gsd::client::DEFAULT_POLL_INTERVAL, |outcome| {
                if let Err(e) = outcome {
                    eprintln!("tahoe-mount: grid: cannot refresh the server list: {e}");
                }
            });
        }
        runtime.block_on(maintainer.run());
        return Ok(());
    }
    let pass = runtime.block_on(maintainer.run_once());
    println!(
        "done: {} objects checked, {} leases renewed ({} on servers that had lost the share), {} unhealthy, {} \
         repaired, {} unrecoverable, {} errors",
        pass.objects,
        pass.leases_renewed,
        pass.leases_missing,
        pass.unhealthy,
        pass.repaired,
        pass.unrecoverable,
        pass.errors
    );
    if let Some(error) = maintainer.status().last_error {
        eprintln!("tahoe-mount: {error}");
    }
    let still_unhealthy = pass.unhealthy.saturating_sub(pass.repaired);
    anyhow::ensure!(
        still_unhealthy == 0 && pass.errors == 0,
        "{still_unhealthy} objects are still not healthy, {} could not be checked",
        pass.errors
    );
    Ok(())
}
