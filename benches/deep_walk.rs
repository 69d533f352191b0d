//! The memory a deep check needs on a big tree: trees of 10 000 and 100 000 small CHK files (1 000 per directory)
//! on an in-memory grid of three servers (2-of-3), walked by `deep_check` with `--add-lease` as the CLI and the
//! mount's maintainer walk them. Prints, for each tree, the walk's wall time and the growth of the process's peak
//! RSS during the walk above the RSS before it (the grid's shares, which live in this process, are not counted:
//! the peak is reset through `/proc/self/clear_refs` after the tree is built), and the growth per object.
//!
//! Tahoe's client is not beside it here: at its measured pace (`benches/check.py`, about 35 objects a second) a
//! 100 000-object walk takes most of an hour. `benches/check.py` gives both clients' peak RSS on 1 000 files.
//!
//! `cargo bench --bench deep_walk`; `TAHOE_MOUNT_BENCH_QUICK=1` walks 2 000 and 10 000 objects instead.
//! Figures are printed, never asserted.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Instant;

use common::memory::{grid_of, servers};
use tahoe_mount::cap::{Cap, MutableFormat};
use tahoe_mount::check::CheckOptions;
use tahoe_mount::check::deep::{Walk, deep_check};
use tahoe_mount::config::Secret;
use tahoe_mount::dirnode::{Child, Directory, DirectoryNode, Entry, Metadata};
use tahoe_mount::grid::client::Grid;
use tahoe_mount::immutable::params::EncodingParams;
use tahoe_mount::immutable::upload::{UploadOptions, upload_file};
use tahoe_mount::mutable::{MutableOptions, MutableParams};

const PER_DIRECTORY: usize = 1000;
const LEASE_SECRET: [u8; 32] = [9; 32];

/// `VmRSS` or `VmHWM` of this process, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Sets the peak RSS back to the current RSS (Linux 4.0 and later); false where the kernel refuses.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn upload_options() -> UploadOptions {
    let mut options = UploadOptions::new(
        Secret::new(b"deep-walk".to_vec()),
        Secret::new(LEASE_SECRET.to_vec()),
    );
    options.params = EncodingParams {
        needed: 2,
        happy: 2,
        total: 3,
        ..EncodingParams::default()
    };
    options
}

/// A root holding `files / PER_DIRECTORY` directories of `PER_DIRECTORY` distinct small CHK files each.
async fn build_tree(grid: &Grid, files: usize) -> Cap {
    let params = MutableParams {
        needed: 2,
        happy: 2,
        total: 3,
        ..MutableParams::default_for(MutableFormat::Sdmf)
    };
    let options = MutableOptions::new(LEASE_SECRET.to_vec());
    let upload = Arc::new(upload_options());
    let mut root = Directory::new();
    for d in 0..files.div_ceil(PER_DIRECTORY) {
        let mut uploads = tokio::task::JoinSet::new();
        for f in 0..PER_DIRECTORY.min(files - d * PER_DIRECTORY) {
            let (grid, upload) = (grid.clone(), upload.clone());
            // 64 bytes: past the 55 a literal cap holds, so each file is a CHK with shares to count.
            let bytes = format!(
                "directory {d:05} file {f:05} {:0>40}",
                d * PER_DIRECTORY + f
            );
            uploads.spawn(async move {
                let file = common::temp_file(bytes.as_bytes());
                (f, upload_file(&grid, file, &upload).await.expect("upload"))
            });
        }
        let mut directory = Directory::new();
        while let Some(done) = uploads.join_next().await {
            let (f, uploaded) = done.expect("upload task");
            let child = Child::from_cap(&Cap::File(uploaded.cap)).expect("child");
            directory
                .insert(&format!("file{f:05}"), entry(child))
                .expect("name");
        }
        let node = DirectoryNode::create(grid.clone(), &directory, params, options.clone())
            .await
            .expect("directory");
        let child = Child::from_cap(node.cap()).expect("child");
        root.insert(&format!("dir{d:04}"), entry(child))
            .expect("name");
    }
    let node = DirectoryNode::create(grid.clone(), &root, params, options)
        .await
        .expect("root");
    node.cap().clone()
}

fn entry(child: Child) -> Entry {
    Entry {
        child,
        metadata: Metadata::new(),
    }
}

fn main() {
    let quick =
        std::env::var_os("TAHOE_MOUNT_BENCH_QUICK").is_some_and(|v| !v.is_empty() && v != "0");
    let sizes: &[usize] = if quick {
        &[2_000, 10_000]
    } else {
        &[10_000, 100_000]
    };
    let rt = common::runtime();
    println!(
        "{:<26} {:>10} {:>12} {:>14} {:>14}",
        "deep-check --add-lease", "objects", "wall (s)", "RSS growth", "per object"
    );
    for &files in sizes {
        let servers = servers(3);
        let grid = grid_of(&servers);
        let started = Instant::now();
        let root = rt.block_on(build_tree(&grid, files));
        eprintln!(
            "built a tree of {files} files in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let mut options = CheckOptions::new(Secret::new(LEASE_SECRET.to_vec()));
        options.add_lease = true;
        let reset = reset_peak();
        let before = status_kib("VmRSS");
        let started = Instant::now();
        let summary = rt.block_on(deep_check(
            &grid,
            root,
            &options,
            &Walk::with_concurrency(8),
            |_, _| {},
        ));
        let wall = started.elapsed().as_secs_f64();
        let growth = status_kib("VmHWM").saturating_sub(before);
        assert!(
            summary.all_healthy() && summary.objects == files + files.div_ceil(PER_DIRECTORY) + 1,
            "the walk must see every object healthy: {summary:?}"
        );
        println!(
            "{:<26} {:>10} {:>12.2} {:>10} KiB {:>10} B{}",
            "tahoe-mount (in memory)",
            summary.objects,
            wall,
            growth,
            growth * 1024 / summary.objects as u64,
            if reset {
                ""
            } else {
                "  (peak not reset: includes the build)"
            }
        );
        drop(grid);
        drop(servers);
    }
}
