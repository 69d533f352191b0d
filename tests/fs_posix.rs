//! POSIX fidelity of the filesystem layer (`src/fs`) on the in-memory grid, without FUSE: hard links (one inode,
//! honest link counts, a write through any name reaching every name, through remounts and crashes), owners, special
//! files, explicit access times, and the times that creating, removing and linking names move.

mod common;

use std::time::{Duration, SystemTime};

use common::fs_world::{ME, World, ino_of, options, pattern, read_all, write_file};
use std::sync::Arc;

use tahoe_mount::dirnode::{Change, Directory, DirectoryNode};
use tahoe_mount::fs::meta::Special;
use tahoe_mount::fs::{Caller, Fs, Kind, ROOT_INO, SetAttr};
use tahoe_mount::mutable::SeqnumFloors;
use tahoe_mount::storage::faulty::Fault;

/// The reproduction: `fd = open(x, O_WRONLY|O_TRUNC); write; link(x, y); write; close`.
async fn write_link_write(fs: &Fs, first: &[u8], second: &[u8]) -> u64 {
    let ino = write_file(fs, ROOT_INO, "x", b"the version before").await;
    let opened = fs.open(ino, libc::O_WRONLY | libc::O_TRUNC).await.unwrap();
    fs.write(opened.fh, 0, first).await.unwrap();
    let linked = fs.link(ino, ROOT_INO, "y").await.unwrap();
    assert_eq!((linked.ino, linked.nlink), (ino, 2), "one inode, two names");
    fs.write(opened.fh, first.len() as u64, second)
        .await
        .unwrap();
    fs.flush(opened.fh).unwrap();
    fs.release(opened.fh);
    ino
}

#[test]
fn a_file_linked_while_open_keeps_every_name_on_its_last_version_after_a_remount() {
    common::runtime().block_on(async {
        let world = World::new("link-open").await;
        let (first, second) = (pattern(30_000, 1), pattern(20_000, 2));
        let whole = [first.clone(), second.clone()].concat();
        {
            let fs = world.mount("spool");
            let ino = write_link_write(&fs, &first, &second).await;
            let y = ino_of(&fs, &["y"]).await.unwrap();
            assert_eq!(y, ino);
            assert_eq!(read_all(&fs, y).await, whole);
            fs.drain(|_, _| {}).await;
        }
        assert_eq!(world.grid_file(&["x"]).await, whole);
        assert_eq!(world.grid_file(&["y"]).await, whole);
        // A new run sees one file with two names.
        let fs = world.mount("spool2");
        let (x, y) = (
            fs.lookup(ROOT_INO, "x").await.unwrap(),
            fs.lookup(ROOT_INO, "y").await.unwrap(),
        );
        assert_eq!((x.ino, x.nlink, y.nlink), (y.ino, 2, 2));
        // A write through one name reaches the other, on the grid too.
        let opened = fs
            .open(x.ino, libc::O_WRONLY | libc::O_APPEND)
            .await
            .unwrap();
        fs.write(opened.fh, 0, b"!").await.unwrap();
        fs.flush(opened.fh).unwrap();
        fs.release(opened.fh);
        fs.drain(|_, _| {}).await;
        let grown = [whole.clone(), b"!".to_vec()].concat();
        assert_eq!(world.grid_file(&["y"]).await, grown);
        assert_eq!(world.grid_file(&["x"]).await, grown);
    });
}

