//! The log: the library's `tracing` events, one line each on standard error, which is `mount.log` for a background
//! mount, filtered by `RUST_LOG` (default: `info` for tahoe-mount, `warn` for the libraries). Writing a line never
//! fails its caller (a full disk must not turn a request's error into a panic, as `eprintln!` would), and a
//! `mount.log` is rotated to `mount.log.1` when it passes [`limit`] bytes, so the log takes at most twice that on
//! disk however long the mount runs. [`write_line`] is for the command line's own messages to the user.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The name of a background mount's log, in its data directory.
pub const FILE_NAME: &str = "mount.log";
/// Bytes a log file may reach before it is rotated; `TAHOE_MOUNT_LOG_LIMIT` overrides it (for tests).
const DEFAULT_LIMIT: u64 = 8 << 20;

/// Sends `tracing` events to the log, as the module documentation says. Call once, early; later calls do nothing.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,tahoe_mount=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_target(false)
        .with_writer(EventLine::default)
        .try_init();
}

/// One event's text, written as one log line when the event is done with it.
#[derive(Default)]
struct EventLine(Vec<u8>);

impl Write for EventLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventLine {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let text = text.trim_end_matches('\n');
        if !text.is_empty() {
            write_line(text);
        }
    }
}

pub fn limit() -> u64 {
    std::env::var("TAHOE_MOUNT_LOG_LIMIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_LIMIT)
}

/// Logs `text` (a warning) unless a line under the same `key` was logged less than `every` ago: for conditions that
/// recur on every request while they last (a server that does not answer), so the log says so without flooding.
pub fn write_line_now_and_then(key: &str, every: std::time::Duration, text: &str) {
    static LAST: Mutex<Option<std::collections::HashMap<String, std::time::Instant>>> =
        Mutex::new(None);
    {
        let mut last = LAST
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let last = last.get_or_insert_with(Default::default);
        let now = std::time::Instant::now();
        if last
            .get(key)
            .is_some_and(|at| now.duration_since(*at) < every)
        {
            return;
        }
        if last.len() > 1024 {
            last.clear();
        }
        last.insert(key.to_owned(), now);
    }
    tracing::warn!("{text}");
}

/// Writes `text` and a newline to standard error, rotating a large `mount.log` first; errors are dropped.
pub fn write_line(text: &str) {
    static ROTATING: Mutex<()> = Mutex::new(());
    {
        let _one = ROTATING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Ok(log) = std::fs::read_link("/proc/self/fd/2")
            && log.file_name().is_some_and(|name| name == FILE_NAME)
            && std::fs::metadata(&log).is_ok_and(|m| m.len() >= limit())
        {
            let _ = rotate_into_stderr(&log);
        }
    }
    let mut stderr = std::io::stderr().lock();
    let lost = LOST.load(Ordering::Relaxed);
    if lost > 0
        && writeln!(
            stderr,
            "tahoe-mount: {lost} log lines were lost (no room on the log's disk)"
        )
        .is_ok()
    {
        LOST.fetch_sub(lost, Ordering::Relaxed);
    }
    if writeln!(stderr, "{text}").is_err() {
        LOST.fetch_add(1, Ordering::Relaxed);
    }
}

/// Lines that could not be written, told in the next line that can.
static LOST: AtomicU64 = AtomicU64::new(0);

/// Moves `log` to `log.1` (replacing it) and makes a new, empty `log` (0600) this process's standard error.
fn rotate_into_stderr(log: &Path) -> std::io::Result<()> {
    std::fs::rename(log, log.with_file_name(format!("{FILE_NAME}.1")))?;
    let file = open(log)?;
    // SAFETY: dup2 duplicates a descriptor this process owns (the new file's, closed when `file` drops) onto
    // standard error, which stays open; no Rust object owns descriptor 2's previous file exclusively.
    if unsafe { libc::dup2(file.as_raw_fd(), 2) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Opens (or makes) a log file for appending, 0600 (it names files and servers).
pub fn open(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::PermissionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    // Made 0644 by older versions.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// A background mount's log before its process starts: `log` moved to `log.1` when it is past the limit, then
/// opened for appending.
pub fn open_for_daemon(log: &Path) -> std::io::Result<std::fs::File> {
    if std::fs::metadata(log).is_ok_and(|m| m.len() >= limit()) {
        std::fs::rename(log, log.with_file_name(format!("{FILE_NAME}.1")))?;
    }
    open(log)
}
