//! Directories and mutable files, ours beside Tahoe-LAFS 1.20 on the same local grid of ten real storage nodes, in
//! one run: create a directory; add entries one by one and as one batch; list a directory of 10 000 entries; read a
//! 10 MiB MDMF file and change 100 bytes in its middle. Ours runs through the library (one process, as a mount
//! would); Tahoe's through its client node's web API (its CLI adds a Python start of about a second per command).
//!
//! `cargo bench --bench directories`; `TAHOE_MOUNT_BENCH_QUICK=1` uses small counts (not a measurement). Wall time
//! only: figures are printed, never asserted.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::grid::LocalGrid;
use common::tahoe::TahoeClient;
use tahoe_mount::cap::{Cap, FileCap, MutableFormat};
use tahoe_mount::dirnode::{Change, Child, Directory, DirectoryNode, Replace};
use tahoe_mount::grid::client::Grid;
use tahoe_mount::mutable::{MutableError, MutableFile, MutableOptions, MutableParams};

fn web(client: &TahoeClient, method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let (status, reply) = client.web(method, path, body);
    assert!(
        status == 200 || status == 201,
        "{method} {path}: HTTP {status}: {}",
        String::from_utf8_lossy(&reply)
    );
    reply
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let out = f();
    (out, started.elapsed())
}

fn row(what: &str, ours: Duration, theirs: Duration) {
    let (o, t) = (ours.as_secs_f64(), theirs.as_secs_f64());
    println!(
        "{what:<44} {:>10.3} s {:>10.3} s {:>8.1}x",
        o,
        t,
        t / o.max(1e-9)
    );
}

