//! The command line: clap definitions and thin handlers that parse, call the library and print.
//!
//! Only commands that work are listed; each later layer (storage, files, directories, the grid service directory,
//! the mount) adds its own.

use crate::cap::{Cap, FileCap, MutableAccess};
use crate::crypto::base32;
use crate::erasure::Kernel;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Mount a Tahoe-LAFS grid, found through its grid service directory instead of an introducer.
#[derive(Parser, Debug)]
#[command(name = "tahoe-mount", version, about)]
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
    /// List the erasure-coding kernels this CPU runs and the one in use (set TAHOE_MOUNT_EC_KERNEL to choose).
    Kernels,
}

/// Parses the command line and runs the chosen command.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Cap { cap } => describe_cap(&cap),
        Command::Kernels => list_kernels(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tahoe-mount: {e:#}");
            ExitCode::FAILURE
        }
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

fn describe_cap(arg: &str) -> anyhow::Result<()> {
    let text = if arg == "-" {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim().to_owned()
    } else {
        arg.trim().to_owned()
    };
    let cap = Cap::parse(&text)?;
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
