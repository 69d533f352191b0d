//! `tahoe-mount put` and `get`: immutable files between local files (or pipes) and the grid, with a progress
//! line on a terminal.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{ServerArgs, directories, human_bytes, runtime};
use crate::cap::{Cap, FileCap, MutableFormat};
use crate::config::{ConfigDir, read_secret_file};
use crate::filenode::{FileNode, FileNodeOptions};
use crate::grid::client::Grid;
use crate::immutable::download::DownloadOptions;
use crate::immutable::params::EncodingParams;
use crate::immutable::upload::{UploadOptions, upload_file};
use crate::mutable::{MutableFile, MutableParams};

/// Transfers shorter than this show no progress line.
const PROGRESS_THRESHOLD: u64 = 4 << 20;

/// Where and how `put` stores a file.
pub(super) struct PutTarget<'a> {
    /// `Some(format)` for a mutable file.
    pub mutable: Option<MutableFormat>,
    /// `DIRCAP/path` to link the new file at.
    pub link: Option<&'a str>,
}

pub(super) fn put(
    servers: &ServerArgs,
    config_dir: Option<&Path>,
    convergence: Option<&Path>,
    params: EncodingParams,
    file: Option<&Path>,
    target: PutTarget<'_>,
) -> anyhow::Result<()> {
    params.validate()?;
    if let Some(format) = target.mutable {
        return put_mutable(servers, config_dir, params, file, format, target.link);
    }
    let config = ConfigDir::locate(config_dir)?;
    let convergence = match convergence {
        Some(path) => read_secret_file(path)?,
        None => config.convergence_secret()?,
    };
    let lease_secret = config.lease_secret()?;
    let (source, name) = match file {
        Some(path) if path != Path::new("-") => (
            File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
            path.display().to_string(),
        ),
        _ => (spool_stdin()?, "standard input".to_owned()),
    };
    let size = source.metadata()?.len();
    let grid = servers.connect()?;
    let mut options = UploadOptions::new(convergence, lease_secret);
    options.params = params;
    let progress = Progress::start("put", size);
    if let Some(p) = &progress {
        let p = p.clone();
        options.progress = Some(Arc::new(move |done| p.update(done)));
    }
    let result = runtime()?.block_on(upload_file(&grid, Arc::new(source), &options));
    if let Some(p) = &progress {
        p.finish();
    }
    let result = result.with_context(|| format!("cannot upload {name}"))?;
    if let Some(dest) = target.link {
        link_new_file(&grid, config_dir, dest, &Cap::File(result.cap.clone()))?;
    }
    println!("{}", result.cap);
    Ok(())
}

fn link_new_file(
    grid: &Grid,
    config_dir: Option<&Path>,
    dest: &str,
    cap: &Cap,
) -> anyhow::Result<()> {
    let options = directories::write_options(config_dir)?;
    let child = crate::dirnode::Child::from_cap(cap)?;
    runtime()?.block_on(directories::link(grid, dest, child, &options))
}

/// A mutable file is published whole, so its contents are read into memory.
fn put_mutable(
    servers: &ServerArgs,
    config_dir: Option<&Path>,
    params: EncodingParams,
    file: Option<&Path>,
    format: MutableFormat,
    link: Option<&str>,
) -> anyhow::Result<()> {
    let contents = match file {
        Some(path) if path != Path::new("-") => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        _ => {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut data)
                .context("cannot read standard input")?;
            data
        }
    };
    let narrow = |v: u16, what: &str| {
        u8::try_from(v).with_context(|| format!("{what} {v} is over 255 for a mutable file"))
    };
    let params = MutableParams {
        format,
        needed: narrow(params.needed, "--shares-needed")?,
        happy: narrow(params.happy, "--shares-happy")?,
        total: narrow(params.total, "--shares-total")?,
    };
    let grid = directories::connect(servers)?;
    let options = directories::write_options(config_dir)?;
    let file = runtime()?
        .block_on(MutableFile::create(
            grid.clone(),
            &contents,
            params,
            options,
        ))
        .context("cannot create the mutable file")?;
    let cap = Cap::File(FileCap::Mutable(*file.cap()));
    if let Some(dest) = link {
        link_new_file(&grid, config_dir, dest, &cap)?;
    }
    println!("{cap}");
    Ok(())
}

