//! `tahoe-mount [mount] GRID MOUNTPOINT`, `unmount` and `status`: joining the grid, finding or making the root
//! directory, mounting it with FUSE, running in the background once the mount is ready, and the control socket
//! through which `status` and `unmount` reach a running mount.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::control::{
    Control, STOPPING_GRACE, Waited, control_socket, serve_control, wait_for_pending,
};
use super::gsd::{Joined, join_on};
use super::human_bytes;
use crate::cap::{Cap, MutableFormat};
use crate::check::CheckOptions;
use crate::config::{ConfigDir, write_private_file};
use crate::crypto::rsa::KeyPool;
use crate::dirnode::{Directory, DirectoryNode};
use crate::fs::{Fs, FsOptions};
use crate::immutable::upload::UploadOptions;
use crate::maintain::{MaintainOptions, Maintainer};
use crate::mutable::{MutableOptions, MutableParams};

/// Where the spool, the journal and the control sockets live when nothing else says.
pub const DATA_DIR_ENV: &str = "TAHOE_MOUNT_DATA_DIR";
/// How long a mount process, once unmounted, waits while the grid refuses its pending changes before it exits.
const STUCK_AFTER_UNMOUNT: Duration = Duration::from_secs(60);

/// The line a background mount prints when the mount is ready.
const READY: &str = "tahoe-mount: ready";

#[derive(clap::Args, Debug)]
pub(super) struct MountArgs {
    /// The grid: an invitation (its JSON text, or @FILE holding it), or the GSD readcap with --bootstrap.
    grid: String,
    /// An empty directory to mount the grid on.
    mountpoint: PathBuf,
    /// A server to read the GSD from first (NURL); may be given several times.
    #[arg(long = "bootstrap", value_name = "NURL")]
    bootstrap: Vec<String>,
    /// Use the cached server list without asking the grid if it was read less than this many seconds ago.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    grid_max_age: u64,
    /// The directory to mount (a writecap; a readcap mounts read-only), or `-` to read it from standard input,
    /// or @FILE to read it from FILE (so that it does not show in `ps`). Default: this grid's root directory,
    /// made on the first mount and its writecap saved in the configuration directory.
    #[arg(long, value_name = "DIRCAP")]
    root: Option<String>,
    /// Stay in the foreground (logs go to standard error).
    #[arg(short, long)]
    foreground: bool,
    /// Mount options, comma-separated: ro, allow_other, umask=OCTAL (for entries stored without a mode; default
    /// 077), dir_ttl=SECONDS, cache_size=BYTES, spool_size=BYTES,
    /// poll_interval=SECONDS, uploads=N, renew_interval=SECONDS, maintain_delay=SECONDS (sizes take K, M, G
    /// suffixes).
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// The configuration directory (secrets and root writecaps; default: $TAHOE_MOUNT_CONFIG_DIR,
    /// $XDG_CONFIG_HOME/tahoe-mount or ~/.config/tahoe-mount).
    #[arg(long, value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// Where written files wait for upload, with the journal (default: $TAHOE_MOUNT_DATA_DIR,
    /// $XDG_DATA_HOME/tahoe-mount or ~/.local/share/tahoe-mount).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    shares: super::ShareArgs,
    /// Set by a background mount for the process it starts.
    #[arg(long, hide = true)]
    daemon_child: bool,
}

/// Mount options from `-o`.
#[derive(Debug, Clone)]
struct MountOptions {
    read_only: bool,
    allow_other: bool,
    /// Permission bits taken from entries stored without a mode.
    umask: u32,
    dir_ttl: Duration,
    cache_bytes: usize,
    spool_bytes: Option<u64>,
    poll_interval: Duration,
    parallel_uploads: usize,
    /// Time between the maintainer's passes (lease renewal, check and repair of the whole tree).
    renew_interval: Duration,
    /// How long after mounting the maintainer may start.
    maintain_delay: Duration,
}

fn parse_size(text: &str) -> anyhow::Result<u64> {
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let n: u64 = digits
        .parse()
        .with_context(|| format!("{text:?} is not a size"))?;
    let scale: u64 = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => bail!("{text:?}: unknown size unit (use K, M, G or T)"),
    };
    n.checked_mul(scale)
        .with_context(|| format!("{text:?} is too large"))
}

