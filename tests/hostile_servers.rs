//! One hostile storage server among honest ones (`common::hostile`), against the real download, check and
//! mutable code: every read still succeeds from the honest servers, and the attack stays bounded in what the
//! client asks for, in peak memory (under 64 MiB above the client's baseline), in CPU time and in latency.
//! The GBS wire-level attacks (oversized and amplifying CBOR, slow and silent replies) are in `gbs_hostile.rs`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::hostile::{Attack, HostileServer};
use common::memory::servers;
use common::{runtime, temp_file};
use tahoe_mount::cap::{Cap, FileCap};
use tahoe_mount::check::{CheckOptions, check};
use tahoe_mount::config::Secret;
use tahoe_mount::grid::ServerInfo;
use tahoe_mount::grid::client::{Grid, GridServer};
use tahoe_mount::immutable::download::{ChkReader, DownloadOptions};
use tahoe_mount::immutable::params::EncodingParams;
use tahoe_mount::immutable::upload::{UploadOptions, upload_file};
use tahoe_mount::mutable::{MutableFile, MutableOptions};
use tahoe_mount::storage::StorageServer;

/// Peak memory is per process: the tests here run one at a time so each measures only itself.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// What an attack cost this process: peak RSS growth and CPU seconds (all threads).
struct Cost {
    peak_kib: u64,
    cpu: f64,
    started: Instant,
}

fn proc_status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| {
            v.trim_start_matches(':')
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap()
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the command.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

impl Cost {
    fn start() -> Cost {
        // Where the kernel allows, the peak starts again from here; else from the (lower) baseline before.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        Cost {
            peak_kib: proc_status("VmRSS"),
            cpu: cpu_seconds(),
            started: Instant::now(),
        }
    }

    /// Asserts the bounds of the acceptance: < 64 MiB more memory, < `cpu` seconds of CPU, < `wall` seconds.
    fn assert_within(&self, what: &str, cpu: f64, wall: Duration) {
        let grew = proc_status("VmHWM").saturating_sub(self.peak_kib) / 1024;
        let spent = cpu_seconds() - self.cpu;
        let took = self.started.elapsed();
        eprintln!("{what}: peak RSS +{grew} MiB, {spent:.2} s CPU, {took:?}");
        assert!(grew < 64, "{what}: peak memory grew {grew} MiB");
        assert!(spent < cpu, "{what}: {spent:.2} s of CPU");
        assert!(took < wall, "{what}: took {took:?}");
    }
}

/// Four honest in-memory servers and one [`HostileServer`] (playing honest until told otherwise).
fn grid_with_hostile() -> (Grid, Arc<HostileServer>) {
    let honest = servers(5);
    let hostile = HostileServer::new(honest[4].clone());
    let mut members: Vec<GridServer> = honest[..4]
        .iter()
        .map(|s| {
            GridServer::new(
                ServerInfo::named(s.name()),
                s.clone() as Arc<dyn StorageServer>,
            )
        })
        .collect();
    members.push(GridServer::new(
        ServerInfo::named("hostile"),
        hostile.clone() as Arc<dyn StorageServer>,
    ));
    (Grid::new(members), hostile)
}

fn upload_options() -> UploadOptions {
    let mut options =
        UploadOptions::new(Secret::new(b"hostile".to_vec()), Secret::new(vec![3; 32]));
    options.params = EncodingParams {
        needed: 2,
        happy: 3,
        total: 5,
        ..EncodingParams::default()
    };
    options
}

fn bytes(len: usize, seed: u64) -> Vec<u8> {
    common::tahoe::pseudo_random(seed, len)
}

