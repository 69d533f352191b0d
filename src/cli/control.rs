//! A running mount's control socket and the commands that use it: `status`, and `unmount`, which waits for the
//! pending changes to reach the grid, with progress, and stops waiting (saying why) when the grid keeps refusing
//! them; `unmount --keep-pending` unmounts at once and leaves them in the journal for the next mount. Also how
//! the mount process itself waits for its pending changes once unmounted (by `unmount`, by `fusermount3 -u` or
//! by a signal).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::gsd::Joined;
use super::human_bytes;
use super::mount::{data_dir, is_mounted, lazy_unmount};
use crate::fs::Fs;
use crate::maintain::Maintainer;

/// How long `unmount` waits, by default, while the grid refuses every pending change and none gets through.
pub(super) const DEFAULT_STUCK_AFTER: Duration = Duration::from_secs(120);
/// How long a mount process told to stop (SIGTERM, `unmount --keep-pending`) goes on uploading before it exits.
pub(super) const STOPPING_GRACE: Duration = Duration::from_secs(3);

/// The control socket of the mount at `mountpoint` (a short name: socket paths are limited to 108 bytes).
pub(super) fn control_socket(data_dir: &Path, mountpoint: &Path) -> PathBuf {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(mountpoint.as_os_str().as_encoded_bytes());
    data_dir.join("mounts").join(format!(
        "{}.sock",
        data_encoding::HEXLOWER.encode(&digest[..8])
    ))
}

/// What the control socket answers from: the mount's parts.
#[derive(Clone)]
pub(super) struct Control {
    pub(super) fs: Fs,
    pub(super) joined: Joined,
    pub(super) maintainer: Maintainer,
    pub(super) unmounter: Arc<Mutex<fuser::SessionUnmounter>>,
    /// Set when the mount should exit soon after it is unmounted, leaving what is pending to the next mount.
    pub(super) stopping: Arc<AtomicBool>,
}

/// How waiting for the pending changes ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Waited {
    /// Everything is on the grid.
    Done,
    /// Attempts failed and nothing got through for the patience given: why, in the pending changes' words.
    Stuck(String),
    /// The deadline passed.
    OutOfTime,
}

