//! A real local Tahoe-LAFS 1.20 storage grid for integration tests, driven through `mount-tests/grid.py`:
//! `LocalGrid` owns one grid directory under `<repo>/mount-tests/work/` and the `tahoe run` processes in it.
//!
//! Cleanup: an owned grid (`LocalGrid::start`) is stopped by `Drop`, also when the test panics, and its directory
//! is removed unless the test failed (then its logs stay for reading, until the next run's sweep).
//! Every grid also gets a watchdog (`grid.py start --parent-pid`), so nothing keeps running if the test process is
//! killed or exits without dropping it.
//!
//! Sharing: starting three nodes takes about 3 s cold, so `LocalGrid::shared(n)` gives every test of one test
//! binary the same grid. A `static` is never dropped; the watchdog stops that grid when the test process exits.
//! Tests that stop servers must own their grid (`start`), or they would disturb the tests sharing it.

use super::{python, repo_root};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One storage node of the grid, as `grid.py` describes it in `grid.json`.
#[derive(Debug, Clone)]
pub struct GridServer {
    /// Nickname, `storage<i>` by default.
    pub name: String,
    /// `v0-` + 52 base32 chars: the announcement key, from `node.pubkey`.
    pub server_id: String,
    /// The first (here the only) GBS NURL, `pb://<spki>@127.0.0.1:PORT/<swissnum>#v=1`.
    pub nurl: String,
    pub nurls: Vec<String>,
    /// The Foolscap `anonymous-storage-FURL`; Tahoe derives lease secrets and write enablers from its tubid.
    pub furl: String,
    pub tubid: String,
    pub permutation_seed_base32: String,
    pub port: u16,
    pub basedir: PathBuf,
    /// The dict a 1.20 node would announce (`anonymous-storage-NURLs`, `nickname`, …).
    pub announcement: Value,
}

pub struct LocalGrid {
    dir: PathBuf,
    servers: Vec<GridServer>,
    /// The process whose death makes the watchdog stop the grid: this test process, unless a test says otherwise.
    parent: u32,
}

fn grid_py() -> PathBuf {
    repo_root().join("mount-tests/grid.py")
}

fn work_dir() -> PathBuf {
    repo_root().join("mount-tests/work")
}

fn run_grid(args: &[&str]) -> Output {
    Command::new(python())
        .arg(grid_py())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", grid_py().display()))
}

