//! Properties of the directory format layer on its own: pack/unpack round trips through every kind of access, JSON
//! that reads back as written, batch edits that agree with a simple model, and hostile packed bytes (truncated,
//! tampered, oversized, badly encoded) that give errors naming the entry, never a panic.

use proptest::prelude::*;
use tahoe_mount::cap::Cap;
use tahoe_mount::crypto::base32;
use tahoe_mount::crypto::netstring::netstring;
use tahoe_mount::dirnode::json::{self, Json, Object};
use tahoe_mount::dirnode::{
    Access, Change, Child, Directory, EditError, Entry, EntryProblem, MAX_DIRECTORY_BYTES,
    MAX_METADATA_BYTES, Metadata, MetadataError, ReadError, Replace, UnpackError, pack,
    read_immutable_directory, unpack,
};
use tahoe_mount::grid::client::Grid;

const WRITEKEY: [u8; 16] = [0x42; 16];

fn dircap() -> Cap {
    Cap::parse(&format!(
        "URI:DIR2:{}:{}",
        base32::encode(&WRITEKEY),
        base32::encode(&[9; 32])
    ))
    .unwrap()
}

/// A cap string of a kind chosen by `kind`, with keys from `seed`.
fn cap_text(kind: u8, seed: [u8; 32]) -> String {
    let (k, h) = (base32::encode(&seed[..16]), base32::encode(&seed));
    match kind % 10 {
        0 => format!(
            "URI:LIT:{}",
            base32::encode(&seed[..(seed[0] % 20) as usize])
        ),
        1 => format!("URI:CHK:{k}:{h}:3:10:{}", seed[1] as u64 * 1000),
        2 => format!("URI:SSK:{k}:{h}"),
        3 => format!("URI:SSK-RO:{k}:{h}"),
        4 => format!("URI:MDMF:{k}:{h}"),
        5 => format!("URI:DIR2:{k}:{h}"),
        6 => format!("URI:DIR2-MDMF-RO:{k}:{h}"),
        7 => format!("URI:DIR2-CHK:{k}:{h}:1:1:{}", seed[2]),
        8 => format!("URI:DIR2-LIT:{}", base32::encode(&seed[..5])),
        _ => format!("URI:FUTURE-KIND:{k}"),
    }
}

fn child_strategy() -> impl Strategy<Value = Child> {
    (any::<u8>(), any::<[u8; 32]>(), any::<bool>()).prop_map(|(kind, seed, unknown_writecap)| {
        let text = cap_text(kind, seed);
        if text.starts_with("URI:FUTURE") {
            // An unknown child: a readcap, and maybe an unknown writecap beside it.
            let write = unknown_writecap.then(|| format!("{text}:w"));
            Child::from_caps(
                write.as_deref().map(str::as_bytes),
                Some(text.as_bytes()),
                false,
            )
            .unwrap()
        } else {
            Child::from_cap(&Cap::parse(&text).unwrap()).unwrap()
        }
    })
}

fn json_strategy() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::int),
        any::<f64>()
            .prop_filter("NaN never equals itself", |f| !f.is_nan())
            .prop_map(Json::Float),
        "\\PC{0,8}".prop_map(Json::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::vec(("\\PC{0,6}", inner), 0..4).prop_map(|pairs| {
                let mut object = Object::new();
                for (k, v) in pairs {
                    object.insert(k, v);
                }
                Json::Object(object)
            }),
        ]
    })
}

fn metadata_strategy() -> impl Strategy<Value = Metadata> {
    prop::collection::vec(("[a-z\\-]{0,8}", json_strategy()), 0..4).prop_map(|pairs| {
        let mut metadata = Metadata::new();
        for (k, v) in pairs {
            metadata.insert(k, v);
        }
        metadata
    })
}

fn directory_strategy() -> impl Strategy<Value = Directory> {
    prop::collection::vec(("[^/]{1,12}", child_strategy(), metadata_strategy()), 0..8).prop_map(
        |entries| {
            let mut directory = Directory::new();
            for (name, child, metadata) in entries {
                directory.insert(&name, Entry { child, metadata }).unwrap();
            }
            directory
        },
    )
}

