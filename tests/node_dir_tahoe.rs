//! `gsd::node_dir` against a real Tahoe-LAFS 1.20 storage node: the announcement read from its directory is the
//! one `mount-tests/grid.py` computes for it (less the per-publish fields), and the NURL built from the directory
//! reaches the running node, so its pin and swissnum are right.

mod common;

use common::grid::LocalGrid;
use std::collections::BTreeSet;
use tahoe_mount::gsd::node_dir::read_node_dir;
use tahoe_mount::storage::StorageServer;
use tahoe_mount::storage::gbs::GbsServer;

#[test]
fn the_announcement_read_from_a_node_directory_is_what_the_node_announces() {
    let grid = LocalGrid::start(1);
    let server = &grid.servers()[0];
    let ours = read_node_dir(&server.basedir).expect("read the node directory");

    assert_eq!(ours.server_id, server.server_id);
    let nurls: Vec<String> = ours.nurls.iter().map(ToString::to_string).collect();
    assert_eq!(nurls, server.nurls);
    assert_eq!(
        ours.ann["anonymous-storage-NURLs"],
        serde_json::json!(server.nurls)
    );
    assert_eq!(ours.ann["anonymous-storage-FURL"], server.furl.as_str());
    assert_eq!(
        ours.ann["permutation-seed-base32"],
        server.permutation_seed_base32.as_str()
    );
    assert_eq!(ours.ann["nickname"], server.name.as_str());

    // grid.py's announcement also has the fields each publish sets, which the caller adds.
    let theirs = server
        .announcement
        .as_object()
        .expect("announcement is a mapping");
    for (key, value) in &ours.ann {
        assert_eq!(Some(value), theirs.get(key), "announcement key {key}");
    }
    let only_theirs: BTreeSet<&str> = theirs
        .keys()
        .filter(|key| !ours.ann.contains_key(*key))
        .map(String::as_str)
        .collect();
    assert_eq!(
        only_theirs,
        BTreeSet::from(["my-version", "nonce", "seqnum"])
    );

    // The NURL built from node.pem and storage.furl is accepted by the running node: right pin, right swissnum.
    let version = common::runtime().block_on(async {
        GbsServer::new(&ours.nurls[0], None, Default::default())
            .expect("a client for the NURL")
            .version()
            .await
            .expect("the node answers its version over the NURL we built")
    });
    assert_eq!(version.application_version, theirs["my-version"]);
}