/// A fake server listing share 0 of every file, with a header whose offsets reach a terabyte, once drove a
/// read to 5.2 GiB in 10 s: reads made before the URI extension block is verified are bounded by the cap.
#[test]
fn a_share_header_claiming_a_terabyte_costs_a_bounded_read() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let (grid, hostile) = grid_with_hostile();
        let mut files = Vec::new();
        for seed in 0..8 {
            let data = bytes(300_000, seed);
            let uploaded = upload_file(&grid, temp_file(&data), &upload_options())
                .await
                .expect("upload");
            files.push((uploaded.cap, data));
        }
        hostile.attack(Attack::HugeImmutableOffsets);
        let cost = Cost::start();
        // Plain reads: the hostile share is tried when the permuted order puts its server early enough.
        for (cap, data) in &files {
            let FileCap::Chk(chk) = cap else {
                panic!("not a CHK")
            };
            let reader = ChkReader::open(grid.clone(), *chk, DownloadOptions::default())
                .await
                .expect("open despite the hostile server");
            let read = reader.read(0, chk.size).await.expect("read");
            assert_eq!(&read[..], &data[..]);
        }
        // A verifying check reads every share every server lists, so it meets the hostile one for certain.
        let mut options = CheckOptions::new(Secret::new(vec![3; 32]));
        options.verify = true;
        let result = check(&grid, &Cap::File(files[0].0.clone()), &options)
            .await
            .expect("check");
        assert!(
            result
                .pre
                .corrupt
                .iter()
                .any(|(server, _, _)| server.contains("hostile")),
            "the fake share is reported corrupt: {:?}",
            result.pre
        );
        cost.assert_within("terabyte offsets", 1.0, Duration::from_secs(10));
        assert!(hostile.reads() > 0, "the hostile server was never read");
        assert!(
            hostile.largest_read() <= 1 << 20,
            "the client asked the hostile server for {} bytes at once",
            hostile.largest_read()
        );
    });
}

/// A server listing all 65 535 share numbers of a mutable file once had each read at once (4000 listed: 4000
/// connections, 526 MiB): numbers no share can have are not read, and the rest a few at a time.
#[test]
fn a_server_listing_65535_mutable_shares_is_read_a_few_at_a_time() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let (grid, hostile) = grid_with_hostile();
        let params = common::sdmf_params(2, 3, 5);
        let contents = bytes(20_000, 99);
        let file = MutableFile::create(
            grid.clone(),
            &contents,
            params,
            MutableOptions::new(vec![3; 32]),
        )
        .await
        .expect("create");
        hostile.attack(Attack::ManyMutableShares(u16::MAX));
        let cost = Cost::start();
        let read = file.read().await.expect("read despite the hostile server");
        assert_eq!(read.contents, contents);
        cost.assert_within("65 535 listed shares", 1.0, Duration::from_secs(5));
        let asked = hostile.shares_read();
        assert!(
            asked.iter().all(|&share| share < 256),
            "share numbers read: {:?}…",
            asked.iter().rev().take(3).collect::<Vec<_>>()
        );
        assert!(
            hostile.most_in_flight() <= 4,
            "{} reads in flight at once on one server",
            hostile.most_in_flight()
        );
    });
}

/// Servers that stop answering in the middle of a long read (stopped processes) once held the read for the
/// whole read timeout (60 s) per stalled request: the read now turns to other shares after a deadline sized by
/// the reads so far.
#[test]
fn a_read_turns_from_stalled_servers_to_others_promptly() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let honest = servers(5);
        let grid = common::memory::grid_of(&honest);
        let data = bytes(24 << 20, 17);
        let uploaded = upload_file(&grid, temp_file(&data), &upload_options())
            .await
            .expect("upload");
        let FileCap::Chk(chk) = uploaded.cap else {
            panic!("not a CHK")
        };
        let options = DownloadOptions {
            batch_bytes: 2 << 20,
            ..DownloadOptions::default()
        };
        assert_eq!(options.read_timeout, Duration::from_secs(60));
        let reader = ChkReader::open(grid.clone(), chk, options)
            .await
            .expect("open");
        let first = reader.read(0, 4 << 20).await.expect("first part");
        assert_eq!(&first[..], &data[..4 << 20]);
        // Three of five servers stop answering; the other two hold the k = 2 shares still needed.
        for server in &honest[..3] {
            server.set_fault(tahoe_mount::storage::faulty::Fault::Hanging);
        }
        let started = Instant::now();
        let rest = reader
            .read(4 << 20, (data.len() - (4 << 20)) as u64)
            .await
            .expect("the rest, from the servers still answering");
        let took = started.elapsed();
        assert_eq!(&rest[..], &data[4 << 20..]);
        eprintln!("read 20 MiB past three stalled servers in {took:?}");
        assert!(took < Duration::from_secs(20), "took {took:?}");
    });
}