#[test]
fn hard_links_survive_a_crash_before_any_upload() {
    let world = common::runtime().block_on(World::new("link-crash"));
    let (first, second) = (pattern(10_000, 3), pattern(9_000, 4));
    let whole = [first.clone(), second.clone()].concat();
    {
        let runtime = common::runtime();
        runtime.block_on(async {
            let fs = world.mount("spool");
            // The root is listed first; then nothing leaves the spool before the "crash" (the runtime going away).
            fs.list(ROOT_INO).await.unwrap();
            for server in &world.servers {
                server.set_fault(Fault::Down);
            }
            write_link_write(&fs, &first, &second).await;
        });
        drop(runtime);
    }
    for server in &world.servers {
        server.set_fault(Fault::None);
    }
    common::runtime().block_on(async {
        let fs = world.mount("spool");
        let (x, y) = (
            fs.lookup(ROOT_INO, "x").await.unwrap(),
            fs.lookup(ROOT_INO, "y").await.unwrap(),
        );
        assert_eq!((x.ino, x.nlink), (y.ino, 2), "replayed as one file");
        assert_eq!(read_all(&fs, y.ino).await, whole);
        fs.drain(|_, _| {}).await;
        assert_eq!(world.grid_file(&["y"]).await, whole);
        assert_eq!(world.grid_file(&["x"]).await, whole);
    });
}

#[test]
fn copies_with_the_same_contents_are_different_files_and_link_counts_are_honest() {
    common::runtime().block_on(async {
        let world = World::new("link-count").await;
        let fs = world.mount("spool");
        let dir = fs.mkdir(ROOT_INO, "d", 0o755, ME).await.unwrap().ino;
        let a = write_file(&fs, dir, "a", b"same bytes, same cap").await;
        let b = write_file(&fs, dir, "b", b"same bytes, same cap").await;
        fs.drain(|_, _| {}).await;
        // Convergent encoding gives both one cap; they are still two files.
        let fresh = world.mount("spool2");
        let (fa, fb) = (
            ino_of(&fresh, &["d", "a"]).await.unwrap(),
            ino_of(&fresh, &["d", "b"]).await.unwrap(),
        );
        assert_ne!(fa, fb);
        assert_ne!(a, b);
        // Directories: 2 and one per subdirectory.
        fs.mkdir(dir, "sub", 0o755, ME).await.unwrap();
        assert_eq!(fs.getattr(dir).await.unwrap().nlink, 3);
        // A file unlinked while open has no name left.
        fs.link(a, ROOT_INO, "a2").await.unwrap();
        let opened = fs.open(a, libc::O_RDONLY).await.unwrap();
        fs.unlink(dir, "a").await.unwrap();
        assert_eq!(fs.getattr(a).await.unwrap().nlink, 1);
        fs.unlink(ROOT_INO, "a2").await.unwrap();
        assert_eq!(fs.getattr(a).await.unwrap().nlink, 0);
        assert_eq!(
            fs.read(opened.fh, 0, 100).await.unwrap().as_ref(),
            b"same bytes, same cap"
        );
        fs.release(opened.fh);
        // A rename keeps the inode and its other names.
        let c = write_file(&fs, dir, "c", b"c").await;
        fs.link(c, dir, "c-link").await.unwrap();
        fs.rename(dir, "c", ROOT_INO, "c-moved", false)
            .await
            .unwrap();
        let moved = fs.lookup(ROOT_INO, "c-moved").await.unwrap();
        assert_eq!((moved.ino, moved.nlink), (c, 2));
    });
}