fn parse_mount_options(given: &[String]) -> anyhow::Result<MountOptions> {
    let mut options = MountOptions {
        read_only: false,
        allow_other: false,
        umask: 0o077,
        dir_ttl: Duration::from_secs(5),
        cache_bytes: 256 << 20,
        spool_bytes: None,
        poll_interval: crate::gsd::client::DEFAULT_POLL_INTERVAL,
        parallel_uploads: FsOptions::DEFAULT_PARALLEL_UPLOADS,
        renew_interval: crate::maintain::DEFAULT_RENEW_INTERVAL,
        maintain_delay: crate::maintain::DEFAULT_START_DELAY,
    };
    for option in given
        .iter()
        .flat_map(|o| o.split(','))
        .filter(|o| !o.is_empty())
    {
        let (key, value) = match option.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (option, None),
        };
        let seconds = |v: Option<&str>| -> anyhow::Result<Duration> {
            let v = v.with_context(|| format!("-o {key} needs a value"))?;
            let s: f64 = v
                .parse()
                .with_context(|| format!("-o {key}={v}: not a number of seconds"))?;
            anyhow::ensure!(
                s.is_finite() && s >= 0.0,
                "-o {key}={v}: not a number of seconds"
            );
            Ok(Duration::from_secs_f64(s))
        };
        let size = |v: Option<&str>| -> anyhow::Result<u64> {
            parse_size(v.with_context(|| format!("-o {key} needs a value"))?)
                .with_context(|| format!("-o {key}"))
        };
        match key {
            "ro" => options.read_only = true,
            "rw" => options.read_only = false,
            "allow_other" => options.allow_other = true,
            "dir_ttl" => options.dir_ttl = seconds(value)?,
            "poll_interval" => options.poll_interval = seconds(value)?.max(Duration::from_secs(1)),
            "cache_size" => {
                options.cache_bytes = usize::try_from(size(value)?).unwrap_or(usize::MAX)
            }
            "spool_size" => options.spool_bytes = Some(size(value)?),
            "maintain_delay" => options.maintain_delay = seconds(value)?,
            "renew_interval" => {
                options.renew_interval = seconds(value)?.max(Duration::from_secs(1));
                anyhow::ensure!(
                    options.renew_interval < Duration::from_secs(31 * 24 * 3600),
                    "-o renew_interval: leases last 31 days, so renew more often than that"
                );
            }
            "umask" => {
                let v = value.with_context(|| format!("-o {key} needs a value"))?;
                options.umask = u32::from_str_radix(v, 8)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .with_context(|| format!("-o umask={v}: not an octal mode (022, say)"))?;
            }
            "uploads" => {
                let v = value.with_context(|| format!("-o {key} needs a value"))?;
                options.parallel_uploads = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=256).contains(n))
                    .with_context(|| format!("-o uploads={v}: not a number from 1 to 256"))?;
            }
            // What fstab, mount(8), mount.fuse3 and systemd pass along, which mean nothing here: the kernel or
            // mount(8) acts on them (nodev, nosuid, noexec, the atime family), or they are for mount(8) and systemd
            // alone (x-systemd.automount, _netdev, nofail, auto, user).
            key if is_generic_mount_option(key) => {}
            other => bail!("-o {other}: unknown mount option"),
        }
    }
    Ok(options)
}

/// Whether `key` is one of the generic mount options that fstab lines, mount(8), mount.fuse3 and systemd pass to
/// every filesystem's mount helper.
fn is_generic_mount_option(key: &str) -> bool {
    key.starts_with("x-")
        || matches!(
            key,
            "defaults"
                | "auto"
                | "noauto"
                | "user"
                | "nouser"
                | "users"
                | "owner"
                | "group"
                | "_netdev"
                | "nofail"
                | "dev"
                | "nodev"
                | "suid"
                | "nosuid"
                | "exec"
                | "noexec"
                | "atime"
                | "noatime"
                | "relatime"
                | "norelatime"
                | "strictatime"
                | "nostrictatime"
                | "lazytime"
                | "nolazytime"
                | "diratime"
                | "nodiratime"
                | "async"
                | "comment"
        )
}

