//! The directory commands (`mkdir`, `ls`, `ln`, `mv`, `rm`) and the directory side of `put` and `get`: parse
//! `CAP[/name/…]` arguments, walk to the directory they name, and apply each change as one batch.

use std::path::Path;

use anyhow::{Context, bail};

use super::{ServerArgs, cap_argument, runtime};
use crate::cap::{Cap, FileCap, MutableFormat};
use crate::config::ConfigDir;
use crate::dirnode::{Change, Child, Directory, DirectoryNode, Entry, Replace, split_path};
use crate::grid::client::Grid;
use crate::mutable::{MutableOptions, MutableParams};

/// Options for operations that only read: no lease is taken, so no secret is needed (or made).
pub(super) fn read_options() -> MutableOptions {
    MutableOptions::new(Vec::new())
}

/// Options for writes: the client's lease secret from the config dir.
pub(super) fn write_options(config_dir: Option<&Path>) -> anyhow::Result<MutableOptions> {
    let config = ConfigDir::locate(config_dir)?;
    Ok(MutableOptions::new(config.lease_secret()?.bytes().to_vec()))
}

pub(super) fn connect(servers: &ServerArgs) -> anyhow::Result<Grid> {
    servers.connect()
}

/// A `CAP[/path]` argument, where CAP may be `-` (standard input) or `@FILE` ([`cap_argument`]).
pub(super) fn parse_target(arg: &str) -> anyhow::Result<(Cap, Vec<String>)> {
    let text = cap_argument(arg)?;
    split_path(&text).with_context(|| format!("{}: not CAP or CAP/path", redact(&text)))
}

/// An argument for error messages with any cap in it cut to its prefix, so writecaps stay out of logs.
pub(super) fn redact(arg: &str) -> String {
    match arg.split_once('/') {
        Some((cap, rest)) => format!("{}…/{rest}", cap_prefix(cap)),
        None => format!("{}…", cap_prefix(arg)),
    }
}

/// `URI:DIR2:abc…` → `URI:DIR2:`; anything else → nothing.
fn cap_prefix(cap: &str) -> &str {
    cap.strip_prefix("URI:")
        .and_then(|rest| rest.find(':'))
        .map_or("", |kind_len| &cap[..4 + kind_len + 1])
}

/// The parent directory of a `DIRCAP/…/name` argument, and the name.
async fn parent_of(
    grid: &Grid,
    arg: &str,
    options: &MutableOptions,
) -> anyhow::Result<(DirectoryNode, String)> {
    let (cap, mut path) = parse_target(arg)?;
    let Some(name) = path.pop() else {
        bail!("{}: give a path below the directory cap", redact(arg));
    };
    let root = DirectoryNode::open(grid.clone(), cap, options.clone())?;
    let parent = root.descend(&path).await?;
    Ok((parent, name))
}

/// The entry an argument names: a bare cap is an entry with empty metadata.
pub(super) async fn entry_of(
    grid: &Grid,
    arg: &str,
    options: &MutableOptions,
) -> anyhow::Result<Entry> {
    let (cap, path) = parse_target(arg)?;
    if path.is_empty() {
        return Ok(Entry {
            child: Child::from_cap(&cap)?,
            metadata: Default::default(),
        });
    }
    let root = DirectoryNode::open(grid.clone(), cap, options.clone())?;
    Ok(root.resolve(&path).await?)
}

/// Links `child` at `dest` (`DIRCAP/…/name`), replacing what is there.
pub(super) async fn link(
    grid: &Grid,
    dest: &str,
    child: Child,
    options: &MutableOptions,
) -> anyhow::Result<()> {
    let (parent, name) = parent_of(grid, dest, options).await?;
    parent
        .modify(&[Change::Link {
            name,
            child,
            metadata: None,
            replace: Replace::Always,
        }])
        .await
        .with_context(|| format!("cannot link {}", redact(dest)))?;
    Ok(())
}

pub(super) fn mkdir(
    servers: &ServerArgs,
    config_dir: Option<&Path>,
    target: Option<&str>,
    format: MutableFormat,
) -> anyhow::Result<()> {
    let grid = connect(servers)?;
    let options = write_options(config_dir)?;
    runtime()?.block_on(async {
        let node = DirectoryNode::create(
            grid.clone(),
            &Directory::new(),
            MutableParams::default_for(format),
            options.clone(),
        )
        .await
        .context("cannot create the directory")?;
        if let Some(target) = target {
            link(&grid, target, Child::from_cap(node.cap())?, &options).await?;
        }
        println!("{}", node.cap());
        Ok(())
    })
}

pub(super) fn ls(
    servers: &ServerArgs,
    target: &str,
    long: bool,
    show_caps: bool,
) -> anyhow::Result<()> {
    let grid = connect(servers)?;
    let (cap, path) = parse_target(target)?;
    runtime()?.block_on(async {
        let root = DirectoryNode::open(grid.clone(), cap, read_options())?;
        let node = root
            .descend(&path)
            .await
            .with_context(|| format!("cannot list {}", redact(target)))?;
        let listing = node.list().await.context("cannot read the directory")?;
        for skipped in &listing.skipped {
            eprintln!(
                "tahoe-mount: left out {:?}: {}",
                skipped.name, skipped.reason
            );
        }
        for (name, entry) in listing.directory.iter() {
            let mut line = String::new();
            if long {
                line.push_str(&format!(
                    "{} {:>12} {:>17}  ",
                    kind_column(&entry.child),
                    size_column(&entry.child),
                    time_column(entry)
                ));
            }
            line.push_str(name);
            if show_caps {
                let cap = entry
                    .child
                    .read_uri()
                    .or_else(|| entry.child.write_uri())
                    .map(|c| String::from_utf8_lossy(&c).into_owned())
                    .unwrap_or_default();
                line.push_str(&format!("  {cap}"));
            }
            println!("{line}");
        }
        Ok(())
    })
}

