//! The grid service directory on real tahoe-lafs 1.20 storage nodes, with no introducer anywhere: the operator's
//! and storage hosts' commands as users run them, a fresh client holding only the invitation, a running client
//! following the GSD, bootstrap servers lost, a stale server refused, and stock Tahoe reading it all.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use common::grid::LocalGrid;
use common::runtime;
use common::tahoe::pseudo_random;
use common::tahoe::{TahoeClient, TempDir, assert_success};
use tahoe_mount::config::Secret;
use tahoe_mount::gsd::client::{GbsConnector, GridSource, GsdClient};
use tahoe_mount::immutable::params::EncodingParams;
use tahoe_mount::immutable::upload::{UploadOptions, upload_file};
use tahoe_mount::mutable::MutableOptions;

/// `tahoe-mount args…` with its own cache and config directories.
struct User {
    cache: TempDir,
    config: TempDir,
}

impl User {
    fn new() -> User {
        User {
            cache: TempDir::new("cache"),
            config: TempDir::new("config"),
        }
    }

    fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tahoe-mount"));
        cmd.args(args)
            .env("TAHOE_MOUNT_CACHE_DIR", self.cache.path())
            .env("TAHOE_MOUNT_CONFIG_DIR", self.config.path());
        common::tahoe::run_with_stdin(cmd, stdin)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, b"");
        assert_success(&out, &format!("tahoe-mount {}", args.join(" ")));
        String::from_utf8(out.stdout).unwrap()
    }

    fn stderr(out: &Output) -> String {
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

fn announce(operator: &User, node: &Path, invitation: &str) -> String {
    let out = operator.run(
        &[
            "announce",
            "--node-dir",
            &node.to_string_lossy(),
            "--grid",
            invitation,
        ],
        b"",
    );
    assert_success(&out, &format!("announce {}", node.display()));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn an_introducer_less_grid_from_one_invitation() {
    let grid = LocalGrid::start(6);
    let servers = grid.servers().to_vec();
    let operator = User::new();
    let state = operator.config.path().join("gsd.json");
    let state_arg = state.to_string_lossy().into_owned();

    // The operator creates the GSD on the first server and invites clients through it.
    let readcap = operator
        .ok(&[
            "gsd",
            "create",
            "--state",
            &state_arg,
            "--server",
            &servers[0].nurl,
        ])
        .trim()
        .to_owned();
    assert!(readcap.starts_with("URI:DIR2-RO:"), "{readcap}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&state).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let invitation = operator.ok(&["gsd", "invite", "--state", &state_arg]);
    let invitation_json: serde_json::Value = serde_json::from_str(&invitation).unwrap();
    assert_eq!(invitation_json["cap"], readcap.as_str());
    assert_eq!(
        invitation_json["furls"],
        serde_json::json!([servers[0].nurl])
    );
    let invitation_file = operator.config.path().join("invitation.json");
    std::fs::write(&invitation_file, &invitation).unwrap();
    let invite_arg = format!("@{}", invitation_file.display());

    // Each of five storage hosts announces itself; the operator enrolls it.
    let mut gsas = Vec::new();
    for server in &servers[..5] {
        let gsa = announce(&operator, &server.basedir, &invite_arg);
        assert!(gsa.starts_with("URI:SSK-RO:"), "{gsa}");
        let writecap = server.basedir.join("private/gsa.writecap");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&writecap).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        // Announcing again changes nothing and prints the same readcap.
        assert_eq!(announce(&operator, &server.basedir, &invite_arg), gsa);
        operator.ok(&["gsd", "enroll", "--state", &state_arg, &server.name, &gsa]);
        gsas.push(gsa);
    }
    let listing = operator.ok(&["gsd", "list", "--state", &state_arg]);
    for server in &servers[..5] {
        assert!(
            listing.contains(&server.server_id) && listing.contains("reachable"),
            "{listing}"
        );
    }

    // A fresh client holding only the invitation (one NURL) lists all five and can put and get.
    let alice = User::new();
    let listed = alice.ok(&["servers", "--grid", &invitation]);
    for server in &servers[..5] {
        assert!(listed.contains(&server.server_id[..36]), "{listed}");
    }
    assert_eq!(listed.matches("connected").count(), 5, "{listed}");
    let data = pseudo_random(common::tahoe::seed(), 300_000);
    let put = alice.run(
        &[
            "put",
            "--grid",
            &invitation,
            "--shares-needed",
            "2",
            "--shares-happy",
            "5",
            "--shares-total",
            "5",
        ],
        &data,
    );
    assert_success(&put, "put --grid");
    let cap = String::from_utf8(put.stdout).unwrap().trim().to_owned();
    let got = alice.run(&["get", "--grid", &invitation, &cap], b"");
    assert_success(&got, "get --grid");
    assert!(got.stdout == data);

    // Stock Tahoe reads the GSD and the announcements (its client knows the servers from servers.yaml only).
    let tahoe = TahoeClient::start(&grid, 1, 1, 1);
    let ls = tahoe.tahoe(&["ls", &readcap], b"");
    assert_success(&ls, "tahoe ls <GSD>");
    let names: Vec<String> = String::from_utf8(ls.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let expected: Vec<String> = servers[..5]
        .iter()
        .map(|s| format!("v1.{}", s.name))
        .collect();
    assert_eq!(names, expected);
    for (server, gsa) in servers[..5].iter().zip(&gsas) {
        let get = tahoe.tahoe(&["get", gsa], b"");
        assert_success(&get, "tahoe get <GSA>");
        let json: serde_json::Value = serde_json::from_slice(&get.stdout).unwrap();
        let ann = &json[&server.server_id]["ann"];
        assert_eq!(
            ann["anonymous-storage-NURLs"],
            serde_json::json!(server.nurls),
            "{json}"
        );
        assert_eq!(ann["anonymous-storage-FURL"], server.furl.as_str());
        assert_eq!(
            ann["permutation-seed-base32"],
            server.permutation_seed_base32.as_str()
        );
        assert_eq!(ann["my-version"], "tahoe-lafs/1.20.0");
    }

    // A running client follows the GSD: a sixth node enrolled is used after the next poll, a removed one dropped.
    let rt = runtime();
    let bob_cache = TempDir::new("bob");
    let (source, _) = GridSource::parse(&invitation, &[]).unwrap();
    let (bob, _) = GsdClient::new(
        source,
        Arc::new(GbsConnector(Default::default())),
        Some(bob_cache.path()),
        MutableOptions::new(Vec::new()),
    );
    let bob = Arc::new(bob);
    rt.block_on(bob.refresh()).unwrap();
    assert_eq!(bob.grid().len(), 5);
    let mut changes = bob.subscribe();
    let poller = {
        let _in_runtime = rt.enter();
        bob.spawn_poller(Duration::from_millis(500), |_| {})
    };
    let gsa5 = announce(&operator, &servers[5].basedir, &invite_arg);
    operator.ok(&[
        "gsd",
        "enroll",
        "--state",
        &state_arg,
        &servers[5].name,
        &gsa5,
    ]);
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), changes.changed())
            .await
            .unwrap()
            .unwrap();
    });
    assert_eq!(bob.grid().len(), 6);
    let upload = UploadOptions {
        params: EncodingParams {
            needed: 2,
            happy: 6,
            total: 6,
            ..Default::default()
        },
        ..UploadOptions::new(Secret::new(vec![1; 32]), Secret::new(vec![2; 32]))
    };
    let scratch = TempDir::new("upload");
    let file = scratch.path().join("data");
    std::fs::write(&file, pseudo_random(5, 200_000)).unwrap();
    let file = Arc::new(std::fs::File::open(&file).unwrap());
    let uploaded = rt
        .block_on(upload_file(&bob.grid(), file, &upload))
        .unwrap();
    let si = common::tahoe::storage_index_of(&uploaded.cap.to_string());
    assert!(
        grid.share_holders(&si).iter().any(|h| h.server == 5),
        "the sixth server holds a share of an upload made after the poll"
    );
    operator.ok(&["gsd", "remove", "--state", &state_arg, &servers[1].name]);
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), changes.changed())
            .await
            .unwrap()
            .unwrap();
    });
    let ids: Vec<String> = bob
        .grid()
        .servers()
        .iter()
        .map(|s| s.info.server_id.clone())
        .collect();
    assert_eq!(ids.len(), 5);
    assert!(!ids.contains(&servers[1].server_id));
    poller.abort();

    // A server that missed a publish offers an older GSD: it is passed over, and the newer one kept.
    grid.stop_server(3);
    operator.ok(&[
        "gsd",
        "enroll",
        "--state",
        &state_arg,
        &servers[1].name,
        &gsas[1],
    ]);
    grid.start_server(3);
    let newest = rt.block_on(bob.refresh()).unwrap();
    assert_eq!(bob.grid().len(), 6);
    let (stale_source, _) = GridSource::parse(&readcap, &[servers[3].nurl.clone()]).unwrap();
    let (carol, _) = GsdClient::new(
        stale_source,
        Arc::new(GbsConnector(Default::default())),
        Some(bob_cache.path()),
        MutableOptions::new(Vec::new()),
    );
    let report = rt.block_on(carol.refresh()).unwrap();
    assert_eq!(report.gsd_seqnum, newest.gsd_seqnum);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains(&servers[3].name) && w.contains("passed over")),
        "{report:?}"
    );

    // With the bootstrap server stopped, a client with its cache still starts and works...
    grid.stop_server(0);
    let again = alice.run(
        &["get", "--grid", &invitation, "--grid-max-age", "0", &cap],
        b"",
    );
    assert_success(&again, "get --grid from the cache, bootstrap server down");
    assert!(again.stdout == data);
    assert!(
        User::stderr(&again).contains("warning"),
        "{}",
        User::stderr(&again)
    );
    // ...and a fresh client with another bootstrap NURL works too.
    let dave = User::new();
    let got = dave.run(
        &[
            "get",
            "--grid",
            &readcap,
            "--bootstrap",
            &servers[2].nurl,
            &cap,
        ],
        b"",
    );
    assert_success(&got, "get --grid READCAP --bootstrap");
    assert!(got.stdout == data);
    // A fresh client whose only bootstrap server is down gets a clear error.
    let erin = User::new();
    let out = erin.run(&["servers", "--grid", &invitation], b"");
    assert!(!out.status.success());
    assert!(
        User::stderr(&out).contains("cannot join the grid"),
        "{}",
        User::stderr(&out)
    );
}