/// A silent server once held every new file for the whole timeout (30 s): an upload's server queries and a new
/// mutable file's first writes waited for it. Both now go around it a few seconds after the others answered.
#[test]
fn new_files_go_around_a_silent_server() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let honest = servers(5);
        let grid = common::memory::grid_of(&honest);
        honest[3].set_fault(tahoe_mount::storage::faulty::Fault::Hanging);
        let mut upload = upload_options();
        upload.query_timeout = Duration::from_secs(30);
        upload.write_timeout = Duration::from_secs(30);
        let data = bytes(100_000, 23);
        let started = Instant::now();
        let uploaded = upload_file(&grid, temp_file(&data), &upload)
            .await
            .expect("upload around the silent server");
        let upload_took = started.elapsed();
        let mut mutable = MutableOptions::new(vec![3; 32]);
        mutable.timeout = Duration::from_secs(30);
        let params = common::sdmf_params(2, 3, 5);
        let started = Instant::now();
        let file = MutableFile::create(grid.clone(), b"new", params, mutable)
            .await
            .expect("a new mutable file around the silent server");
        let create_took = started.elapsed();
        eprintln!("upload {upload_took:?}, mutable create {create_took:?}");
        // The grace for a server that does not answer is 5 s once the others have.
        assert!(
            upload_took < Duration::from_secs(10),
            "upload took {upload_took:?}"
        );
        assert!(
            create_took < Duration::from_secs(10),
            "create took {create_took:?}"
        );
        honest[3].set_fault(tahoe_mount::storage::faulty::Fault::None);
        assert_eq!(file.read().await.unwrap().contents, b"new");
        let FileCap::Chk(chk) = uploaded.cap else {
            panic!("not a CHK")
        };
        let reader = ChkReader::open(grid.clone(), chk, DownloadOptions::default())
            .await
            .unwrap();
        assert_eq!(&reader.read(0, chk.size).await.unwrap()[..], &data[..]);
    });
}

/// The same attacks through the filesystem layer the mount serves (`Fs`, without FUSE): listing a directory and
/// reading its files while one server lists 65 535 shares of every mutable file and serves CHK headers that
/// reach a terabyte. Everything reads back, within the memory and time bounds.
#[test]
fn the_filesystem_reads_through_a_hostile_server_within_bounds() {
    use tahoe_mount::dirnode::{Directory, DirectoryNode};
    use tahoe_mount::fs::{Fs, FsOptions, ROOT_INO};
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let (grid, hostile) = grid_with_hostile();
        let params = common::sdmf_params(2, 3, 5);
        let mutable = MutableOptions::new(vec![3; 32]);
        let root = DirectoryNode::create(grid.clone(), &Directory::new(), params, mutable.clone())
            .await
            .unwrap();
        let mut files = Vec::new();
        let mut links = Vec::new();
        for i in 0..4u64 {
            let data = bytes(200_000 + i as usize, 40 + i);
            let uploaded = upload_file(&grid, temp_file(&data), &upload_options())
                .await
                .unwrap();
            links.push(common::link(&format!("f{i}"), &Cap::File(uploaded.cap)));
            files.push(data);
        }
        root.modify(&links).await.unwrap();
        hostile.attack(Attack::ManyMutableShares(u16::MAX));
        let spool =
            std::env::temp_dir().join(format!("tahoe-mount-hostile-fs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&spool);
        let mut options = FsOptions::new(upload_options(), mutable);
        options.directory_params = params;
        let cost = Cost::start();
        let source = grid.clone();
        let (fs, _) = Fs::new(
            root.cap().clone(),
            Arc::new(move || source.clone()),
            None,
            &spool,
            options,
        )
        .unwrap();
        let dir = fs.opendir(ROOT_INO).await.expect("the root opens");
        let listing = fs.readdir(dir, 0).expect("the root lists");
        fs.release(dir);
        assert_eq!(
            listing
                .iter()
                .filter(|(e, _)| e.name.starts_with('f'))
                .count(),
            4
        );
        hostile.attack(Attack::HugeImmutableOffsets);
        for (i, data) in files.iter().enumerate() {
            let ino = fs.lookup(ROOT_INO, &format!("f{i}")).await.unwrap().ino;
            let opened = fs.open(ino, libc::O_RDONLY).await.unwrap();
            let read = fs.read(opened.fh, 0, data.len() as u32 + 10).await.unwrap();
            fs.release(opened.fh);
            assert_eq!(&read[..], &data[..], "f{i}");
        }
        cost.assert_within("through Fs", 2.0, Duration::from_secs(10));
        assert!(
            hostile.largest_read() <= 1 << 20,
            "{}",
            hostile.largest_read()
        );
        let _ = std::fs::remove_dir_all(&spool);
    });
}