/// The data directory: `--data-dir`, `$TAHOE_MOUNT_DATA_DIR`, `$XDG_DATA_HOME/tahoe-mount`, or
/// `~/.local/share/tahoe-mount`.
pub(super) fn data_dir(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir.to_owned());
    }
    let nonempty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = nonempty(DATA_DIR_ENV) {
        return Ok(dir.into());
    }
    if let Some(xdg) = nonempty("XDG_DATA_HOME") {
        return Ok(PathBuf::from(xdg).join("tahoe-mount"));
    }
    nonempty("HOME")
        .map(|home| PathBuf::from(home).join(".local/share/tahoe-mount"))
        .context("cannot tell where to keep the spool: HOME is not set (use --data-dir)")
}

fn canonical_mountpoint(path: &Path) -> anyhow::Result<PathBuf> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => bail!("{}: the mountpoint is not a directory", path.display()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            // A mount whose process died (kill -9, a crash): clear it away, as a user would have to.
            crate::daemon_log::write_line(&format!(
                "tahoe-mount: {} is a dead mount (its process is gone); unmounting it first",
                path.display()
            ));
            lazy_unmount(path)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "{}: the mountpoint does not exist (make it with mkdir)",
                path.display()
            )
        }
        Err(e) => bail!("{}: cannot use it as a mountpoint: {e}", path.display()),
    }
    std::fs::canonicalize(path).with_context(|| format!("{}", path.display()))
}

pub(super) fn is_mounted(path: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    mounts.lines().any(|line| {
        line.split(' ')
            .nth(1)
            .is_some_and(|m| m.replace("\\040", " ") == wanted.as_ref())
    })
}

/// Unmounts `path` even while busy or dead: `fusermount3 -uz`, or `umount -l` as root.
pub(super) fn lazy_unmount(path: &Path) -> anyhow::Result<()> {
    let attempts: [(&str, &[&str]); 3] = [
        ("fusermount3", &["-u", "-z"]),
        ("fusermount", &["-u", "-z"]),
        ("umount", &["-l"]),
    ];
    let mut why = Vec::new();
    for (program, args) in attempts {
        match Command::new(program)
            .args(args)
            .arg(path)
            .stderr(Stdio::piped())
            .output()
        {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => why.push(format!(
                "{program}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => why.push(format!("{program}: {e}")),
        }
    }
    bail!("cannot unmount {}: {}", path.display(), why.join("; "))
}

fn check_fuse() -> anyhow::Result<()> {
    if !Path::new("/dev/fuse").exists() {
        bail!(
            "no FUSE here: /dev/fuse is missing (load the fuse module: modprobe fuse; in a container, pass --device /dev/fuse)"
        );
    }
    let root = effective_uid() == 0;
    let has_helper = ["fusermount3", "fusermount"].iter().any(|p| {
        std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(p).is_file()))
    });
    if !root && !has_helper {
        bail!("no FUSE helper: fusermount3 is not installed (Debian: apt-get install fuse3)");
    }
    Ok(())
}

/// The effective user id, read from /proc (the owner of our own process directory).
fn effective_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

fn effective_gid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.gid())
        .unwrap_or(u32::MAX)
}

/// What a background mount's process gets through a pipe on its standard input instead of its arguments, so
/// that no cap shows in `ps`: the grid argument and the root cap.
#[derive(serde::Serialize, serde::Deserialize)]
struct ChildSecrets {
    grid: String,
    root: Option<String>,
}

/// `tahoe-mount mount`.
pub(super) fn mount(mut args: MountArgs) -> anyhow::Result<()> {
    let typed = (args.grid.clone(), args.root.clone());
    if args.daemon_child {
        let secrets: ChildSecrets = serde_json::from_reader(std::io::stdin().lock())
            .context("the background mount's settings on standard input")?;
        (args.grid, args.root) = (secrets.grid, secrets.root);
    } else {
        if args.grid == "-" {
            args.grid = super::cap_argument("-")?;
        }
        if let Some(root) = &args.root {
            args.root = Some(super::cap_argument(root).context("--root")?);
        }
    }
    let options = parse_mount_options(&args.options)?;
    args.shares.params().validate()?;
    check_fuse()?;
    let mountpoint = canonical_mountpoint(&args.mountpoint)?;
    if is_mounted(&mountpoint) {
        bail!(
            "{}: something is already mounted there (tahoe-mount unmount {0} first)",
            mountpoint.display()
        );
    }
    if let Some(root) = &args.root {
        let cap = Cap::parse(root.trim()).context("--root")?;
        anyhow::ensure!(cap.is_directory(), "--root: not a directory cap");
    }
    if args.foreground || args.daemon_child {
        return run_mount(args, options, mountpoint);
    }
    start_background(&args, &typed)
}

