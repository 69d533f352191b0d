//! Shared helpers for integration tests: finding the Python interpreter of the project's venv, which has
//! tahoe-lafs 1.20.0 and zfec installed (made by `mount-tests/venv.sh`); a real local storage grid (`grid`); and
//! the storage server contract suite (`storage_contract`).

#![allow(dead_code)]

pub mod fs_world;
pub mod grid;
pub mod hostile;
pub mod memory;
pub mod storage_contract;
pub mod tahoe;

use std::path::PathBuf;
use std::process::Command;

/// This run's seed for randomized tests: `TAHOE_MOUNT_TEST_SEED` if set (to replay a failure), else random. It is
/// printed, named after the test, so that a failure can be replayed.
pub fn test_seed(test: &str) -> u64 {
    let seed = match std::env::var_os("TAHOE_MOUNT_TEST_SEED") {
        Some(s) => s
            .to_string_lossy()
            .parse()
            .expect("TAHOE_MOUNT_TEST_SEED is a u64"),
        None => {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).expect("random");
            u64::from_le_bytes(b)
        }
    };
    eprintln!("{test} seed: TAHOE_MOUNT_TEST_SEED={seed}");
    seed
}

/// The Python interpreter that has tahoe-lafs 1.20.0 and zfec. `TAHOE_MOUNT_PYTHON` wins; otherwise the repo's
/// `.venv`. A missing interpreter is a test failure with instructions, never a silent skip.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("TAHOE_MOUNT_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python venv with tahoe-lafs and zfec at {}: run `mount-tests/venv.sh` (or set TAHOE_MOUNT_PYTHON)",
        venv.display()
    );
    venv
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `python script args…` with `stdin`, returning stdout; panics with stderr on failure.
pub fn run_python(script: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new(python())
        .arg(repo_root().join(script))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start python");
    let mut stdin_pipe = child.stdin.take().expect("stdin");
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || stdin_pipe.write_all(&input));
    let out = child.wait_with_output().expect("python output");
    writer
        .join()
        .expect("join writer")
        .expect("write to python");
    assert!(
        out.status.success(),
        "python {script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// An unnamed file holding `data` (made in the temp dir and unlinked at once), to upload from.
pub fn temp_file(data: &[u8]) -> std::sync::Arc<std::fs::File> {
    use std::io::Write;
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).expect("random");
    let path = std::env::temp_dir().join(format!(
        "tahoe-mount-test-{}-{:x}",
        std::process::id(),
        u64::from_le_bytes(random)
    ));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .expect("create a temp file");
    std::fs::remove_file(&path).expect("unlink the temp file");
    file.write_all(data).expect("write the temp file");
    std::sync::Arc::new(file)
}

/// A directory change that links `cap` as `name`, replacing what is there.
pub fn link(name: &str, cap: &tahoe_mount::cap::Cap) -> tahoe_mount::dirnode::Change {
    tahoe_mount::dirnode::Change::Link {
        name: name.into(),
        child: tahoe_mount::dirnode::Child::from_cap(cap).unwrap(),
        metadata: None,
        replace: tahoe_mount::dirnode::Replace::Always,
    }
}

/// SDMF encoding parameters k-of-N with happiness `happy`.
pub fn sdmf_params(needed: u8, happy: u8, total: u8) -> tahoe_mount::mutable::MutableParams {
    tahoe_mount::mutable::MutableParams {
        needed,
        happy,
        total,
        ..tahoe_mount::mutable::MutableParams::default_for(tahoe_mount::cap::MutableFormat::Sdmf)
    }
}

/// A tokio runtime for a test: two worker threads, like the machine CI runs on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