/// Runs `grid.py args…`; panics with its output (which names the node and shows its log) on failure.
pub fn grid_ok(args: &[&str]) -> String {
    let out = run_grid(args);
    assert!(
        out.status.success(),
        "grid.py {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn str_field(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("grid.json: {key} is not a string in {v}"))
        .to_owned()
}

fn parse_server(v: &Value) -> GridServer {
    GridServer {
        name: str_field(v, "name"),
        server_id: str_field(v, "server_id"),
        nurl: str_field(v, "nurl"),
        nurls: v["nurls"]
            .as_array()
            .unwrap_or_else(|| panic!("grid.json: nurls is not a list in {v}"))
            .iter()
            .map(|n| {
                n.as_str()
                    .expect("grid.json: a NURL is not a string")
                    .to_owned()
            })
            .collect(),
        furl: str_field(v, "furl"),
        tubid: str_field(v, "tubid"),
        permutation_seed_base32: str_field(v, "permutation_seed_base32"),
        port: v["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("grid.json: bad port in {v}")),
        basedir: PathBuf::from(str_field(v, "basedir")),
        announcement: v["announcement"].clone(),
    }
}

/// Pids of live processes with `dir` or a path under it as an argument (zombies have no command line, so they
/// do not count).
pub fn processes_mentioning(dir: &Path) -> Vec<u32> {
    let exact = dir.to_string_lossy().into_owned();
    let under = format!("{exact}/");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline
            .split(|&b| b == 0)
            .map(String::from_utf8_lossy)
            .any(|arg| arg == exact || arg.starts_with(&under))
        {
            pids.push(pid);
        }
    }
    pids
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes grid directories left by test processes that are gone (stopping anything their watchdog missed), so
/// `mount-tests/work` does not grow without bound. Directories of live processes are never touched.
fn sweep_stale_grids() {
    let Ok(entries) = std::fs::read_dir(work_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = name
            .strip_prefix("grid-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if owner == std::process::id() || pid_alive(owner) {
            continue;
        }
        let dir = entry.path();
        if !processes_mentioning(&dir).is_empty() {
            let _ = run_grid(&["stop", &dir.to_string_lossy()]);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

impl LocalGrid {
    /// Creates and starts `n` storage nodes in a fresh directory; they are stopped when this is dropped, or
    /// when the test process dies.
    pub fn start(n: usize) -> LocalGrid {
        LocalGrid::start_watched_by(n, std::process::id())
    }

    /// As `start`, but the watchdog stops the grid when process `parent` exits (to test the watchdog).
    pub fn start_watched_by(n: usize, parent: u32) -> LocalGrid {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        sweep_stale_grids();
        let dir = work_dir().join(format!(
            "grid-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create grid dir");
        let mut grid = LocalGrid {
            dir,
            servers: Vec::new(),
            parent,
        };
        // From here on, Drop stops whatever a failed start left running.
        grid.start_all(n);
        grid
    }

    /// One grid of `n` nodes shared by every test of this test binary; see the module doc.
    pub fn shared(n: usize) -> &'static LocalGrid {
        static SHARED: OnceLock<LocalGrid> = OnceLock::new();
        let grid = SHARED.get_or_init(|| LocalGrid::start(n));
        assert_eq!(
            grid.servers.len(),
            n,
            "LocalGrid::shared is already a grid of another size"
        );
        grid
    }

    fn start_all(&mut self, n: usize) {
        let pid = self.parent.to_string();
        grid_ok(&[
            "start",
            &self.dir_str(),
            &n.to_string(),
            "--parent-pid",
            &pid,
        ]);
        self.servers = self.servers_on_disk();
        assert_eq!(
            self.servers.len(),
            n,
            "grid.json lists the wrong number of servers"
        );
    }

    /// The servers as `grid.json` describes them now (`grid.py` rewrites it at every start and stop).
    pub fn servers_on_disk(&self) -> Vec<GridServer> {
        let path = self.dir.join("grid.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let json: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
        json["servers"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no servers list", path.display()))
            .iter()
            .map(parse_server)
            .collect()
    }

    fn dir_str(&self) -> String {
        self.dir.to_string_lossy().into_owned()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn servers(&self) -> &[GridServer] {
        &self.servers
    }

    /// `DIR/servers.yaml`: the grid in Tahoe's static-server format.
    pub fn servers_yaml(&self) -> PathBuf {
        self.dir.join("servers.yaml")
    }

    /// Stops storage node `i` (index into `servers()`); its port refuses connections when this returns.
    pub fn stop_server(&self, i: usize) {
        grid_ok(&["stop", &self.dir_str(), "--node", &i.to_string()]);
    }

    /// Stops several storage nodes at once (about as long as stopping one); their ports refuse connections when
    /// this returns.
    pub fn stop_servers(&self, indexes: &[usize]) {
        let mut args = vec!["stop".to_owned(), self.dir_str()];
        for i in indexes {
            args.push("--node".to_owned());
            args.push(i.to_string());
        }
        grid_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }

    /// Starts every stopped storage node again (same keys, ports and NURLs) and waits until all answer.
    pub fn start_all_servers(&self) {
        let pid = self.parent.to_string();
        let n = self.servers.len().to_string();
        grid_ok(&["start", &self.dir_str(), &n, "--parent-pid", &pid]);
    }

    /// Starts storage node `i` again (same keys, port and NURL) and waits until it answers.
    pub fn start_server(&self, i: usize) {
        // `start` is idempotent: it starts only the nodes that are down.
        let pid = self.parent.to_string();
        let n = self.servers.len().to_string();
        grid_ok(&["start", &self.dir_str(), &n, "--parent-pid", &pid]);
        assert!(
            self.server_answers(i),
            "storage{i} does not answer after start_server"
        );
    }

    /// Whether node `i` runs and answers `GET /storage/v1/version` with its pinned certificate.
    pub fn server_answers(&self, i: usize) -> bool {
        run_grid(&["status", &self.dir_str(), "--node", &i.to_string()])
            .status
            .success()
    }
}

impl Drop for LocalGrid {
    fn drop(&mut self) {
        let out = run_grid(&["stop", &self.dir_str()]);
        if !out.status.success() {
            // No panic in drop: it would abort a test that is already unwinding.
            eprintln!(
                "grid.py stop {} failed: {}",
                self.dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        if std::thread::panicking() || std::env::var_os("TAHOE_MOUNT_KEEP_GRID").is_some() {
            eprintln!("grid kept for its logs: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