#[test]
fn owners_special_files_and_access_times_round_trip_through_the_grid() {
    common::runtime().block_on(async {
        let world = World::new("owners").await;
        let fs = world.mount("spool");
        let someone = Caller {
            uid: 1234,
            gid: 567,
        };
        let fifo = fs
            .mknod(ROOT_INO, "fifo", libc::S_IFIFO | 0o640, 0, someone)
            .await
            .unwrap();
        assert_eq!(fifo.kind, Kind::Special(Special::Fifo));
        assert_eq!((fifo.uid, fifo.gid, fifo.perm), (1234, 567, 0o640));
        let device = fs
            .mknod(ROOT_INO, "tty", libc::S_IFCHR | 0o600, 0x0402, ME)
            .await
            .unwrap();
        let file = write_file(&fs, ROOT_INO, "f", b"owned").await;
        let atime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let changed = fs
            .setattr(
                file,
                SetAttr {
                    uid: Some(42),
                    gid: Some(43),
                    atime: Some(atime),
                    ..SetAttr::default()
                },
            )
            .await
            .unwrap();
        assert_eq!((changed.uid, changed.gid, changed.atime), (42, 43, atime));
        fs.drain(|_, _| {}).await;

        let fresh = world.mount("spool2");
        let fifo = fresh.lookup(ROOT_INO, "fifo").await.unwrap();
        assert_eq!(
            (fifo.kind, fifo.uid, fifo.gid),
            (Kind::Special(Special::Fifo), 1234, 567)
        );
        let tty = fresh.lookup(ROOT_INO, "tty").await.unwrap();
        assert_eq!((tty.kind, tty.rdev), (device.kind, 0x0402));
        assert_eq!((tty.uid, tty.gid), (0, 0), "no stored owner: the mount's");
        let f = fresh.lookup(ROOT_INO, "f").await.unwrap();
        assert_eq!((f.uid, f.gid, f.atime), (42, 43, atime));
        assert_eq!(read_all(&fresh, f.ino).await, b"owned");
    });
}

#[test]
fn names_made_and_removed_move_the_directory_times_and_truncate_moves_the_file_times() {
    common::runtime().block_on(async {
        let world = World::new("times").await;
        let fs = world.mount("spool");
        let dir = fs.mkdir(ROOT_INO, "d", 0o755, ME).await.unwrap().ino;
        let past = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let set_past = |ino| {
            fs.setattr(
                ino,
                SetAttr {
                    mtime: Some(past),
                    ..SetAttr::default()
                },
            )
        };
        set_past(dir).await.unwrap();
        assert_eq!(fs.getattr(dir).await.unwrap().mtime, past);
        let f = write_file(&fs, dir, "f", b"1234").await;
        let after_create = fs.getattr(dir).await.unwrap();
        assert!(after_create.mtime > past && after_create.ctime > past);
        set_past(dir).await.unwrap();
        fs.unlink(dir, "f").await.unwrap_or(());
        assert!(
            fs.getattr(dir).await.unwrap().mtime > past,
            "unlink moves it"
        );
        let g = write_file(&fs, ROOT_INO, "g", b"12345678").await;
        set_past(g).await.unwrap();
        let before = fs.getattr(g).await.unwrap();
        let truncated = fs
            .setattr(
                g,
                SetAttr {
                    size: Some(3),
                    ..SetAttr::default()
                },
            )
            .await
            .unwrap();
        assert!(truncated.mtime > before.mtime && truncated.ctime >= before.ctime);
        assert_eq!(truncated.size, 3);
        // chmod and link move the ctime, not the mtime.
        let stamp = fs.getattr(g).await.unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let chmod = fs
            .setattr(
                g,
                SetAttr {
                    mode: Some(0o600),
                    ..SetAttr::default()
                },
            )
            .await
            .unwrap();
        assert!(chmod.ctime > stamp.ctime && chmod.mtime == stamp.mtime);
        std::thread::sleep(Duration::from_millis(5));
        let linked = fs.link(g, dir, "g2").await.unwrap();
        assert!(linked.ctime > chmod.ctime);
        let _ = f;
    });
}

/// A file closed again and again while its uploads are slow uploads its versions one at a time, skipping those
/// replaced meanwhile: the last version lands, and far fewer than one upload per close are made.
#[test]
fn repeated_closes_of_one_file_upload_only_the_versions_still_current() {
    common::runtime().block_on(async {
        let world = World::new("coalesce").await;
        let fs = world.mount("spool");
        fs.list(ROOT_INO).await.unwrap();
        for server in &world.servers {
            server.set_fault(Fault::Slow(Duration::from_millis(150)));
        }
        let ino = write_file(&fs, ROOT_INO, "f", &pattern(20_000, 0)).await;
        for round in 1..=20u8 {
            let opened = fs.open(ino, libc::O_WRONLY).await.unwrap();
            fs.write(opened.fh, 0, &pattern(20_000, round))
                .await
                .unwrap();
            fs.flush(opened.fh).unwrap();
            fs.release(opened.fh);
        }
        fs.drain(|_, _| {}).await;
        let uploads = fs.activity().uploads;
        assert!(uploads <= 4, "{uploads} uploads for 21 closes");
        assert_eq!(world.grid_file(&["f"]).await, pattern(20_000, 20));
    });
}

