//! The other side of interop tests on a `LocalGrid`: a Tahoe-LAFS 1.20 client node (`TahoeClient`), tahoe-mount's
//! command line as a user runs it (`TahoeMount`), and what the storage nodes keep on disk: share files, uploads in
//! progress, corruption advisories, and a way to corrupt a share's block data in place.
//!
//! On-disk layout of a 1.20 storage node (allmydata/storage/server.py, common.py, immutable.py):
//! * share `N` of storage index `SI` (base32, 26 chars) is the file `<basedir>/storage/shares/<SI[..2]>/<SI>/<N>`;
//! * an upload in progress is `<basedir>/storage/shares/incoming/<SI[..2]>/<SI>/<N>`, moved into place when the
//!   bucket is closed. Allocating creates the final `<SI>` directory at once, and an aborted upload leaves it
//!   (and the incoming prefix directory) behind, empty: only *files* mean shares;
//! * an immutable share file is a 12-byte container header (version, a size field no one reads, lease count, all
//!   4-byte big-endian), the share data (allmydata/immutable/layout.py), then 72 bytes per lease;
//! * `advise_corrupt_share` on a share the server holds writes
//!   `<basedir>/storage/corruption-advisories/<ISO time without colons>--<SI>-<N>`.

use super::grid::{GridServer, LocalGrid, grid_ok};
use super::python;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tahoe_mount::cap::Cap;
use tahoe_mount::crypto::base32;

// ---------------------------------------------------------------------------------------------------------------
// A Tahoe-LAFS client node

/// A Tahoe-LAFS 1.20 client node `<grid>/client` using the grid's `servers.yaml` (no introducer), started by
/// `grid.py client`, and stopped with the grid. One per grid.
pub struct TahoeClient {
    dir: PathBuf,
    /// The web API, `http://127.0.0.1:PORT/`.
    url: String,
    pub needed: u16,
    pub happy: u16,
    pub total: u16,
}

