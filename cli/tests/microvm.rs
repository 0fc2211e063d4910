//! The microVM flow of the `zixiao` binary as a user runs it, against real
//! monitors: zixiao-vmm with its test guest (create, logs, snapshot `--to`,
//! `restore --from`, delete; disks of the image store with `--disk`) and QEMU with the Debian cloud kernel of
//! `scripts/services/microvm.sh` (create, logs, stop, delete).

#![cfg(feature = "microvm")]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use zixiao_testing::vsock::{connect_to_guest, echoes};
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

/// The path of zixiao-vmm's virtio test guest (`guest/blk.c`), when the
/// vmm backend can run it here; `None` (skip, saying why) as
/// [`vmm_guest`] otherwise.
fn vmm_virtio_guest() -> Option<String> {
    vmm_guest()?;
    let guest = zixiao_vmm::test_guest::virtio_kernel_path()
        .expect("the virtio test guest is built with the other");
    Some(guest.display().to_string())
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

/// `zixiao -o json instance create` of QEMU microVM `name` booting
/// `kernel` and `initrd` (paths or image names) to the test guest's marker.
fn create_qemu_microvm(state: &Path, name: &str, kernel: &str, initrd: &str) -> Output {
    zixiao(
        state,
        &[
            "-o",
            "json",
            "instance",
            "create",
            "--name",
            name,
            "--type",
            "microvm",
            "--kernel",
            kernel,
            "--initrd",
            initrd,
            "--cmdline",
            "console=ttyS0 quiet",
            "--cpus",
            "1",
            "--memory",
            "256",
            "--backend",
            "qemu",
        ],
    )
}

/// The test microVM's kernel and initramfs (for QEMU), or `None` (skip,
/// saying why) without them.
fn qemu_guest() -> Option<(String, String)> {
    let kernel = runtime_endpoint("ZIXIAO_TEST_MICROVM_KERNEL", "the test microVM kernel")?;
    let initrd = runtime_endpoint("ZIXIAO_TEST_MICROVM_INITRD", "the test microVM initramfs")?;
    Some((kernel, initrd))
}

/// The path of zixiao-vmm's test guest, when the vmm backend can run it
/// here (`/dev/kvm`, the guest and zixiao-vmm built); `None` (skip, saying
/// why) otherwise.
fn vmm_guest() -> Option<String> {
    if let Some(reason) = zixiao_vmm::kvm_skip_reason() {
        eprintln!("skipped: {reason}");
        return None;
    }
    let Some(guest) = zixiao_vmm::test_guest::kernel_path() else {
        assert!(
            !runtimes_required(),
            "zixiao-vmm's test guest was not built"
        );
        eprintln!("skipped: zixiao-vmm's test guest was not built");
        return None;
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
        return None;
    }
    Some(guest.to_string_lossy().into_owned())
}

/// `instance create` of `name`: the test guest counting on the vmm backend.
fn create_counting_guest<'a>(name: &'a str, guest: &'a str) -> Vec<&'a str> {
    vec![
        "instance",
        "create",
        "--name",
        name,
        "--type",
        "microvm",
        "--backend",
        "vmm",
        "--kernel",
        guest,
        "--cmdline",
        "console=ttyS0 zx.mode=loop",
        "--memory",
        "64",
    ]
}

#[test]
fn snapshot_to_a_directory_and_restore_a_vmm_microvm() {
    let Some(guest) = vmm_guest() else {
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
    let Some((kernel, initrd)) = qemu_guest() else {
        return;
    };
    let state = state_dir();
    let s = state.path();
    let created = json(create_qemu_microvm(s, "m1", &kernel, &initrd));
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

/// A QEMU guest that dies while booting ends `failed`, not `stopped` with
/// exit code 0: one that resets at once fails its create with the
/// console's last lines, one that panics later is found failed (exit code
/// 1) by the next command; one that powers itself off still completes.
#[test]
fn a_qemu_guest_that_dies_while_booting_ends_failed() {
    let Some((kernel, initrd)) = qemu_guest() else {
        return;
    };
    let state = state_dir();
    let s = state.path();
    // The real kernel's setup code (it prints on the console), then bytes
    // that are no instructions: the guest faults as soon as it leaves setup.
    let image = std::fs::read(&kernel).expect("kernel");
    let setup = (usize::from(image[0x1f1]).max(4) + 1) * 512;
    let mut broken = image[..setup].to_vec();
    broken.resize(image.len(), 0xff);
    let broken_path = s.join("broken-bzImage");
    std::fs::write(&broken_path, &broken).expect("write");
    let create = |name: &str, kernel: &str, cmdline: &str| {
        zixiao(
            s,
            &[
                "-o",
                "json",
                "instance",
                "create",
                "--name",
                name,
                "--type",
                "microvm",
                "--backend",
                "qemu",
                "--kernel",
                kernel,
                "--initrd",
                &initrd,
                "--cmdline",
                cmdline,
                "--memory",
                "128",
            ],
        )
    };
    let status = |name: &str| json(zixiao(s, &["-o", "json", "instance", "get", name]));

    let out = create("reset", &broken_path.to_string_lossy(), "console=ttyS0");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("died while booting") && stderr.contains("Probing EDD"),
        "{stderr}"
    );
    let reset = status("reset");
    assert_eq!(reset["status"], "failed", "{reset}");

    // Panics at the end of the kernel's boot, after the create answered.
    let created = json(create(
        "panics",
        &kernel,
        "console=ttyS0 rdinit=/nonexistent",
    ));
    assert_eq!(created["status"], "running", "{created}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let panicked = loop {
        let now = status("panics");
        if now["status"] != "running" {
            break now;
        }
        assert!(Instant::now() < deadline, "still running: {now}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(panicked["status"], "failed", "{panicked}");
    assert_eq!(panicked["exit"]["code"], 1, "{panicked}");
    wait_for_log(s, "panics", "Kernel panic");

    let created = json(create(
        "powers-off",
        &kernel,
        "console=ttyS0 quiet zixiao.poweroff",
    ));
    assert_eq!(created["status"], "running", "{created}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let stopped = loop {
        let now = status("powers-off");
        if now["status"] != "running" {
            break now;
        }
        assert!(Instant::now() < deadline, "still running: {now}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(stopped["status"], "stopped", "{stopped}");
    assert_eq!(stopped["exit"]["code"], 0, "{stopped}");

    for name in ["reset", "panics", "powers-off"] {
        ok(zixiao(s, &["instance", "delete", name]));
    }
    assert_no_microvm_files(s);
}

/// A command that fails changes nothing: a snapshot copy refused for its
/// directory leaves no snapshot, a restore whose manifest disagrees with
/// its files creates nothing, and a start of a paused instance says to
/// resume it and leaves it as it was.
#[test]
fn snapshot_restore_and_start_are_all_or_nothing() {
    let Some(guest) = vmm_guest() else {
        return;
    };
    let state = state_dir();
    let s = state.path();
    ok(zixiao(s, &create_counting_guest("v", &guest)));
    let snapshots = || {
        json(zixiao(
            s,
            &["-o", "json", "instance", "snapshot", "list", "v"],
        ))
    };
    let refused = |args: &[&str], field: &str, expected: &str| {
        let out = zixiao(s, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("invalid {field}:")) && stderr.contains(expected),
            "{args:?}: {stderr}"
        );
    };

    let full = s.join("full");
    std::fs::create_dir(&full).expect("mkdir");
    std::fs::write(full.join("keep"), b"mine").expect("write");
    let full_arg = full.to_string_lossy();
    refused(
        &[
            "instance", "snapshot", "create", "v", "s1", "--to", &full_arg,
        ],
        "to",
        "exists already",
    );
    let nowhere = s.join("missing").join("s1");
    refused(
        &[
            "instance",
            "snapshot",
            "create",
            "v",
            "s1",
            "--to",
            &nowhere.to_string_lossy(),
        ],
        "to",
        "does not exist",
    );
    assert_eq!(snapshots(), serde_json::json!([]), "a snapshot was kept");
    assert_eq!(std::fs::read(full.join("keep")).expect("kept"), b"mine");

    // A good copy, then copies of it with an edited manifest.
    let good = s.join("good");
    ok(zixiao(
        s,
        &[
            "instance",
            "snapshot",
            "create",
            "v",
            "s1",
            "--to",
            &good.to_string_lossy(),
        ],
    ));
    for (key, value) in [("memory_mib", 1), ("cpus", 2)] {
        let edited = s.join(format!("edited-{key}"));
        std::fs::create_dir(&edited).expect("mkdir");
        for entry in std::fs::read_dir(&good).expect("read").flatten() {
            std::fs::copy(entry.path(), edited.join(entry.file_name())).expect("copy");
        }
        let manifest = edited.join("zixiao-snapshot.json");
        let mut m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&manifest).expect("read")).expect("JSON");
        m[key] = value.into();
        std::fs::write(&manifest, m.to_string()).expect("write");
        refused(
            &[
                "instance",
                "restore",
                "--from",
                &edited.to_string_lossy(),
                "--name",
                "v2",
            ],
            "from",
            "does not match its snapshot",
        );
    }
    let all = json(zixiao(s, &["-o", "json", "instance", "list"]));
    assert_eq!(all.as_array().map(Vec::len), Some(1), "{all}");

    ok(zixiao(s, &["instance", "pause", "v"]));
    let out = zixiao(s, &["instance", "start", "v"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is paused") && stderr.contains("zixiao instance resume v"),
        "{stderr}"
    );
    let paused = json(zixiao(s, &["-o", "json", "instance", "get", "v"]));
    assert_eq!(paused["status"], "paused", "{paused}");
    let resumed = json(zixiao(s, &["-o", "json", "instance", "resume", "v"]));
    assert_eq!(resumed["status"], "running", "{resumed}");

    ok(zixiao(s, &["instance", "delete", "v"]));
    assert_no_microvm_files(s);
}

/// The daemon, killed when dropped.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A snapshot schedule set at create runs in `zixiao daemon` (its first
/// snapshot at once, named auto-...), `instance get` shows it and the last
/// one taken, and bad schedules are refused naming the flag, changing
/// nothing.
#[test]
fn a_snapshot_schedule_runs_in_the_daemon_and_bad_ones_change_nothing() {
    use std::io::BufRead;
    let Some(guest) = vmm_guest() else {
        return;
    };
    let state = state_dir();
    let s = state.path();
    let mut child = Command::new(env!("CARGO_BIN_EXE_zixiao"))
        .arg("--state-dir")
        .arg(s)
        .arg("daemon")
        .env_remove("ZIXIAO_STATE_DIR")
        .env_remove("ZIXIAO_MICROVM_BACKEND")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the daemon");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let daemon = Daemon(child);
    // Listening on its port, then on the state directory's socket.
    for _ in 0..2 {
        lines.next().expect("a line").expect("read");
    }
    let mut create = vec!["-o", "json"];
    create.extend(create_counting_guest("v", &guest));
    create.extend(["--snapshot-every", "1h", "--snapshot-keep", "2"]);
    let created = json(zixiao(s, &create));
    let schedule = serde_json::json!({"every": "1h", "keep": 2});
    assert_eq!(created["spec"]["snapshot_schedule"], schedule, "{created}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let last = loop {
        let got = json(zixiao(s, &["-o", "json", "instance", "get", "v"]));
        if let Some(name) = got["last_scheduled_snapshot"]["name"].as_str() {
            break name.to_owned();
        }
        assert!(Instant::now() < deadline, "no scheduled snapshot: {got}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(last.starts_with("auto-"), "{last}");
    let listed = json(zixiao(
        s,
        &["-o", "json", "instance", "snapshot", "list", "v"],
    ));
    assert_eq!(listed[0]["name"], last.as_str(), "{listed}");
    let shown = ok(zixiao(s, &["instance", "get", "v"]));
    assert!(shown.contains("every 1h, keep 2"), "{shown}");
    assert!(shown.contains(&last), "{shown}");

    for (args, says) in [
        (
            &["--snapshot-every", "30s", "--snapshot-keep", "2"][..],
            "invalid --snapshot-every: 30s is shorter than the minimum of 1m",
        ),
        (&["--snapshot-keep", "0"][..], "invalid --snapshot-keep"),
        (
            &["--snapshot-every", "soon"][..],
            "invalid --snapshot-every",
        ),
        (
            &["--snapshot-every", "2h", "--no-snapshot-schedule"][..],
            "cannot be used with",
        ),
    ] {
        let mut command = vec!["instance", "update", "v"];
        command.extend_from_slice(args);
        let refused = zixiao(s, &command);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success() && stderr.contains(says),
            "{args:?}: {stderr}"
        );
    }
    let unknown = zixiao(s, &["instance", "update", "nope", "--snapshot-keep", "3"]);
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("not found"),
        "{unknown:?}"
    );
    let after = json(zixiao(s, &["-o", "json", "instance", "get", "v"]));
    assert_eq!(after["spec"]["snapshot_schedule"], schedule, "{after}");

    // Part of a schedule changes alone; clearing it keeps the snapshots.
    let changed = json(zixiao(
        s,
        &[
            "-o",
            "json",
            "instance",
            "update",
            "v",
            "--snapshot-keep",
            "3",
        ],
    ));
    assert_eq!(changed["spec"]["snapshot_schedule"]["keep"], 3, "{changed}");
    let cleared = json(zixiao(
        s,
        &[
            "-o",
            "json",
            "instance",
            "update",
            "v",
            "--no-snapshot-schedule",
        ],
    ));
    assert!(
        cleared["spec"].get("snapshot_schedule").is_none(),
        "{cleared}"
    );
    let listed = json(zixiao(
        s,
        &["-o", "json", "instance", "snapshot", "list", "v"],
    ));
    assert_eq!(listed[0]["name"], last.as_str(), "{listed}");

    ok(zixiao(s, &["instance", "delete", "v"]));
    drop(daemon);
    assert_no_microvm_files(s);
}

/// `zixiao image import` of one file with `--kind`, and the files the
/// refused imports would have left (none).
fn import(state: &Path, file: &Path, kind: &str, name: &str) -> Output {
    zixiao(
        state,
        &[
            "-o",
            "json",
            "image",
            "import",
            file.to_str().expect("utf-8 path"),
            "--kind",
            kind,
            "--name",
            name,
        ],
    )
}

/// The images `image list -o json` shows, by name.
fn listed(state: &Path) -> std::collections::BTreeMap<String, serde_json::Value> {
    let all = json(zixiao(
        state,
        &["-o", "json", "image", "list", "--type", "microvm"],
    ));
    all.as_array()
        .expect("a list")
        .iter()
        .map(|i| (i["name"].as_str().expect("name").to_owned(), i.clone()))
        .collect()
}

/// The test microVM's kernel and initrd imported into the node's image
/// store boot a QEMU microVM by name; the kernel cannot be removed while
/// the instance uses it, and can be once it is deleted. A file that is no
/// kernel, and a qcow2 disk with a backing file, are refused with exit 2
/// and leave nothing listed.
#[test]
fn store_images_boot_a_qemu_microvm_and_stay_while_used() {
    let Some((kernel, initrd)) = qemu_guest() else {
        return;
    };
    let state = state_dir();
    let s = state.path();
    let k = json(import(s, Path::new(&kernel), "kernel", "k1"));
    assert_eq!(k["kind"], "kernel", "{k}");
    assert_eq!(k["format"], "bzimage", "{k}");
    let i = json(import(s, Path::new(&initrd), "initrd", "i1"));
    assert_eq!(i["kind"], "initrd", "{i}");

    let images = listed(s);
    for (name, file, kind) in [("k1", &kernel, "kernel"), ("i1", &initrd, "initrd")] {
        let image = &images[name];
        assert_eq!(image["kind"], kind, "{image}");
        let size = std::fs::metadata(file).expect("file").len();
        assert_eq!(image["size_bytes"], size, "{image}");
        let sum = Command::new("sha256sum")
            .arg(file)
            .output()
            .expect("sha256sum");
        let sum = String::from_utf8_lossy(&sum.stdout);
        let hex = sum.split_whitespace().next().expect("a digest");
        assert_eq!(image["digest"], format!("sha256:{hex}"), "{image}");
        assert!(
            !image["format"].as_str().unwrap_or("").is_empty(),
            "{image}"
        );
    }

    // A name the store does not hold is refused at create, naming the field.
    let missing = zixiao(
        s,
        &[
            "instance", "create", "--name", "m0", "--type", "microvm", "--kernel", "nope",
        ],
    );
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("spec.kernel"),
        "{missing:?}"
    );
    let none = json(zixiao(s, &["-o", "json", "instance", "list"]));
    assert_eq!(none.as_array().map(Vec::len), Some(0), "{none}");

    let created = json(create_qemu_microvm(s, "m1", "k1", "i1"));
    assert_eq!(created["spec"]["kernel"], "k1", "{created}");
    wait_for_log(s, "m1", "ZIXIAO-BOOT-OK");

    let refused = zixiao(s, &["image", "rm", "k1", "--kind", "kernel"]);
    assert!(!refused.status.success(), "{refused:?}");
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("in use") && why.contains("m1"), "{why}");
    assert!(listed(s).contains_key("k1"));

    ok(zixiao(s, &["instance", "delete", "m1"]));
    ok(zixiao(s, &["image", "rm", "k1", "--kind", "kernel"]));
    ok(zixiao(s, &["image", "rm", "i1", "--kind", "initrd"]));
    assert!(listed(s).is_empty());
    assert_no_microvm_files(s);

    // Bad files: refused, exit 2, nothing listed or kept.
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, b"#!/bin/sh\necho this is no kernel\n").expect("write");
    let bad = import(s, &garbage, "kernel", "bad");
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("is not a kernel"),
        "{bad:?}"
    );
    let base = dir.path().join("base.raw");
    let overlay = dir.path().join("overlay.qcow2");
    std::fs::write(&base, vec![0u8; 1 << 20]).expect("write");
    let made = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&base)
        .arg(&overlay)
        .output()
        .expect("qemu-img");
    assert!(made.status.success(), "{made:?}");
    let bad = import(s, &overlay, "disk", "overlay");
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("backing file"),
        "{bad:?}"
    );
    assert!(listed(s).is_empty());
    let kept: Vec<_> = std::fs::read_dir(s.join("runtime").join("images").join("tmp"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(kept.is_empty(), "left behind: {kept:?}");
}

#[test]
fn a_vmm_microvm_gets_the_disks_named_with_disk_and_writes_only_its_copy() {
    let Some(guest) = vmm_virtio_guest() else {
        return;
    };
    let state = state_dir();
    let s = state.path();
    let data: Vec<u8> = (0..32 * 512).map(|i| (i % 251) as u8).collect();
    let tools = vec![0x5au8; 8 * 512];
    import_disks(s, &[("data", &data), ("tools", &tools)]);

    // A disk the store lacks is refused, naming it, and nothing is made.
    let mut create = vec![
        "-o",
        "json",
        "instance",
        "create",
        "--name",
        "d1",
        "--type",
        "microvm",
        "--backend",
        "vmm",
        "--kernel",
        &guest,
        "--cmdline",
        "console=ttyS0",
        "--memory",
        "64",
        "--disk",
        "data",
    ];
    let refused = zixiao(s, &[&create[..], &["--disk", "nosuch:ro"]].concat());
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("spec.disks[1].image") && stderr.contains("nosuch"),
        "{stderr}"
    );
    assert_no_microvm_files(s);

    create.extend(["--disk", "tools:ro"]);
    let created = json(zixiao(s, &create));
    assert_eq!(created["runtime"], "vmm", "{created}");
    assert_eq!(
        created["spec"]["disks"],
        serde_json::json!([{"image": "data"}, {"image": "tools", "read_only": true}]),
        "{created}"
    );
    disks_did_their_io(s, "d1");

    // The guest wrote sector 1 of its own copy; the store's images are as
    // imported, and stay after the instance is gone.
    ok(zixiao(s, &["instance", "delete", "d1"]));
    let store = s.join("runtime").join("images").join("disk");
    let mut stored: Vec<Vec<u8>> = std::fs::read_dir(&store)
        .expect("the store's disks")
        .map(|e| std::fs::read(e.expect("entry").path()).expect("read"))
        .collect();
    stored.sort();
    let mut imported = vec![data, tools];
    imported.sort();
    assert_eq!(stored, imported);
    assert_no_microvm_files(s);
}