/// Inodes the kernel has forgotten go, with the listings that alone named them: a walk of a big tree does not grow
/// the mount for good. What is forgotten is listed again on the next lookup.
#[test]
fn forgotten_inodes_are_let_go_and_found_again() {
    common::runtime().block_on(async {
        let world = World::new("forget").await;
        let fs = world.mount("spool");
        let dir = fs.mkdir(ROOT_INO, "d", 0o755, ME).await.unwrap().ino;
        for i in 0..200 {
            write_file(&fs, dir, &format!("f{i}"), format!("file {i}").as_bytes()).await;
        }
        fs.drain(|_, _| {}).await;
        let fresh = world.mount("spool2");
        let before = fresh.inode_count();
        let d = fresh.lookup(ROOT_INO, "d").await.unwrap().ino;
        fresh.remember(d);
        let mut files = Vec::new();
        for i in 0..200 {
            let ino = fresh.lookup(d, &format!("f{i}")).await.unwrap().ino;
            fresh.remember(ino);
            fresh.remember(ino);
            files.push(ino);
        }
        assert!(fresh.inode_count() >= before + 201);
        // An open file keeps its directory's listing.
        let opened = fresh.open(files[7], libc::O_RDONLY).await.unwrap();
        for &ino in &files {
            fresh.forget(ino, 2);
        }
        fresh.forget(d, 1);
        assert!(fresh.inode_count() >= before + 201, "f7 is open");
        fresh.release(opened.fh);
        fresh.remember(d);
        fresh.forget(d, 1);
        assert_eq!(
            fresh.inode_count(),
            before + 1,
            "the listing went; d stays in /"
        );
        let again = fresh.lookup(d, "f7").await.unwrap().ino;
        assert_eq!(read_all(&fresh, again).await, b"file 7");
    });
}

/// pjdfstest reuses one name for a directory, then a FIFO, a file...: a name whose directory this mount removed
/// takes the new entry when the removal and the new link are published together, with no "conflict" copy and no
/// directory coming back. A directory another client put there meanwhile is still kept, and the file goes beside it.
#[test]
fn a_name_whose_directory_was_removed_here_takes_a_file_in_the_same_publish() {
    common::runtime().block_on(async {
        let world = World::new("reuse").await;
        // The listing must stay as this mount read it, however slow the machine: a listing refreshed after the
        // other client's change would show its directory, and the create below would rightly fail.
        let mut stale = options();
        stale.dir_ttl = Duration::from_secs(3600);
        let fs = world.mount_with("spool", stale);
        // Another client's directory, made after this mount listed the root.
        fs.list(ROOT_INO).await.unwrap();
        let theirs = DirectoryNode::create(
            world.grid.clone(),
            &Directory::new(),
            options().directory_params,
            options().mutable,
        )
        .await
        .unwrap();
        let root =
            DirectoryNode::open(world.grid.clone(), world.root.clone(), options().mutable).unwrap();
        root.modify(&[common::link("m", theirs.cap())])
            .await
            .unwrap();
        write_file(&fs, ROOT_INO, "m", b"mine").await;
        fs.drain(|_, _| {}).await;
        let listing = world.grid_listing(&[]).await;
        assert!(
            listing.get("m").is_some_and(|e| e.child.is_directory()),
            "theirs is kept"
        );
        let beside = listing.iter().find(|(n, _)| n.starts_with("m (conflict "));
        assert!(beside.is_some(), "mine goes beside it");
        fs.unlink(ROOT_INO, beside.unwrap().0).await.unwrap();
        fs.rmdir(ROOT_INO, "m").await.unwrap();
        fs.drain(|_, _| {}).await;
        fs.mkdir(ROOT_INO, "n", 0o755, ME).await.unwrap();
        fs.drain(|_, _| {}).await;
        fs.rmdir(ROOT_INO, "n").await.unwrap();
        write_file(&fs, ROOT_INO, "n", b"now a file").await;
        fs.drain(|_, _| {}).await;
        // The same when the directory moves away under another name (pjdfstest's rename tests).
        fs.mkdir(ROOT_INO, "moving", 0o755, ME).await.unwrap();
        fs.drain(|_, _| {}).await;
        fs.rename(ROOT_INO, "moving", ROOT_INO, "moved", false)
            .await
            .unwrap();
        write_file(&fs, ROOT_INO, "moving", b"a file").await;
        fs.drain(|_, _| {}).await;
        fs.rmdir(ROOT_INO, "moved").await.unwrap();
        fs.unlink(ROOT_INO, "moving").await.unwrap();
        fs.drain(|_, _| {}).await;
        let names: Vec<String> = world
            .grid_listing(&[])
            .await
            .iter()
            .map(|(n, _)| n.to_owned())
            .collect();
        assert_eq!(names, ["n"]);
        assert_eq!(world.grid_file(&["n"]).await, b"now a file");
        let fresh = world.mount("spool2");
        let n = fresh.lookup(ROOT_INO, "n").await.unwrap();
        assert_eq!(n.kind, Kind::File);
    });
}