impl TahoeClient {
    /// Creates (or reconfigures) and starts the client node with k-of-N encoding and happiness `happy`; returns
    /// when it reports every storage server connected.
    pub fn start(grid: &LocalGrid, needed: u16, happy: u16, total: u16) -> TahoeClient {
        let dir = grid.dir().to_string_lossy().into_owned();
        let (k, h, n) = (needed.to_string(), happy.to_string(), total.to_string());
        grid_ok(&["client", &dir, "--needed", &k, "--happy", &h, "--total", &n]);
        let dir = grid.dir().join("client");
        let url_file = dir.join("node.url");
        let url = std::fs::read_to_string(&url_file)
            .unwrap_or_else(|e| panic!("read {}: {e}", url_file.display()))
            .trim()
            .to_owned();
        assert!(
            url.starts_with("http://127.0.0.1:") && url.ends_with('/'),
            "unexpected node.url {url:?}"
        );
        TahoeClient {
            dir,
            url,
            needed,
            happy,
            total,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The node's convergence secret (base32 text), which `tahoe put` uses for every immutable upload.
    pub fn convergence_path(&self) -> PathBuf {
        self.dir.join("private/convergence")
    }

    /// Uploads `data` as an immutable file (CHK, or LIT up to 55 bytes) and returns its cap. This is what
    /// `tahoe put -` does (scripts/tahoe_put.py: `PUT /uri`), without a second Python process per call.
    pub fn put(&self, data: &[u8]) -> String {
        let (status, body) = http(&self.url, "PUT", "uri", data);
        let text = String::from_utf8_lossy(&body).into_owned();
        assert!(
            status == 200 || status == 201,
            "Tahoe PUT /uri of {} bytes: HTTP {status}: {text}",
            data.len()
        );
        let cap = text.trim().to_owned();
        assert!(cap.starts_with("URI:"), "Tahoe PUT /uri answered {text:?}");
        cap
    }

    /// Downloads a file by its cap (`tahoe get CAP`: `GET /uri/CAP`).
    pub fn get(&self, cap: &str) -> Vec<u8> {
        let (status, body) = http(&self.url, "GET", &format!("uri/{cap}"), b"");
        assert!(
            status == 200,
            "Tahoe GET {cap}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
        body
    }

    /// What `tahoe check --verify --raw CAP` prints (`POST /uri/CAP?t=check&output=JSON&verify=true`): every
    /// share is downloaded and checked against the hashes of the cap.
    pub fn check_verify(&self, cap: &str) -> Value {
        let (status, body) = http(
            &self.url,
            "POST",
            &format!("uri/{cap}?t=check&output=JSON&verify=true"),
            b"",
        );
        assert!(
            status == 200,
            "Tahoe check --verify {cap}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "check --verify {cap}: not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        })
    }

    /// Waits (up to a minute) until the node reports every storage server connected again, e.g. after a test
    /// restarted some; Tahoe reconnects with backoff.
    pub fn wait_connected(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let (status, body) = http(&self.url, "GET", "?t=json", b"");
            let connected = (status == 200)
                .then(|| serde_json::from_slice::<Value>(&body).ok())
                .flatten()
                .and_then(|v| v["servers"].as_array().cloned())
                .map(|servers| {
                    servers
                        .iter()
                        .filter(|s| s["connection_status"] == "connected")
                        .count()
                })
                .unwrap_or(0);
            if connected >= usize::from(self.total) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "Tahoe client: {connected} of {} servers connected after a minute",
                self.total
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// Any web API request: `(status, body)`.
    pub fn web(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        http(&self.url, method, path, body)
    }

    /// Runs the `tahoe` CLI itself against this node: `tahoe -d <node> args…`.
    pub fn tahoe(&self, args: &[&str], stdin: &[u8]) -> Output {
        let tahoe = python().with_file_name("tahoe");
        let mut cmd = if tahoe.exists() {
            Command::new(tahoe)
        } else {
            let mut c = Command::new(python());
            c.args(["-m", "allmydata"]);
            c
        };
        cmd.arg("-d").arg(&self.dir).args(args);
        run_with_stdin(cmd, stdin)
    }
}

/// One HTTP/1.0 request to a local web API (so the answer is never chunked and ends when the connection does);
/// returns the status and the body.
fn http(base: &str, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let hostport = base
        .strip_prefix("http://")
        .and_then(|r| r.strip_suffix('/'))
        .unwrap_or_else(|| panic!("not a base URL: {base}"));
    let mut s = TcpStream::connect(hostport).unwrap_or_else(|e| panic!("connect {base}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(600)))
        .expect("timeout");
    let head = format!(
        "{method} /{path} HTTP/1.0\r\nHost: {hostport}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
        .unwrap_or_else(|e| panic!("{method} {base}{path}: send: {e}"));
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)
        .unwrap_or_else(|e| panic!("{method} {base}{path}: receive: {e}"));
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {base}{path}: no end of headers in the reply"));
    let headers = String::from_utf8_lossy(&reply[..split]).into_owned();
    let body = reply[split + 4..].to_vec();
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("{method} {base}{path}: bad status line in {headers:?}"));
    for line in headers.lines() {
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            let want: usize = v.trim().parse().expect("Content-Length");
            assert_eq!(
                body.len(),
                want,
                "{method} {base}{path}: body shorter than its Content-Length"
            );
        }
    }
    (status, body)
}

pub fn run_with_stdin(mut cmd: Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let mut pipe = child.stdin.take().expect("stdin");
    let input = stdin.to_vec();
    // A writer thread: the child may answer (or fail) before reading all of its input.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for child");
    writer.join().expect("stdin writer");
    out
}

// ---------------------------------------------------------------------------------------------------------------
// tahoe-mount's command line

/// A directory removed on drop (kept if the test fails, for reading).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tahoe-mount-{what}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept for reading: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The `tahoe-mount` binary with `--servers-file <grid>/servers.yaml` and its own fresh `--config-dir`.
pub struct TahoeMount {
    servers_file: PathBuf,
    config: TempDir,
}

impl TahoeMount {
    pub fn new(grid: &LocalGrid) -> TahoeMount {
        TahoeMount {
            servers_file: grid.servers_yaml(),
            config: TempDir::new("config"),
        }
    }

    pub fn config_dir(&self) -> &Path {
        self.config.path()
    }

    /// `tahoe-mount <command> --servers-file … [--config-dir …] args…` with `stdin`; any outcome. Commands that
    /// write get the config dir (its convergence and lease secrets); readers need none.
    pub fn run(&self, command: &str, args: &[&str], stdin: &[u8]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tahoe-mount"));
        cmd.arg(command)
            .arg("--servers-file")
            .arg(&self.servers_file);
        if [
            "put",
            "mkdir",
            "ln",
            "mv",
            "rm",
            "check",
            "deep-check",
            "maintain",
        ]
        .contains(&command)
        {
            cmd.arg("--config-dir").arg(self.config.path());
        }
        cmd.args(args);
        run_with_stdin(cmd, stdin)
    }

    /// `tahoe-mount <command> args…`; asserts success and returns stdout as text.
    pub fn ok(&self, command: &str, args: &[&str]) -> String {
        let out = self.run(command, args, b"");
        assert_success(&out, &format!("tahoe-mount {command}"));
        String::from_utf8(out.stdout).expect("tahoe-mount prints UTF-8")
    }

    /// `tahoe-mount put args… -` with `data` on stdin; asserts success and that stdout is the cap and a newline.
    pub fn put(&self, data: &[u8], args: &[&str]) -> String {
        let mut all = args.to_vec();
        all.push("-");
        let out = self.run("put", &all, data);
        cap_from_put(&out, &format!("put of {} bytes from stdin", data.len()))
    }

    /// `tahoe-mount put args… FILE`.
    pub fn put_file(&self, file: &Path, args: &[&str]) -> String {
        let mut all = args.to_vec();
        let f = file.to_string_lossy().into_owned();
        all.push(&f);
        let out = self.run("put", &all, b"");
        cap_from_put(&out, &format!("put of {f}"))
    }

    /// `tahoe-mount get CAP` (to stdout); asserts success.
    pub fn get(&self, cap: &str) -> Vec<u8> {
        let out = self.run("get", &[cap], b"");
        assert_success(&out, &format!("tahoe-mount get {cap}"));
        out.stdout
    }

    /// `tahoe-mount get CAP FILE`; asserts success and that nothing went to stdout.
    pub fn get_to_file(&self, cap: &str, file: &Path) -> Vec<u8> {
        let out = self.run("get", &[cap, &file.to_string_lossy()], b"");
        assert_success(&out, &format!("tahoe-mount get {cap} {}", file.display()));
        assert!(
            out.stdout.is_empty(),
            "get to a file printed {} bytes on stdout",
            out.stdout.len()
        );
        std::fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()))
    }
}

pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn cap_from_put(out: &Output, what: &str) -> String {
    assert_success(out, &format!("tahoe-mount {what}"));
    let text = String::from_utf8(out.stdout.clone())
        .unwrap_or_else(|_| panic!("tahoe-mount {what}: stdout is not UTF-8"));
    let cap = text.strip_suffix('\n').unwrap_or_else(|| {
        panic!("tahoe-mount {what}: stdout should be the cap and a newline, got {text:?}")
    });
    assert!(
        cap.starts_with("URI:") && !cap.contains(char::is_whitespace),
        "tahoe-mount {what}: stdout should be only the cap, got {text:?}"
    );
    cap.to_owned()
}

// ---------------------------------------------------------------------------------------------------------------
// Test data

/// A seed for this run (see [`super::test_seed`]).
pub fn seed() -> u64 {
    super::test_seed("immutable")
}

/// `len` bytes from splitmix64 seeded with `seed` (so a failure can be replayed, and contents differ per size).
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed ^ (len as u64).wrapping_mul(0xd1b5_4a32_d192_ed03);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Where two byte strings first differ, for failure messages that do not print megabytes.
pub fn first_difference(a: &[u8], b: &[u8]) -> String {
    if a == b {
        return "identical".to_owned();
    }
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!(
            "lengths {} and {}, first difference at byte {i}",
            a.len(),
            b.len()
        ),
        None => format!(
            "lengths {} and {}, one a prefix of the other",
            a.len(),
            b.len()
        ),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Storage nodes' disks

/// The storage index of a CHK cap in base32, as directory names and `tahoe check` spell it. Panics on LIT.
pub fn storage_index_of(cap: &str) -> String {
    let parsed = Cap::parse(cap).unwrap_or_else(|e| panic!("{cap}: {e}"));
    let si = parsed
        .storage_index()
        .unwrap_or_else(|| panic!("{cap} has no storage index"));
    base32::encode(&si)
}

fn storage_dir(server: &GridServer) -> PathBuf {
    server.basedir.join("storage")
}

/// `<basedir>/storage/shares/<SI[..2]>/<SI>`: where a server keeps the shares of one storage index.
pub fn share_dir(server: &GridServer, si: &str) -> PathBuf {
    storage_dir(server).join("shares").join(&si[..2]).join(si)
}

/// The file of share `shnum` of `si` on `server` (whether or not it exists).
pub fn share_path(server: &GridServer, si: &str, shnum: u16) -> PathBuf {
    share_dir(server, si).join(shnum.to_string())
}

/// A share file found on a server's disk.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HeldShare {
    pub shnum: u16,
    /// Index into `LocalGrid::servers()`.
    pub server: usize,
    pub path: PathBuf,
}

/// A corruption advisory a storage node wrote because a client said one of its shares is corrupt.
#[derive(Debug, Clone)]
pub struct Advisory {
    pub server: usize,
    pub path: PathBuf,
    /// `immutable` or `mutable`.
    pub share_type: String,
    pub storage_index: String,
    pub shnum: u16,
    pub reason: String,
}

fn numbered_files(dir: &Path) -> Vec<(u16, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(u16, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.parse::<u16>().ok()?;
            e.file_type().ok()?.is_file().then(|| (n, e.path()))
        })
        .collect();
    out.sort();
    out
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => files_under(&e.path(), out),
            Ok(_) => out.push(e.path()),
            Err(_) => {}
        }
    }
}

