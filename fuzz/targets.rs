#![allow(dead_code)] // each fuzz binary uses one of these
//! What each fuzz target does with its input, shared by the cargo-fuzz targets (`fuzz/fuzz_targets/`, run with
//! `cargo +nightly fuzz run NAME`) and by `tests/fuzz_corpora.rs`, which replays every saved input on stable
//! Rust in CI. Each function feeds outside bytes to a parser; a panic is a bug, an error is the right answer to
//! garbage, and what parses must print back (or pack back) to something that parses the same.

use tahoe_mount::cap::Cap;
use tahoe_mount::dirnode::{Access, unpack};
use tahoe_mount::fs::spool::JournalEntry;
use tahoe_mount::gsd::format::{Announcement, Invitation};
use tahoe_mount::immutable::layout::ShareLayout;
use tahoe_mount::immutable::uri_extension::UriExtension;
use tahoe_mount::mutable::layout::{parse_block_hash_tree, parse_header, parse_share_hash_chain};
use tahoe_mount::storage::nurl::{Furl, Nurl};
use tahoe_mount::storage::{cbor, replies};

/// What a target does with one input.
pub type Target = fn(&[u8]);

/// Every target by name, as the corpus directories are named.
pub const TARGETS: &[(&str, Target)] = &[
    ("cap", cap),
    ("nurl", nurl),
    ("gsd_format", gsd_format),
    ("replies", replies),
    ("chk_share", chk_share),
    ("uri_extension", uri_extension),
    ("mutable_share", mutable_share),
    ("dirnode", dirnode),
    ("journal", journal),
    ("servers_yaml", servers_yaml),
];

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

pub fn cap(data: &[u8]) {
    let Some(text) = text(data) else { return };
    if let Ok(cap) = Cap::parse(text) {
        let printed = cap.to_string();
        assert_eq!(
            Cap::parse(&printed).expect("a printed cap parses"),
            cap,
            "{printed}"
        );
    }
}

pub fn nurl(data: &[u8]) {
    let Some(text) = text(data) else { return };
    if let Ok(nurl) = text.parse::<Nurl>() {
        let printed = nurl.to_string();
        assert_eq!(
            printed.parse::<Nurl>().expect("a printed NURL parses"),
            nurl,
            "{printed}"
        );
    }
    let _ = text.parse::<Furl>();
}

pub fn gsd_format(data: &[u8]) {
    let _ = Announcement::parse(data, "fuzz");
    if let Some(text) = text(data)
        && let Ok(invitation) = Invitation::parse(text)
    {
        let again = Invitation::parse(&invitation.to_json()).expect("a written invitation parses");
        assert_eq!(again.to_json(), invitation.to_json());
    }
}

pub fn replies(data: &[u8]) {
    let _ = cbor::check_items(data, cbor::MAX_ITEMS);
    let _ = replies::decode_as_every_reply(data);
}

pub fn chk_share(data: &[u8]) {
    let _ = ShareLayout::parse(data);
}

pub fn uri_extension(data: &[u8]) {
    if let Ok(ueb) = UriExtension::unpack(data) {
        let packed = ueb.pack();
        assert_eq!(
            UriExtension::unpack(&packed)
                .expect("a packed UEB unpacks")
                .pack(),
            packed
        );
    }
}

pub fn mutable_share(data: &[u8]) {
    let _ = parse_header(data);
    let _ = parse_share_hash_chain(data);
    let _ = parse_block_hash_tree(data);
}

pub fn dirnode(data: &[u8]) {
    for access in [
        Access::ReadOnly,
        Access::Immutable,
        Access::Writeable { writekey: [7; 16] },
    ] {
        let _ = unpack(data, &access);
    }
}

pub fn journal(data: &[u8]) {
    let _ = serde_json::from_slice::<JournalEntry>(data);
}

pub fn servers_yaml(data: &[u8]) {
    if let Some(text) = text(data) {
        let _ = tahoe_mount::grid::parse_servers_yaml(text);
    }
}
