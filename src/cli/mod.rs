//! The command line: clap definitions and thin handlers that parse, call the library and print.
//!
//! Only commands that work are listed; each later layer (storage, files, directories, the grid service directory,
//! the mount) adds its own.

use crate::cap::{Cap, FileCap, MutableAccess};
use crate::crypto::base32;
use crate::erasure::Kernel;
use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod check;
mod control;
mod directories;
mod gsd;
mod maintain;
mod mount;
mod transfer;

/// Mount a Tahoe-LAFS grid, found through its grid service directory instead of an introducer.
#[derive(Parser, Debug)]
#[command(
    name = "tahoe-mount",
    version,
    about,
    after_help = "Caps: wherever a command takes a cap (CAP or DIRCAP/path), `-` reads the cap from the first \
                  line of standard input and @FILE from the first line of FILE, with any /path after them \
                  (-/docs, @root.cap/docs): a cap typed in a command line shows in `ps` to every local user."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Describe a capability string: its kind, read-only and verify caps, storage index and size.
    ///
    /// Reads the cap from the argument, or from standard input when the argument is `-` (which keeps a writecap
    /// out of the shell history and the process list).
    Cap {
        /// The cap (URI:…), or - to read it from standard input.
        cap: String,
    },
    /// Ask storage servers who they are and how they are: version, available space and round-trip time.
    ///
    /// Exits non-zero if any server failed to answer, after listing them all.
    Servers {
        #[command(flatten)]
        servers: ServerArgs,
        /// Seconds to wait for each server.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// List the erasure-coding kernels this CPU runs and the one in use (set TAHOE_MOUNT_EC_KERNEL to choose).
    Kernels,
    /// Upload a file and print its cap: immutable (CHK, or a literal cap up to 55 bytes) or, with --mutable, a
    /// mutable file. With DEST (DIRCAP/path) the file is also linked there, replacing what was there.
    ///
    /// Only the cap goes to standard output. Immutable uploads of the same bytes with the same convergence secret
    /// and encoding parameters give the same cap, here and with `tahoe put`.
    Put {
        #[command(flatten)]
        servers: ServerArgs,
        #[command(flatten)]
        config: ConfigArgs,
        /// Tahoe's convergence secret file (a node's private/convergence); default: the one in the config dir,
        /// made on first use.
        #[arg(long, value_name = "FILE")]
        convergence: Option<PathBuf>,
        #[command(flatten)]
        shares: ShareArgs,
        /// Make a mutable file (SDMF unless --format says otherwise).
        #[arg(long)]
        mutable: bool,
        /// The mutable file format.
        #[arg(long, value_enum, default_value_t = FormatArg::Sdmf)]
        format: FormatArg,
        /// The file to upload, or - (the default) for standard input.
        file: Option<PathBuf>,
        /// Where to link it: DIRCAP/path.
        dest: Option<String>,
    },
    /// Download a file by its cap, or by DIRCAP/path.
    Get {
        #[command(flatten)]
        servers: ServerArgs,
        /// The file's cap (URI:CHK:…, URI:LIT:…, URI:SSK:…, URI:MDMF:…), DIRCAP/path, or - to read a cap from
        /// standard input.
        cap: String,
        /// Where to write it, or - (the default) for standard output. A file is written under a temporary name
        /// and renamed into place once complete.
        file: Option<PathBuf>,
    },
    /// Create a directory and print its writecap; with DIRCAP/path, also link it there.
    Mkdir {
        #[command(flatten)]
        servers: ServerArgs,
        #[command(flatten)]
        config: ConfigArgs,
        /// The directory's mutable file format.
        #[arg(long, value_enum, default_value_t = FormatArg::Sdmf)]
        format: FormatArg,
        /// Where to link the new directory: DIRCAP/path.
        target: Option<String>,
    },
    /// List a directory: DIRCAP or DIRCAP/path.
    Ls {
        #[command(flatten)]
        servers: ServerArgs,
        /// Kind, size and modification time too.
        #[arg(short = 'l', long)]
        long: bool,
        /// Each child's cap too (its readcap when it has one).
        #[arg(long)]
        uri: bool,
        target: String,
    },
    /// Link SOURCE (a cap, or DIRCAP/path) at DEST (DIRCAP/path), replacing what is there.
    Ln {
        #[command(flatten)]
        servers: ServerArgs,
        #[command(flatten)]
        config: ConfigArgs,
        source: String,
        dest: String,
    },
    /// Move SOURCE (DIRCAP/path) to DEST (DIRCAP/path), replacing what is there: in one change within a
    /// directory; across directories, linked first and then unlinked.
    Mv {
        #[command(flatten)]
        servers: ServerArgs,
        #[command(flatten)]
        config: ConfigArgs,
        source: String,
        dest: String,
    },
    /// Mount the grid on a directory (also the default command: `tahoe-mount GRID MOUNTPOINT`).
    ///
    /// Joins the grid through its grid service directory, mounts the root directory (made on the first mount and
    /// its writecap saved in the configuration directory) and goes to the background once the mount is ready.
    /// `close` returns once a file is in the local spool; `fsync` once it is on the grid and linked.
    Mount(mount::MountArgs),
    /// Unmount: waits until every pending upload is on the grid (printing progress), then unmounts. When the
    /// grid keeps refusing them, stops waiting, says why and leaves the mount up.
    Unmount {
        mountpoint: PathBuf,
        /// The data directory the mount was started with, if not the default.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Unmount now; what is not on the grid yet stays in the journal, and the next mount uploads it.
        #[arg(long)]
        keep_pending: bool,
        /// Stop waiting when the grid has refused the pending changes, and none got through, for this long.
        #[arg(long, value_name = "SECONDS", default_value_t = 120.0)]
        stuck_after: f64,
    },
    /// Show a mount's pending uploads and its servers.
    Status {
        mountpoint: PathBuf,
        /// The data directory the mount was started with, if not the default.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Run a grid service directory (GSD): the grid operator's commands.
    Gsd {
        #[command(subcommand)]
        command: gsd::GsdCommand,
    },
    /// Publish this storage node's announcement (GSA) to the grid and print its readcap (for `gsd enroll`).
    ///
    /// Reads a stock Tahoe-LAFS storage node's directory. Idempotent: the first run creates the announcement and
    /// saves its writecap (0600); later runs rewrite it when the node changed and push it to servers that joined
    /// since, so a timer can run it.
    Announce {
        /// The Tahoe node's base directory.
        #[arg(long, value_name = "DIR")]
        node_dir: PathBuf,
        /// The grid: an invitation (its JSON text, or @FILE holding it), or the GSD readcap with --bootstrap.
        #[arg(long, value_name = "INVITATION")]
        grid: String,
        /// A server to read the GSD from (NURL); may be given several times.
        #[arg(long = "bootstrap", value_name = "NURL")]
        bootstrap: Vec<String>,
        /// Where the announcement's writecap is kept (default: DIR/private/gsa.writecap).
        #[arg(long, value_name = "FILE")]
        gsa_writecap_file: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Check a file or directory (not its children): count its shares and where they are, and as asked verify
    /// them, renew our leases on them and repair it. Exits non-zero unless it ends healthy.
    ///
    /// Healthy means Tahoe's rule (all N shares found, one recoverable version) and one step more: the shares sit
    /// on at least --shares-happy distinct servers of the grid.
    Check {
        #[command(flatten)]
        servers: ServerArgs,
        #[command(flatten)]
        config: ConfigArgs,
        #[command(flatten)]
        check: check::CheckArgs,
        /// A cap, or DIRCAP/path.
        target: String,
    },
    /// Check every file and directory below a directory, each once, directories first: as `check`, with a
    /// summary in Tahoe's words. Exits non-zero unless everything ends healthy.
    DeepCheck {
        #[command(flatten)]
        servers: ServerArgs,
        #[command(flatten)]
        config: ConfigArgs,
        #[command(flatten)]
        check: check::CheckArgs,
        /// A line for every object, not only the unhealthy ones.
        #[arg(short, long)]
        verbose: bool,
        /// Objects checked at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// A directory cap, or DIRCAP/path.
        target: String,
    },
    /// Keep a tree alive without a mount: renew every lease below the root and repair what is unhealthy, once
    /// (`--once`, for a timer) or every --renew-interval. Progress is kept, so an interrupted pass resumes.
    Maintain(maintain::MaintainArgs),
    /// Unlink DIRCAP/path (the file or directory itself stays on the grid until its leases expire).
    Rm {
        #[command(flatten)]
        servers: ServerArgs,
        #[command(flatten)]
        config: ConfigArgs,
        target: String,
    },
}

/// Mutable file formats, as `tahoe put --format` names them.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum FormatArg {
    Sdmf,
    Mdmf,
}

impl From<FormatArg> for crate::cap::MutableFormat {
    fn from(format: FormatArg) -> Self {
        match format {
            FormatArg::Sdmf => crate::cap::MutableFormat::Sdmf,
            FormatArg::Mdmf => crate::cap::MutableFormat::Mdmf,
        }
    }
}

/// Which storage servers to use: a grid (found through its grid service directory), or servers named directly.
#[derive(clap::Args, Debug)]
struct ServerArgs {
    /// The grid: an invitation (its JSON text, or @FILE holding it), or the GSD readcap with --bootstrap.
    #[arg(long, value_name = "INVITATION")]
    grid: Option<String>,
    /// A server to read the GSD from first (NURL); may be given several times; added to the invitation's.
    #[arg(long = "bootstrap", value_name = "NURL", requires = "grid")]
    bootstrap: Vec<String>,
    /// Use the cached server list without asking the grid if it was read less than this many seconds ago.
    #[arg(long, value_name = "SECONDS", default_value_t = 300, requires = "grid")]
    grid_max_age: u64,
    /// A server's NURL (pb://<key hash>@host:port/<swissnum>#v=1); may be given several times.
    #[arg(long = "server", value_name = "NURL")]
    servers: Vec<String>,
    /// Tahoe's static server list (private/servers.yaml format).
    #[arg(long, value_name = "FILE")]
    servers_file: Option<PathBuf>,
}

/// How files are erasure-coded: k of N shares, on at least `happy` servers.
#[derive(clap::Args, Debug, Clone, Copy)]
struct ShareArgs {
    /// k: shares needed to read a file.
    #[arg(long, default_value_t = 3)]
    shares_needed: u16,
    /// Servers of happiness: an upload fails unless shares land on at least this many servers.
    #[arg(long, default_value_t = 7)]
    shares_happy: u16,
    /// N: shares made of each file.
    #[arg(long, default_value_t = 10)]
    shares_total: u16,
}

impl ShareArgs {
    fn params(&self) -> crate::immutable::params::EncodingParams {
        crate::immutable::params::EncodingParams {
            needed: self.shares_needed,
            happy: self.shares_happy,
            total: self.shares_total,
            ..Default::default()
        }
    }
}

#[derive(clap::Args, Debug)]
struct ConfigArgs {
    /// The configuration directory (default: $TAHOE_MOUNT_CONFIG_DIR, $XDG_CONFIG_HOME/tahoe-mount or
    /// ~/.config/tahoe-mount).
    #[arg(long, value_name = "DIR")]
    config_dir: Option<PathBuf>,
}

/// Parses the command line and runs the chosen command.
/// glibc gives busy threads arenas of their own (up to eight per core), and memory freed in one is not reused by
/// another: under fsstress the mount's peak RSS was 333 MiB with the default and 185 MiB with two arenas, for the
/// same work. Two keep the mount within its cache size plus 64 MiB.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator tunable; it is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

pub fn run() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse_from(with_default_command(std::env::args_os().collect()));
    crate::daemon_log::init();
    let result = match cli.command {
        Command::Mount(args) => mount::mount(args),
        Command::Unmount {
            mountpoint,
            data_dir,
            keep_pending,
            stuck_after,
        } => control::unmount(
            &mountpoint,
            data_dir.as_deref(),
            keep_pending,
            std::time::Duration::try_from_secs_f64(stuck_after)
                .unwrap_or(control::DEFAULT_STUCK_AFTER),
        ),
        Command::Status {
            mountpoint,
            data_dir,
        } => control::status(&mountpoint, data_dir.as_deref()),
        Command::Cap { cap } => describe_cap(&cap),
        Command::Kernels => list_kernels(),
        Command::Servers { servers, timeout } => list_servers(&servers, timeout),
        Command::Put {
            servers,
            config,
            convergence,
            shares,
            mutable,
            format,
            file,
            dest,
        } => transfer::put(
            &servers,
            config.config_dir.as_deref(),
            convergence.as_deref(),
            shares.params(),
            file.as_deref(),
            transfer::PutTarget {
                mutable: mutable.then(|| format.into()),
                link: dest.as_deref(),
            },
        ),
        Command::Get { servers, cap, file } => transfer::get(&servers, &cap, file.as_deref()),
        Command::Mkdir {
            servers,
            config,
            format,
            target,
        } => directories::mkdir(
            &servers,
            config.config_dir.as_deref(),
            target.as_deref(),
            format.into(),
        ),
        Command::Ls {
            servers,
            long,
            uri,
            target,
        } => directories::ls(&servers, &target, long, uri),
        Command::Ln {
            servers,
            config,
            source,
            dest,
        } => directories::ln(&servers, config.config_dir.as_deref(), &source, &dest),
        Command::Mv {
            servers,
            config,
            source,
            dest,
        } => directories::mv(&servers, config.config_dir.as_deref(), &source, &dest),
        Command::Rm {
            servers,
            config,
            target,
        } => directories::rm(&servers, config.config_dir.as_deref(), &target),
        Command::Check {
            servers,
            config,
            check,
            target,
        } => check::check_one(&servers, config.config_dir.as_deref(), &check, &target),
        Command::DeepCheck {
            servers,
            config,
            check,
            verbose,
            concurrency,
            target,
        } => check::deep(
            &servers,
            config.config_dir.as_deref(),
            &check,
            verbose,
            concurrency,
            &target,
        ),
        Command::Maintain(args) => maintain::maintain(&args),
        Command::Gsd { command } => gsd::run(command),
        Command::Announce {
            node_dir,
            grid,
            bootstrap,
            gsa_writecap_file,
            config,
        } => gsd::announce(
            &node_dir,
            &grid,
            &bootstrap,
            gsa_writecap_file.as_deref(),
            config.config_dir.as_deref(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tahoe-mount: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `tahoe-mount GRID MOUNTPOINT` means `tahoe-mount mount GRID MOUNTPOINT`: the word `mount` is put in when the
/// first argument is neither a command nor a request for help or the version.
fn with_default_command(mut argv: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    let Some(first) = argv.get(1).and_then(|a| a.to_str()) else {
        return argv;
    };
    let command = Cli::command();
    let known = command
        .get_subcommands()
        .any(|c| c.get_name() == first || c.get_all_aliases().any(|a| a == first));
    if !known && !matches!(first, "help" | "-h" | "--help" | "-V" | "--version") {
        argv.insert(1, "mount".into());
    }
    argv
}

impl ServerArgs {
    /// The servers to use: the grid's enrolled servers (read through its GSD, or from the cache when it is fresh
    /// or the grid cannot be reached), or those named by `--server` and `--servers-file`; at least one.
    fn load(&self) -> anyhow::Result<Vec<crate::grid::ServerInfo>> {
        match self.join_grid()? {
            Some(client) => Ok(client.view().server_infos()),
            None => self.named_servers(),
        }
    }

    /// The storage clients for [`ServerArgs::load`]'s servers (the grid's, reusing the connections bootstrap made).
    fn connect(&self) -> anyhow::Result<crate::grid::client::Grid> {
        match self.join_grid()? {
            Some(client) => Ok(client.grid()),
            None => Ok(crate::grid::client::Grid::connect(
                self.named_servers()?,
                &crate::storage::gbs::GbsOptions::default(),
            )?),
        }
    }

    /// With `--grid`: the grid joined, its server list at most `--grid-max-age` old if any server answers.
    fn join_grid(&self) -> anyhow::Result<Option<gsd::Joined>> {
        let Some(grid) = &self.grid else {
            return Ok(None);
        };
        anyhow::ensure!(
            self.servers.is_empty() && self.servers_file.is_none(),
            "give either --grid or --server/--servers-file, not both"
        );
        gsd::join(grid, &self.bootstrap, self.grid_max_age).map(Some)
    }

    fn named_servers(&self) -> anyhow::Result<Vec<crate::grid::ServerInfo>> {
        use anyhow::Context;
        let mut servers = Vec::new();
        for text in &self.servers {
            let nurl = text.parse().with_context(|| format!("--server {text}"))?;
            servers.push(crate::grid::ServerInfo::from_nurl(nurl));
        }
        if let Some(path) = &self.servers_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            servers.extend(
                crate::grid::parse_servers_yaml(&text)
                    .with_context(|| path.display().to_string())?,
            );
        }
        anyhow::ensure!(
            !servers.is_empty(),
            "no servers given: use --grid INVITATION, --server NURL or --servers-file servers.yaml"
        );
        Ok(servers)
    }
}

fn list_servers(servers: &ServerArgs, timeout: f64) -> anyhow::Result<()> {
    anyhow::ensure!(
        timeout.is_finite() && timeout > 0.0,
        "--timeout must be a positive number of seconds"
    );
    let wait = std::time::Duration::from_secs_f64(timeout);
    let options = crate::storage::gbs::GbsOptions {
        connect_timeout: wait,
        request_timeout: wait,
        read_retries: 0,
        ..Default::default()
    };
    if let Some(joined) = servers.join_grid()? {
        return gsd::list_grid_servers(&joined, &options);
    }
    let servers = servers.load()?;
    let results = runtime()?.block_on(crate::grid::probe::probe_all(servers, &options));
    println!(
        "{:<24} {:<20} {:>12} {:>10}",
        "SERVER", "VERSION", "AVAILABLE", "RTT"
    );
    let mut failed = 0;
    for result in &results {
        let name = result.server.display_name();
        match &result.outcome {
            Ok((version, rtt)) => println!(
                "{:<24} {:<20} {:>12} {:>7.1} ms",
                name,
                version.application_version,
                human_bytes(version.available_space),
                rtt.as_secs_f64() * 1000.0
            ),
            Err(e) => {
                failed += 1;
                println!("{name:<24} FAILED: {e}");
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

/// The async runtime of this command, shared by every step of it (so connections opened while bootstrapping
/// serve the transfers too): one thread is plenty for network waits (uploads encode on threads of their own), and
/// wakeups handed between runtime threads cost CPU (a download measured 5-10% less CPU per MB).
fn runtime() -> anyhow::Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: std::sync::OnceLock<Result<tokio::runtime::Runtime, String>> =
        std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn list_kernels() -> anyhow::Result<()> {
    let selected = Kernel::selected()?;
    for kernel in Kernel::available() {
        let mark = if kernel == selected { "  (in use)" } else { "" };
        println!("{kernel}{mark}");
    }
    Ok(())
}

/// A cap argument's text, so that no cap need appear in a command line (where every local user sees it in
/// `ps`): the cap itself; `-` for the first line of standard input (read once: every `-` gets the same cap); or
/// `@FILE` for the first line of FILE. A path may follow any of them (`-/docs/a.txt`, `@FILE/docs/a.txt`,
/// `URI:DIR2:…/docs/a.txt`): with `@`, FILE is the first prefix that is a file. Returns the cap's text with the
/// path, as one `CAP[/path]` string.
pub(super) fn cap_argument(arg: &str) -> anyhow::Result<String> {
    let (cap, path) = if arg == "-" || arg.starts_with("-/") {
        (stdin_cap()?, arg.get(2..).unwrap_or(""))
    } else if let Some(rest) = arg.strip_prefix('@') {
        let ends = rest
            .match_indices('/')
            .map(|(at, _)| at)
            .filter(|&at| at > 0)
            .chain([rest.len()]);
        let Some(end) = ends
            .into_iter()
            .find(|&end| Path::new(&rest[..end]).is_file())
        else {
            bail!("{arg}: no such file to read a cap from");
        };
        let text = std::fs::read_to_string(&rest[..end])
            .with_context(|| format!("cannot read a cap from {}", &rest[..end]))?;
        let first = text.lines().next().unwrap_or("").trim().to_owned();
        (first, rest.get(end + 1..).unwrap_or(""))
    } else {
        return Ok(arg.trim().to_owned());
    };
    anyhow::ensure!(!cap.is_empty(), "{arg}: no cap there (an empty line)");
    Ok(if path.is_empty() {
        cap
    } else {
        format!("{cap}/{path}")
    })
}

/// The first line of standard input, read on first use.
fn stdin_cap() -> anyhow::Result<String> {
    static LINE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(line) = LINE.get() {
        return Ok(line.clone());
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read a cap from standard input")?;
    Ok(LINE.get_or_init(|| line.trim().to_owned()).clone())
}

/// A bare cap argument (text, `-` or `@FILE`; see [`cap_argument`]).
fn read_cap_arg(arg: &str) -> anyhow::Result<Cap> {
    Ok(Cap::parse(&cap_argument(arg)?)?)
}

fn describe_cap(arg: &str) -> anyhow::Result<()> {
    let cap = read_cap_arg(arg)?;
    for (name, value) in describe(&cap) {
        println!("{name:<14} {value}");
    }
    Ok(())
}

/// The lines `tahoe-mount cap` prints, as (label, value).
fn describe(cap: &Cap) -> Vec<(&'static str, String)> {
    let file = match cap {
        Cap::Unknown(_) => {
            return vec![(
                "kind",
                "unknown (not a cap kind Tahoe-LAFS 1.20 knows)".into(),
            )];
        }
        Cap::File(f) | Cap::Directory(f) => f,
    };
    let kind = cap
        .to_string()
        .split(':')
        .take(2)
        .collect::<Vec<_>>()
        .join(":");
    let access = match file {
        FileCap::Mutable(m) => match m.access {
            MutableAccess::Write { .. } => "read-write",
            MutableAccess::Read { .. } => "read-only",
            MutableAccess::Verify { .. } => "verify-only",
        },
        FileCap::ChkVerifier(_) => "verify-only",
        FileCap::Literal(_) | FileCap::Chk(_) => "read-only",
    };
    let mut lines = vec![
        ("kind", kind),
        (
            "object",
            if cap.is_directory() {
                "directory"
            } else {
                "file"
            }
            .into(),
        ),
        ("access", access.into()),
        ("mutable", cap.is_mutable().to_string()),
    ];
    if let Some(si) = cap.storage_index() {
        lines.push(("storage-index", base32::encode(&si)));
    }
    if let FileCap::Chk(c) = file {
        lines.push((
            "encoding",
            format!("{}-of-{}", c.needed_shares, c.total_shares),
        ));
    }
    if let Some(size) = file.size() {
        lines.push(("size", size.to_string()));
    }
    if let Some(ro) = cap.readonly().filter(|ro| ro != cap) {
        lines.push(("readcap", ro.to_string()));
    }
    if let Some(v) = cap.verifier().filter(|v| v != cap) {
        lines.push(("verifycap", v.to_string()));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_arguments_come_from_files_with_a_path_after_them() {
        let dir = std::env::temp_dir().join(format!("tahoe-mount-caparg-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let file = dir.join("sub").join("root.cap");
        std::fs::write(&file, "URI:DIR2:abc:def\nignored second line\n").unwrap();
        let at = format!("@{}", file.display());
        assert_eq!(cap_argument(&at).unwrap(), "URI:DIR2:abc:def");
        assert_eq!(
            cap_argument(&format!("{at}/docs/a.txt")).unwrap(),
            "URI:DIR2:abc:def/docs/a.txt"
        );
        assert_eq!(
            cap_argument(" URI:CHK:x:y:1:2:3 ").unwrap(),
            "URI:CHK:x:y:1:2:3"
        );
        let missing = cap_argument(&format!("@{}/nothing/here", dir.display())).unwrap_err();
        assert!(missing.to_string().contains("no such file"), "{missing}");
        std::fs::write(&file, "\n").unwrap();
        assert!(cap_argument(&at).is_err(), "an empty first line is no cap");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn describes_a_directory_writecap() {
        let cap = Cap::parse(&format!(
            "URI:DIR2:{}:{}",
            base32::encode(&[3; 16]),
            base32::encode(&[4; 32])
        ))
        .unwrap();
        let lines: std::collections::BTreeMap<_, _> = describe(&cap).into_iter().collect();
        assert_eq!(lines["kind"], "URI:DIR2");
        assert_eq!(lines["object"], "directory");
        assert_eq!(lines["access"], "read-write");
        assert!(lines["readcap"].starts_with("URI:DIR2-RO:"));
        assert!(lines["verifycap"].starts_with("URI:DIR2-Verifier:"));
    }
}
