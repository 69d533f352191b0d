//! The `tahoe-mount` binary as a user runs it.

use std::process::Command;

fn tahoe_mount(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tahoe-mount"))
        .args(args)
        .output()
        .expect("run tahoe-mount")
}

#[test]
fn cap_describes_a_chk_cap() {
    let cap = "URI:CHK:aeaqcaibaeaqcaibaeaqcaibae:aibacaqcaibacaqcaibacaqcaibacaqcaibacaqcaibacaqcaiba:3:10:1000";
    let out = tahoe_mount(&["cap", cap]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("URI:CHK-Verifier:"), "{text}");
    assert!(text.contains("3-of-10"), "{text}");
    assert!(text.contains("size           1000"), "{text}");
}

#[test]
fn malformed_cap_is_a_clear_error() {
    let out = tahoe_mount(&["cap", "URI:CHK:short:x:3:10:1"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("malformed URI:CHK cap: key:"), "{err}");
}

#[test]
fn help_lists_only_working_commands() {
    let out = tahoe_mount(&["--help"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("cap"), "{text}");
    assert!(!text.to_lowercase().contains("not implemented"));
}

#[test]
fn kernels_lists_scalar_and_obeys_the_override() {
    let out = tahoe_mount(&["kernels"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines().next() == Some("scalar") || text.starts_with("scalar  (in use)"),
        "{text}"
    );
    assert_eq!(text.matches("(in use)").count(), 1, "{text}");

    let forced = Command::new(env!("CARGO_BIN_EXE_tahoe-mount"))
        .arg("kernels")
        .env("TAHOE_MOUNT_EC_KERNEL", "scalar")
        .output()
        .unwrap();
    assert!(
        String::from_utf8(forced.stdout)
            .unwrap()
            .starts_with("scalar  (in use)\n")
    );

    let bogus = Command::new(env!("CARGO_BIN_EXE_tahoe-mount"))
        .arg("kernels")
        .env("TAHOE_MOUNT_EC_KERNEL", "sse9")
        .output()
        .unwrap();
    assert!(!bogus.status.success());
    let err = String::from_utf8(bogus.stderr).unwrap();
    assert!(
        err.contains("unknown erasure kernel \"sse9\"") && err.contains("TAHOE_MOUNT_EC_KERNEL"),
        "{err}"
    );
}

#[test]
fn get_writes_into_a_fifo_or_device_and_never_replaces_it() {
    use std::os::unix::fs::FileTypeExt;
    let dir = std::env::temp_dir().join(format!("tahoe-mount-cli-get-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = b"a literal file: its bytes are in the cap".to_vec();
    let cap =
        tahoe_mount::cap::Cap::File(tahoe_mount::cap::FileCap::Literal(data.clone())).to_string();

    // A FIFO: the bytes go through it, and it is still a FIFO afterwards (a rename would have replaced it). Its
    // read end is opened first, without blocking, so that get's open for writing does not wait for a reader.
    let fifo = dir.join("pipe");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    let mut read_end = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap()
    };
    let out = tahoe_mount(&["get", &cap, fifo.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut read_end, &mut got).unwrap();
    assert_eq!(got, data);

    // A regular file is replaced whole; a directory is refused with a message naming it.
    let file = dir.join("file");
    std::fs::write(
        &file,
        b"older and longer contents than the literal file has, to be replaced",
    )
    .unwrap();
    let out = tahoe_mount(&["get", &cap, file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&file).unwrap(), data);
    let out = tahoe_mount(&["get", &cap, dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a directory"));
    std::fs::remove_dir_all(&dir).unwrap();
}