/// Imports each `(name, bytes)` into the image store of `state` as a disk.
fn import_disks(state: &Path, disks: &[(&str, &[u8])]) {
    let images = tempfile::tempdir().expect("tempdir");
    for (name, bytes) in disks {
        let file = images.path().join(format!("{name}.img"));
        std::fs::write(&file, bytes).expect("write");
        ok(zixiao(
            state,
            &[
                "image",
                "import",
                &file.display().to_string(),
                "--kind",
                "disk",
                "--name",
                name,
            ],
        ));
    }
}

/// Waits for the test guest of `name` (disks `data`, 32 sectors, and
/// `tools:ro`, 8) to be ready and checks what its log says of them (disk 0
/// written and flushed, disk 1 refusing writes) and that `instance get`
/// shows both; returns the log and what `instance get` printed.
fn disks_did_their_io(s: &Path, name: &str) -> (String, String) {
    let log = wait_for_log(s, name, "ZX: ready");
    for line in [
        "ZX: blk0 capacity=32 ro=0 flush=1",
        "ZX: blk0 write ok",
        "ZX: blk0 flush ok",
        "ZX: blk1 capacity=8 ro=1 flush=1",
        "ZX: blk1 write refused (ro)",
    ] {
        assert!(log.contains(line), "{line} in:\n{log}");
    }
    let shown = ok(zixiao(s, &["instance", "get", name]));
    assert!(
        shown.contains("data") && shown.contains("tools:ro"),
        "{shown}"
    );
    (log, shown)
}