/// Name, writecap, readcap and metadata JSON of each entry.
type Listing = Vec<(String, Option<Vec<u8>>, Option<Vec<u8>>, String)>;

fn listing(directory: &Directory) -> Listing {
    directory
        .iter()
        .map(|(name, e)| {
            (
                name.to_owned(),
                e.child.write_uri(),
                e.child.read_uri(),
                e.metadata.to_json(),
            )
        })
        .collect()
}

proptest! {
    #[test]
    fn writeable_and_readonly_round_trips(directory in directory_strategy()) {
        let packed = pack(&directory, Some(&WRITEKEY), false).unwrap();
        let back = unpack(&packed, &Access::of(&dircap()).unwrap()).unwrap();
        prop_assert!(back.skipped.is_empty());
        prop_assert_eq!(listing(&back.directory), listing(&directory));
        // Packing is deterministic: what was read packs to the same bytes.
        prop_assert_eq!(pack(&back.directory, Some(&WRITEKEY), false).unwrap(), packed.clone());
        // Through the readcap, every child is seen in its read-only form.
        let readonly = unpack(&packed, &Access::ReadOnly).unwrap();
        let expected: Vec<_> = directory.iter().map(|(n, e)| (n.to_owned(), e.child.readonly())).collect();
        let seen: Vec<_> = readonly.directory.iter().map(|(n, e)| (n.to_owned(), e.child.clone())).collect();
        prop_assert_eq!(seen, expected);
    }

    #[test]
    fn immutable_directories_hold_only_immutable_children(directory in directory_strategy()) {
        let allowed = directory.iter().all(|(_, e)| e.child.is_allowed_in_immutable_directory());
        match pack(&directory, None, true) {
            Ok(packed) => {
                prop_assert!(allowed);
                let back = unpack(&packed, &Access::Immutable).unwrap();
                prop_assert!(back.skipped.is_empty());
                prop_assert_eq!(back.directory.len(), directory.len());
            }
            Err(_) => prop_assert!(!allowed),
        }
    }

    #[test]
    fn json_reads_back_as_written(value in json_strategy()) {
        let text = value.dumps();
        prop_assert!(text.is_ascii());
        let back = json::loads(text.as_bytes()).unwrap();
        prop_assert_eq!(back.dumps(), text);
    }

    #[test]
    fn unpacking_arbitrary_bytes_never_panics(data in prop::collection::vec(any::<u8>(), 0..400)) {
        for access in [Access::of(&dircap()).unwrap(), Access::ReadOnly, Access::Immutable] {
            let _ = unpack(&data, &access);
        }
    }

    #[test]
    fn batch_edits_agree_with_a_name_model(ops in prop::collection::vec((0u8..4, 0usize..4, 0usize..4, any::<bool>()), 1..12)) {
        const NAMES: [&str; 4] = ["a", "b", "c", "d"];
        let child = Child::from_cap(&Cap::parse(&cap_text(0, [1; 32])).unwrap()).unwrap();
        let mut directory = Directory::new();
        let mut present = std::collections::BTreeSet::new();
        for (op, x, y, flag) in ops {
            let (x, y) = (NAMES[x], NAMES[y]);
            let replace = if flag { Replace::Always } else { Replace::Never };
            let change = match op {
                0 => Change::Link { name: x.into(), child: child.clone(), metadata: None, replace },
                1 => Change::Unlink { name: x.into() },
                2 => Change::Rename { from: x.into(), to: y.into(), replace },
                _ => Change::SetMetadata { name: x.into(), metadata: Metadata::new() },
            };
            let should_fail = match op {
                0 => present.contains(x) && !flag,
                2 => !present.contains(x) || (x != y && present.contains(y) && !flag),
                _ => !present.contains(x),
            };
            match directory.apply(std::slice::from_ref(&change), 1.0) {
                Ok(next) => {
                    prop_assert!(!should_fail, "{:?} succeeded", change);
                    match op {
                        0 => { present.insert(x); }
                        1 => { present.remove(x); }
                        2 => { present.remove(x); present.insert(y); }
                        _ => {}
                    }
                    directory = next;
                }
                Err(e) => prop_assert!(should_fail, "{:?} failed: {}", change, e),
            }
            let names: std::collections::BTreeSet<&str> = directory.iter().map(|(n, _)| n).collect();
            prop_assert_eq!(&names, &present);
        }
    }
}