/// `drwx` for a writeable directory, `dr-x` read-only, `-rw-` mutable file, `-r--` immutable, `?` unknown.
fn kind_column(child: &Child) -> &'static str {
    match child.cap() {
        Some(cap @ Cap::Directory(_)) if cap.is_readonly() => "dr-x",
        Some(Cap::Directory(_)) => "drwx",
        Some(cap) if cap.is_mutable() && !cap.is_readonly() => "-rw-",
        Some(_) => "-r--",
        None => "?---",
    }
}

fn size_column(child: &Child) -> String {
    match child.cap() {
        Some(Cap::File(file)) => file
            .size()
            .map(|s| s.to_string())
            .unwrap_or_else(|| "?".into()),
        _ => "-".into(),
    }
}

fn time_column(entry: &Entry) -> String {
    let time = entry
        .metadata
        .mtime()
        .or_else(|| entry.metadata.link_modification_time());
    match time {
        Some(t) if t.is_finite() && t >= 0.0 => {
            let secs = t as i64;
            let (days, rem) = (secs / 86_400, secs % 86_400);
            let (y, m, d) = civil_from_days(days);
            format!(
                "{y:04}-{m:02}-{d:02} {:02}:{:02}",
                rem / 3600,
                rem % 3600 / 60
            )
        }
        _ => "-".into(),
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

pub(super) fn ln(
    servers: &ServerArgs,
    config_dir: Option<&Path>,
    source: &str,
    dest: &str,
) -> anyhow::Result<()> {
    let grid = connect(servers)?;
    let options = write_options(config_dir)?;
    runtime()?.block_on(async {
        let entry = entry_of(&grid, source, &options)
            .await
            .with_context(|| format!("cannot find {}", redact(source)))?;
        link(&grid, dest, entry.child, &options).await
    })
}

pub(super) fn mv(
    servers: &ServerArgs,
    config_dir: Option<&Path>,
    source: &str,
    dest: &str,
) -> anyhow::Result<()> {
    let grid = connect(servers)?;
    let options = write_options(config_dir)?;
    runtime()?.block_on(async {
        let (from_dir, from_name) = parent_of(&grid, source, &options).await?;
        let (to_dir, to_name) = parent_of(&grid, dest, &options).await?;
        if from_dir.cap() == to_dir.cap() {
            // Within one directory: one publish, so the entry is never missing nor doubled.
            from_dir
                .modify(&[Change::Rename {
                    from: from_name,
                    to: to_name,
                    replace: Replace::Always,
                }])
                .await
                .with_context(|| format!("cannot move {}", redact(source)))?;
            return Ok(());
        }
        // Across directories: link first, then unlink, so a failure between leaves two names, never none.
        let listing = from_dir.list().await?;
        let entry = listing
            .directory
            .get(&from_name)
            .cloned()
            .with_context(|| format!("no such child: {}", redact(source)))?;
        to_dir
            .modify(&[Change::Link {
                name: to_name,
                child: entry.child,
                metadata: Some(entry.metadata),
                replace: Replace::Always,
            }])
            .await
            .with_context(|| format!("cannot link {}", redact(dest)))?;
        from_dir
            .modify(&[Change::Unlink { name: from_name }])
            .await
            .with_context(|| {
                format!(
                    "linked {} but cannot unlink {}",
                    redact(dest),
                    redact(source)
                )
            })?;
        Ok(())
    })
}

pub(super) fn rm(
    servers: &ServerArgs,
    config_dir: Option<&Path>,
    target: &str,
) -> anyhow::Result<()> {
    let grid = connect(servers)?;
    let options = write_options(config_dir)?;
    runtime()?.block_on(async {
        let (parent, name) = parent_of(&grid, target, &options).await?;
        parent
            .modify(&[Change::Unlink { name }])
            .await
            .with_context(|| format!("cannot remove {}", redact(target)))?;
        Ok(())
    })
}

/// The file cap an argument names, directly or through a directory path.
pub(super) fn resolve_file_cap(grid: &Grid, arg: &str) -> anyhow::Result<FileCap> {
    let entry = runtime()?
        .block_on(entry_of(grid, arg, &read_options()))
        .with_context(|| format!("cannot find {}", redact(arg)))?;
    match entry.child.cap() {
        Some(Cap::File(file)) => Ok(file.clone()),
        Some(Cap::Directory(_)) => bail!("{} is a directory, not a file", redact(arg)),
        _ => bail!("{} is not a cap kind this version knows", redact(arg)),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redaction_keeps_the_kind_and_path_but_no_key() {
        assert_eq!(redact("URI:DIR2:abcd:efgh/docs/x"), "URI:DIR2:…/docs/x");
        assert_eq!(redact("URI:DIR2-MDMF-RO:abcd:efgh"), "URI:DIR2-MDMF-RO:…");
        assert_eq!(redact("not a cap"), "…");
    }
}
