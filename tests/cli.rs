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