impl LocalGrid {
    /// Every share of `si` on every server (running or not), by share number then server.
    pub fn share_holders(&self, si: &str) -> Vec<HeldShare> {
        let mut out: Vec<HeldShare> = self
            .servers()
            .iter()
            .enumerate()
            .flat_map(|(server, s)| {
                numbered_files(&share_dir(s, si))
                    .into_iter()
                    .map(move |(shnum, path)| HeldShare {
                        shnum,
                        server,
                        path,
                    })
            })
            .collect();
        out.sort();
        out
    }

    /// Files of uploads in progress (or abandoned without an abort) on any server, for any storage index.
    pub fn incoming_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for s in self.servers() {
            files_under(&storage_dir(s).join("shares/incoming"), &mut out);
        }
        out.sort();
        out
    }

    /// Every file under any server's `storage/shares` (finished shares and uploads in progress): compare two of
    /// these to see what an operation left behind.
    pub fn all_share_files(&self) -> BTreeSet<PathBuf> {
        let mut out = Vec::new();
        for s in self.servers() {
            files_under(&storage_dir(s).join("shares"), &mut out);
        }
        out.into_iter().collect()
    }

    /// Every corruption advisory on every server.
    pub fn corruption_advisories(&self) -> Vec<Advisory> {
        let mut out = Vec::new();
        for (server, s) in self.servers().iter().enumerate() {
            let mut files = Vec::new();
            files_under(&storage_dir(s).join("corruption-advisories"), &mut files);
            files.sort();
            for path in files {
                out.push(parse_advisory(server, path));
            }
        }
        out
    }
}