fn main() {
    let quick =
        std::env::var_os("TAHOE_MOUNT_BENCH_QUICK").is_some_and(|v| !v.is_empty() && v != "0");
    let (one_by_one, batch, big_listing, mdmf_size) = if quick {
        (20, 100, 500, 1 << 20)
    } else {
        (1000, 1000, 10_000, 10 << 20)
    };
    let grid = LocalGrid::start(10);
    let tahoe = TahoeClient::start(&grid, 3, 7, 10);
    let yaml = std::fs::read_to_string(grid.servers_yaml()).unwrap();
    let ours_grid = Grid::connect(
        tahoe_mount::grid::parse_servers_yaml(&yaml).unwrap(),
        &Default::default(),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let options = MutableOptions::new(vec![5; 32]);
    let params = MutableParams::default_for(MutableFormat::Sdmf);
    let file_cap = String::from_utf8(web(
        &tahoe,
        "PUT",
        "uri",
        b"a small immutable file, linked many times",
    ))
    .unwrap();
    let child = Child::from_cap(&Cap::parse(&file_cap).unwrap()).unwrap();

    let new_directory = || {
        rt.block_on(DirectoryNode::create(
            ours_grid.clone(),
            &Directory::new(),
            params,
            options.clone(),
        ))
        .unwrap()
    };
    println!(
        "directories and mutable files, 10 local tahoe-lafs 1.20 storage nodes, 3-of-10{}",
        if quick {
            " (QUICK mode: not a measurement)"
        } else {
            ""
        }
    );
    println!(
        "{:<44} {:>12} {:>12} {:>9}",
        "operation", "tahoe-mount", "tahoe", "speedup"
    );

    // Create a directory (with its RSA key), average of 5.
    let (_, ours) = timed(|| {
        for _ in 0..5 {
            new_directory();
        }
    });
    let (_, theirs) = timed(|| {
        for _ in 0..5 {
            web(&tahoe, "POST", "uri?t=mkdir", b"");
        }
    });
    row("create a directory (mean of 5)", ours / 5, theirs / 5);

    // Add entries one by one.
    let ours_dir = new_directory();
    let tahoe_dir = String::from_utf8(web(&tahoe, "POST", "uri?t=mkdir", b"")).unwrap();
    let (_, ours) = timed(|| {
        for i in 0..one_by_one {
            rt.block_on(ours_dir.modify(&[Change::Link {
                name: format!("entry-{i}"),
                child: child.clone(),
                metadata: None,
                replace: Replace::Always,
            }]))
            .unwrap();
        }
    });
    let (_, theirs) = timed(|| {
        for i in 0..one_by_one {
            web(
                &tahoe,
                "PUT",
                &format!("uri/{tahoe_dir}/entry-{i}?t=uri"),
                file_cap.as_bytes(),
            );
        }
    });
    row(
        &format!("add {one_by_one} entries one by one"),
        ours,
        theirs,
    );

    // Add entries as one batch.
    let changes = |n: usize| -> Vec<Change> {
        (0..n)
            .map(|i| Change::Link {
                name: format!("batch-{i}"),
                child: child.clone(),
                metadata: None,
                replace: Replace::Always,
            })
            .collect()
    };
    let set_children = |n: usize| -> Vec<u8> {
        let children: serde_json::Map<String, serde_json::Value> = (0..n)
            .map(|i| {
                (
                    format!("batch-{i}"),
                    serde_json::json!(["filenode", {"ro_uri": file_cap}]),
                )
            })
            .collect();
        serde_json::to_vec(&children).unwrap()
    };
    let ours_dir = new_directory();
    let tahoe_dir = String::from_utf8(web(&tahoe, "POST", "uri?t=mkdir", b"")).unwrap();
    let batch_changes = changes(batch);
    let (_, ours) = timed(|| rt.block_on(ours_dir.modify(&batch_changes)).unwrap());
    let body = set_children(batch);
    let (_, theirs) = timed(|| {
        web(
            &tahoe,
            "POST",
            &format!("uri/{tahoe_dir}?t=set_children"),
            &body,
        )
    });
    row(&format!("add {batch} entries as one batch"), ours, theirs);

    // List a big directory: the same one, made by one batch.
    let big_changes = changes(big_listing);
    let big = new_directory();
    rt.block_on(big.modify(&big_changes)).unwrap();
    let big_cap = big.cap().to_string();
    let (listing, ours) = timed(|| rt.block_on(big.list()).unwrap());
    assert_eq!(listing.directory.len(), big_listing);
    let (json, theirs) = timed(|| web(&tahoe, "GET", &format!("uri/{big_cap}?t=json"), b""));
    let parsed: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(
        parsed[1]["children"].as_object().unwrap().len(),
        big_listing
    );
    row(
        &format!("list a directory of {big_listing} entries"),
        ours,
        theirs,
    );

    // A 10 MiB MDMF file made by Tahoe: read it, then change 100 bytes in its middle.
    let contents: Vec<u8> = (0..mdmf_size).map(|i| (i * 7 % 251) as u8).collect();
    let mdmf_cap = String::from_utf8(web(&tahoe, "PUT", "uri?format=MDMF", &contents)).unwrap();
    let mutable = match Cap::parse(mdmf_cap.trim()).unwrap() {
        Cap::File(FileCap::Mutable(cap)) => cap,
        other => panic!("not a mutable cap: {other:?}"),
    };
    let file = MutableFile::open(ours_grid.clone(), mutable, options.clone());
    let (version, ours) = timed(|| rt.block_on(file.read()).unwrap());
    assert!(version.contents == contents);
    let (_, theirs) = timed(|| web(&tahoe, "GET", &format!("uri/{}", mdmf_cap.trim()), b""));
    row(
        &format!("read a {} MiB MDMF file", mdmf_size >> 20),
        ours,
        theirs,
    );
    let middle = mdmf_size / 2;
    let patch = [0xabu8; 100];
    let (_, ours) = timed(|| {
        rt.block_on(file.modify(
            |old| {
                let mut new = old.to_vec();
                new[middle..middle + patch.len()].copy_from_slice(&patch);
                Ok::<_, MutableError>(Some(new))
            },
            None,
        ))
        .unwrap()
    });
    let (_, theirs) = timed(|| {
        web(
            &tahoe,
            "PUT",
            &format!("uri/{}?offset={middle}", mdmf_cap.trim()),
            &patch,
        )
    });
    row(
        &format!("change 100 bytes mid-file ({} MiB MDMF)", mdmf_size >> 20),
        ours,
        theirs,
    );
    let after = rt.block_on(file.read()).unwrap().contents;
    assert_eq!(&after[middle..middle + 100], &patch[..]);
    println!(
        "(ours republishes the whole MDMF file on a change; Tahoe rewrites only the segments touched)"
    );
}
