//! Raw immutable-share throughput to one real tahoe-lafs 1.20 storage node: our GBS client against Tahoe's own
//! (`benches/gbs_python.py`, allmydata.storage.http_client), same share size, same chunking, same server, same
//! run. Starts a one-node grid with `mount-tests/grid.py` and stops it afterwards.
//!
//! `cargo bench --bench gbs`; `TAHOE_MOUNT_BENCH_QUICK=1` uses a small share.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tahoe_mount::storage::gbs::{GbsOptions, GbsServer};
use tahoe_mount::storage::nurl::Nurl;
use tahoe_mount::storage::{LeaseSecrets, StorageIndex, StorageServer};

const CHUNK: usize = 1_000_000;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    std::env::var_os("TAHOE_MOUNT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"))
}

fn grid(args: &[&str]) -> String {
    let out = Command::new(python())
        .arg(repo().join("mount-tests/grid.py"))
        .args(args)
        .output()
        .expect("run mount-tests/grid.py (make the venv with mount-tests/venv.sh)");
    assert!(
        out.status.success(),
        "grid.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn random(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    getrandom::fill(&mut out).expect("random");
    out
}

fn mb_per_s(bytes: usize, started: Instant) -> f64 {
    bytes as f64 / started.elapsed().as_secs_f64() / 1e6
}

/// Uploads `data` as share 0 of a fresh storage index in `CHUNK`-byte PATCHes, `parallel` at a time, then reads
/// it back in `CHUNK`-byte ranges, `parallel` at a time. Returns (upload MB/s, download MB/s).
async fn ours(server: Arc<GbsServer>, data: Bytes, parallel: usize) -> (f64, f64) {
    let si = StorageIndex(random(16).try_into().unwrap());
    let secret: Arc<[u8]> = random(20).into();
    let lease = LeaseSecrets {
        renew: random(32).try_into().unwrap(),
        cancel: random(32).try_into().unwrap(),
    };
    let started = Instant::now();
    let allocation = server
        .allocate_buckets(si, &[0].into(), data.len() as u64, lease, &secret)
        .await
        .expect("allocate");
    assert!(allocation.allocated.contains(&0));
    let offsets: Vec<usize> = (0..data.len()).step_by(CHUNK).collect();
    for group in offsets.chunks(parallel) {
        let writes = group.iter().map(|&offset| {
            let (server, secret, data) = (Arc::clone(&server), Arc::clone(&secret), data.clone());
            tokio::spawn(async move {
                let end = (offset + CHUNK).min(data.len());
                server
                    .write_share_chunk(si, 0, &secret, offset as u64, data.slice(offset..end))
                    .await
                    .expect("write")
            })
        });
        for w in writes.collect::<Vec<_>>() {
            w.await.expect("join");
        }
    }
    let upload = mb_per_s(data.len(), started);

    let started = Instant::now();
    let mut received = Vec::with_capacity(data.len());
    for group in offsets.chunks(parallel) {
        let reads: Vec<_> = group
            .iter()
            .map(|&offset| {
                let server = Arc::clone(&server);
                let length = CHUNK.min(data.len() - offset) as u64;
                tokio::spawn(async move {
                    server
                        .read_immutable_share(si, 0, offset as u64, length)
                        .await
                        .expect("read")
                })
            })
            .collect();
        for r in reads {
            received.extend_from_slice(&r.await.expect("join"));
        }
    }
    let download = mb_per_s(data.len(), started);
    assert!(received == data, "downloaded share differs from the upload");
    (upload, download)
}

fn main() {
    let quick =
        std::env::var_os("TAHOE_MOUNT_BENCH_QUICK").is_some_and(|v| !v.is_empty() && v != "0");
    let size: usize = if quick { 8 << 20 } else { 128 << 20 };
    let dir = repo().join("mount-tests/work/bench-gbs");
    let pid = std::process::id().to_string();
    let dir_text = dir.to_string_lossy().into_owned();
    grid(&["start", &dir_text, "1", "--parent-pid", &pid]);
    let grid_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("grid.json")).expect("grid.json"))
            .expect("JSON");
    let nurl_text = grid_json["servers"][0]["nurl"]
        .as_str()
        .expect("nurl")
        .to_owned();
    let nurl: Nurl = nurl_text.parse().expect("NURL");

    println!(
        "raw immutable share transfer to one local tahoe-lafs 1.20 node (127.0.0.1, TLS), {} MiB share, \
              {CHUNK}-byte requests; MB/s = 10^6 bytes of share per second{}",
        size >> 20,
        if quick {
            " (QUICK mode: not a measurement)"
        } else {
            ""
        }
    );
    println!(
        "{:<44} {:>12} {:>14}",
        "client", "upload MB/s", "download MB/s"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let data = Bytes::from(random(size));
    let server =
        Arc::new(GbsServer::new(&nurl, Some("bench"), GbsOptions::default()).expect("client"));
    for parallel in [1, 4] {
        let (up, down) = runtime.block_on(ours(Arc::clone(&server), data.clone(), parallel));
        let label = format!("tahoe-mount, {parallel} request(s) in flight");
        println!("{label:<44} {up:>12.1} {down:>14.1}");
    }
    let out = Command::new(python())
        .arg(repo().join("benches/gbs_python.py"))
        .args([&nurl_text, &size.to_string(), &CHUNK.to_string()])
        .output();
    match out {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let value = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
                    .unwrap_or_else(|| "?".into())
            };
            println!(
                "{:<44} {:>12} {:>14}",
                "tahoe-lafs 1.20 http_client, 1 in flight",
                value("upload"),
                value("download")
            );
        }
        Ok(out) => println!(
            "tahoe-lafs http_client: failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => println!("tahoe-lafs http_client: not measured: {e}"),
    }
    grid(&["stop", &dir_text]);
}