fn parse_advisory(server: usize, path: PathBuf) -> Advisory {
    // server.py CORRUPTION_REPORT_FORMAT: "report: Share Corruption\ntype: T\nstorage_index: SI\nshare_number: N\n
    // \nREASON\n\n".
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let (head, reason) = text.split_once("\n\n").unwrap_or((&text, ""));
    let field = |key: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("{}: no {key:?} line in {text:?}", path.display()))
    };
    assert_eq!(
        field("report:"),
        "Share Corruption",
        "{}: not a corruption report",
        path.display()
    );
    Advisory {
        server,
        share_type: field("type:"),
        storage_index: field("storage_index:"),
        shnum: field("share_number:")
            .parse()
            .unwrap_or_else(|e| panic!("{}: share_number: {e}", path.display())),
        reason: reason.trim().to_owned(),
        path,
    }
}

/// An immutable share file as a storage node keeps it, with the share's layout header read.
#[derive(Debug, Clone)]
pub struct ShareFile {
    /// Container version (immutable_schema.py): 2 in 1.20 (leases hold hashed secrets), 1 before.
    pub container_version: u32,
    pub leases: u32,
    /// Share data bytes (the file minus its 12-byte header and the leases).
    pub share_len: u64,
    /// Share layout version (immutable/layout.py): 1 (4-byte offsets) or 2 (8-byte, files over ~4 GiB).
    pub layout_version: u32,
    pub block_size: u64,
    /// Block data in this share: one block per segment, the last one possibly shorter.
    pub data_size: u64,
    /// Offsets from the start of the share data.
    pub data_offset: u64,
    pub crypttext_hash_tree_offset: u64,
    pub block_hashes_offset: u64,
    pub share_hashes_offset: u64,
    pub uri_extension_offset: u64,
}

