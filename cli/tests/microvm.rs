//! The microVM flow of the `zixiao` binary as a user runs it, against real
//! monitors: zixiao-vmm with its test guest (create, logs, snapshot `--to`,
//! `restore --from`, delete) and QEMU with the Debian cloud kernel of
//! `scripts/services/microvm.sh` (create, logs, stop, delete).

#![cfg(feature = "microvm")]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use zixiao_testing::wait::{runtime_endpoint, runtimes_required};

fn zixiao(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zixiao"))
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("ZIXIAO_STATE_DIR")
        .env_remove("ZIXIAO_MICROVM_BACKEND")
        .output()
        .expect("run zixiao")
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "zixiao failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: Output) -> serde_json::Value {
    let text = ok(o);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Polls `zixiao instance logs NAME` until it contains `text`.
fn wait_for_log(state: &Path, name: &str, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let log = ok(zixiao(state, &["instance", "logs", name]));
        if log.contains(text) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "no {text} in the log of {name}: {log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A state dir short enough for the monitors' socket paths.
fn state_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("zx-")
        .tempdir()
        .expect("tempdir")
}

fn assert_no_microvm_files(state: &Path) {
    let dir = state.join("runtime").join("microvm");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn snapshot_to_a_directory_and_restore_a_vmm_microvm() {
    if let Some(reason) = zixiao_vmm::kvm_skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let Some(guest) = zixiao_vmm::test_guest::kernel_path() else {
        assert!(
            !runtimes_required(),
            "zixiao-vmm's test guest was not built"
        );
        eprintln!("skipped: zixiao-vmm's test guest was not built");
        return;
    };
    // The binary finds zixiao-vmm next to itself; `cargo test` over the
    // workspace builds it there.
    let vmm = Path::new(env!("CARGO_BIN_EXE_zixiao")).with_file_name("zixiao-vmm");
    if !vmm.is_file() {
        assert!(!runtimes_required(), "{} is not built", vmm.display());
        eprintln!(
            "skipped: {} is not built (cargo build -p zixiao-vmm)",
            vmm.display()
        );
        return;
    }
    let state = state_dir();
    let s = state.path();
    let guest = guest.to_string_lossy();
    let created = json(zixiao(
        s,
        &[
            "-o",
            "json",
            "instance",
            "create",
            "--name",
            "v1",
            "--type",
            "microvm",
            "--kernel",
            &guest,
            "--cmdline",
            "console=ttyS0 zx.mode=loop",
            "--cpus",
            "1",
            "--memory",
            "64",
            "--backend",
            "vmm",
        ],
    ));
    assert_eq!(created["status"], "running", "{created}");
    assert_eq!(created["runtime"], "vmm", "{created}");
    wait_for_log(s, "v1", "ZX: count=");

    // All or nothing: a --to that cannot be written is refused before
    // anything is taken.
    let taken = s.join("taken");
    std::fs::create_dir(&taken).expect("an existing directory");
    let refused = zixiao(
        s,
        &[
            "-o",
            "json",
            "instance",
            "snapshot",
            "create",
            "v1",
            "s0",
            "--to",
            &taken.to_string_lossy(),
        ],
    );
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let listed = json(zixiao(
        s,
        &["-o", "json", "instance", "snapshot", "list", "v1"],
    ));
    assert_eq!(
        listed,
        serde_json::json!([]),
        "a refused copy left a snapshot"
    );

    let snap = s.join("v1-s1");
    let snap_arg = snap.to_string_lossy();
    ok(zixiao(
        s,
        &[
            "instance", "snapshot", "create", "v1", "s1", "--to", &snap_arg,
        ],
    ));
    assert!(snap.join("zixiao-snapshot.json").is_file());
    // The directory exists now: a second export there is refused.
    let again = zixiao(
        s,
        &[
            "instance", "snapshot", "create", "v1", "s1", "--to", &snap_arg,
        ],
    );
    assert!(!again.status.success());

    let restored = json(zixiao(
        s,
        &[
            "-o", "json", "instance", "restore", "--from", &snap_arg, "--name", "v2",
        ],
    ));
    assert_eq!(restored["status"], "running", "{restored}");
    let log = wait_for_log(s, "v2", "ZX: count=");
    assert!(
        !log.contains("ZX: ready"),
        "the restored guest booted again: {log}"
    );

    let missing = zixiao(
        s,
        &[
            "instance",
            "restore",
            "--from",
            "/nonexistent/snap",
            "--name",
            "v3",
        ],
    );
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );

    ok(zixiao(s, &["instance", "delete", "v1"]));
    ok(zixiao(s, &["instance", "delete", "v2"]));
    assert_no_microvm_files(s);
}

#[test]
fn a_qemu_microvm_boots_linux_from_the_command_line() {
    let Some(kernel) = runtime_endpoint("ZIXIAO_TEST_MICROVM_KERNEL", "the test microVM kernel")
    else {
        return;
    };
    let Some(initrd) = runtime_endpoint("ZIXIAO_TEST_MICROVM_INITRD", "the test microVM initramfs")
    else {
        return;
    };
    let state = state_dir();
    let s = state.path();
    let created = json(zixiao(
        s,
        &[
            "-o",
            "json",
            "instance",
            "create",
            "--name",
            "m1",
            "--type",
            "microvm",
            "--kernel",
            &kernel,
            "--initrd",
            &initrd,
            "--cmdline",
            "console=ttyS0 quiet",
            "--cpus",
            "1",
            "--memory",
            "256",
            "--backend",
            "qemu",
        ],
    ));
    assert_eq!(created["runtime"], "qemu", "{created}");
    wait_for_log(s, "m1", "ZIXIAO-BOOT-OK");
    let stats = json(zixiao(s, &["-o", "json", "instance", "stats", "m1"]));
    assert!(stats["cpu_time_ns"].as_u64().unwrap_or(0) > 0, "{stats}");
    let snapshot = zixiao(s, &["instance", "snapshot", "create", "m1", "s1"]);
    assert!(
        !snapshot.status.success(),
        "the qemu backend takes no snapshots"
    );
    let stopped = json(zixiao(s, &["-o", "json", "instance", "stop", "m1"]));
    assert_eq!(stopped["status"], "stopped", "{stopped}");
    ok(zixiao(s, &["instance", "delete", "m1"]));
    assert_no_microvm_files(s);
}