/// One packed entry from raw field bytes.
fn raw_entry(name: &[u8], read: &[u8], write: &[u8], metadata: &[u8]) -> Vec<u8> {
    netstring(
        &[
            netstring(name),
            netstring(read),
            netstring(write),
            netstring(metadata),
        ]
        .concat(),
    )
}

fn entry_problem(
    result: Result<tahoe_mount::dirnode::Unpacked, UnpackError>,
) -> (usize, EntryProblem) {
    match result {
        Err(UnpackError::Entry { index, problem, .. }) => (index, problem),
        other => panic!("expected an entry error, got {other:?}"),
    }
}

fn sample_packed() -> Vec<u8> {
    let directory = Directory::new()
        .apply(
            &[
                Change::Link {
                    name: "one".into(),
                    child: Child::from_cap(&Cap::parse(&cap_text(2, [3; 32])).unwrap()).unwrap(),
                    metadata: None,
                    replace: Replace::Never,
                },
                Change::Link {
                    name: "two".into(),
                    child: Child::from_cap(&Cap::parse(&cap_text(1, [4; 32])).unwrap()).unwrap(),
                    metadata: None,
                    replace: Replace::Never,
                },
            ],
            1_700_000_000.5,
        )
        .unwrap();
    pack(&directory, Some(&WRITEKEY), false).unwrap()
}

#[test]
fn every_truncation_is_an_error_or_a_shorter_directory() {
    let packed = sample_packed();
    let access = Access::of(&dircap()).unwrap();
    let full = unpack(&packed, &access).unwrap().directory;
    for cut in 0..packed.len() {
        match unpack(&packed[..cut], &access) {
            Ok(partial) => assert!(partial.directory.len() < full.len(), "cut at {cut}"),
            Err(e) => {
                let text = e.to_string();
                assert!(
                    text.contains("directory entry") && text.contains("at byte"),
                    "{text}"
                );
            }
        }
    }
}

#[test]
fn a_tampered_writecap_fails_its_hmac_and_names_the_entry() {
    let mut packed = sample_packed();
    // The second entry's encrypted writecap: flip a byte in the middle of the first 48-byte-or-longer slot.
    let access = Access::of(&dircap()).unwrap();
    let needle = b":URI:SSK-RO:";
    let ro = packed
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    let slot_start = ro + packed[ro..].iter().position(|&b| b == b',').unwrap() + 1;
    let colon = slot_start
        + packed[slot_start..]
            .iter()
            .position(|&b| b == b':')
            .unwrap();
    packed[colon + 20] ^= 0x80;
    let error = unpack(&packed, &access).unwrap_err();
    assert!(
        matches!(&error, UnpackError::Entry { index: 0, name: Some(n), problem: EntryProblem::BadMac, .. } if n == "one"),
        "{error}"
    );
    // Read-only readers do not look at the write slot.
    assert_eq!(
        unpack(&packed, &Access::ReadOnly).unwrap().directory.len(),
        2
    );
}