/// Waits for `fs`'s pending changes to reach the grid, calling `progress` with (changes, bytes) whenever that
/// changes. Gives up when the grid has refused attempts and nothing got through for `patience` (a slow grid that
/// takes a big file is not stuck), or at `deadline`.
pub(super) fn wait_for_pending(
    fs: &Fs,
    patience: Duration,
    deadline: Option<Instant>,
    mut progress: impl FnMut(usize, u64),
) -> Waited {
    let failures = |fs: &Fs| {
        let a = fs.activity();
        a.upload_failures + a.publish_failures
    };
    let failures_before = failures(fs);
    let mut last = None;
    let mut last_change = Instant::now();
    loop {
        let pending = fs.pending();
        let now = (pending.len(), pending.iter().map(|p| p.bytes).sum::<u64>());
        if last != Some(now) {
            progress(now.0, now.1);
            last = Some(now);
            last_change = Instant::now();
        }
        if now.0 == 0 {
            return Waited::Done;
        }
        if failures(fs) > failures_before && last_change.elapsed() >= patience {
            let mut why: Vec<String> = pending
                .iter()
                .take(5)
                .map(|p| format!("{}: {}", p.path, p.state))
                .collect();
            if let Some(failure) = fs.last_failure() {
                why.push(format!("last failure: {failure}"));
            }
            return Waited::Stuck(why.join("; "));
        }
        if deadline.is_some_and(|at| Instant::now() >= at) {
            return Waited::OutOfTime;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Answers `status` and `unmount` on a Unix socket (0600 in a 0700 directory).
pub(super) fn serve_control(socket: &Path, control: Control) -> anyhow::Result<()> {
    let dir = socket.parent().context("socket path")?;
    crate::config::create_private_dir(dir)?;
    if let Ok(meta) = std::fs::symlink_metadata(socket)
        && meta.file_type().is_socket()
    {
        let _ = std::fs::remove_file(socket);
    }
    let listener = UnixListener::bind(socket)
        .with_context(|| format!("control socket {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("control socket {}", socket.display()))?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let control = control.clone();
                std::thread::spawn(move || {
                    let _ = answer(stream, &control);
                });
            }
        })?;
    Ok(())
}

/// One request: `status`, or `unmount [keep-pending] [stuck-after=SECONDS]`.
fn answer(stream: UnixStream, control: &Control) -> std::io::Result<()> {
    let mut request = String::new();
    BufReader::new(&stream).read_line(&mut request)?;
    let mut out = &stream;
    let mut words = request.split_whitespace();
    match words.next() {
        Some("status") => out.write_all(status_text(control).as_bytes())?,
        Some("unmount") => {
            let mut keep_pending = false;
            let mut patience = DEFAULT_STUCK_AFTER;
            for word in words {
                match word.split_once('=') {
                    None if word == "keep-pending" => keep_pending = true,
                    Some(("stuck-after", seconds)) => {
                        patience = seconds
                            .parse()
                            .map(Duration::from_secs_f64)
                            .unwrap_or(DEFAULT_STUCK_AFTER)
                    }
                    _ => return writeln!(out, "error: unknown unmount option {word:?}"),
                }
            }
            if keep_pending {
                control.stopping.store(true, Ordering::SeqCst);
            } else {
                let mut failed = None;
                let waited = wait_for_pending(&control.fs, patience, None, |count, bytes| {
                    if count > 0
                        && let Err(e) = writeln!(
                            out,
                            "waiting for {count} changes ({}) to reach the grid",
                            human_bytes(bytes)
                        )
                    {
                        failed = Some(e);
                    }
                });
                if let Some(e) = failed {
                    return Err(e);
                }
                if let Waited::Stuck(why) = waited {
                    let count = control.fs.pending_count();
                    return writeln!(
                        out,
                        "error: {count} changes cannot reach the grid ({why}); the mount stays up and keeps \
                         trying. `tahoe-mount unmount --keep-pending` unmounts now and uploads them at the next \
                         mount"
                    );
                }
            }
            // Said first: once unmounted, this process may finish and exit before another line gets out.
            writeln!(out, "unmounting")?;
            match super::mount::unmount_now(&control.unmounter) {
                Ok(()) => {
                    // The connection stays open until this process has finished and exits: its end tells the
                    // client that the mount is gone for good (and its spool free for the next mount).
                    std::mem::forget(stream);
                }
                Err(e) => writeln!(out, "error: cannot unmount: {e}")?,
            }
        }
        other => writeln!(out, "error: unknown request {other:?}")?,
    }
    Ok(())
}

fn status_text(control: &Control) -> String {
    let (fs, joined) = (&control.fs, &control.joined);
    let mut text = String::new();
    let pending = fs.pending();
    let bytes: u64 = pending.iter().map(|p| p.bytes).sum();
    text.push_str(&format!(
        "pending: {} changes, {} to upload\n",
        pending.len(),
        human_bytes(bytes)
    ));
    for item in &pending {
        text.push_str(&format!(
            "  {}  {}  {}\n",
            item.path,
            human_bytes(item.bytes),
            item.state
        ));
    }
    let a = fs.activity();
    text.push_str(&format!(
        "since mounted: {} uploads ({}), {} directory versions published carrying {} changes, {} directories \
         made, {} listings read ({} set aside), {} upload and {} publish attempts failed\n",
        a.uploads,
        human_bytes(a.bytes_uploaded),
        a.publishes,
        a.changes_published,
        a.directories_made,
        a.listings,
        a.listings_dropped,
        a.upload_failures,
        a.publish_failures
    ));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    text.push_str(&control.maintainer.status().describe(now));
    let view = joined.view();
    text.push_str(&format!(
        "servers: {} (grid service directory version {})\n",
        view.servers.len(),
        view.gsd_seqnum
    ));
    for server in &view.servers {
        text.push_str(&format!(
            "  {}  {}\n",
            server.petname,
            server.info.display_name()
        ));
    }
    if let Some(why) = fs.options().upload.params.unmet_by(view.servers.len()) {
        text.push_str(&format!("warning: {why}\n"));
    }
    text
}

fn connect_control(mountpoint: &Path, data_dir_arg: Option<&Path>) -> anyhow::Result<UnixStream> {
    let mountpoint = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_owned());
    let socket = control_socket(&data_dir(data_dir_arg)?, &mountpoint);
    UnixStream::connect(&socket).with_context(|| {
        format!(
            "no tahoe-mount is serving {} (its control socket {} does not answer)",
            mountpoint.display(),
            socket.display()
        )
    })
}

/// `tahoe-mount unmount MOUNTPOINT`: waits for pending uploads (printing progress), then unmounts; with
/// `keep_pending`, unmounts at once. Fails, leaving the mount up, when the grid refuses the pending changes for
/// `stuck_after`.
pub(super) fn unmount(
    mountpoint: &Path,
    data_dir_arg: Option<&Path>,
    keep_pending: bool,
    stuck_after: Duration,
) -> anyhow::Result<()> {
    let stream = match connect_control(mountpoint, data_dir_arg) {
        Ok(stream) => stream,
        Err(e) => {
            if is_mounted(
                &std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_owned()),
            ) {
                crate::daemon_log::write_line(&format!(
                    "tahoe-mount: {e:#}; unmounting it directly"
                ));
                return lazy_unmount(mountpoint);
            }
            return Err(e);
        }
    };
    let mut request = format!("unmount stuck-after={}", stuck_after.as_secs_f64());
    if keep_pending {
        request.push_str(" keep-pending");
    }
    (&stream).write_all(format!("{request}\n").as_bytes())?;
    for line in BufReader::new(&stream).lines() {
        let Ok(line) = line else {
            break;
        };
        if line == "unmounting" {
            // The mount process closes the connection as it exits; an error line may come first.
            continue;
        }
        if let Some(why) = line.strip_prefix("error: ") {
            bail!("{why}");
        }
        crate::daemon_log::write_line(&format!("tahoe-mount: {line}"));
    }
    let mountpoint = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_owned());
    if is_mounted(&mountpoint) {
        bail!(
            "the mount process went away, and {} is still mounted",
            mountpoint.display()
        );
    }
    tracing::info!("tahoe-mount: unmounted {}", mountpoint.display());
    Ok(())
}

/// `tahoe-mount status MOUNTPOINT`.
pub(super) fn status(mountpoint: &Path, data_dir_arg: Option<&Path>) -> anyhow::Result<()> {
    let stream = connect_control(mountpoint, data_dir_arg)?;
    (&stream).write_all(b"status\n")?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut &stream, &mut text)?;
    print!("{text}");
    Ok(())
}