#[test]
fn a_vmm_microvm_created_with_network_and_disks_through_the_cli_does_io_on_both() {
    let Some(guest) = vmm_virtio_guest() else {
        return;
    };
    zixiao_testing::netns::in_fresh_netns(move |_| {
        let state = state_dir();
        let s = state.path();
        let data: Vec<u8> = (0..32 * 512).map(|i| (i % 251) as u8).collect();
        let tools = vec![0x5au8; 8 * 512];
        import_disks(s, &[("data", &data), ("tools", &tools)]);
        ok(zixiao(
            s,
            &["network", "create", "lan", "--subnet", "10.71.0.0/24"],
        ));

        // `zx.net=echo`: the test guest answers every frame it gets, and
        // keeps running after its disk checks.
        let created = json(zixiao(
            s,
            &[
                "-o",
                "json",
                "instance",
                "create",
                "--name",
                "nd1",
                "--type",
                "microvm",
                "--backend",
                "vmm",
                "--kernel",
                &guest,
                "--cmdline",
                "console=ttyS0 zx.net=echo",
                "--memory",
                "64",
                "--network",
                "lan",
                "--disk",
                "data",
                "--disk",
                "tools:ro",
            ],
        ));
        assert_eq!(created["runtime"], "vmm", "{created}");
        let attachment = &created["attachments"][0];
        let mac = attachment["mac"].as_str().expect("a MAC").to_owned();
        let tap = attachment["host_interface"]
            .as_str()
            .expect("a TAP")
            .to_owned();
        let bridge = attachment["bridge"].as_str().expect("a bridge").to_owned();
        let address = attachment["addresses"][0]["address"]
            .as_str()
            .expect("an address")
            .to_owned();
        assert!(address.starts_with("10.71.0."), "{created}");

        // The guest's card has the attachment's MAC; a frame from the
        // bridge reaches it through the TAP and its answer comes back.
        wait_for_log(s, "nd1", &format!("ZX: net mac={mac} link=1"));
        let guest_mac = zixiao_testing::packet::mac_bytes(&mac).expect("a MAC");
        let echo = zixiao_testing::packet::echo_from_guest(
            &bridge,
            guest_mac,
            b"across the lan bridge",
            Duration::from_secs(60),
        )
        .expect("a packet socket on the bridge")
        .expect("the guest's answer");
        assert_eq!(echo[6..12], guest_mac);

        let (log, shown) = disks_did_their_io(s, "nd1");
        assert!(
            log.contains("ZX: net rx len=") && log.contains("ZX: net echo"),
            "{log}"
        );
        // What a user reads back: the address on `lan` too.
        assert!(
            shown.contains(&format!("lan eth0 {address}/24 mac {mac}")),
            "{shown}"
        );
        let got = json(zixiao(s, &["-o", "json", "instance", "get", "nd1"]));
        assert_eq!(got["status"], "running", "{got}");
        assert_eq!(
            got["spec"]["disks"],
            serde_json::json!([{"image": "data"}, {"image": "tools", "read_only": true}]),
            "{got}"
        );
        assert_eq!(got["attachments"][0]["addresses"][0]["address"], address);
        // Deleted: no TAP, no copy of a disk, nothing of the microVM.
        ok(zixiao(s, &["instance", "delete", "nd1"]));
        let link = Command::new("ip")
            .args(["link", "show", "dev", &tap])
            .output()
            .expect("ip");
        assert!(!link.status.success(), "{tap} is left");
        assert_no_microvm_files(s);
        ok(zixiao(s, &["network", "delete", "lan"]));
    });
}