/// Bytes of the container header before the share data (immutable.py: version, size, lease count).
pub const CONTAINER_HEADER: u64 = 0x0c;
/// Bytes of one lease record after the share data (immutable.py: owner, renew, cancel, expiry).
pub const LEASE_SIZE: u64 = 72;

pub fn read_share_file(path: &Path) -> ShareFile {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let be32 = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    let be64 = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
    assert!(
        bytes.len() >= 12 + 0x24,
        "{}: {} bytes is too short for a share",
        path.display(),
        bytes.len()
    );
    let container_version = be32(0);
    assert!(
        container_version == 1 || container_version == 2,
        "{}: container version {container_version} is not an immutable share",
        path.display()
    );
    let leases = be32(8);
    let share_len = (bytes.len() as u64)
        .checked_sub(CONTAINER_HEADER + LEASE_SIZE * u64::from(leases))
        .unwrap_or_else(|| panic!("{}: {leases} leases do not fit", path.display()));
    let h = CONTAINER_HEADER as usize;
    let layout_version = be32(h);
    // layout.py: v1 is version, block size, data size, then six 4-byte offsets (data = 0x24);
    // v2 is version, then 8-byte fields (data = 0x44).
    let (block_size, data_size, offsets): (u64, u64, Vec<u64>) = match layout_version {
        1 => (
            u64::from(be32(h + 4)),
            u64::from(be32(h + 8)),
            (0..6).map(|i| u64::from(be32(h + 0x0c + 4 * i))).collect(),
        ),
        2 => (
            be64(h + 4),
            be64(h + 0x0c),
            (0..6).map(|i| be64(h + 0x14 + 8 * i)).collect(),
        ),
        v => panic!("{}: share layout version {v}", path.display()),
    };
    let share = ShareFile {
        container_version,
        leases,
        share_len,
        layout_version,
        block_size,
        data_size,
        data_offset: offsets[0],
        crypttext_hash_tree_offset: offsets[2],
        block_hashes_offset: offsets[3],
        share_hashes_offset: offsets[4],
        uri_extension_offset: offsets[5],
    };
    let want_data_offset = if layout_version == 1 { 0x24 } else { 0x44 };
    assert_eq!(
        share.data_offset,
        want_data_offset,
        "{}: data offset",
        path.display()
    );
    // The unused plaintext hash tree starts where the blocks end.
    assert_eq!(
        offsets[1],
        share.data_offset + share.data_size,
        "{}: block data does not end where the plaintext hash tree begins: {share:?}",
        path.display()
    );
    assert!(
        share.uri_extension_offset < share.share_len,
        "{}: offsets point past the share data: {share:?}",
        path.display()
    );
    share
}

impl ShareFile {
    /// Blocks (= segments) in this share.
    pub fn blocks(&self) -> u64 {
        self.data_size.div_ceil(self.block_size.max(1))
    }
}

/// Corrupts a share in place where only hashes can tell: flips one byte in the middle of every block, leaving
/// the headers, hash trees and URI extension intact. Returns the file offsets changed.
pub fn corrupt_share_blocks(path: &Path) -> Vec<u64> {
    let share = read_share_file(path);
    assert!(share.data_size > 0, "{}: no block data", path.display());
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut changed = Vec::new();
    for b in 0..share.blocks() {
        let start = b * share.block_size;
        let len = share.block_size.min(share.data_size - start);
        let at = CONTAINER_HEADER + share.data_offset + start + len / 2;
        let mut byte = [0u8; 1];
        f.seek(SeekFrom::Start(at))
            .and_then(|_| f.read_exact(&mut byte))
            .and_then(|_| f.seek(SeekFrom::Start(at)))
            .and_then(|_| f.write_all(&[byte[0] ^ 0x5a]))
            .unwrap_or_else(|e| panic!("corrupt {} at {at}: {e}", path.display()));
        changed.push(at);
    }
    f.sync_all().expect("sync corrupted share");
    changed
}

/// A library `Grid` over the local grid's servers (its `servers.yaml`).
pub fn library_grid(grid: &LocalGrid) -> tahoe_mount::grid::client::Grid {
    let yaml = std::fs::read_to_string(grid.servers_yaml()).expect("read servers.yaml");
    let servers = tahoe_mount::grid::parse_servers_yaml(&yaml).expect("parse servers.yaml");
    tahoe_mount::grid::client::Grid::connect(servers, &Default::default()).expect("connect")
}
