//! Directories between tahoe-mount's command line and Tahoe-LAFS 1.20 itself, on one local grid of ten real
//! storage nodes with a Tahoe client node encoding 3-of-10: directories Tahoe makes are listed and read by us,
//! what we make and change is listed by Tahoe with the same names, caps and metadata and verifies healthy, each
//! side changes the other's directories, concurrent writers (ours against ours, ours against Tahoe's) lose no
//! entry, and a directory change goes through with N − happy servers down. Tests take one lock, because the
//! outage test stops servers the others use.

mod common;

use common::runtime;

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, OnceLock};

use common::grid::LocalGrid;
use common::tahoe::{TahoeClient, TahoeMount, pseudo_random, seed};
use serde_json::Value;
use tahoe_mount::cap::Cap;
use tahoe_mount::dirnode::DirectoryNode;
use tahoe_mount::grid::client::Grid;
use tahoe_mount::mutable::MutableOptions;

const N: usize = 10;

fn grid() -> &'static LocalGrid {
    LocalGrid::shared(N)
}

fn client() -> &'static TahoeClient {
    static CLIENT: OnceLock<TahoeClient> = OnceLock::new();
    CLIENT.get_or_init(|| TahoeClient::start(grid(), 3, 7, N as u16))
}

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn ours() -> TahoeMount {
    TahoeMount::new(grid())
}

fn web_ok(method: &str, path: &str, body: &[u8]) -> String {
    let (status, reply) = client().web(method, path, body);
    let text = String::from_utf8_lossy(&reply).into_owned();
    assert!(
        status == 200 || status == 201,
        "{method} {path}: HTTP {status}: {text}"
    );
    text
}

/// `tahoe mkdir [--format=MDMF]`.
fn tahoe_mkdir(format: &str) -> String {
    web_ok("POST", &format!("uri?t=mkdir&format={format}"), b"")
        .trim()
        .to_owned()
}

/// `tahoe ls --json DIRCAP[/path]`: Tahoe's JSON for a directory.
fn tahoe_ls_json(path: &str) -> Value {
    let text = web_ok("GET", &format!("uri/{}?t=json", escape(path)), b"");
    serde_json::from_str(&text).unwrap()
}

fn tahoe_children(path: &str) -> serde_json::Map<String, Value> {
    let listing = tahoe_ls_json(path);
    assert_eq!(listing[0], "dirnode", "{listing:#}");
    listing[1]["children"].as_object().unwrap().clone()
}