/// A later run shows a hard-linked file's link count before it has listed the other names' directories, and
/// renaming over one name moves the survivor's ctime and count.
#[test]
fn link_counts_survive_a_remount_and_a_rename_over_a_name() {
    common::runtime().block_on(async {
        let world = World::new("link-count-remount").await;
        let fs = world.mount("spool");
        let dir = fs.mkdir(ROOT_INO, "d", 0o755, ME).await.unwrap().ino;
        let x = write_file(&fs, ROOT_INO, "x", b"linked").await;
        fs.link(x, dir, "y").await.unwrap();
        fs.link(x, dir, "z").await.unwrap();
        fs.drain(|_, _| {}).await;
        let fresh = world.mount("spool2");
        let before = fresh.lookup(ROOT_INO, "x").await.unwrap();
        assert_eq!(before.nlink, 3);
        let other = write_file(&fresh, ROOT_INO, "other", b"o").await;
        let d = fresh.lookup(ROOT_INO, "d").await.unwrap().ino;
        std::thread::sleep(Duration::from_millis(5));
        fresh
            .rename(ROOT_INO, "other", d, "z", false)
            .await
            .unwrap();
        let x_now = fresh.lookup(ROOT_INO, "x").await.unwrap();
        assert_eq!(x_now.nlink, 2);
        assert!(x_now.ctime > before.ctime);
        assert_eq!(fresh.lookup(d, "z").await.unwrap().ino, other);
        fresh.drain(|_, _| {}).await;
        let third = world.mount("spool3");
        assert_eq!(third.lookup(ROOT_INO, "x").await.unwrap().nlink, 2);
    });
}

/// A listing older than a version this mount has seen (servers that answered first still holding an older one)
/// is not merged into a directory already shown: names removed since do not come back. The next refresh asks
/// again.
#[test]
fn a_listing_behind_a_version_seen_is_not_merged() {
    common::runtime().block_on(async {
        let world = World::new("behind").await;
        let floors = Arc::new(SeqnumFloors::new(16));
        let mut seen_far = options();
        seen_far.dir_ttl = Duration::from_millis(50);
        seen_far.mutable.floors = Some(floors.clone());
        let fs = world.mount_with("spool", seen_far);
        write_file(&fs, ROOT_INO, "mine", b"x").await;
        fs.drain(|_, _| {}).await;
        // Another client removes the file; this mount believes it has seen a far newer version.
        let root =
            DirectoryNode::open(world.grid.clone(), world.root.clone(), options().mutable).unwrap();
        root.modify(&[Change::Unlink {
            name: "mine".into(),
        }])
        .await
        .unwrap();
        let si = world.root.storage_index().unwrap();
        floors.record(si, 1_000);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let listed = fs.list(ROOT_INO).await.unwrap();
        assert!(
            listed.iter().any(|(e, _)| e.name == "mine"),
            "a listing behind is not merged"
        );
        assert!(fs.activity().listings_dropped >= 1);
        // Once the grid is seen to be newest again, its listing is taken.
        let other = world.mount("spool2");
        let listed = other.list(ROOT_INO).await.unwrap();
        assert!(!listed.iter().any(|(e, _)| e.name == "mine"));
    });
}

