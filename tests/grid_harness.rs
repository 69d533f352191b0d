//! Tests of the local grid harness (`mount-tests/grid.py` through `tests/common/grid.rs`) against real
//! Tahoe-LAFS 1.20 storage nodes: what `grid.json` says, that nodes answer, that a stopped node's port refuses
//! connections and comes back with the same identity, and that nothing keeps running after drop or after the
//! test process dies.

mod common;

use common::grid::{LocalGrid, processes_mentioning};
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tahoe_mount::crypto::base32;
use tahoe_mount::storage::nurl::{Furl, Nurl};

fn is_base32(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7'))
}

fn connect(port: u16) -> std::io::Result<TcpStream> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    TcpStream::connect_timeout(&addr, Duration::from_secs(2))
}

fn check_server(grid: &LocalGrid, i: usize) {
    let s = &grid.servers()[i];
    assert_eq!(s.name, format!("storage{i}"));
    assert_eq!(s.basedir, grid.dir().join(format!("storage{i}")));
    assert!(s.basedir.join("server.json").is_file());

    let key = s
        .server_id
        .strip_prefix("v0-")
        .expect("server id starts with v0-");
    assert!(
        key.len() == 52 && is_base32(key),
        "server id {}",
        s.server_id
    );

    assert_eq!(s.nurls, vec![s.nurl.clone()], "one tcp hint gives one NURL");
    let prefix = format!("@127.0.0.1:{}/", s.port);
    assert!(
        s.nurl.starts_with("pb://") && s.nurl.contains(&prefix) && s.nurl.ends_with("#v=1"),
        "NURL {}",
        s.nurl
    );
    let nurl: Nurl = s.nurl.parse().expect("NURL parses");
    assert_eq!(nurl.hints.len(), 1);
    assert_eq!(
        (nurl.hints[0].host.as_str(), nurl.hints[0].port),
        ("127.0.0.1", s.port)
    );

    let furl: Furl = s.furl.parse().expect("fURL parses");
    assert!(
        s.tubid.len() == 32 && is_base32(&s.tubid),
        "tubid {}",
        s.tubid
    );
    assert_eq!(furl.tubid_base32(), s.tubid);
    assert_eq!(
        furl.swissnum, nurl.swissnum,
        "fURL and NURL share the swissnum"
    );

    // A 1.20 node's seed is the base32 of the ASCII of its key's base32 (client.py _init_permutation_seed).
    let seed = base32::decode(&s.permutation_seed_base32).expect("seed is base32");
    assert_eq!(seed, key.as_bytes());

    let ann = &s.announcement;
    assert_eq!(ann["anonymous-storage-FURL"], s.furl.as_str());
    assert_eq!(ann["anonymous-storage-NURLs"], serde_json::json!([s.nurl]));
    assert_eq!(
        ann["permutation-seed-base32"],
        s.permutation_seed_base32.as_str()
    );
    assert_eq!(ann["nickname"], s.name.as_str());
    assert_eq!(ann["service-name"], "storage");
    assert_eq!(ann["my-version"], "tahoe-lafs/1.20.0");
}

#[test]
fn three_node_grid_lifecycle() {
    let grid = LocalGrid::start(3);
    let dir = grid.dir().to_path_buf();
    assert_eq!(grid.servers().len(), 3);
    for i in 0..3 {
        check_server(&grid, i);
    }
    let mut ports: Vec<u16> = grid.servers().iter().map(|s| s.port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3, "distinct ports");
    let yaml = std::fs::read_to_string(grid.servers_yaml()).expect("servers.yaml");
    for s in grid.servers() {
        for needle in [&s.server_id, &s.furl, &s.nurl, &s.permutation_seed_base32] {
            assert!(
                yaml.contains(needle.as_str()),
                "servers.yaml lacks {needle}"
            );
        }
    }
    for i in 0..3 {
        assert!(grid.server_answers(i), "storage{i} answers");
    }

    let stopped = grid.servers()[1].clone();
    grid.stop_server(1);
    let err = connect(stopped.port).expect_err("a stopped node's port refuses connections");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    assert!(!grid.server_answers(1));
    assert!(
        grid.server_answers(0) && grid.server_answers(2),
        "the others still answer"
    );

    grid.start_server(1);
    connect(stopped.port).expect("restarted node listens on its old port");
    let again = grid.servers_on_disk();
    assert_eq!(
        again[1].nurl, stopped.nurl,
        "same key, port and swissnum after restart"
    );
    assert_eq!(again[1].server_id, stopped.server_id);

    drop(grid);
    assert_eq!(
        processes_mentioning(&dir),
        Vec::<u32>::new(),
        "processes left in {}",
        dir.display()
    );
    assert!(!dir.exists(), "a passing test's grid directory is removed");
}

#[test]
fn watchdog_stops_the_grid_when_its_parent_dies() {
    // A stand-in for a test process that gets killed without running any Drop.
    let mut parent = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("spawn sleep");
    let grid = LocalGrid::start_watched_by(1, parent.id());
    let dir = grid.dir().to_path_buf();
    assert!(grid.server_answers(0));
    assert!(!processes_mentioning(&dir).is_empty());

    parent.kill().expect("kill the stand-in parent");
    parent.wait().expect("reap it");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !processes_mentioning(&dir).is_empty() {
        assert!(
            Instant::now() < deadline,
            "grid still running 20 s after its parent died"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = connect(grid.servers()[0].port).expect_err("port closed");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn shared_grid_is_started_once() {
    let dirs: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(|| LocalGrid::shared(2).dir().to_path_buf()))
        .map(|t| t.join().expect("thread"))
        .collect();
    assert_eq!(dirs[0], dirs[1]);
    let grid = LocalGrid::shared(2);
    assert!(grid.server_answers(0) && grid.server_answers(1));
}
