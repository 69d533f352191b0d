//! The grid service directory on the in-memory grid: the operator's commands, servers' announcements and a
//! client's bootstrap, cache, polls and rollback protection, with servers lost and stale. A reference model (the
//! petnames enrolled and what each announces) says what a client must converge to.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use common::memory::TestServer;
use common::memory::addressed::{MemoryConnector, ann_of, nurl_of, server_id_of};
use common::runtime;
use proptest::prelude::*;
use tahoe_mount::cap::MutableCap;
use tahoe_mount::gsd::announce::announce;
use tahoe_mount::gsd::client::{GridSource, GsdClient};
use tahoe_mount::gsd::operator::{self, OperatorState};
use tahoe_mount::mutable::MutableOptions;
use tahoe_mount::storage::faulty::Fault;
use tahoe_mount::storage::memory::MemoryServer;
use tahoe_mount::storage::nurl::Nurl;

fn options() -> MutableOptions {
    let mut options = MutableOptions::new(vec![7; 32]);
    options.timeout = std::time::Duration::from_secs(5);
    options
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("tahoe-mount-gsd-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A grid of memory servers with an operator, announcing servers and a place for client caches.
struct World {
    servers: Vec<Arc<TestServer>>,
    nurls: Vec<Nurl>,
    connector: Arc<MemoryConnector>,
    state: OperatorState,
    dir: TempDir,
    /// Each server's GSA, once announced.
    gsas: BTreeMap<usize, MutableCap>,
    /// The reference model: enrolled petname → the nickname its server announces now.
    enrolled: BTreeMap<String, String>,
    nicknames: BTreeMap<usize, String>,
}

fn petname(i: usize) -> String {
    format!("server-{i}")
}

impl World {
    /// `count` servers, of which the first `bootstrap` hold the new GSD and are the invitation's servers.
    async fn new(count: usize, bootstrap: usize) -> World {
        let connector = Arc::new(MemoryConnector::default());
        let mut servers = Vec::new();
        let mut nurls = Vec::new();
        for i in 0..count {
            let name = format!("mem{i}");
            let server = Arc::new(TestServer::new(MemoryServer::new(&name)));
            let nurl = nurl_of(&name, 10000 + i as u16);
            connector.add(&nurl, server.clone());
            servers.push(server);
            nurls.push(nurl);
        }
        let dir = TempDir::new("world");
        let state = operator::create(
            &dir.0.join("operator.json"),
            nurls[..bootstrap].to_vec(),
            &*connector,
            options(),
        )
        .await
        .unwrap();
        World {
            servers,
            nurls,
            connector,
            state,
            dir,
            gsas: BTreeMap::new(),
            enrolled: BTreeMap::new(),
            nicknames: BTreeMap::new(),
        }
    }

    fn source(&self) -> GridSource {
        self.state.source()
    }

    async fn announce(&mut self, i: usize, nickname: &str) -> MutableCap {
        let name = format!("mem{i}");
        let report = announce(
            &server_id_of(&name),
            ann_of(&name, nickname, &self.nurls[i]),
            &self.source(),
            &self.dir.0.join(format!("gsa-{i}.writecap")),
            self.connector.clone(),
            options(),
        )
        .await
        .unwrap();
        self.gsas.insert(i, report.readcap);
        self.nicknames.insert(i, nickname.to_owned());
        if self.enrolled.contains_key(&petname(i)) {
            self.enrolled.insert(petname(i), nickname.to_owned());
        }
        report.readcap
    }

    async fn enroll(&mut self, i: usize) {
        let gsa = self.gsas[&i];
        operator::enroll(
            &self.state,
            &petname(i),
            gsa,
            self.connector.clone(),
            options(),
        )
        .await
        .unwrap();
        self.enrolled.insert(petname(i), self.nicknames[&i].clone());
    }

    async fn remove(&mut self, i: usize) {
        operator::remove(&self.state, &petname(i), self.connector.clone(), options())
            .await
            .unwrap();
        self.enrolled.remove(&petname(i));
    }

    fn client(&self, cache: &TempDir) -> GsdClient {
        GsdClient::new(
            self.source(),
            self.connector.clone(),
            Some(&cache.0),
            options(),
        )
        .0
    }

    fn set_down(&self, i: usize, down: bool) {
        self.servers[i].set_fault(if down { Fault::Down } else { Fault::None });
    }

    /// What a client sees: petname → nickname.
    fn seen(client: &GsdClient) -> BTreeMap<String, String> {
        client
            .view()
            .servers
            .iter()
            .map(|s| {
                (
                    s.petname.clone(),
                    s.announcement.nickname().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

#[test]
fn gsd_repair_puts_a_full_copy_back_and_renews_every_lease() {
    let rt = runtime();
    rt.block_on(async {
        let mut world = World::new(4, 1).await;
        for i in 0..4 {
            world.announce(i, &format!("node{i}")).await;
            world.enroll(i).await;
        }
        let gsd_si = tahoe_mount::storage::StorageIndex(world.state.gsd.storage_index());
        // One server loses its copy of the GSD; time passes on every server.
        for share in world.servers[2].stored_shares(gsd_si) {
            assert!(world.servers[2].delete_share(gsd_si, share));
        }
        for server in &world.servers {
            server.advance_clock(20 * 86400);
        }
        let report = operator::repair(&world.state, world.connector.clone(), options())
            .await
            .unwrap();
        assert!(!report.before.pre.healthy, "{:?}", report.before.pre);
        assert!(report.republished.is_some());
        assert!(report.unreachable.is_empty());
        assert_eq!(report.walk.objects, 5, "the GSD and four announcements");
        assert_eq!(report.walk.post_unhealthy, 0, "{:?}", report.walk);
        for server in &world.servers {
            let shares = server.stored_shares(gsd_si);
            assert_eq!(
                shares.len(),
                1,
                "{}: one full copy each",
                server.config().name
            );
            let share = *shares.iter().next().unwrap();
            let expiries = server.lease_expiries(gsd_si, share).unwrap();
            assert!(expiries.iter().all(|&e| e > 20 * 86400), "{expiries:?}");
        }
        // An announcement that has not changed is not republished, but its lease is renewed. (The first announce
        // spreads it over the servers enrolled since it was made.)
        world.announce(1, "node1").await;
        for server in &world.servers {
            server.advance_clock(20 * 86400);
        }
        let gsa_si = tahoe_mount::storage::StorageIndex(world.gsas[&1].storage_index());
        let again = announce(
            &server_id_of("mem1"),
            ann_of("mem1", "node1", &world.nurls[1]),
            &world.source(),
            &world.dir.0.join("gsa-1.writecap"),
            world.connector.clone(),
            options(),
        )
        .await
        .unwrap();
        assert_eq!(again.published, None);
        assert_eq!(again.leases_renewed, 4);
        let share = *world.servers[0]
            .stored_shares(gsa_si)
            .iter()
            .next()
            .unwrap();
        let expiries = world.servers[0].lease_expiries(gsa_si, share).unwrap();
        assert!(expiries.iter().all(|&e| e > 40 * 86400), "{expiries:?}");
    });
}

#[test]
fn a_fresh_client_finds_every_server_and_a_cached_one_needs_no_bootstrap_server() {
    let rt = runtime();
    rt.block_on(async {
        let mut world = World::new(5, 1).await;
        for i in 0..5 {
            world.announce(i, &format!("nick{i}")).await;
            world.enroll(i).await;
        }
        // Every server holds a share of the GSD (1-of-5) and of every GSA.
        for server in &world.servers {
            assert!(server.used_space() > 0);
        }
        let cache = TempDir::new("cache");
        let client = world.client(&cache);
        assert!(client.view().servers.is_empty());
        let report = client.refresh().await.unwrap();
        assert_eq!(report.added.len(), 5, "{report:?}");
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert_eq!(World::seen(&client), world.enrolled);
        assert_eq!(client.grid().len(), 5);

        // With the bootstrap server gone, a new client starts from the cache and still refreshes through the
        // servers it remembers.
        world.set_down(0, true);
        let again = world.client(&cache);
        assert_eq!(again.grid().len(), 5, "the cache alone gives the servers");
        let report = again.refresh().await.unwrap();
        assert_eq!(report.gsd_seqnum, client.view().gsd_seqnum);
        assert!(
            report.warnings.iter().any(|w| w.contains("mem0")),
            "{report:?}"
        );
        // A fresh client whose only bootstrap server is down fails, saying so.
        let fresh = TempDir::new("fresh");
        let err = world.client(&fresh).refresh().await.unwrap_err();
        assert!(err.to_string().contains("mem0"), "{err}");
    });
}

#[test]
fn an_older_gsd_is_passed_over_and_the_newer_kept() {
    let rt = runtime();
    rt.block_on(async {
        let mut world = World::new(3, 3).await;
        for i in 0..3 {
            world.announce(i, &format!("nick{i}")).await;
        }
        world.enroll(0).await;
        let cache = TempDir::new("cache");
        let client = world.client(&cache);
        client.refresh().await.unwrap();
        // mem2 misses the next two publishes, so it keeps an older GSD.
        world.set_down(2, true);
        world.enroll(1).await;
        world.enroll(2).await;
        world.set_down(2, false);
        let report = client.refresh().await.unwrap();
        let newest = report.gsd_seqnum;
        assert_eq!(World::seen(&client), world.enrolled);
        // Now only the stale server answers: its version is refused, the newer one kept.
        world.set_down(0, true);
        world.set_down(1, true);
        let report = client.refresh().await.unwrap();
        assert!(report.kept_cached, "{report:?}");
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.contains("nick2") && w.contains("older") && w.contains("passed over")),
            "{report:?}"
        );
        assert_eq!(client.view().gsd_seqnum, newest);
        assert_eq!(World::seen(&client), world.enrolled);
        // So is a new client of the same user (the floor is in the cache).
        let later = world.client(&cache);
        let report = later.refresh().await.unwrap();
        assert!(report.kept_cached);
        assert_eq!(later.view().gsd_seqnum, newest);
    });
}

#[test]
fn hostile_announcements_and_entries_are_skipped_with_a_warning() {
    let rt = runtime();
    rt.block_on(async {
        let mut world = World::new(3, 3).await;
        world.announce(0, "good").await;
        world.enroll(0).await;
        // A GSA that is not an announcement, linked by hand as v1.bad, and one that claims server 0's id.
        let grid = common::memory::grid_of(&world.servers);
        let params = tahoe_mount::mutable::MutableParams::one_share_per_server(
            tahoe_mount::cap::MutableFormat::Sdmf,
            3,
        );
        let garbage = tahoe_mount::mutable::MutableFile::create(
            grid.clone(),
            b"\xff not json",
            params,
            options(),
        )
        .await
        .unwrap();
        let twin_text = tahoe_mount::gsd::format::Announcement::new(
            &server_id_of("mem0"),
            ann_of("mem0", "twin", &world.nurls[0]),
        )
        .to_bytes();
        let twin = tahoe_mount::mutable::MutableFile::create(grid, &twin_text, params, options())
            .await
            .unwrap();
        operator::enroll(
            &world.state,
            "bad",
            garbage.cap().readonly(),
            world.connector.clone(),
            options(),
        )
        .await
        .unwrap_err();
        // The operator refuses both; a hostile operator could still link them, so link them directly.
        let gsd = tahoe_mount::dirnode::DirectoryNode::open(
            common::memory::grid_of(&world.servers),
            tahoe_mount::cap::Cap::Directory(tahoe_mount::cap::FileCap::Mutable(world.state.gsd)),
            options(),
        )
        .unwrap();
        let link = |name: &str, cap: MutableCap| tahoe_mount::dirnode::Change::Link {
            name: name.to_owned(),
            child: tahoe_mount::dirnode::Child::from_cap(&tahoe_mount::cap::Cap::File(
                tahoe_mount::cap::FileCap::Mutable(cap.readonly()),
            ))
            .unwrap(),
            metadata: None,
            replace: tahoe_mount::dirnode::Replace::Always,
        };
        gsd.modify(&[
            link("v1.bad", *garbage.cap()),
            link("v1.twin", *twin.cap()),
            link("notes", *garbage.cap()),
        ])
        .await
        .unwrap();
        let cache = TempDir::new("cache");
        let client = world.client(&cache);
        let report = client.refresh().await.unwrap();
        assert_eq!(World::seen(&client), world.enrolled, "{report:?}");
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.contains("\"bad\"") && w.contains("not")),
            "{report:?}"
        );
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.contains("\"twin\"") && w.contains("same server")),
            "{report:?}"
        );
        assert!(
            !report.warnings.iter().any(|w| w.contains("notes")),
            "other names are ignored quietly"
        );
    });
}

#[derive(Debug, Clone)]
enum Op {
    Enroll(usize),
    Remove(usize),
    Rename(usize, u8),
    Down(usize),
    Up(usize),
    Poll,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..6usize).prop_map(Op::Enroll),
        1 => (0..6usize).prop_map(Op::Remove),
        2 => (0..6usize, any::<u8>()).prop_map(|(i, n)| Op::Rename(i, n)),
        1 => (1..6usize).prop_map(Op::Down),
        1 => (0..6usize).prop_map(Op::Up),
        2 => Just(Op::Poll),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// Whatever happened (enrolments, removals, announcements changed, servers lost and come back stale), once
    /// every server is up and has re-announced (as their timers do), one poll brings the client to the GSD.
    #[test]
    fn a_client_converges_to_the_gsd_after_a_poll(ops in proptest::collection::vec(op(), 1..14)) {
        let rt = runtime();
        rt.block_on(async {
            let mut world = World::new(6, 1).await;
            for i in 0..6 {
                world.announce(i, &format!("nick{i}")).await;
            }
            world.enroll(0).await;
            let cache = TempDir::new("prop");
            let client = world.client(&cache);
            client.refresh().await.unwrap();
            let mut down = [false; 6];
            for op in ops {
                match op {
                    Op::Enroll(i) if !down[i] => world.enroll(i).await,
                    Op::Remove(i) if world.enrolled.contains_key(&petname(i)) && world.enrolled.len() > 1 => {
                        world.remove(i).await
                    }
                    Op::Rename(i, n) if !down[i] => {
                        world.announce(i, &format!("nick{i}-{n}")).await;
                    }
                    Op::Down(i) => {
                        down[i] = true;
                        world.set_down(i, true);
                    }
                    Op::Up(i) => {
                        down[i] = false;
                        world.set_down(i, false);
                    }
                    Op::Poll => {
                        // A poll with servers down may see less, but never an error nor an older GSD.
                        let before = client.view().gsd_seqnum;
                        if let Ok(report) = client.refresh().await {
                            prop_assert!(report.gsd_seqnum >= before);
                        }
                    }
                    _ => {}
                }
            }
            for (i, d) in down.iter_mut().enumerate() {
                *d = false;
                world.set_down(i, false);
            }
            for i in 0..6 {
                let nickname = world.nicknames[&i].clone();
                world.announce(i, &nickname).await;
            }
            client.refresh().await.unwrap();
            prop_assert_eq!(World::seen(&client), world.enrolled.clone());
            let enrolled_ids: std::collections::BTreeSet<String> = world
                .enrolled
                .keys()
                .map(|p| server_id_of(&format!("mem{}", &p["server-".len()..])))
                .collect();
            let grid_ids: std::collections::BTreeSet<String> =
                client.grid().servers().iter().map(|s| s.info.server_id.clone()).collect();
            prop_assert_eq!(grid_ids, enrolled_ids);
            Ok(())
        })?;
    }
}