#[test]
fn extended_attributes_round_trip_through_the_grid_and_follow_hard_links() {
    use tahoe_mount::fs::{FsError, XattrMode};
    common::runtime().block_on(async {
        let world = World::new("xattr").await;
        {
            let fs = world.mount("spool");
            let ino = write_file(&fs, ROOT_INO, "f", b"tagged").await;
            fs.mkdir(ROOT_INO, "d", 0o755, ME).await.unwrap();
            let dir = ino_of(&fs, &["d"]).await.unwrap();
            let before = fs.getattr(ino).await.unwrap().ctime;
            tokio::time::sleep(Duration::from_millis(20)).await;
            fs.setxattr(ino, "user.colour", Some(b"blue"), XattrMode::Either)
                .unwrap();
            fs.setxattr(ino, "user.binary", Some(&[0, 255, 10]), XattrMode::Create)
                .unwrap();
            fs.setxattr(dir, "user.on-a-dir", Some(b""), XattrMode::Either)
                .unwrap();
            assert!(fs.getattr(ino).await.unwrap().ctime > before, "ctime moves");
            assert!(matches!(
                fs.setxattr(ino, "user.colour", Some(b"red"), XattrMode::Create),
                Err(FsError::Exists)
            ));
            assert!(matches!(
                fs.setxattr(ino, "user.absent", Some(b"x"), XattrMode::Replace),
                Err(FsError::NoAttribute)
            ));
            assert!(matches!(
                fs.setxattr(
                    ino,
                    "system.posix_acl_access",
                    Some(b"x"),
                    XattrMode::Either
                ),
                Err(FsError::Unsupported(_))
            ));
            assert!(matches!(
                fs.setxattr(ino, "user.big", Some(&vec![1; 70_000]), XattrMode::Either),
                Err(FsError::TooBig(_))
            ));
            fs.setxattr(ino, "user.gone", Some(b"soon"), XattrMode::Either)
                .unwrap();
            fs.setxattr(ino, "user.gone", None, XattrMode::Either)
                .unwrap();
            assert!(matches!(
                fs.getxattr(ino, "user.gone"),
                Err(FsError::NoAttribute)
            ));
            fs.link(ino, ROOT_INO, "g").await.unwrap();
            fs.setxattr(ino, "user.colour", Some(b"green"), XattrMode::Replace)
                .unwrap();
            fs.drain(|_, _| {}).await;
        }
        let fs = world.mount("spool2");
        let f = ino_of(&fs, &["f"]).await.unwrap();
        let g = ino_of(&fs, &["g"]).await.unwrap();
        assert_eq!(f, g);
        assert_eq!(fs.listxattr(f).unwrap(), ["user.binary", "user.colour"]);
        assert_eq!(fs.getxattr(f, "user.colour").unwrap(), b"green");
        assert_eq!(fs.getxattr(f, "user.binary").unwrap(), [0, 255, 10]);
        let dir = ino_of(&fs, &["d"]).await.unwrap();
        assert_eq!(fs.getxattr(dir, "user.on-a-dir").unwrap(), b"");
        assert!(matches!(
            fs.setxattr(ROOT_INO, "user.x", Some(b"x"), XattrMode::Either),
            Err(FsError::Unsupported(_))
        ));
    });
}
