//! The in-memory storage server: the whole storage contract suite.

mod common;

use common::storage_contract as contract;
use std::collections::BTreeSet;
use tahoe_mount::storage::memory::MemoryServer;
use tahoe_mount::storage::{LeaseSecrets, StorageIndex, StorageServer};

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                contract::$name(&MemoryServer::new("memory")).await;
            }
        )*
    };
}

contract_tests!(
    version_sanity,
    immutable_upload_and_read,
    immutable_reallocate,
    immutable_conflicting_rewrite,
    immutable_write_limits,
    immutable_abort,
    immutable_wrong_upload_secret,
    leases,
    mutable_read_test_write,
    mutable_wrong_write_enabler,
    mutable_lengths,
    corruption_advisories,
    mixed_kinds_on_one_storage_index,
);

#[tokio::test]
async fn the_whole_suite_twice_on_one_server() {
    let server = MemoryServer::new("memory");
    contract::run_all(&server).await;
    contract::run_all(&server).await;
    // The suite aborts every upload it opens: nothing holds a reservation, so all the free space can be allocated.
    let free = server.version().await.unwrap().available_space;
    let a = server
        .allocate_buckets(IMM, &BTreeSet::from([0]), free, LEASE, b"up")
        .await
        .unwrap();
    assert_eq!(a.allocated, BTreeSet::from([0]));
}

const LEASE: LeaseSecrets = LeaseSecrets {
    renew: [1; 32],
    cancel: [2; 32],
};
const IMM: StorageIndex = StorageIndex([0xaa; 16]);