/// Starts the mount in a process of its own, and returns once it says the mount is ready (or why it is not).
/// `typed` is the grid and root arguments as typed: in the new process's arguments they become `-`, and their
/// values go through its standard input.
fn start_background(args: &MountArgs, typed: &(String, Option<String>)) -> anyhow::Result<()> {
    let data = data_dir(args.data_dir.as_deref())?;
    crate::config::create_private_dir(&data)?;
    let log_path = data.join(crate::daemon_log::FILE_NAME);
    let log = crate::daemon_log::open_for_daemon(&log_path)
        .with_context(|| format!("{}", log_path.display()))?;
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if argv.first().is_none_or(|a| a != "mount") {
        argv.insert(0, "mount".into());
    }
    let (grid, root) = typed;
    for arg in &mut argv {
        if *arg == **grid || root.as_ref().is_some_and(|root| *arg == **root) {
            *arg = "-".into();
        } else if root
            .as_ref()
            .is_some_and(|root| *arg == *format!("--root={root}"))
        {
            *arg = "--root=-".into();
        }
    }
    argv.push("--daemon-child".into());
    let exe =
        std::env::current_exe().context("cannot find this program to run it in the background")?;
    let secrets = serde_json::to_vec(&ChildSecrets {
        grid: args.grid.clone(),
        root: args.root.clone(),
    })?;
    let mut child = Command::new(exe)
        .args(&argv)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        // Its own process group: the terminal's Ctrl-C and hang-up do not reach it.
        .process_group(0)
        .spawn()
        .context("cannot start the background mount")?;
    {
        // Written and closed at once: the new process reads it to the end before anything else.
        let mut stdin = child
            .stdin
            .take()
            .context("no pipe to the background mount")?;
        stdin
            .write_all(&secrets)
            .context("cannot hand the background mount its settings")?;
    }
    let stdout = child
        .stdout
        .take()
        .context("no pipe from the background mount")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap_or_default();
        if line == READY {
            crate::daemon_log::write_line(&format!(
                "tahoe-mount: mounted {} (process {}; log {}); `tahoe-mount unmount {0}` waits for uploads",
                args.mountpoint.display(),
                child.id(),
                log_path.display()
            ));
            return Ok(());
        }
        crate::daemon_log::write_line(&line);
    }
    let status = child.wait()?;
    bail!(
        "the mount did not start ({status}); see above and {}",
        log_path.display()
    )
}

fn raise_descriptor_limit() {
    // Every file waiting for upload holds a descriptor; the soft limit (often 1024) is raised to the hard one.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed, which lives on this stack frame.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Says something to whoever started the mount: the terminal (foreground), or the starting process, which relays
/// it.
fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// The root directory: `--root`, else the one saved for this grid, else a new one (saved 0600).
fn root_cap(
    args: &MountArgs,
    runtime: &tokio::runtime::Runtime,
    joined: &Joined,
    mutable: &MutableOptions,
    params: MutableParams,
) -> anyhow::Result<Cap> {
    if let Some(root) = &args.root {
        return Ok(Cap::parse(root.trim())?);
    }
    let config = ConfigDir::locate(args.config_dir.as_deref())?;
    let path = saved_root_path(&config, joined);
    if let Some(cap) = saved_root(&path)? {
        return Ok(cap);
    }
    let node = runtime
        .block_on(DirectoryNode::create(
            joined.grid(),
            &Directory::new(),
            params,
            mutable.clone(),
        ))
        .context("cannot make the root directory on the grid")?;
    crate::config::create_private_dir(&config.path().join("roots"))?;
    write_private_file(&path, format!("{}\n", node.cap()).as_bytes(), false)?;
    say(&format!(
        "tahoe-mount: made this grid's root directory; its writecap is in {} (mode 0600). Back that file up: \
         without it your files cannot be reached.",
        path.display()
    ));
    Ok(node.cap().clone())
}

/// Where the root directory's writecap of the grid `joined` is kept: `CONFIG/roots/<GSD storage index>.dircap`.
pub(super) fn saved_root_path(config: &ConfigDir, joined: &Joined) -> PathBuf {
    let gsd_si = joined.source().gsd.storage_index();
    config.path().join("roots").join(format!(
        "{}.dircap",
        data_encoding::HEXLOWER.encode(&gsd_si)
    ))
}

/// The root directory cap saved at `path`, if there is one.
pub(super) fn saved_root(path: &Path) -> anyhow::Result<Option<Cap>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let cap = Cap::parse(text.trim()).with_context(|| format!("{}", path.display()))?;
            anyhow::ensure!(
                cap.is_directory(),
                "{}: not a directory cap",
                path.display()
            );
            Ok(Some(cap))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => bail!("{}: {e}", path.display()),
    }
}