/// `instance get -o json NAME`'s vsock: its socket path and guest CID.
fn vsock_of(s: &Path, name: &str) -> (String, u64) {
    let got = json(zixiao(s, &["-o", "json", "instance", "get", name]));
    let socket = got["vsock"]["socket"].as_str().expect("a vsock socket");
    (
        socket.to_owned(),
        got["vsock"]["cid"].as_u64().expect("a CID"),
    )
}

#[test]
fn a_vmm_microvm_created_with_vsock_talks_both_ways_through_the_socket_instance_get_names() {
    let Some(guest) = vmm_virtio_guest() else {
        return;
    };
    let state = state_dir();
    let s = state.path();
    let microvm = |name: &'static str, backend: &'static str, vsock: &'static str| {
        vec![
            "-o",
            "json",
            "instance",
            "create",
            "--name",
            name,
            "--type",
            "microvm",
            "--backend",
            backend,
            "--kernel",
            guest.as_str(),
            "--memory",
            "64",
            "--vsock",
            vsock,
        ]
    };

    // Refused, naming the field, with nothing made: a reserved CID, a
    // vsock on the qemu backend (no vhost-vsock), a vsock on a container.
    for (cid, reason) in [
        ("2", "reserved"),
        ("4294967295", "VMADDR_CID_ANY"),
        ("x", "not a number"),
    ] {
        let (code, kind, message) =
            zixiao_testing::output::refused(zixiao(s, &microvm("bad", "vmm", cid)));
        assert_eq!((code, kind.as_str()), (2, "invalid_argument"), "{message}");
        assert!(
            message.contains("spec.vsock.cid") && message.contains(reason),
            "{message}"
        );
    }
    if zixiao_vmm::kvm_skip_reason().is_none() && Path::new("/usr/bin/qemu-system-x86_64").exists()
    {
        let refused = zixiao(s, &microvm("bad", "qemu", "3"));
        let (code, kind, message) = zixiao_testing::output::refused(refused);
        assert_eq!((code, kind.as_str()), (1, "unsupported"), "{message}");
        assert!(
            message.contains("spec.vsock") && message.contains("vhost-vsock"),
            "{message}"
        );
    }
    let container = zixiao(
        s,
        &[
            "-o",
            "json",
            "instance",
            "create",
            "--name",
            "bad",
            "--type",
            "container",
            "--image",
            "busybox",
            "--vsock",
        ],
    );
    zixiao_testing::output::assert_refused(
        container,
        "a container with --vsock",
        2,
        "invalid_argument",
        "spec.vsock",
    );
    let listed = json(zixiao(s, &["-o", "json", "instance", "list"]));
    assert_eq!(listed, serde_json::json!([]), "nothing stored");
    assert_no_microvm_files(s);

    // The guest listens on vsock port 1234 and echoes; with
    // `zx.vsock.connect=5000` it connects to host port 5000 at boot too.
    let mut create = microvm("v1", "vmm", "7");
    create.extend(["--cmdline", "console=ttyS0 zx.vsock.connect=5000"]);
    let created = json(zixiao(s, &create));
    assert_eq!(
        created["spec"]["vsock"],
        serde_json::json!({"cid": 7}),
        "{created}"
    );
    let (socket, cid) = vsock_of(s, "v1");
    assert_eq!(cid, 7);
    assert_eq!(created["vsock"]["socket"], socket.as_str(), "{created}");
    assert!(socket.starts_with(&s.display().to_string()), "{socket}");
    let shown = ok(zixiao(s, &["instance", "get", "v1"]));
    assert!(
        shown.contains(&format!("cid 7, socket {socket}")),
        "{shown}"
    );
    wait_for_log(s, "v1", "ZX: vsock cid=7");
    // Nobody listened on host port 5000 yet.
    wait_for_log(s, "v1", "ZX: vsock refused port=5000");

    // Host to guest: bytes both ways on one connection.
    echoes(connect_to_guest(&socket, 1234), 64 * 1024, "host-initiated");
    wait_for_log(s, "v1", "bytes=65536");

    // Kept across a stop and start (a fresh boot): now a process of the
    // node listens on `<socket>_5000` (one the jailed VMM may connect
    // to), and the guest's connection arrives there.
    ok(zixiao(s, &["instance", "stop", "v1"]));
    let port_socket = format!("{socket}_5000");
    let listener = std::os::unix::net::UnixListener::bind(&port_socket).expect("bind");
    let jail = zixiao_vmm::JailConfig::default();
    std::os::unix::fs::chown(&port_socket, Some(jail.uid), Some(jail.gid)).expect("chown");
    ok(zixiao(s, &["instance", "start", "v1"]));
    assert_eq!(vsock_of(s, "v1"), (socket.clone(), 7));
    wait_for_log(s, "v1", "ZX: vsock connected port=5000");
    let (from_guest, _) = listener.accept().expect("the guest's connection");
    echoes(from_guest, 16 * 1024, "guest-initiated");

    // A clone resumes from a snapshot with its own socket, CID kept.
    ok(zixiao(s, &["instance", "clone", "v1", "--name", "v2"]));
    let (clone_socket, clone_cid) = vsock_of(s, "v2");
    assert_eq!(clone_cid, 7);
    assert_ne!(clone_socket, socket, "the clone's own socket");
    wait_for_log(s, "v2", "ZX: vsock transport reset");
    echoes(connect_to_guest(&clone_socket, 1234), 8 * 1024, "the clone");
    echoes(
        connect_to_guest(&socket, 1234),
        8 * 1024,
        "the source, still",
    );

    // A snapshot taken `--to` a directory restores with its vsock device
    // (its CID in the snapshot), on a socket of its own.
    let snap = s.join("s1").display().to_string();
    ok(zixiao(
        s,
        &["instance", "snapshot", "create", "v1", "s1", "--to", &snap],
    ));
    let restored = json(zixiao(
        s,
        &[
            "-o", "json", "instance", "restore", "--from", &snap, "--name", "v3",
        ],
    ));
    assert_eq!(
        restored["spec"]["vsock"],
        serde_json::json!({"cid": 7}),
        "{restored}"
    );
    let (restored_socket, _) = vsock_of(s, "v3");
    assert!(restored_socket != socket && restored_socket != clone_socket);
    wait_for_log(s, "v3", "ZX: vsock transport reset");
    echoes(
        connect_to_guest(&restored_socket, 1234),
        8 * 1024,
        "the restored one",
    );

    for name in ["v3", "v2", "v1"] {
        ok(zixiao(s, &["instance", "delete", name]));
    }
    assert!(
        !Path::new(&socket).exists(),
        "the socket goes with the microVM"
    );
    assert_no_microvm_files(s);
}