/// The attacks through the kernel: `Fs` over the hostile grid mounted with real FUSE (as the mount does), read with
/// ordinary file calls from another thread: the directory lists, every file reads back, within the bounds.
#[test]
fn a_real_fuse_mount_reads_through_a_hostile_server_within_bounds() {
    use tahoe_mount::dirnode::{Directory, DirectoryNode};
    use tahoe_mount::fs::{Fs, FsOptions};
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = runtime();
    let (grid, hostile) = grid_with_hostile();
    let params = common::sdmf_params(2, 3, 5);
    let mutable = MutableOptions::new(vec![3; 32]);
    let (root, files) = runtime.block_on(async {
        let root = DirectoryNode::create(grid.clone(), &Directory::new(), params, mutable.clone())
            .await
            .unwrap();
        let mut files = Vec::new();
        let mut links = Vec::new();
        for i in 0..3u64 {
            let data = bytes(300_000 + i as usize, 60 + i);
            let uploaded = upload_file(&grid, temp_file(&data), &upload_options())
                .await
                .unwrap();
            links.push(common::link(&format!("f{i}"), &Cap::File(uploaded.cap)));
            files.push(data);
        }
        root.modify(&links).await.unwrap();
        (root, files)
    });
    let base =
        std::env::temp_dir().join(format!("tahoe-mount-hostile-fuse-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let mountpoint = base.join("mnt");
    std::fs::create_dir_all(&mountpoint).unwrap();
    let mut options = FsOptions::new(upload_options(), mutable);
    options.directory_params = params;
    let fs = {
        let _inside = runtime.enter();
        let source = grid.clone();
        Fs::new(
            root.cap().clone(),
            Arc::new(move || source.clone()),
            None,
            &base.join("spool"),
            options,
        )
        .unwrap()
        .0
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("tahoe-mount-test".into()),
        fuser::MountOption::DefaultPermissions,
    ];
    config.n_threads = Some(2);
    let adapter = tahoe_mount::fuse::FuseAdapter::new(fs, runtime.handle().clone());
    let mut session = fuser::Session::new(adapter, &mountpoint, &config).expect("a FUSE mount");
    let mut unmounter = session.unmount_callable();
    let serving = std::thread::spawn(move || session.run());
    hostile.attack(Attack::ManyMutableShares(u16::MAX));
    let cost = Cost::start();
    let outcome = std::panic::catch_unwind(|| {
        let mut names: Vec<String> = std::fs::read_dir(&mountpoint)
            .expect("the mount lists")
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["f0", "f1", "f2"]);
        hostile.attack(Attack::HugeImmutableOffsets);
        for (i, data) in files.iter().enumerate() {
            let read = std::fs::read(mountpoint.join(format!("f{i}"))).expect("a read");
            assert!(read == *data, "f{i} reads back different");
        }
    });
    let unmounted = unmounter.unmount();
    let _ = serving.join();
    let _ = std::fs::remove_dir_all(&base);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    unmounted.expect("unmount");
    cost.assert_within("through FUSE", 2.0, Duration::from_secs(10));
    assert!(
        hostile.largest_read() <= 1 << 20,
        "{}",
        hostile.largest_read()
    );
    assert!(hostile.shares_read().iter().all(|&s| s < 256));
}