/// Where the maintainer of `root` keeps its progress: `DATA/maintain/<root's storage index>`.
pub(super) fn maintain_dir(data: &Path, root: &Cap) -> PathBuf {
    data.join("maintain").join(match root.storage_index() {
        Some(si) => data_encoding::HEXLOWER.encode(&si),
        None => "literal".to_owned(),
    })
}

fn run_mount(args: MountArgs, options: MountOptions, mountpoint: PathBuf) -> anyhow::Result<()> {
    let result = run_mount_inner(&args, &options, &mountpoint);
    if let Err(e) = &result
        && args.daemon_child
    {
        // The starting process relays this line; its own exit status says the rest.
        say(&format!("tahoe-mount: {e:#}"));
    }
    result
}

fn run_mount_inner(
    args: &MountArgs,
    options: &MountOptions,
    mountpoint: &Path,
) -> anyhow::Result<()> {
    raise_descriptor_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(
            std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .clamp(2, 8),
        )
        .enable_all()
        .build()?;
    let joined = join_on(&runtime, &args.grid, &args.bootstrap, args.grid_max_age)?;
    let config = ConfigDir::locate(args.config_dir.as_deref())?;
    let lease_secret = config.lease_secret()?;
    let mut upload = UploadOptions::new(config.convergence_secret()?, lease_secret.clone());
    upload.params = args.shares.params();
    let mut mutable = MutableOptions::new(lease_secret.bytes().to_vec());
    let known_servers = joined.view().servers.len();
    let servers = known_servers.max(1);
    if let Some(why) = upload.params.unmet_by(known_servers) {
        // In the log, and to whoever started the mount.
        tracing::warn!("tahoe-mount: {why}");
        say(&format!("tahoe-mount: warning: {why}"));
    }
    let directory_params = MutableParams {
        format: MutableFormat::Sdmf,
        needed: args.shares.shares_needed.min(255) as u8,
        happy: usize::from(args.shares.shares_happy).min(servers).min(255) as u8,
        total: args.shares.shares_total.min(255) as u8,
    };
    // Changes to existing directories (the root's too, made here) need the mount's happiness, as in `Fs`.
    mutable.happy = directory_params.happy;
    let root = root_cap(args, &runtime, &joined, &mutable, directory_params)?;
    let data = data_dir(args.data_dir.as_deref())?;
    crate::config::create_private_dir(&data)?;
    let spool_dir = data.join("spool").join(match root.storage_index() {
        Some(si) => data_encoding::HEXLOWER.encode(&si),
        None => "literal".to_owned(),
    });
    let mut fs_options = FsOptions::new(upload, mutable);
    fs_options.directory_params = directory_params;
    fs_options.dir_ttl = options.dir_ttl;
    fs_options.umask = options.umask;
    fs_options.cache_bytes = options.cache_bytes;
    fs_options.parallel_uploads = options.parallel_uploads;
    fs_options.read_only = options.read_only;
    if !options.read_only {
        // mkdir -p, tar and rsync make directories in bursts; each new Tahoe directory needs an RSA key.
        fs_options.mutable.key_pool =
            Some(KeyPool::new(8).context("cannot start the key pool thread")?);
    }
    fs_options.uid = effective_uid();
    fs_options.gid = effective_gid();
    fs_options.spool_bytes = options
        .spool_bytes
        .unwrap_or_else(|| default_spool_limit(&data));
    let grid_source = {
        let joined = joined.clone();
        Arc::new(move || joined.grid())
    };
    // The maintainer waits while the user reads and writes; it learns of the filesystem once it exists.
    let mounted: Arc<std::sync::OnceLock<Fs>> = Arc::new(std::sync::OnceLock::new());
    let maintainer = {
        let mut check = CheckOptions::new(lease_secret.clone());
        check.happy = args.shares.shares_happy.min(servers.min(255) as u16);
        check.scratch = data.clone();
        let mut maintain = MaintainOptions::new(check);
        maintain.renew_interval = options.renew_interval;
        maintain.start_delay = options.maintain_delay;
        let mounted = mounted.clone();
        let busy: crate::maintain::BusySource = Arc::new(move || {
            mounted
                .get()
                .is_some_and(|fs| fs.idle_for() < Duration::from_secs(2))
        });
        Maintainer::new(
            root.clone(),
            grid_source.clone(),
            Some(busy),
            maintain,
            &maintain_dir(&data, &root),
        )?
    };
    {
        let maintainer = maintainer.clone();
        fs_options.on_damage = Some(Arc::new(move |cap| maintainer.report_damaged(cap)));
    }
    let announcements = {
        let joined = joined.clone();
        Arc::new(move || {
            joined
                .view()
                .servers
                .iter()
                .map(|s| (s.petname.clone(), s.announcement.to_bytes()))
                .collect::<Vec<_>>()
        })
    };
    let fs = {
        let _entered = runtime.enter();
        let (fs, warnings) = Fs::new(
            root,
            grid_source,
            Some(announcements),
            &spool_dir,
            fs_options,
        )
        .with_context(|| format!("the spool at {}", spool_dir.display()))?;
        for warning in warnings {
            tracing::warn!("tahoe-mount: warning: {warning}");
        }
        let _ = mounted.set(fs.clone());
        runtime.spawn(maintainer.clone().run());
        fs
    };
    if fs.pending_count() > 0 {
        tracing::info!(
            "tahoe-mount: {} changes left by an earlier run are being uploaded and linked",
            fs.pending_count()
        );
    }
    {
        let _entered = runtime.enter();
        joined.spawn_poller(options.poll_interval, |outcome| match outcome {
            Ok(report) => report
                .warnings
                .iter()
                .for_each(|w| tracing::info!("tahoe-mount: grid: {w}")),
            Err(e) => tracing::warn!("tahoe-mount: grid: cannot refresh the server list: {e}"),
        });
    }

    let mut mount_options = vec![
        fuser::MountOption::FSName("tahoe-mount".into()),
        fuser::MountOption::Subtype("tahoe".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoAtime,
    ];
    if options.read_only || root_is_readonly(&args.root) {
        mount_options.push(fuser::MountOption::RO);
    }
    let mut config = fuser::Config::default();
    config.mount_options = mount_options;
    config.n_threads = Some(2);
    config.clone_fd = true;
    if options.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    let adapter = crate::fuse::FuseAdapter::new(fs.clone(), runtime.handle().clone());
    let mut session = fuser::Session::new(adapter, mountpoint, &config)
        .with_context(|| format!("cannot mount on {}", mountpoint.display()))?;
    let unmounter = Arc::new(Mutex::new(session.unmount_callable()));
    let socket = control_socket(&data, mountpoint);
    let stopping = Arc::new(AtomicBool::new(false));
    serve_control(
        &socket,
        Control {
            fs: fs.clone(),
            joined: joined.clone(),
            maintainer: maintainer.clone(),
            unmounter: unmounter.clone(),
            stopping: stopping.clone(),
        },
    )?;
    {
        let (unmounter, stopping) = (unmounter.clone(), stopping.clone());
        let _entered = runtime.enter();
        runtime.spawn(async move {
            let mut terminate =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            tracing::warn!(
                "tahoe-mount: signalled: unmounting and exiting (what is not on the grid yet stays in the \
                 journal for the next mount)"
            );
            stopping.store(true, Ordering::SeqCst);
            let _ = unmount_now(&unmounter);
        });
    }
    say(READY);
    if args.daemon_child {
        // Nothing more goes to the starter, which has stopped reading.
        detach_stdout();
    }
    let ended = session.run();
    let _ = std::fs::remove_file(&socket);
    tracing::info!("tahoe-mount: unmounted {}", mountpoint.display());
    // Unmounted by `unmount` (which waited), by `fusermount3 -u` or by a signal: go on uploading while the grid
    // takes the changes (a signal or --keep-pending allows a few seconds), then exit; what is left stays in the
    // journal, which the next mount replays.
    let stopping = stopping.load(Ordering::SeqCst);
    let waited = wait_for_pending(
        &fs,
        STUCK_AFTER_UNMOUNT,
        stopping.then(|| Instant::now() + STOPPING_GRACE),
        |count, bytes| {
            if count > 0 {
                tracing::info!(
                    "tahoe-mount: waiting for {count} changes ({}) to reach the grid",
                    human_bytes(bytes)
                );
            }
        },
    );
    if waited != Waited::Done {
        tracing::warn!(
            "tahoe-mount: exiting with {} changes not on the grid yet{}; they are in the journal, and the next \
             mount of this grid uploads them",
            fs.pending_count(),
            match &waited {
                Waited::Stuck(why) => format!(" ({why})"),
                _ => String::new(),
            }
        );
    }
    ended.context("the FUSE session failed")?;
    Ok(())
}

fn root_is_readonly(root: &Option<String>) -> bool {
    root.as_deref()
        .and_then(|r| Cap::parse(r.trim()).ok())
        .is_some_and(|c| c.is_readonly())
}

/// Half the free space where the spool lives, but at least 1 GiB.
fn default_spool_limit(dir: &Path) -> u64 {
    match crate::fs::spool::disk_space(dir) {
        Some((free, _)) => (free / 2).max(1 << 30),
        None => 16 << 30,
    }
}

fn detach_stdout() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto descriptor 1 replaces standard output with /dev/null; both descriptors are open.
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
}