/// Percent-encodes what a URL path cannot hold (spaces, non-ASCII).
fn escape(path: &str) -> String {
    let mut out = String::new();
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"/:-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `tahoe-mount put FLAGS… - DEST` with `data` on stdin; the cap it prints.
fn put_at(ours: &TahoeMount, data: &[u8], flags: &[&str], dest: &str) -> String {
    let mut args = flags.to_vec();
    args.extend(["-", dest]);
    let out = ours.run("put", &args, data);
    common::tahoe::assert_success(&out, &format!("put to {dest}"));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn library_grid() -> Grid {
    common::tahoe::library_grid(grid())
}

/// Our listing of a directory cap, through the library: name → (readcap, writecap, metadata as JSON).
fn our_listing(cap: &str) -> Vec<(String, Option<String>, Option<String>, Value)> {
    let node = DirectoryNode::open(
        library_grid(),
        Cap::parse(cap).unwrap(),
        MutableOptions::new(Vec::new()),
    )
    .unwrap();
    let listing = runtime().block_on(node.list()).unwrap();
    assert!(listing.skipped.is_empty(), "{:?}", listing.skipped);
    listing
        .directory
        .iter()
        .map(|(name, entry)| {
            let text = |c: Option<Vec<u8>>| c.map(|c| String::from_utf8(c).unwrap());
            (
                name.to_owned(),
                text(entry.child.read_uri()),
                text(entry.child.write_uri()),
                serde_json::from_str(&entry.metadata.to_json()).unwrap(),
            )
        })
        .collect()
}

/// Tahoe's and our view of a directory agree: names, caps, metadata.
fn assert_same_listing(cap: &str) {
    let theirs = tahoe_children(cap);
    let ours = our_listing(cap);
    let their_names: BTreeSet<&String> = theirs.keys().collect();
    let our_names: BTreeSet<&String> = ours.iter().map(|(n, ..)| n).collect();
    assert_eq!(their_names, our_names);
    for (name, read, write, metadata) in &ours {
        let child = &theirs[name][1];
        assert_eq!(
            child["ro_uri"].as_str(),
            read.as_deref(),
            "{name}: {child:#}"
        );
        assert_eq!(
            child["rw_uri"].as_str(),
            write.as_deref(),
            "{name}: {child:#}"
        );
        assert_eq!(&child["metadata"], metadata, "{name}");
    }
}

#[test]
fn tahoe_directories_listed_and_read_by_tahoe_mount() {
    let _serial = serial();
    let seed = seed();
    let ours = ours();
    for format in ["SDMF", "MDMF"] {
        let dir = tahoe_mkdir(format);
        let data = pseudo_random(seed, 100_000);
        web_ok("PUT", &format!("uri/{dir}/file%20one.txt"), &data);
        web_ok("PUT", &format!("uri/{dir}/tiny"), b"lit");
        web_ok(
            "PUT",
            &format!("uri/{dir}/mutable?format=MDMF"),
            b"mutable contents",
        );
        web_ok("POST", &format!("uri/{dir}/sub%C3%A9?t=mkdir"), b"");
        web_ok(
            "PUT",
            &format!("uri/{dir}/sub%C3%A9/deep"),
            b"deep contents here, long enough for CHK",
        );
        assert_same_listing(&dir);
        let names = ours.ok("ls", &[&dir]);
        assert_eq!(
            names.lines().collect::<Vec<_>>(),
            ["file one.txt", "mutable", "subé", "tiny"]
        );
        assert!(ours.get(&format!("{dir}/file one.txt")) == data);
        assert_eq!(ours.get(&format!("{dir}/tiny")), b"lit");
        assert_eq!(ours.get(&format!("{dir}/mutable")), b"mutable contents");
        assert_eq!(
            ours.get(&format!("{dir}/subé/deep")),
            b"deep contents here, long enough for CHK"
        );
        // The read-only cap lists the same names.
        let readonly = tahoe_ls_json(&dir)[1]["ro_uri"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(ours.ok("ls", &[&readonly]), names);
        let long = ours.ok("ls", &["-l", &dir]);
        assert!(
            long.lines()
                .any(|l| l.starts_with("drwx") && l.ends_with("subé")),
            "{long}"
        );
        assert!(
            long.lines()
                .any(|l| l.starts_with("-rw-") && l.ends_with("mutable")),
            "{long}"
        );
    }
}

#[test]
fn tahoe_mount_directories_listed_and_verified_by_tahoe() {
    let _serial = serial();
    let seed = seed();
    let ours = ours();
    for format in ["sdmf", "mdmf"] {
        let dir = ours.ok("mkdir", &["--format", format]).trim().to_owned();
        assert!(dir.starts_with(if format == "sdmf" {
            "URI:DIR2:"
        } else {
            "URI:DIR2-MDMF:"
        }));
        let data = pseudo_random(seed ^ 1, 300_000);
        let long_name = "n".repeat(250) + "ü"; // 252 bytes of UTF-8
        let file_cap = put_at(&ours, &data, &[], &format!("{dir}/a file"));
        put_at(&ours, b"x", &[], &format!("{dir}/{long_name}"));
        put_at(
            &ours,
            b"mutable one",
            &["--mutable", "--format", "mdmf"],
            &format!("{dir}/m"),
        );
        let sub = ours
            .ok("mkdir", &[&format!("{dir}/sub dir")])
            .trim()
            .to_owned();
        put_at(&ours, b"below", &[], &format!("{dir}/sub dir/x"));
        ours.ok(
            "ln",
            &[&format!("{dir}/a file"), &format!("{dir}/hard link")],
        );
        assert_same_listing(&dir);
        assert_same_listing(&sub);
        let children = tahoe_children(&dir);
        assert_eq!(
            children["a file"][1]["ro_uri"].as_str(),
            Some(file_cap.as_str())
        );
        assert_eq!(
            children["hard link"][1]["ro_uri"],
            children["a file"][1]["ro_uri"]
        );
        let linked = &children["a file"][1]["metadata"]["tahoe"];
        assert!(
            linked["linkcrtime"].is_f64() && linked["linkmotime"].is_f64(),
            "{linked}"
        );
        assert!(client().get(&format!("{dir}/{}", escape("a file"))) == data);
        assert_eq!(client().get(&format!("{dir}/sub%20dir/x")), b"below");
        for cap in [&dir, &sub] {
            let report = client().check_verify(cap);
            assert_eq!(
                report["results"]["healthy"],
                Value::Bool(true),
                "{report:#}"
            );
        }
        // Renames and removals show in Tahoe's listing.
        ours.ok("mv", &[&format!("{dir}/m"), &format!("{dir}/m2")]);
        ours.ok(
            "mv",
            &[&format!("{dir}/hard link"), &format!("{dir}/sub dir/moved")],
        );
        ours.ok("rm", &[&format!("{dir}/{long_name}")]);
        let names: BTreeSet<String> = tahoe_children(&dir).keys().cloned().collect();
        assert_eq!(
            names,
            ["a file", "m2", "sub dir"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        );
        assert!(tahoe_children(&sub).contains_key("moved"));
        assert_same_listing(&dir);
    }
}

#[test]
fn each_side_changes_the_others_directories() {
    let _serial = serial();
    let ours = ours();
    let theirs = tahoe_mkdir("SDMF");
    web_ok("PUT", &format!("uri/{theirs}/from-tahoe"), b"1");
    put_at(&ours, b"2", &[], &format!("{theirs}/from-us"));
    ours.ok("rm", &[&format!("{theirs}/from-tahoe")]);
    let names: Vec<String> = tahoe_children(&theirs).keys().cloned().collect();
    assert_eq!(names, ["from-us"]);

    let mine = ours.ok("mkdir", &[]).trim().to_owned();
    put_at(&ours, b"3", &[], &format!("{mine}/from-us"));
    web_ok("PUT", &format!("uri/{mine}/from-tahoe"), b"4");
    web_ok("DELETE", &format!("uri/{mine}/from-us"), b"");
    assert_eq!(ours.ok("ls", &[&mine]), "from-tahoe\n");
    assert_same_listing(&mine);
}

/// Links `EACH` names `<writer>-<i>` from each tahoe-mount writer in its own process, and from `tahoe_writer`
/// through Tahoe's web API if given, all at once on `dir`.
fn link_concurrently(dir: &str, file: &str, ours_writers: &[&str], tahoe_writer: Option<&str>) {
    std::thread::scope(|scope| {
        for &writer in ours_writers {
            scope.spawn(move || {
                let ours = self::ours();
                for i in 0..EACH {
                    ours.ok("ln", &[file, &format!("{dir}/{writer}-{i}")]);
                }
            });
        }
        if let Some(writer) = tahoe_writer {
            scope.spawn(move || {
                // Tahoe 1.20 itself gives up under contention: after its own retries it answers 500 with an
                // UncoordinatedWriteError, a KeyError from a servermap race in retrieve.py, or 410 with a
                // NotEnoughSharesError when the shares it mapped changed before it read them. A user would run
                // the command again, so this writer does.
                let mut tahoe_failures = 0;
                for i in 0..EACH {
                    let path = format!("uri/{dir}/{writer}-{i}?t=uri");
                    let mut attempts = 0;
                    loop {
                        let (status, reply) = client().web("PUT", &path, file.as_bytes());
                        if status == 200 || status == 201 {
                            break;
                        }
                        attempts += 1;
                        tahoe_failures += 1;
                        let text = String::from_utf8_lossy(&reply);
                        let known = text.contains("UncoordinatedWriteError")
                            || text.contains("KeyError")
                            || text.contains("NotEnoughSharesError");
                        assert!(known && attempts < 10, "PUT {path}: HTTP {status}: {text}");
                    }
                }
                println!("Tahoe's own writes failed and were retried {tahoe_failures} times");
            });
        }
    });
}

const EACH: usize = 12;

/// The names `<writer>-<i>` missing from `names`.
fn missing(names: &BTreeSet<String>, writers: &[&str]) -> Vec<String> {
    writers
        .iter()
        .flat_map(|w| (0..EACH).map(move |i| format!("{w}-{i}")))
        .filter(|name| !names.contains(name))
        .collect()
}

#[test]
fn concurrent_writers_lose_no_entry() {
    let _serial = serial();
    let file = ours().put(b"shared child, linked under many names", &[]);

    // tahoe-mount against tahoe-mount: every link that succeeded is there.
    let dir = ours().ok("mkdir", &[]).trim().to_owned();
    link_concurrently(&dir, &file, &["us1", "us2"], None);
    let names: BTreeSet<String> = tahoe_children(&dir).keys().cloned().collect();
    assert_eq!(
        missing(&names, &["us1", "us2"]),
        Vec::<String>::new(),
        "{names:?}"
    );
    assert_same_listing(&dir);

    // Against Tahoe: our writes never drop one of Tahoe's links, and both read the same directory. Tahoe 1.20 can
    // drop ours, and that is its bug: on an UncoordinatedWriteError, MutableFileVersion._modify_and_retry
    // refreshes the servermap but _modify_once re-reads the same old version (`self._version`, filenode.py
    // _read), served from the share data its first mapupdate cached, and publishes that plus its change over the
    // refreshed checkstrings, which match the newer version it never read.
    let dir = ours().ok("mkdir", &[]).trim().to_owned();
    link_concurrently(&dir, &file, &["us1", "us2"], Some("tahoe"));
    let names: BTreeSet<String> = tahoe_children(&dir).keys().cloned().collect();
    assert_eq!(
        missing(&names, &["tahoe"]),
        Vec::<String>::new(),
        "{names:?}"
    );
    assert_same_listing(&dir);
    let dropped = missing(&names, &["us1", "us2"]);
    println!(
        "Tahoe's stale retries dropped {} of our links: {dropped:?}",
        dropped.len()
    );
}

#[test]
fn a_directory_change_goes_through_with_three_servers_down() {
    let _serial = serial();
    let ours = ours();
    let dir = ours.ok("mkdir", &[]).trim().to_owned();
    put_at(&ours, b"before", &[], &format!("{dir}/before"));
    grid().stop_servers(&[3, 4, 5]);
    let out = ours.run(
        "put",
        &["-", &format!("{dir}/during")],
        b"during the outage",
    );
    let listing = ours.run("ls", &[&dir], b"");
    grid().start_all_servers();
    client().wait_connected();
    common::tahoe::assert_success(&out, "put with three servers down");
    assert_eq!(String::from_utf8_lossy(&listing.stdout), "before\nduring\n");
    assert_same_listing(&dir);
}
