//! Grid service directory (GSD) bootstrap: how long a client takes to go from an invitation (or its cache) to the
//! list of servers it uses, and how that grows with the grid.
//!
//! 1. A local grid of five real tahoe-lafs 1.20 storage nodes, set up as users do it with the command line
//!    (`gsd create` on one node, `gsd invite`, then `announce` and `gsd enroll` for each of the five). Ours, through
//!    the library (`GsdClient` over HTTPS): a fresh client with an empty cache until its grid has five servers, a
//!    start from the cache (no network), a start from the cache followed by a refresh, and a poll of a client that
//!    is already current; how many storage clients (each a TLS connection) a bootstrap makes, and what the first
//!    read through `grid()` after a fresh bootstrap costs beside one over open connections. Ours through the
//!    binary: `tahoe-mount ls --grid INVITATION <GSD readcap>` (bootstrap, then one more read of the GSD, which is
//!    small: it is the command whose time is most nearly bootstrap alone; `servers --grid` would also probe every
//!    server), beside `tahoe-mount cap`, which only starts the process. The peer, in the same run: a stock Tahoe
//!    1.20 client node, which knows the servers from its servers.yaml, doing the reads a Python client of this
//!    design would make through its web API: `GET /uri/<GSD>?t=json`, then `GET /uri/<GSA>` for each `v1.` entry,
//!    one after another and all at once.
//! 2. In-memory grids of N servers (N = 10, 50, 100, 200): a GSD with a share on each server listing all N
//!    announcements (GSAs), each GSA 1-of-N too. Fresh bootstrap from one server, a start from the cache, and a
//!    poll of a current client, with the storage requests each makes (the servers count them) and the storage
//!    clients it makes (a counting connector). The in-memory servers answer at once, so this is our own CPU cost
//!    and the protocol's request count, not network time.
//!
//! `cargo bench --bench gsd`; `TAHOE_MOUNT_BENCH_QUICK=1` runs fewer repetitions and N = 10, 50 only (not a
//! measurement). Wall time, median of several runs; figures are printed, never asserted (the checks only make
//! sure each run did what it is timed for). The machine's other load shows in the real-grid rows: read the
//! columns of one run against each other.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::grid::LocalGrid;
use common::memory::TestServer;
use common::memory::addressed::{MemoryConnector, ann_of, nurl_of, server_id_of};
use common::tahoe::{TahoeClient, TempDir, assert_success};
use tahoe_mount::cap::{Cap, FileCap, MutableFormat};
use tahoe_mount::dirnode::{Change, Child, DirectoryNode, Replace};
use tahoe_mount::grid::client::{Grid, GridServer};
use tahoe_mount::gsd::client::{Connector, GbsConnector, GridSource, GsdClient};
use tahoe_mount::gsd::format::{Announcement, ENTRY_PREFIX};
use tahoe_mount::gsd::operator;
use tahoe_mount::mutable::{MutableFile, MutableOptions, MutableParams};
use tahoe_mount::storage::StorageServer;
use tahoe_mount::storage::memory::MemoryServer;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// `runs` timings of `f`, each after `setup` (untimed), and the median.
fn median_of<S, T>(
    runs: usize,
    mut setup: impl FnMut() -> S,
    mut f: impl FnMut(S) -> T,
) -> (Duration, T) {
    let mut samples = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let input = setup();
        let started = Instant::now();
        let out = f(input);
        samples.push(started.elapsed());
        last = Some(out);
    }
    (median(samples), last.expect("at least one run"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn row(what: &str, ours: Duration, peer: Option<Duration>) {
    match peer {
        Some(peer) => println!(
            "{what:<58} {:>10.2} ms {:>10.2} ms {:>8.1}x",
            ms(ours),
            ms(peer),
            ms(peer) / ms(ours).max(1e-9)
        ),
        None => println!("{what:<58} {:>10.2} ms {:>13} {:>9}", ms(ours), "-", "-"),
    }
}

fn peer_row(what: &str, peer: Duration) {
    println!("{what:<58} {:>13} {:>10.2} ms {:>9}", "-", ms(peer), "-");
}

/// Warnings seen while measuring, printed once after the table (the same one from every run is one line).
#[derive(Default)]
struct Notes(std::collections::BTreeSet<String>);

impl Notes {
    fn add(&mut self, source: &str, warnings: impl IntoIterator<Item = String>) {
        self.0
            .extend(warnings.into_iter().map(|w| format!("{source}: {w}")));
    }

    fn print(&self) {
        for note in &self.0 {
            println!("  warning seen: {note}");
        }
    }
}

/// The `tahoe-mount` binary with its own cache and config directories, as a user runs it.
fn tahoe_mount(args: &[&str], cache: &Path, config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tahoe-mount"))
        .args(args)
        .env("TAHOE_MOUNT_CACHE_DIR", cache)
        .env("TAHOE_MOUNT_CONFIG_DIR", config)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("start tahoe-mount")
}

fn tahoe_mount_ok(args: &[&str], cache: &Path, config: &Path) -> String {
    let out = tahoe_mount(args, cache, config);
    assert_success(&out, &format!("tahoe-mount {}", args.join(" ")));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn web_ok(client: &TahoeClient, path: &str) -> Vec<u8> {
    let (status, body) = client.web("GET", path, b"");
    assert_eq!(
        status,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&body)
    );
    body
}

/// The GSA readcaps of a GSD listing from Tahoe's web API (`["dirnode", {"children": {name: [kind, {…}]}}]`).
fn gsa_caps(listing: &[u8]) -> Vec<String> {
    let json: serde_json::Value = serde_json::from_slice(listing).expect("GSD listing is JSON");
    json[1]["children"]
        .as_object()
        .expect("GSD listing has children")
        .iter()
        .filter(|(name, _)| name.starts_with(ENTRY_PREFIX))
        .map(|(_, child)| {
            child[1]["ro_uri"]
                .as_str()
                .expect("a GSD entry has a readcap")
                .to_owned()
        })
        .collect()
}

fn real_grid(rt: &tokio::runtime::Runtime, quick: bool) {
    let runs = if quick { 3 } else { 15 };
    let cheap_runs = if quick { 10 } else { 200 };
    let started = Instant::now();
    let grid = LocalGrid::start(5);
    let servers = grid.servers().to_vec();

    // The operator's side, with the command line as in tests/gsd_tahoe.rs.
    let operator_cache = TempDir::new("gsd-bench-operator-cache");
    let operator_config = TempDir::new("gsd-bench-operator-config");
    let op = |args: &[&str]| tahoe_mount_ok(args, operator_cache.path(), operator_config.path());
    let state = operator_config.path().join("gsd.json");
    let state = state.to_string_lossy().into_owned();
    let readcap = op(&[
        "gsd",
        "create",
        "--state",
        &state,
        "--server",
        &servers[0].nurl,
    ])
    .trim()
    .to_owned();
    let invitation = op(&["gsd", "invite", "--state", &state]).trim().to_owned();
    for server in &servers {
        let node_dir = server.basedir.to_string_lossy().into_owned();
        let gsa = op(&["announce", "--node-dir", &node_dir, "--grid", &invitation])
            .trim()
            .to_owned();
        op(&["gsd", "enroll", "--state", &state, &server.name, &gsa]);
    }
    // Tahoe's client node is started now too, so that both sides measure the same grid in the same state.
    let tahoe = TahoeClient::start(&grid, 1, 1, 1);
    let setup_time = started.elapsed();

    let mut notes = Notes::default();
    let (source, warnings) = GridSource::parse(&invitation, &[]).expect("the invitation parses");
    notes.add("invitation", warnings);
    let counting = Arc::new(CountingConnector::new(GbsConnector(Default::default())));
    let connector: Arc<dyn Connector> = counting.clone();
    let options = MutableOptions::new(Vec::new());
    let new_client = |cache: &Path| {
        GsdClient::new(
            source.clone(),
            connector.clone(),
            Some(cache),
            options.clone(),
        )
    };

    println!(
        "GSD bootstrap, 5 local tahoe-lafs 1.20 storage nodes, GSD and GSAs 1-of-5, median of {runs}{}",
        if quick {
            " (QUICK mode: not a measurement)"
        } else {
            ""
        }
    );
    println!(
        "{:<58} {:>13} {:>13} {:>9}",
        "operation", "tahoe-mount", "tahoe", "tahoe/ours"
    );

    // The peer first, both ways: it is the reference the library rows are compared with.
    let (peer_sequential, _) = median_of(
        runs,
        || (),
        |()| {
            let listing = web_ok(&tahoe, &format!("uri/{readcap}?t=json"));
            let caps = gsa_caps(&listing);
            assert_eq!(caps.len(), 5);
            for cap in caps {
                web_ok(&tahoe, &format!("uri/{cap}"));
            }
        },
    );
    let (peer_parallel, _) = median_of(
        runs,
        || (),
        |()| {
            let listing = web_ok(&tahoe, &format!("uri/{readcap}?t=json"));
            let caps = gsa_caps(&listing);
            assert_eq!(caps.len(), 5);
            std::thread::scope(|scope| {
                for cap in &caps {
                    let tahoe = &tahoe;
                    scope.spawn(move || web_ok(tahoe, &format!("uri/{cap}")));
                }
            });
        },
    );

    // Ours, fresh: a new client and an empty cache each run (new TLS connections included, as a first start has).
    let (fresh, (report, fresh_clients, _dir)) = median_of(
        runs,
        || {
            counting.reset();
            TempDir::new("gsd-bench-fresh")
        },
        |dir| {
            let (client, warnings) = new_client(dir.path());
            let report = rt.block_on(client.refresh()).expect("bootstrap");
            assert_eq!(client.grid().len(), 5, "{report:?} {warnings:?}");
            (report, counting.made(), dir)
        },
    );
    notes.add("fresh refresh", report.warnings);
    row(
        "library: fresh client, empty cache, refresh()",
        fresh,
        Some(peer_sequential),
    );

    // A cache filled by one bootstrap, used by every start below.
    let filled = TempDir::new("gsd-bench-filled");
    {
        let (client, _) = new_client(filled.path());
        rt.block_on(client.refresh()).expect("bootstrap");
    }
    let (from_cache, warnings) = median_of(
        cheap_runs,
        || (),
        |()| {
            let (client, warnings) = new_client(filled.path());
            assert_eq!(client.grid().len(), 5);
            warnings
        },
    );
    notes.add("start from the cache", warnings);
    row(
        "library: GsdClient::new from the cache (no network)",
        from_cache,
        None,
    );
    let (cached_refresh, report) = median_of(
        runs,
        || (),
        |()| {
            let (client, _) = new_client(filled.path());
            let report = rt.block_on(client.refresh()).expect("refresh");
            assert_eq!(client.grid().len(), 5);
            report
        },
    );
    notes.add("refresh after a start from the cache", report.warnings);
    row(
        "library: from the cache, then refresh()",
        cached_refresh,
        Some(peer_sequential),
    );
    // A running client's poll: its connections are open, as the peer's are.
    let (current, _) = new_client(filled.path());
    rt.block_on(current.refresh()).expect("refresh");
    let (poll, (report, poll_clients)) = median_of(
        runs,
        || counting.reset(),
        |()| {
            let report = rt.block_on(current.refresh()).expect("poll");
            (report, counting.made())
        },
    );
    notes.add("poll", report.warnings);
    row(
        "library: poll (refresh() of a current client)",
        poll,
        Some(peer_sequential),
    );
    // What a command does right after joining: one read through `grid()`. After a fresh bootstrap, against a
    // client whose connections are open: the difference is the connections bootstrap made and `grid()` does not
    // reuse.
    let read_gsd = |client: &GsdClient| {
        rt.block_on(MutableFile::open(client.grid(), source.gsd, options.clone()).read())
            .expect("read the GSD through grid()")
    };
    let (after_fresh, _) = median_of(
        runs,
        || {
            let dir = TempDir::new("gsd-bench-fresh-read");
            let (client, _) = new_client(dir.path());
            rt.block_on(client.refresh()).expect("bootstrap");
            (client, dir)
        },
        |(client, dir)| (read_gsd(&client), client, dir),
    );
    row(
        "library: first GSD read through grid() after a fresh one",
        after_fresh,
        None,
    );
    read_gsd(&current);
    let (warm_read, _) = median_of(runs, || (), |()| read_gsd(&current));
    row(
        "library: GSD read through grid() of a current client",
        warm_read,
        None,
    );
    peer_row(
        "peer: GET GSD ?t=json, then 5 GSAs one after another",
        peer_sequential,
    );
    peer_row(
        "peer: GET GSD ?t=json, then 5 GSAs all at once",
        peer_parallel,
    );

    // The binary: a process per run, as a shell user or a script sees it.
    let config = TempDir::new("gsd-bench-config");
    let (start_only, _) = median_of(
        runs,
        || (),
        |()| tahoe_mount_ok(&["cap", &readcap], filled.path(), config.path()),
    );
    row(
        "binary: tahoe-mount cap GSD (process start only)",
        start_only,
        None,
    );
    let ls = ["ls", "--grid", invitation.as_str(), readcap.as_str()];
    let check_ls = |out: Output, what: &str| {
        assert_success(&out, what);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout.lines().count(), 5, "{stdout}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let (bin_fresh, stderr) = median_of(
        runs,
        || TempDir::new("gsd-bench-bin-fresh"),
        |cache| check_ls(tahoe_mount(&ls, cache.path(), config.path()), "ls fresh"),
    );
    notes.add("ls, fresh", stderr.lines().map(str::to_owned));
    row(
        "binary: ls --grid INV GSD, empty cache",
        bin_fresh,
        Some(peer_sequential),
    );
    let (bin_cached, stderr) = median_of(
        runs,
        || (),
        |()| check_ls(tahoe_mount(&ls, filled.path(), config.path()), "ls cached"),
    );
    notes.add("ls, cached", stderr.lines().map(str::to_owned));
    row(
        "binary: ls --grid INV GSD, cache fresh (no bootstrap)",
        bin_cached,
        None,
    );
    let ls_refresh = [
        "ls",
        "--grid",
        invitation.as_str(),
        "--grid-max-age",
        "0",
        readcap.as_str(),
    ];
    let (bin_refresh, stderr) = median_of(
        runs,
        || (),
        |()| {
            check_ls(
                tahoe_mount(&ls_refresh, filled.path(), config.path()),
                "ls refresh",
            )
        },
    );
    notes.add(
        "ls, cached then refreshed",
        stderr.lines().map(str::to_owned),
    );
    row(
        "binary: ls --grid INV --grid-max-age 0 GSD, from cache",
        bin_refresh,
        Some(peer_sequential),
    );
    println!(
        "(tahoe: a running client node with its connections open; ours opens its own, except in a poll. Storage \
         clients (connections) ours made: {fresh_clients} in a fresh refresh(), {poll_clients} in a poll; 5 servers)"
    );
    println!(
        "(setup: 5 nodes, gsd create, 5 announce + enroll through the CLI, Tahoe client node: {:.1} s; \
         ls = bootstrap + one more GSD read)",
        setup_time.as_secs_f64()
    );
    notes.print();
}

/// Counts the storage clients a GSD client makes: each is a connection to come on a real grid (a TLS handshake
/// with a Tahoe node costs tens of milliseconds), so one made and dropped is wasted.
struct CountingConnector<C> {
    inner: C,
    made: AtomicU64,
}

impl<C> CountingConnector<C> {
    fn new(inner: C) -> Self {
        CountingConnector {
            inner,
            made: AtomicU64::new(0),
        }
    }

    fn reset(&self) {
        self.made.store(0, Ordering::Relaxed);
    }

    fn made(&self) -> u64 {
        self.made.load(Ordering::Relaxed)
    }
}

impl<C: Connector> Connector for CountingConnector<C> {
    fn connect(
        &self,
        info: &tahoe_mount::grid::ServerInfo,
    ) -> Result<Arc<dyn StorageServer>, tahoe_mount::storage::StorageError> {
        self.made.fetch_add(1, Ordering::Relaxed);
        self.inner.connect(info)
    }
}

/// An in-memory grid of `n` servers whose GSD (created on server 0, the invitation's one server) lists all of
/// them, every GSD and GSA 1-of-n.
struct World {
    servers: Vec<Arc<TestServer>>,
    connector: Arc<CountingConnector<MemoryConnector>>,
    source: GridSource,
    /// The GSD's size, to read the request counts by.
    gsd_bytes: usize,
    _dir: TempDir,
}

fn options() -> MutableOptions {
    MutableOptions::new(vec![7; 32])
}

/// Builds the world without the operator's and hosts' per-server commands: `announce` and `enroll` each read the
/// whole GSD, so enrolling N servers one by one costs O(N²) and would be most of the bench. Every GSA is made
/// directly, and all N entries are linked in one publish.
async fn build_world(n: usize) -> World {
    let connector = Arc::new(CountingConnector::new(MemoryConnector::default()));
    let mut servers = Vec::new();
    let mut grid_servers = Vec::new();
    let mut announcements = Vec::new();
    for i in 0..n {
        let name = format!("mem{i}");
        let server = Arc::new(TestServer::new(MemoryServer::new(&name)));
        let nurl = nurl_of(&name, 10000 + i as u16);
        connector.inner.add(&nurl, server.clone());
        let announcement = Announcement::new(
            &server_id_of(&name),
            ann_of(&name, &format!("nick{i}"), &nurl),
        );
        // The server as clients will know it (from its announcement), as the operator's publishes address it.
        let info = announcement.server_info().expect("a usable announcement");
        grid_servers.push(GridServer::new(
            info,
            server.clone() as Arc<dyn StorageServer>,
        ));
        servers.push(server);
        announcements.push(announcement);
    }
    let grid = Grid::new(grid_servers);
    let dir = TempDir::new("gsd-bench-world");
    let state = operator::create(
        &dir.path().join("operator.json"),
        vec![nurl_of("mem0", 10000)],
        &*connector,
        options(),
    )
    .await
    .expect("gsd create");
    let params = MutableParams::one_share_per_server(MutableFormat::Sdmf, n);
    // RSA key generation dominates; a few at a time keeps both cores busy without a thread per key.
    let mut gsas = Vec::with_capacity(n);
    let texts: Vec<Vec<u8>> = announcements.iter().map(Announcement::to_bytes).collect();
    for chunk in texts.chunks(8) {
        let made = futures_util::future::join_all(
            chunk
                .iter()
                .map(|text| MutableFile::create(grid.clone(), text, params, options())),
        )
        .await;
        gsas.extend(made.into_iter().map(|m| *m.expect("GSA create").cap()));
    }
    let changes: Vec<Change> = gsas
        .iter()
        .enumerate()
        .map(|(i, gsa)| Change::Link {
            name: format!("{ENTRY_PREFIX}server-{i}"),
            child: Child::from_cap(&Cap::File(FileCap::Mutable(gsa.readonly())))
                .expect("a GSA readcap"),
            metadata: None,
            replace: Replace::Always,
        })
        .collect();
    let gsd = DirectoryNode::open(
        grid.clone(),
        Cap::Directory(FileCap::Mutable(state.gsd)),
        options(),
    )
    .expect("the GSD opens");
    gsd.modify_with_params(&changes, Some(params))
        .await
        .expect("link every GSA");
    let gsd_bytes = MutableFile::open(grid, state.readcap(), options())
        .read()
        .await
        .expect("read the GSD")
        .contents
        .len();
    World {
        servers,
        connector,
        source: state.source(),
        gsd_bytes,
        _dir: dir,
    }
}

impl World {
    fn client(&self, cache: &Path) -> GsdClient {
        let (client, warnings) = GsdClient::new(
            self.source.clone(),
            self.connector.clone(),
            Some(cache),
            options(),
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        client
    }

    fn reset_calls(&self) {
        self.servers.iter().for_each(|s| s.reset_calls());
        self.connector.reset();
    }

    /// Storage requests summed over every server, and storage clients made, since `reset_calls`.
    fn calls(&self) -> (u64, u64) {
        (
            self.servers.iter().map(|s| s.total_calls()).sum(),
            self.connector.made(),
        )
    }
}

struct MemoryRow {
    n: usize,
    fresh: Duration,
    fresh_calls: (u64, u64),
    from_cache: Duration,
    poll: Duration,
    poll_calls: (u64, u64),
    gsd_bytes: usize,
}

fn memory_grid(
    rt: &tokio::runtime::Runtime,
    n: usize,
    runs: usize,
    notes: &mut Notes,
) -> MemoryRow {
    let built = Instant::now();
    let world = rt.block_on(build_world(n));
    let build_time = built.elapsed();
    assert_eq!(world.source.bootstrap.len(), 1);

    let (fresh, (fresh_calls, report, _cache)) = median_of(
        runs,
        || {
            world.reset_calls();
            TempDir::new("gsd-bench-mem-fresh")
        },
        |cache| {
            let client = world.client(cache.path());
            let report = rt.block_on(client.refresh()).expect("bootstrap");
            assert_eq!(client.grid().len(), n, "{report:?}");
            (world.calls(), report, cache)
        },
    );
    notes.add(&format!("N = {n}, fresh"), report.warnings);

    let filled = TempDir::new("gsd-bench-mem-filled");
    let current = world.client(filled.path());
    rt.block_on(current.refresh()).expect("bootstrap");
    let (from_cache, _) = median_of(
        runs,
        || (),
        |()| {
            let client = world.client(filled.path());
            assert_eq!(client.grid().len(), n);
        },
    );
    let (poll, (poll_calls, report)) = median_of(
        runs,
        || world.reset_calls(),
        |()| {
            let report = rt.block_on(current.refresh()).expect("poll");
            (world.calls(), report)
        },
    );
    notes.add(&format!("N = {n}, poll"), report.warnings);
    eprintln!(
        "(N = {n}: world built in {:.1} s)",
        build_time.as_secs_f64()
    );
    MemoryRow {
        n,
        fresh,
        fresh_calls,
        from_cache,
        poll,
        poll_calls,
        gsd_bytes: world.gsd_bytes,
    }
}

fn memory_grids(rt: &tokio::runtime::Runtime, quick: bool) {
    let sizes: &[usize] = if quick {
        &[10, 50]
    } else {
        &[10, 50, 100, 200]
    };
    let runs = if quick { 3 } else { 9 };
    let mut notes = Notes::default();
    let rows: Vec<MemoryRow> = sizes
        .iter()
        .map(|&n| memory_grid(rt, n, runs, &mut notes))
        .collect();
    println!();
    println!(
        "GSD bootstrap, in-memory grid of N servers (GSD and GSAs 1-of-N, invitation = one server), median of {runs}{}",
        if quick {
            " (QUICK mode: not a measurement)"
        } else {
            ""
        }
    );
    println!(
        "{:>5} | {:>11} {:>9} {:>8} {:>10} | {:>11} | {:>11} {:>9} {:>8} {:>10} | {:>9}",
        "N",
        "fresh",
        "requests",
        "clients",
        "µs/server",
        "from cache",
        "poll",
        "requests",
        "clients",
        "µs/server",
        "GSD bytes"
    );
    for r in &rows {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / r.n as f64;
        println!(
            "{:>5} | {:>8.2} ms {:>9} {:>8} {:>10.0} | {:>8.3} ms | {:>8.2} ms {:>9} {:>8} {:>10.0} | {:>9}",
            r.n,
            ms(r.fresh),
            r.fresh_calls.0,
            r.fresh_calls.1,
            per(r.fresh),
            ms(r.from_cache),
            ms(r.poll),
            r.poll_calls.0,
            r.poll_calls.1,
            per(r.poll),
            r.gsd_bytes
        );
    }
    let (first, last) = (&rows[0], &rows[rows.len() - 1]);
    let growth = |a: f64, b: f64| b / a.max(1e-12);
    let per_server = |calls: u64, n: usize| calls as f64 / n as f64;
    println!(
        "scaling N = {} → {} ({:.0}x servers): fresh bootstrap {:.1}x time ({:.0} → {:.0} µs per server), {:.1}x \
         requests ({:.1} → {:.1} per server); poll {:.1}x time ({:.0} → {:.0} µs per server), {:.1}x requests \
         ({:.1} → {:.1} per server)",
        first.n,
        last.n,
        growth(first.n as f64, last.n as f64),
        growth(ms(first.fresh), ms(last.fresh)),
        first.fresh.as_secs_f64() * 1e6 / first.n as f64,
        last.fresh.as_secs_f64() * 1e6 / last.n as f64,
        growth(first.fresh_calls.0 as f64, last.fresh_calls.0 as f64),
        per_server(first.fresh_calls.0, first.n),
        per_server(last.fresh_calls.0, last.n),
        growth(ms(first.poll), ms(last.poll)),
        first.poll.as_secs_f64() * 1e6 / first.n as f64,
        last.poll.as_secs_f64() * 1e6 / last.n as f64,
        growth(first.poll_calls.0 as f64, last.poll_calls.0 as f64),
        per_server(first.poll_calls.0, first.n),
        per_server(last.poll_calls.0, last.n),
    );
    println!(
        "(requests: storage calls summed over every server, a mutable read being a share list and a read per server \
         asked; clients: storage clients the GSD client made, each a TLS connection on a real grid; from cache: \
         GsdClient::new, no requests)"
    );
    notes.print();
}

fn main() {
    let quick =
        std::env::var_os("TAHOE_MOUNT_BENCH_QUICK").is_some_and(|v| !v.is_empty() && v != "0");
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    real_grid(&rt, quick);
    memory_grids(&rt, quick);
    println!("(bench wall time {:.1} s)", started.elapsed().as_secs_f64());
}
