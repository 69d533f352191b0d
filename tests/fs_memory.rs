//! The filesystem layer (`src/fs`) on the in-memory grid, without FUSE: what a written file becomes on the grid, how
//! names change, what survives a crash, what fsync reports when the grid cannot take a file, and a model-based
//! property test of random operation sequences against a reference model.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use common::fs_world::{ME, World, ino_of, options, pattern, read_all, write_file};
use proptest::prelude::*;
use tahoe_mount::cap::{Cap, FileCap};
use tahoe_mount::dirnode::{Directory, DirectoryNode};
use tahoe_mount::fs::{Fs, FsError, Kind, ROOT_INO, SetAttr};
use tahoe_mount::storage::faulty::Fault;

#[test]
fn files_written_through_the_fs_land_on_the_grid_with_their_names_times_and_modes() {
    common::runtime().block_on(async {
        let world = World::new("basic").await;
        let fs = world.mount("spool");
        let docs = fs.mkdir(ROOT_INO, "docs é", 0o750, ME).await.unwrap();
        let big = pattern(70_000, 1);
        let file = write_file(&fs, docs.ino, "report.bin", &big).await;
        write_file(&fs, ROOT_INO, "tiny", b"small enough to be literal").await;
        let when = tahoe_mount::fs::meta::from_nanos(1_650_000_000_123_456_789);
        fs.setattr(
            file,
            SetAttr {
                mtime: Some(when),
                mode: Some(0o600),
                ..SetAttr::default()
            },
        )
        .await
        .unwrap();
        // Reads before the upload come from the spool.
        assert_eq!(read_all(&fs, file).await, big);
        fs.drain(|_, _| {}).await;
        assert_eq!(world.grid_file(&["docs é", "report.bin"]).await, big);
        assert_eq!(
            world.grid_file(&["tiny"]).await,
            b"small enough to be literal"
        );

        // A second client (its own spool) sees everything, with the exact time and the mode.
        let other = world.mount("other");
        let ino = ino_of(&other, &["docs é", "report.bin"]).await.unwrap();
        let attr = other.getattr(ino).await.unwrap();
        assert_eq!((attr.size, attr.mtime, attr.perm), (70_000, when, 0o600));
        assert_eq!(read_all(&other, ino).await, big);
        let dir = other
            .getattr(ino_of(&other, &["docs é"]).await.unwrap())
            .await
            .unwrap();
        assert_eq!((dir.kind, dir.perm), (Kind::Directory, 0o750));
    });
}

async fn names_in(fs: &Fs, ino: u64) -> Vec<String> {
    fs.list(ino)
        .await
        .unwrap()
        .into_iter()
        .map(|(entry, _)| entry.name)
        .filter(|name| name != "." && name != "..")
        .collect()
}

#[test]
fn a_publish_brings_the_directory_up_to_date_without_reading_it_again() {
    common::runtime().block_on(async {
        let world = World::new("publish-view").await;
        let mut long_ttl = options();
        long_ttl.dir_ttl = Duration::from_secs(3600);
        let fs = world.mount_with("spool", long_ttl.clone());
        let other = world.mount_with("other", long_ttl);
        assert!(names_in(&fs, ROOT_INO).await.is_empty());
        write_file(&other, ROOT_INO, "theirs", b"written by another client").await;
        other.drain(|_, _| {}).await;
        // Our listing is trusted for an hour, but our publish reads the newest version to add to it, and what
        // it writes (theirs included) is what we show.
        write_file(&fs, ROOT_INO, "ours", b"written here").await;
        fs.drain(|_, _| {}).await;
        assert_eq!(names_in(&fs, ROOT_INO).await, ["ours", "theirs"]);
        for i in 0..10 {
            write_file(&fs, ROOT_INO, &format!("more {i}"), &pattern(3000, i)).await;
            fs.drain(|_, _| {}).await;
        }
        assert_eq!(names_in(&fs, ROOT_INO).await.len(), 12);
        let activity = fs.activity();
        assert_eq!(activity.listings, 1, "{activity:?}");
        assert_eq!(activity.changes_published, 11, "{activity:?}");
        assert_eq!(activity.uploads, 11, "{activity:?}");
    });
}

