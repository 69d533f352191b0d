//! The GBS client against real tahoe-lafs 1.20 storage nodes on 127.0.0.1 (started by `mount-tests/grid.py`,
//! no introducer): every endpoint, the contract suite shared with the in-memory server, pinning and
//! authorization failures, a stopped server, and lease secrets / write enablers equal to allmydata's for the
//! same server, with the tubid taken from the pinned certificate.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::grid::LocalGrid;
use tahoe_mount::cap::{Cap, FileCap, MutableAccess};
use tahoe_mount::storage::gbs::{GbsOptions, GbsServer};
use tahoe_mount::storage::nurl::{Furl, Nurl};
use tahoe_mount::storage::{
    LeaseSecrets, MutableSecrets, ReadVector, StorageError, StorageIndex, StorageServer,
    TestVector, TestWriteVectors, WriteVector, write_enabler,
};

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).expect("random");
    out
}

fn client(nurl: &str, options: GbsOptions) -> GbsServer {
    GbsServer::new(&nurl.parse::<Nurl>().expect("grid NURL"), None, options).expect("client")
}

fn grid() -> &'static LocalGrid {
    LocalGrid::shared(3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_reports_its_version() {
    let grid = grid();
    assert!(grid.servers().len() >= 3);
    for s in grid.servers() {
        let v = client(&s.nurl, GbsOptions::default())
            .version()
            .await
            .unwrap();
        assert_eq!(v.application_version, "tahoe-lafs/1.20.0", "{}", s.name);
        assert_eq!(v.maximum_mutable_share_size, 69_105_000_000_000_000);
        assert!(v.available_space > 0 && v.maximum_immutable_share_size > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_suite_passes_against_a_real_server() {
    let server = client(&grid().servers()[0].nurl, GbsOptions::default());
    common::storage_contract::run_all(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_share_in_several_patches_read_back_by_ranges() {
    // Small PATCHes so one write call becomes several requests.
    let options = GbsOptions {
        upload_chunk: 64 << 10,
        ..GbsOptions::default()
    };
    let server = client(&grid().servers()[1].nurl, options);
    let si = StorageIndex(random_bytes());
    let lease = LeaseSecrets {
        renew: random_bytes(),
        cancel: random_bytes(),
    };
    let upload_secret: [u8; 20] = random_bytes();
    let size = 300_000u64;
    let share: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    let shares: BTreeSet<u16> = [0, 3].into();
    let allocation = server
        .allocate_buckets(si, &shares, size, lease, &upload_secret)
        .await
        .unwrap();
    assert_eq!(allocation.allocated, shares);
    assert!(allocation.already_have.is_empty());

    // Share 0: second half first, then the first half.
    let half = (size / 2) as usize;
    let progress = server
        .write_share_chunk(
            si,
            0,
            &upload_secret,
            half as u64,
            Bytes::copy_from_slice(&share[half..]),
        )
        .await
        .unwrap();
    assert!(!progress.complete);
    assert_eq!(progress.required, vec![0..half as u64]);
    assert!(
        server.list_immutable_shares(si).await.unwrap().is_empty(),
        "incomplete shares are not listed"
    );
    let progress = server
        .write_share_chunk(
            si,
            0,
            &upload_secret,
            0,
            Bytes::copy_from_slice(&share[..half]),
        )
        .await
        .unwrap();
    assert!(progress.complete && progress.required.is_empty());
    assert_eq!(server.list_immutable_shares(si).await.unwrap(), [0].into());

    for (offset, length) in [
        (0, 10),
        (1000, 65_536),
        (size - 5, 5),
        (size - 5, 100),
        (0, size),
    ] {
        let got = server
            .read_immutable_share(si, 0, offset, length)
            .await
            .unwrap();
        let end = (offset + length).min(size) as usize;
        assert_eq!(
            got.as_ref(),
            &share[offset as usize..end],
            "read {offset}+{length}"
        );
    }
    assert!(
        server
            .read_immutable_share(si, 0, size, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        server.read_immutable_share(si, 7, 0, 10).await,
        Err(StorageError::NotFound { .. })
    ));

    // Re-allocating reports what is complete; the unfinished share 3 is neither.
    let again = server
        .allocate_buckets(si, &[0, 3].into(), size, lease, &upload_secret)
        .await
        .unwrap();
    assert_eq!(again.already_have, [0].into());
    server.abort_upload(si, 3, &upload_secret).await.unwrap();
    server
        .advise_corrupt_immutable(si, 0, "test: not really corrupt")
        .await
        .unwrap();
    server.add_or_renew_lease(si, lease).await.unwrap();
    let missing = StorageIndex(random_bytes());
    assert!(matches!(
        server.add_or_renew_lease(missing, lease).await,
        Err(StorageError::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutable_slot_create_failed_test_overwrite_read() {
    let server = client(&grid().servers()[2].nurl, GbsOptions::default());
    let si = StorageIndex(random_bytes());
    let secrets = MutableSecrets {
        write_enabler: random_bytes(),
        lease: LeaseSecrets {
            renew: random_bytes(),
            cancel: random_bytes(),
        },
    };
    let write = |tests: Vec<TestVector>, data: &'static [u8]| {
        let vectors = TestWriteVectors {
            tests,
            writes: vec![WriteVector {
                offset: 0,
                data: Bytes::from_static(data),
            }],
            new_length: None,
        };
        BTreeMap::from([(0u16, vectors)])
    };
    let must_not_exist = vec![TestVector {
        offset: 0,
        size: 1,
        specimen: Bytes::new(),
    }];
    let reads = [ReadVector { offset: 0, size: 5 }];

    let created = server
        .read_test_write(
            si,
            secrets,
            &write(must_not_exist.clone(), b"first version"),
            &reads,
        )
        .await
        .unwrap();
    assert!(created.success);
    assert!(
        created.data.is_empty(),
        "nothing to read before the first write: {:?}",
        created.data
    );

    let failed = server
        .read_test_write(
            si,
            secrets,
            &write(must_not_exist, b"clobbered!!!!"),
            &reads,
        )
        .await
        .unwrap();
    assert!(!failed.success);
    assert_eq!(failed.data[&0], vec![Bytes::from_static(b"first")]);
    assert_eq!(
        server
            .read_mutable_share(si, 0, 0, 100)
            .await
            .unwrap()
            .as_ref(),
        b"first version"
    );

    let expect_first = vec![TestVector {
        offset: 0,
        size: 5,
        specimen: Bytes::from_static(b"first"),
    }];
    let overwritten = server
        .read_test_write(si, secrets, &write(expect_first, b"second versio"), &reads)
        .await
        .unwrap();
    assert!(overwritten.success);
    assert_eq!(
        server
            .read_mutable_share(si, 0, 0, 100)
            .await
            .unwrap()
            .as_ref(),
        b"second versio"
    );
    assert_eq!(
        server
            .read_mutable_share(si, 0, 7, 3)
            .await
            .unwrap()
            .as_ref(),
        b"ver"
    );
    assert_eq!(server.list_mutable_shares(si).await.unwrap(), [0].into());

    let wrong = MutableSecrets {
        write_enabler: random_bytes(),
        ..secrets
    };
    let err = server
        .read_test_write(si, wrong, &write(vec![], b"intruder"), &reads)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Unauthorized { .. }), "{err}");
    server.add_or_renew_lease(si, secrets.lease).await.unwrap();
    server
        .advise_corrupt_mutable(si, 0, "test advisory")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_is_refused_and_a_wrong_swissnum_is_unauthorized() {
    let real: Nurl = grid().servers()[0].nurl.parse().unwrap();
    let mut wrong_pin = real.clone();
    wrong_pin.spki_hash[0] ^= 1;
    let err = GbsServer::new(&wrong_pin, None, GbsOptions::default())
        .unwrap()
        .version()
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("pin"), "{err}");

    let mut wrong_swissnum = real;
    wrong_swissnum.swissnum = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into();
    let err = GbsServer::new(&wrong_swissnum, None, GbsOptions::default())
        .unwrap()
        .version()
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("unauthorized"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_is_a_connection_error_within_the_timeout() {
    // Its own one-node grid: stopping a shared server would disturb the other tests.
    let grid = LocalGrid::start(1);
    let nurl = grid.servers()[0].nurl.clone();
    let options = GbsOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(3),
        ..GbsOptions::default()
    };
    let server = client(&nurl, options);
    server.version().await.unwrap();
    grid.stop_server(0);
    let started = Instant::now();
    let err = server.version().await.unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::Connect { .. } | StorageError::Timeout { .. }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    grid.start_server(0);
    server.version().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_secrets_and_write_enablers_equal_allmydata_for_the_same_server() {
    let s = &grid().servers()[0];
    let server = client(&s.nurl, GbsOptions::default());
    let tubid = server.tubid().await.unwrap();
    let furl: Furl = s.furl.parse().unwrap();
    assert_eq!(
        tubid, furl.tubid,
        "the certificate's SHA-1 is the fURL's tubid"
    );

    let writecap =
        "URI:SSK:vdwwblrmxefk36j5uqkdsihyru:53xlpz7ue5pktjsgpgw6wgj5xhnu2bhgrhamxrsvbxv6zpmffoka";
    let Cap::File(FileCap::Mutable(mutable)) = Cap::parse(writecap).unwrap() else {
        unreachable!("the test's writecap is an SSK writecap")
    };
    let MutableAccess::Write { writekey } = mutable.access else {
        unreachable!("the test's writecap is an SSK writecap")
    };
    let mutable_si = StorageIndex(mutable.storage_index());
    let lease_secret: [u8; 32] = random_bytes();
    let immutable_si = StorageIndex(random_bytes());
    let request = serde_json::json!({
        "server_id": s.server_id,
        "ann": s.announcement,
        "lease_secret": hex(&lease_secret),
        "writecap": writecap,
        "storage_index": hex(&immutable_si.0),
    });
    let out = common::run_python(
        "tests/lease_secrets.py",
        &[],
        request.to_string().as_bytes(),
    );
    let tahoe: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(tahoe["lease_seed"], hex(&tubid));
    assert_eq!(tahoe["write_enabler_seed"], hex(&tubid));

    let ours = LeaseSecrets::derive(&lease_secret, &immutable_si, &tubid);
    assert_eq!(tahoe["immutable"]["renew"], hex(&ours.renew));
    assert_eq!(tahoe["immutable"]["cancel"], hex(&ours.cancel));
    let ours = LeaseSecrets::derive(&lease_secret, &mutable_si, &tubid);
    assert_eq!(tahoe["mutable"]["renew"], hex(&ours.renew));
    assert_eq!(tahoe["mutable"]["cancel"], hex(&ours.cancel));
    assert_eq!(
        tahoe["mutable"]["write_enabler"],
        hex(&write_enabler(&writekey, &tubid))
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn cli_servers_reports_each_server_and_which_failed() {
    let grid = grid();
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        format!("pb://{}@127.0.0.1:{port}/swissnum#v=1", "A".repeat(43))
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tahoe-mount"))
        .arg("servers")
        .arg("--servers-file")
        .arg(grid.servers_yaml())
        .args(["--server", &dead, "--timeout", "3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "one server is down, so the command fails"
    );
    for s in grid.servers() {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&s.name))
            .unwrap_or_else(|| panic!("{}: {stdout}", s.name));
        assert!(
            line.contains("tahoe-lafs/1.20.0") && line.contains("ms"),
            "{line}"
        );
    }
    let failed = stdout
        .lines()
        .find(|l| l.contains("FAILED"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        failed.contains("cannot connect") && failed.contains("127.0.0.1:"),
        "{failed}"
    );
    assert!(
        stderr.contains(&format!(
            "1 of {} servers did not answer",
            grid.servers().len() + 1
        )),
        "{stderr}"
    );
}