pub(super) fn get(servers: &ServerArgs, source: &str, file: Option<&Path>) -> anyhow::Result<()> {
    let (cap, path) = directories::parse_target(source)?;
    let file_cap = match (&cap, path.is_empty()) {
        (Cap::File(f), true) => f.clone(),
        (Cap::Directory(_), true) => bail!(
            "{} is a directory cap, not a file cap",
            directories::redact(source)
        ),
        (Cap::Unknown(_), _) => bail!("not a cap kind this version knows"),
        (_, false) => directories::resolve_file_cap(&directories::connect(servers)?, source)?,
    };
    let target = file.filter(|p| *p != Path::new("-"));
    let grid = match &file_cap {
        FileCap::Literal(_) => Grid::new(Vec::new()),
        FileCap::Mutable(_) => directories::connect(servers)?,
        _ => servers.connect()?,
    };
    let options = FileNodeOptions {
        download: DownloadOptions::default(),
        mutable: directories::read_options(),
    };
    let runtime = runtime()?;
    let node = runtime
        .block_on(FileNode::open(grid, &file_cap, &options))
        .context("cannot open the file")?;
    match node {
        FileNode::Literal(data) => write_output(target, |out| {
            out.write_all(&data)?;
            Ok(())
        }),
        FileNode::Mutable(contents) => write_output(target, |out| {
            out.write_all(&contents)?;
            Ok(())
        }),
        FileNode::Chk(reader) => {
            let progress = Progress::start("get", reader.size());
            let result = write_output(target, |out| {
                let report = progress.clone().map(|p| move |done| p.update(done));
                let report_ref = report.as_ref().map(|f| f as &(dyn Fn(u64) + Sync));
                reader.write_to_blocking(runtime, out, report_ref)?;
                Ok(())
            });
            if let Some(p) = &progress {
                p.finish();
            }
            for dropped in reader.dropped_shares() {
                eprintln!("tahoe-mount: used other shares instead of {dropped}");
            }
            result
        }
    }
}

/// Runs `write` on standard output, or on a temporary file beside `target` that is renamed into place only when
/// everything was written, so a failed download never leaves a truncated file under the real name. A target that
/// exists and is not a regular file (`/dev/null`, a FIFO, a terminal) is written to directly: renaming over it
/// would replace the device itself.
fn write_output(
    target: Option<&Path>,
    write: impl FnOnce(&mut (dyn Write + Send)) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let Some(target) = target else {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
        return write(&mut out);
    };
    if let Ok(meta) = std::fs::metadata(target) {
        if meta.is_dir() {
            bail!(
                "{} is a directory; name the file to write",
                target.display()
            );
        }
        if !meta.is_file() {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(target)
                .with_context(|| format!("cannot open {}", target.display()))?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            write(&mut out)?;
            return out
                .flush()
                .with_context(|| format!("cannot write {}", target.display()));
        }
    }
    let mut temp_name = target.file_name().unwrap_or_default().to_owned();
    temp_name.push(format!(".tahoe-mount-{}.partial", std::process::id()));
    let temp = target.with_file_name(temp_name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .with_context(|| format!("cannot create {}", temp.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let result = write(&mut out).and_then(|()| {
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        // Readable as a freshly created file would be, not 0600.
        let mode = 0o666 & !umask();
        std::fs::set_permissions(&temp, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        std::fs::rename(&temp, target)
            .with_context(|| format!("cannot rename into {}", target.display()))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// The process umask, as Linux reports it (0o022, the usual one, where it does not).
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// Standard input copied to an unlinked private temporary file: the upload reads its data twice (the
/// convergent key first, then the encoding), and a pipe can be read only once.
fn spool_stdin() -> anyhow::Result<File> {
    let dir = std::env::temp_dir();
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let path: PathBuf = dir.join(format!(
        "tahoe-mount-put-{}",
        crate::crypto::base32::encode(&random)
    ));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create a spool file in {}", dir.display()))?;
    let _ = std::fs::remove_file(&path);
    std::io::copy(&mut std::io::stdin().lock(), &mut file)
        .with_context(|| format!("cannot spool standard input to {}", dir.display()))?;
    Ok(file)
}

/// A one-line progress display on standard error, shown only on a terminal and for long transfers.
#[derive(Clone)]
struct Progress {
    state: Arc<Mutex<ProgressState>>,
}

struct ProgressState {
    verb: &'static str,
    total: u64,
    started: Instant,
    last_draw: Option<Instant>,
}

impl Progress {
    fn start(verb: &'static str, total: u64) -> Option<Progress> {
        (std::io::stderr().is_terminal() && total >= PROGRESS_THRESHOLD).then(|| Progress {
            state: Arc::new(Mutex::new(ProgressState {
                verb,
                total,
                started: Instant::now(),
                last_draw: None,
            })),
        })
    }

    fn update(&self, done: u64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if state
            .last_draw
            .is_some_and(|t| now - t < Duration::from_millis(100))
            && done < state.total
        {
            return;
        }
        state.last_draw = Some(now);
        let elapsed = state.started.elapsed().as_secs_f64().max(1e-3);
        let percent = if state.total == 0 {
            100.0
        } else {
            done as f64 * 100.0 / state.total as f64
        };
        eprint!(
            "\r{} {:>10} / {:<10} {:5.1}%  {:7.1} MB/s ",
            state.verb,
            human_bytes(done),
            human_bytes(state.total),
            percent,
            done as f64 / elapsed / 1e6
        );
    }

    fn finish(&self) {
        eprintln!();
    }
}