#[test]
fn renames_links_symlinks_and_removals_reach_the_grid() {
    common::runtime().block_on(async {
        let world = World::new("names").await;
        let fs = world.mount("spool");
        let a = fs.mkdir(ROOT_INO, "a", 0o755, ME).await.unwrap().ino;
        let b = fs.mkdir(ROOT_INO, "b", 0o755, ME).await.unwrap().ino;
        // rsync's way: a temporary name, then a rename over the old file.
        write_file(
            &fs,
            a,
            "f",
            b"old contents that are long enough to be a CHK file, not a literal one",
        )
        .await;
        write_file(&fs, a, ".f.XXXX", b"new").await;
        fs.rename(a, ".f.XXXX", a, "f", false).await.unwrap();
        write_file(&fs, a, "moved", b"across directories").await;
        fs.rename(a, "moved", b, "here", false).await.unwrap();
        let here = ino_of(&fs, &["b", "here"]).await.unwrap();
        fs.link(here, a, "hard").await.unwrap();
        fs.symlink(b, "link", "../a/f", ME).await.unwrap();
        assert!(matches!(
            fs.rmdir(ROOT_INO, "a").await,
            Err(FsError::NotEmpty)
        ));
        assert!(matches!(
            fs.rename(ROOT_INO, "a", ROOT_INO, "b", false).await,
            Err(FsError::NotEmpty)
        ));
        assert!(matches!(
            fs.rename(ROOT_INO, "a", a, "x", false).await,
            Err(FsError::Invalid(_))
        ));
        fs.mkdir(ROOT_INO, "gone", 0o755, ME).await.unwrap();
        fs.rmdir(ROOT_INO, "gone").await.unwrap();
        fs.drain(|_, _| {}).await;

        let root: Vec<String> = world
            .grid_listing(&[])
            .await
            .iter()
            .map(|(n, _)| n.to_owned())
            .collect();
        assert_eq!(root, ["a", "b"]);
        let a_names: Vec<String> = world
            .grid_listing(&["a"])
            .await
            .iter()
            .map(|(n, _)| n.to_owned())
            .collect();
        assert_eq!(a_names, ["f", "hard"]);
        assert_eq!(world.grid_file(&["a", "f"]).await, b"new");
        assert_eq!(world.grid_file(&["a", "hard"]).await, b"across directories");
        assert_eq!(
            world.grid_file(&["b", "link"]).await,
            b"../a/f",
            "tahoe get shows the target"
        );

        let other = world.mount("other");
        let link = ino_of(&other, &["b", "link"]).await.unwrap();
        assert_eq!(other.getattr(link).await.unwrap().kind, Kind::Symlink);
        assert_eq!(other.readlink(link).unwrap(), "../a/f");
        assert!(matches!(
            ino_of(&other, &["a", ".f.XXXX"]).await,
            Err(FsError::NotFound)
        ));
    });
}

#[test]
fn files_closed_before_a_crash_are_uploaded_and_linked_by_the_next_run() {
    let world = common::runtime().block_on(World::new("crash"));
    let big = pattern(50_000, 3);
    {
        let runtime = common::runtime();
        runtime.block_on(async {
            let fs = world.mount("spool");
            let dir = fs.mkdir(ROOT_INO, "d", 0o755, ME).await.unwrap().ino;
            // Every server goes down: nothing leaves the spool before the "crash" (the runtime going away).
            for server in &world.servers {
                server.set_fault(Fault::Down);
            }
            write_file(&fs, dir, "big", &big).await;
            write_file(&fs, ROOT_INO, "small", b"x").await;
            fs.rename(ROOT_INO, "small", dir, "small2", false)
                .await
                .unwrap();
            assert!(fs.pending_count() >= 3, "{:?}", fs.pending());
        });
        drop(runtime);
    }
    for server in &world.servers {
        server.set_fault(Fault::None);
    }
    common::runtime().block_on(async {
        let fs = world.mount("spool");
        // Shown at once from the journal, before any upload.
        let ino = ino_of(&fs, &["d", "big"]).await.unwrap();
        assert_eq!(read_all(&fs, ino).await, big);
        fs.drain(|_, _| {}).await;
        assert_eq!(world.grid_file(&["d", "big"]).await, big);
        assert_eq!(world.grid_file(&["d", "small2"]).await, b"x");
        let data: Vec<_> = std::fs::read_dir(world.dir.join("spool/data"))
            .unwrap()
            .collect();
        assert!(
            data.is_empty(),
            "uploaded spool files are removed: {data:?}"
        );
    });
}