#[test]
fn hostile_entries_give_clear_errors() {
    let access = Access::of(&dircap()).unwrap();
    let lit = cap_text(0, [5; 32]);
    // A length no buffer can hold.
    let (_, problem) = entry_problem(unpack(b"99999999999999999999:x,", &access));
    assert!(matches!(problem, EntryProblem::Netstring(_)), "{problem}");
    // Too few fields in an entry.
    let (_, problem) = entry_problem(unpack(&netstring(&netstring(b"a")), &access));
    assert!(matches!(problem, EntryProblem::Netstring(_)));
    // A name that is not UTF-8, in the second entry.
    let good = raw_entry(b"ok", lit.as_bytes(), b"", b"{}");
    let bad = raw_entry(b"\xff\xfe", lit.as_bytes(), b"", b"{}");
    let (index, problem) = entry_problem(unpack(&[good.clone(), bad].concat(), &access));
    assert_eq!(
        (index, problem),
        (1, EntryProblem::NameNotUtf8 { valid_up_to: 0 })
    );
    // Metadata that is not JSON, or not an object.
    let (_, problem) = entry_problem(unpack(
        &raw_entry(b"n", lit.as_bytes(), b"", b"{\"a\":"),
        &access,
    ));
    assert!(matches!(
        problem,
        EntryProblem::Metadata(MetadataError::Json(_))
    ));
    let (_, problem) = entry_problem(unpack(
        &raw_entry(b"n", lit.as_bytes(), b"", b"[1]"),
        &access,
    ));
    assert_eq!(problem, EntryProblem::Metadata(MetadataError::NotAnObject));
    let deep = "[".repeat(100_000);
    let (_, problem) = entry_problem(unpack(
        &raw_entry(b"n", lit.as_bytes(), b"", deep.as_bytes()),
        &access,
    ));
    assert!(problem.to_string().contains("nested"), "{problem}");
    // A write slot too short for salt and HMAC.
    let (_, problem) = entry_problem(unpack(
        &raw_entry(b"n", lit.as_bytes(), &[0; 20], b"{}"),
        &access,
    ));
    assert_eq!(problem, EntryProblem::WriteSlotTooShort { len: 20 });
    // A write slot in an immutable directory.
    let (_, problem) = entry_problem(unpack(
        &raw_entry(b"n", lit.as_bytes(), &[0; 48], b"{}"),
        &Access::Immutable,
    ));
    assert_eq!(problem, EntryProblem::WriteSlotInImmutable);
    // Oversized metadata, and an oversized directory.
    let huge = vec![b' '; MAX_METADATA_BYTES + 1];
    let (_, problem) = entry_problem(unpack(
        &raw_entry(b"n", lit.as_bytes(), b"", &huge),
        &access,
    ));
    assert!(matches!(
        problem,
        EntryProblem::FieldTooLarge {
            field: "metadata",
            ..
        }
    ));
    assert!(matches!(
        unpack(&vec![b'0'; MAX_DIRECTORY_BYTES + 1], &access),
        Err(UnpackError::TooLarge { .. })
    ));
    // A mutable child in an immutable directory is left out and reported, as Tahoe leaves it out.
    let ssk_ro = cap_text(3, [6; 32]);
    let unpacked = unpack(
        &[good, raw_entry(b"m", ssk_ro.as_bytes(), b"", b"{}")].concat(),
        &Access::Immutable,
    )
    .unwrap();
    assert_eq!(unpacked.directory.len(), 1);
    assert_eq!(unpacked.skipped.len(), 1);
    assert_eq!(unpacked.skipped[0].name, "m");
}

#[test]
fn unlinking_a_missing_name_names_the_change() {
    let d = Directory::new();
    assert_eq!(
        d.apply(&[Change::Unlink { name: "x".into() }], 1.0),
        Err(EditError::NoSuchChild {
            change: 0,
            name: "x".into()
        })
    );
}

#[test]
fn immutable_directory_reads_refuse_other_caps_and_oversized_ones() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let grid = Grid::default();
    let not_immutable = dircap();
    assert!(matches!(
        runtime.block_on(read_immutable_directory(&grid, &not_immutable)),
        Err(ReadError::NotImmutableDirectory)
    ));
    let huge = Cap::parse(&format!(
        "URI:DIR2-CHK:{}:{}:3:10:{}",
        base32::encode(&[1; 16]),
        base32::encode(&[2; 32]),
        MAX_DIRECTORY_BYTES + 1
    ))
    .unwrap();
    assert!(matches!(
        runtime.block_on(read_immutable_directory(&grid, &huge)),
        Err(ReadError::TooLarge { .. })
    ));
    // An empty literal directory is an empty directory.
    let empty = Cap::parse("URI:DIR2-LIT:").unwrap();
    let read = runtime
        .block_on(read_immutable_directory(&grid, &empty))
        .unwrap();
    assert!(read.directory.is_empty());
}