pub(super) fn unmount_now(unmounter: &Mutex<fuser::SessionUnmounter>) -> std::io::Result<()> {
    unmounter
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .unmount()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_options_parse_and_unknown_ones_are_refused() {
        let o = parse_mount_options(&[
            "ro,dir_ttl=2.5".into(),
            "cache_size=64M,spool_size=2G,_netdev,uploads=16".into(),
        ])
        .unwrap();
        assert_eq!(o.parallel_uploads, 16);
        assert!(o.read_only);
        assert_eq!(o.dir_ttl, Duration::from_millis(2500));
        assert_eq!(o.cache_bytes, 64 << 20);
        assert_eq!(o.spool_bytes, Some(2 << 30));
        let e = parse_mount_options(&["bogus".into()]).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        assert!(parse_mount_options(&["dir_ttl".into()]).is_err());
        assert!(parse_mount_options(&["cache_size=12Q".into()]).is_err());
        for bad in ["uploads=0", "uploads=many", "uploads"] {
            let e = parse_mount_options(&[bad.into()]).unwrap_err();
            assert!(e.to_string().contains("uploads"), "{bad}: {e}");
        }
        assert_eq!(parse_size("3KiB").unwrap(), 3072);
    }

    #[test]
    fn the_generic_options_of_fstab_and_systemd_are_accepted_and_change_nothing() {
        let line = "defaults,_netdev,x-systemd.automount,x-systemd.idle-timeout=60,nofail,noauto,users,rw,\
                    nodev,nosuid,noexec,relatime,noatime,comment=systemd.automount";
        let o = parse_mount_options(&[line.into()]).unwrap();
        let plain = parse_mount_options(&[]).unwrap();
        assert_eq!(
            (o.read_only, o.allow_other, o.umask, o.dir_ttl),
            (
                plain.read_only,
                plain.allow_other,
                plain.umask,
                plain.dir_ttl
            )
        );
        for bad in ["sync", "x", "xsystemd.automount", "uid=0"] {
            assert!(parse_mount_options(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