#[test]
fn fsync_does_not_wait_for_the_publish_batching_delay() {
    common::runtime().block_on(async {
        let world = World::new("urgent").await;
        let mut slow_batches = options();
        slow_batches.publish_delay = Duration::from_secs(3600);
        let fs = world.mount_with("spool", slow_batches);
        let dir = fs.mkdir(ROOT_INO, "d", 0o755, ME).await.unwrap().ino;
        let data = pattern(20_000, 3);
        let (_, opened) = fs
            .create(dir, "f", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
        fs.write(opened.fh, 0, &data).await.unwrap();
        // Changes gather for an hour, unless an fsync waits for them: then its directories (the file's and the
        // new directory's parent) are published at once.
        tokio::time::timeout(Duration::from_secs(60), fs.fsync(opened.fh))
            .await
            .expect("fsync waited for the batching delay")
            .unwrap();
        fs.release(opened.fh);
        assert_eq!(world.grid_file(&["d", "f"]).await, data);
    });
}

#[test]
fn fsync_reports_an_unhappy_upload_and_the_data_waits_in_the_spool() {
    common::runtime().block_on(async {
        let world = World::new("unhappy").await;
        let fs = world.mount("spool");
        fs.lookup(ROOT_INO, "x").await.unwrap_err();
        for server in &world.servers[..3] {
            server.set_fault(Fault::Down);
        }
        let data = pattern(30_000, 5);
        let (attr, opened) = fs
            .create(ROOT_INO, "f", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
        fs.write(opened.fh, 0, &data).await.unwrap();
        let error = fs.fsync(opened.fh).await.unwrap_err();
        assert_eq!(error.errno(), libc::EIO, "{error}");
        assert!(error.to_string().contains("upload failed"), "{error}");
        assert!(
            fs.pending()
                .iter()
                .any(|p| p.path == "/f" && p.bytes == 30_000),
            "{:?}",
            fs.pending()
        );
        for server in &world.servers {
            server.set_fault(Fault::None);
        }
        fs.wait_durable(attr.ino).await.unwrap();
        fs.release(opened.fh);
        assert_eq!(world.grid_file(&["f"]).await, data);
    });
}

#[test]
fn truncate_append_and_rewrite_in_place() {
    common::runtime().block_on(async {
        let world = World::new("rewrite").await;
        let fs = world.mount("spool");
        let ino = write_file(&fs, ROOT_INO, "f", &pattern(20_000, 1)).await;
        fs.drain(|_, _| {}).await;
        // Reopen without O_TRUNC: the contents are fetched and changed in the middle.
        let opened = fs.open(ino, libc::O_RDWR).await.unwrap();
        fs.write(opened.fh, 10_000, b"MIDDLE").await.unwrap();
        fs.setattr(
            ino,
            SetAttr {
                size: Some(15_000),
                fh: Some(opened.fh),
                ..SetAttr::default()
            },
        )
        .await
        .unwrap();
        fs.fsync(opened.fh).await.unwrap();
        fs.release(opened.fh);
        let mut want = pattern(20_000, 1);
        want[10_000..10_006].copy_from_slice(b"MIDDLE");
        want.truncate(15_000);
        assert_eq!(world.grid_file(&["f"]).await, want);
        let appending = fs.open(ino, libc::O_WRONLY | libc::O_APPEND).await.unwrap();
        fs.write(appending.fh, 0, b"tail").await.unwrap();
        fs.flush(appending.fh).unwrap();
        fs.release(appending.fh);
        want.extend_from_slice(b"tail");
        assert_eq!(read_all(&fs, ino).await, want);
        // truncate(2) by path, which no close follows.
        fs.setattr(
            ino,
            SetAttr {
                size: Some(3),
                ..SetAttr::default()
            },
        )
        .await
        .unwrap();
        fs.drain(|_, _| {}).await;
        assert_eq!(world.grid_file(&["f"]).await, &want[..3]);
        let since = SystemTime::now();
        assert!(fs.getattr(ino).await.unwrap().mtime <= since);
    });
}

/// One operation of the property test.
#[derive(Debug, Clone)]
enum Op {
    Write {
        file: usize,
        offset: u16,
        len: u16,
        seed: u8,
    },
    Truncate {
        file: usize,
        size: u16,
    },
    Rename {
        from: usize,
        to: usize,
    },
    Unlink {
        file: usize,
    },
    Mkdir {
        dir: usize,
    },
    Rmdir {
        dir: usize,
    },
    Link {
        from: usize,
        to: usize,
    },
    Chown {
        file: usize,
        uid: u32,
    },
    Mkfifo {
        file: usize,
    },
    Restart,
}

const NAMES: [&str; 4] = ["a", "b", "sub/c", "sub/d é"];

/// What the model knows of one file (one inode, whatever its names).
#[derive(Debug, Clone, Default)]
struct ModelFile {
    bytes: Vec<u8>,
    uid: u32,
    fifo: bool,
}

/// Paths to files, and files: hard links are two paths with one file.
#[derive(Debug, Default)]
struct Model {
    paths: BTreeMap<String, usize>,
    files: Vec<ModelFile>,
}

impl Model {
    fn file(&self, path: &str) -> Option<&ModelFile> {
        self.paths.get(path).map(|&id| &self.files[id])
    }

    fn file_mut(&mut self, path: &str) -> Option<&mut ModelFile> {
        let id = *self.paths.get(path)?;
        Some(&mut self.files[id])
    }

    /// The file at `path`, made empty (owned by the mount's owner) if there is none.
    fn file_or_new(&mut self, path: &str) -> &mut ModelFile {
        let id = match self.paths.get(path) {
            Some(&id) => id,
            None => {
                self.files.push(ModelFile::default());
                self.paths.insert(path.to_owned(), self.files.len() - 1);
                self.files.len() - 1
            }
        };
        &mut self.files[id]
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..NAMES.len(), 0u16..12_000, 1u16..6_000, any::<u8>())
            .prop_map(|(file, offset, len, seed)| Op::Write { file, offset, len, seed }),
        1 => (0..NAMES.len(), 0u16..12_000).prop_map(|(file, size)| Op::Truncate { file, size }),
        1 => (0..NAMES.len(), 0..NAMES.len()).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => (0..NAMES.len()).prop_map(|file| Op::Unlink { file }),
        1 => (0..2usize).prop_map(|dir| Op::Mkdir { dir }),
        1 => (0..2usize).prop_map(|dir| Op::Rmdir { dir }),
        2 => (0..NAMES.len(), 0..NAMES.len()).prop_map(|(from, to)| Op::Link { from, to }),
        1 => (0..NAMES.len(), 0u32..3).prop_map(|(file, uid)| Op::Chown { file, uid: 1000 + uid }),
        1 => (0..NAMES.len()).prop_map(|file| Op::Mkfifo { file }),
        1 => Just(Op::Restart),
    ]
}

async fn parent_of(fs: &Fs, path: &str) -> Result<(u64, String), FsError> {
    match path.rsplit_once('/') {
        Some((dir, name)) => Ok((ino_of(fs, &[dir]).await?, name.to_owned())),
        None => Ok((ROOT_INO, path.to_owned())),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Random sequences of writes, truncates, renames, removals, hard links, owner changes, FIFOs and restarts (a
    /// crash: the runtime dropped with uploads pending) against a model of what each path holds and which paths are
    /// one file: the fs always agrees with the model, and at the end, once drained, so does the grid.
    #[test]
    fn the_fs_agrees_with_a_model_of_paths_and_bytes(ops in proptest::collection::vec(op(), 1..25)) {
        let world = common::runtime().block_on(World::new("model"));
        let mut model = Model::default();
        let mut dirs = [false, false];
        let dir_names = ["sub", "other"];
        let mut runtime = common::runtime();
        let mut fs = runtime.block_on(async { world.mount("spool") });
        for op in ops {
            match op {
                Op::Restart => {
                    drop(fs);
                    drop(runtime);
                    runtime = common::runtime();
                    fs = runtime.block_on(async { world.mount("spool") });
                }
                Op::Mkdir { dir } => {
                    let result = runtime.block_on(fs.mkdir(ROOT_INO, dir_names[dir], 0o755, ME));
                    prop_assert_eq!(result.is_ok(), !dirs[dir], "mkdir {}", dir_names[dir]);
                    dirs[dir] = true;
                }
                Op::Rmdir { dir } => {
                    let name = dir_names[dir];
                    let has_files = model.paths.keys().any(|p| p.starts_with(&format!("{name}/")));
                    let result = runtime.block_on(fs.rmdir(ROOT_INO, name));
                    match (dirs[dir], has_files) {
                        (false, _) => prop_assert!(matches!(result, Err(FsError::NotFound))),
                        (true, true) => prop_assert!(matches!(result, Err(FsError::NotEmpty))),
                        (true, false) => {
                            prop_assert!(result.is_ok());
                            dirs[dir] = false;
                        }
                    }
                }
                Op::Write { file, offset, len, seed } => {
                    let path = NAMES[file];
                    if model.file(path).is_some_and(|f| f.fifo) {
                        // The kernel opens a FIFO itself: no write ever reaches the mount.
                        continue;
                    }
                    let parent_exists = !path.starts_with("sub/") || dirs[0];
                    let data = pattern(len as usize, seed);
                    let result = runtime.block_on(async {
                        let (parent, name) = parent_of(&fs, path).await?;
                        let (_, opened) = fs.create(parent, &name, 0o644, libc::O_RDWR, ME).await?;
                        fs.write(opened.fh, offset as u64, &data).await?;
                        fs.flush(opened.fh)?;
                        fs.release(opened.fh);
                        Ok::<_, FsError>(())
                    });
                    prop_assert_eq!(result.is_ok(), parent_exists, "write {} {:?}", path, result);
                    if parent_exists {
                        let content = &mut model.file_or_new(path).bytes;
                        let end = offset as usize + data.len();
                        if content.len() < end {
                            content.resize(end, 0);
                        }
                        content[offset as usize..end].copy_from_slice(&data);
                    }
                }
                Op::Truncate { file, size } => {
                    let path = NAMES[file];
                    if model.file(path).is_some_and(|f| f.fifo) {
                        continue;
                    }
                    let result = runtime.block_on(async {
                        let (parent, name) = parent_of(&fs, path).await?;
                        let ino = fs.lookup(parent, &name).await?.ino;
                        fs.setattr(ino, SetAttr { size: Some(size as u64), ..SetAttr::default() }).await
                    });
                    match model.file_mut(path) {
                        Some(file) => {
                            prop_assert!(result.is_ok(), "truncate {}: {:?}", path, result);
                            file.bytes.resize(size as usize, 0);
                        }
                        None => prop_assert!(result.is_err()),
                    }
                }
                Op::Rename { from, to } => {
                    let (from, to) = (NAMES[from], NAMES[to]);
                    let result = runtime.block_on(async {
                        let (p1, n1) = parent_of(&fs, from).await?;
                        let (p2, n2) = parent_of(&fs, to).await?;
                        fs.rename(p1, &n1, p2, &n2, false).await
                    });
                    let target_parent = !to.starts_with("sub/") || dirs[0];
                    match model.paths.get(from).copied() {
                        Some(id) if target_parent => {
                            prop_assert!(result.is_ok(), "rename {} {}: {:?}", from, to, result);
                            // Renaming a name onto another name of the same file does nothing (POSIX).
                            if model.paths.get(to) != Some(&id) {
                                model.paths.remove(from);
                                model.paths.insert(to.to_owned(), id);
                            }
                        }
                        _ => prop_assert!(result.is_err(), "rename {} {} should fail", from, to),
                    }
                }
                Op::Unlink { file } => {
                    let path = NAMES[file];
                    let result = runtime.block_on(async {
                        let (parent, name) = parent_of(&fs, path).await?;
                        fs.unlink(parent, &name).await
                    });
                    prop_assert_eq!(result.is_ok(), model.paths.remove(path).is_some());
                }
                Op::Link { from, to } => {
                    let (from, to) = (NAMES[from], NAMES[to]);
                    let result = runtime.block_on(async {
                        let (p1, n1) = parent_of(&fs, from).await?;
                        let (p2, n2) = parent_of(&fs, to).await?;
                        let ino = fs.lookup(p1, &n1).await?.ino;
                        fs.link(ino, p2, &n2).await
                    });
                    let target_parent = !to.starts_with("sub/") || dirs[0];
                    match model.paths.get(from).copied() {
                        Some(id) if target_parent && !model.paths.contains_key(to) => {
                            prop_assert!(result.is_ok(), "link {} {}: {:?}", from, to, result);
                            model.paths.insert(to.to_owned(), id);
                        }
                        _ => prop_assert!(result.is_err(), "link {} {} should fail", from, to),
                    }
                }
                Op::Chown { file, uid } => {
                    let path = NAMES[file];
                    let result = runtime.block_on(async {
                        let (parent, name) = parent_of(&fs, path).await?;
                        let ino = fs.lookup(parent, &name).await?.ino;
                        fs.setattr(ino, SetAttr { uid: Some(uid), ..SetAttr::default() }).await
                    });
                    match model.file_mut(path) {
                        Some(file) => {
                            prop_assert!(result.is_ok(), "chown {}: {:?}", path, result);
                            file.uid = uid;
                        }
                        None => prop_assert!(result.is_err()),
                    }
                }
                Op::Mkfifo { file } => {
                    let path = NAMES[file];
                    let result = runtime.block_on(async {
                        let (parent, name) = parent_of(&fs, path).await?;
                        fs.mknod(parent, &name, libc::S_IFIFO | 0o644, 0, ME).await
                    });
                    let parent_exists = !path.starts_with("sub/") || dirs[0];
                    if parent_exists && !model.paths.contains_key(path) {
                        prop_assert!(result.is_ok(), "mkfifo {}: {:?}", path, result);
                        model.file_or_new(path).fifo = true;
                    } else {
                        prop_assert!(result.is_err(), "mkfifo {} should fail", path);
                    }
                }
            }
            // The fs agrees with the model after every step: contents, kinds and owners, and which paths are one
            // file (the same inode, with as many links as the model has names for it).
            let mut seen = BTreeMap::new();
            for path in NAMES {
                let got = runtime.block_on(async {
                    let (parent, name) = parent_of(&fs, path).await.ok()?;
                    let attr = fs.lookup(parent, &name).await.ok()?;
                    Some((attr.ino, attr.kind, attr.uid, read_all(&fs, attr.ino).await))
                });
                let want = model.file(path);
                prop_assert_eq!(got.as_ref().map(|g| &g.3), want.map(|f| &f.bytes), "{}", path);
                if let (Some((ino, kind, uid, _)), Some(file)) = (got, want) {
                    prop_assert_eq!(kind == Kind::File, !file.fifo, "{} is {:?}", path, kind);
                    prop_assert_eq!(uid, file.uid, "owner of {}", path);
                    seen.insert(path, ino);
                }
            }
            for (path, ino) in &seen {
                let id = model.paths[*path];
                let names = model.paths.values().filter(|&&other| other == id).count();
                let attr = runtime.block_on(fs.getattr(*ino)).unwrap();
                prop_assert_eq!(attr.nlink as usize, names, "nlink of {}", path);
                for (other, other_ino) in &seen {
                    prop_assert_eq!(model.paths[*other] == id, other_ino == ino, "{} and {}", path, other);
                }
            }
        }
        runtime.block_on(fs.drain(|_, _| {}));
        for path in NAMES {
            let parts: Vec<&str> = path.split('/').collect();
            let on_grid = runtime.block_on(async {
                let (last, dirs) = parts.split_last().unwrap();
                let node = DirectoryNode::open(world.grid.clone(), world.root.clone(), options().mutable).unwrap();
                let dirs: Vec<String> = dirs.iter().map(|s| s.to_string()).collect();
                let dir = node.descend(&dirs).await.ok()?;
                dir.list().await.unwrap().directory.get(last).cloned()
            });
            match model.file(path) {
                Some(file) => {
                    prop_assert!(on_grid.is_some(), "{} missing on the grid", path);
                    prop_assert_eq!(&runtime.block_on(world.grid_file(&parts)), &file.bytes);
                }
                None => prop_assert!(on_grid.is_none(), "{} should not be on the grid", path),
            }
        }
        drop(fs);
        drop(runtime);
        let _ = std::fs::remove_dir_all(&world.dir);
    }
}

/// A mount of 2-of-5, happy 3, on five servers with one down once failed every fsync: changes to existing
/// directories wanted Tahoe's default happiness of 7, capped at N = 5, so every server.
#[test]
fn fsync_succeeds_with_one_server_of_five_down_when_happiness_allows() {
    common::runtime().block_on(async {
        let world = World::new("one-down").await;
        let mut five = options();
        five.upload.params.total = 5;
        five.directory_params.total = 5;
        let fs = world.mount_with("spool", five);
        let dir = fs.mkdir(ROOT_INO, "d", 0o755, ME).await.unwrap().ino;
        let (_, opened) = fs
            .create(dir, "f", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
        fs.write(opened.fh, 0, b"before").await.unwrap();
        fs.fsync(opened.fh).await.unwrap();
        fs.release(opened.fh);
        world.servers[2].set_fault(Fault::Down);
        let data = pattern(20_000, 11);
        let (_, opened) = fs
            .create(dir, "g", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
        fs.write(opened.fh, 0, &data).await.unwrap();
        fs.fsync(opened.fh)
            .await
            .expect("fsync with four of five servers and happiness 3");
        fs.release(opened.fh);
        let renamed = fs.mkdir(ROOT_INO, "e", 0o755, ME).await.unwrap().ino;
        fs.rename(dir, "f", renamed, "f", false).await.unwrap();
        fs.drain(|_, _| {}).await;
        assert_eq!(world.grid_file(&["d", "g"]).await, data);
        assert_eq!(world.grid_file(&["e", "f"]).await, b"before");
    });
}

/// The spool's own limit is a quota: a write that would pass it, with no upload under way to free room, fails
/// with EDQUOT (a full disk is ENOSPC, from the disk itself: the mount test `fulldisk`).
#[test]
fn a_write_past_the_spool_limit_fails_with_edquot() {
    common::runtime().block_on(async {
        let world = World::new("quota").await;
        let mut small = options();
        small.spool_bytes = 64 << 10;
        let fs = world.mount_with("spool", small);
        // The root is listed once; then no upload can free the spool.
        fs.lookup(ROOT_INO, "x").await.unwrap_err();
        for server in &world.servers {
            server.set_fault(Fault::Down);
        }
        let (_, opened) = fs
            .create(ROOT_INO, "f", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
        fs.write(opened.fh, 0, &pattern(60 << 10, 1)).await.unwrap();
        let error = fs
            .write(opened.fh, 60 << 10, &pattern(10 << 10, 2))
            .await
            .unwrap_err();
        assert_eq!(error.errno(), libc::EDQUOT, "{error}");
        fs.release(opened.fh);
    });
}

/// Entries another client stored without a mode are the mounting user's only (0600 files, 0700 directories),
/// unless the mount's umask says otherwise: under `allow_other` they once showed 0644 to every local user.
#[test]
fn entries_stored_without_a_mode_follow_the_umask() {
    common::runtime().block_on(async {
        let world = World::new("umask").await;
        let root =
            DirectoryNode::open(world.grid.clone(), world.root.clone(), options().mutable).unwrap();
        let sub = DirectoryNode::create(
            world.grid.clone(),
            &Directory::new(),
            options().directory_params,
            options().mutable,
        )
        .await
        .unwrap();
        let file = Cap::File(FileCap::Literal(b"made by another client".to_vec()));
        root.modify(&[common::link("file", &file), common::link("dir", sub.cap())])
            .await
            .unwrap();
        for (umask, file_perm, dir_perm) in [(None, 0o600, 0o700), (Some(0o022), 0o644, 0o755)] {
            let mut opts = options();
            if let Some(umask) = umask {
                opts.umask = umask;
            }
            let fs = world.mount_with(&format!("spool-{file_perm:o}"), opts);
            assert_eq!(fs.lookup(ROOT_INO, "file").await.unwrap().perm, file_perm);
            assert_eq!(fs.lookup(ROOT_INO, "dir").await.unwrap().perm, dir_perm);
        }
    });
}
