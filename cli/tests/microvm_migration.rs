//! `instance migrate --cold` of QEMU microVMs through a server and two
//! agents, as processes a user starts: the microVM's writable disks move
//! to the other node byte for byte, its kernel, initrd and read-only disks
//! come from that node's image store, and a migration the target cannot
//! take leaves it running where it was. And `instance migrate --live` and
//! `node drain` of a VMM microVM whose guest counts: the count goes on on
//! the other node (the agents take migrations on loopback), and one with
//! a vsock device is reached through the socket of the node it runs on.
#![cfg(feature = "microvm")]

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use zixiao_core::NodeStatus;
use zixiao_testing::output::{assert_refused, json, ok};
use zixiao_testing::vsock::{connect_to_guest, echoes};
use zixiao_testing::wait::{runtime_endpoint, runtimes_required, wait_until};

mod processes;
use processes::{command, embedded_server, lab_agent, through, wait_for_status, Running};

/// What the test runs on: an embedded server, the QEMU microVM guest's
/// kernel and initramfs, and the disk images, under one directory; the
/// agents' nodes in a zone of their own, where the instances are placed
/// (the embedded server's own node is elsewhere).
struct Cluster {
    kernel: String,
    initrd: String,
    zone: String,
    server: Running,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// The set-up, or `None` (skipped, or failing under
    /// `ZIXIAO_REQUIRE_RUNTIMES`) without QEMU or the guest.
    fn start() -> Option<Cluster> {
        // The agents find it on PATH; without it they have no microvm driver.
        runtime_endpoint("ZIXIAO_TEST_MICROVM_QEMU", "QEMU")?;
        let kernel = runtime_endpoint("ZIXIAO_TEST_MICROVM_KERNEL", "the test microVM kernel")?;
        let initrd = runtime_endpoint("ZIXIAO_TEST_MICROVM_INITRD", "the test microVM initramfs")?;
        // Short: a vsock socket's path on a node (the node's directory, the
        // microVM's id, `vmm/vsock.sock_<port>`) must fit a Unix socket's
        // 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("zxm-")
            .tempdir()
            .expect("tempdir");
        let server = embedded_server(&dir.path().join("server"));
        Some(Cluster {
            kernel,
            initrd,
            zone: format!("zxm-{}", std::process::id()),
            server,
            dir,
        })
    }

    /// A raw disk image of `len` zero bytes, to import.
    fn image(&self, name: &str, len: u64) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.img"));
        std::fs::File::create(&path)
            .and_then(|f| f.set_len(len))
            .expect("a disk image");
        path
    }

    /// Imports the guest's kernel and initrd and each `(path, name)` disk
    /// into node `node`'s image store: an agent boots only what its node
    /// holds.
    fn import(&self, node: &str, disks: &[(&Path, &str)]) {
        let mut images = vec![
            (PathBuf::from(&self.kernel), "kernel", "k1"),
            (PathBuf::from(&self.initrd), "initrd", "i1"),
        ];
        images.extend(disks.iter().map(|(p, n)| (p.to_path_buf(), "disk", *n)));
        for (path, kind, name) in images {
            ok(command(&self.dir.path().join(node))
                .arg("image")
                .arg("import")
                .arg(&path)
                .args(["--kind", kind, "--name", name])
                .output()
                .expect("run zixiao"));
        }
    }

    /// Starts node `node`'s agent, taking live migrations on loopback.
    fn agent(&self, node: &str) -> Running {
        lab_agent(
            &self.dir.path().join(node),
            &self.server.addr,
            (node, &self.zone),
            &[],
            &["--libvirt-migration-address", "127.0.0.1"],
        )
    }

    /// The CLI through the server, its own state in `client/`.
    fn run(&self, args: &[&str]) -> std::process::Output {
        through(&self.dir.path().join("client"), &self.server.addr, args)
    }

    /// Creates QEMU microVM `name` booting the guest, with `disks`
    /// (`--disk` values).
    fn create(&self, name: &str, disks: &[&str]) -> serde_json::Value {
        let mut args = vec![
            "--backend",
            "qemu",
            "--kernel",
            "k1",
            "--initrd",
            "i1",
            "--cmdline",
            "console=ttyS0",
            "--cpus",
            "1",
            "--memory",
            "128",
        ];
        for disk in disks {
            args.extend(["--disk", disk]);
        }
        self.create_microvm(name, &args)
    }

    /// Creates microVM `name` in the agents' zone, booting as `boot` (the
    /// other `instance create` arguments) says.
    fn create_microvm(&self, name: &str, boot: &[&str]) -> serde_json::Value {
        let mut args = vec![
            "instance", "create", "--name", name, "--type", "microvm", "--zone", &self.zone,
        ];
        args.extend_from_slice(boot);
        json(self.run(&args))
    }

    /// Node `node`'s directory of microVM `id`.
    fn microvm_dir(&self, node: &str, id: &str) -> PathBuf {
        self.dir.path().join(node).join("runtime/microvm").join(id)
    }

    /// Waits until instance `name` shows `status`; returns it as shown.
    async fn status_is(&self, name: &str, status: &str) -> serde_json::Value {
        wait_until(
            &format!("instance {name} to be {status}"),
            Duration::from_secs(120),
            || {
                let shown = json(self.run(&["instance", "get", name]));
                async move { (shown["status"] == status).then_some(shown) }
            },
        )
        .await
    }

    /// Waits until instance `name`'s console, read through the server
    /// from the node it runs on, shows `line`.
    async fn logs_show(&self, name: &str, line: &str) {
        wait_until(
            &format!("instance {name}'s console to show {line}"),
            Duration::from_secs(120),
            || {
                let shown = self.logs(name).contains(line);
                async move { shown.then_some(()) }
            },
        )
        .await
    }

    /// Instance `name`'s console as `instance logs` shows it, read
    /// through the server from the node it runs on.
    fn logs(&self, name: &str) -> String {
        let out = command(&self.dir.path().join("client"))
            .args(["--endpoint", &self.server.addr, "instance", "logs", name])
            .output()
            .expect("run zixiao");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until instance `name`'s console shows a count past `above`;
    /// returns every count it shows.
    async fn counts_past(&self, name: &str, above: u64) -> Vec<u64> {
        wait_until(
            &format!("instance {name} to count past {above}"),
            Duration::from_secs(120),
            || {
                let counts = counts(&self.logs(name));
                let past = counts.last().is_some_and(|n| *n > above);
                async move { past.then_some(counts) }
            },
        )
        .await
    }

    /// Creates VMM microVM `name` of 64 MiB booting kernel `zxguest` with
    /// `cmdline`, and `extra` arguments.
    fn create_vmm(&self, name: &str, cmdline: &str, extra: &[&str]) -> serde_json::Value {
        let mut args = vec![
            "--backend",
            "vmm",
            "--kernel",
            "zxguest",
            "--cmdline",
            cmdline,
            "--memory",
            "64",
        ];
        args.extend_from_slice(extra);
        self.create_microvm(name, &args)
    }

    /// Imports `guest` into each of `nodes`' stores as kernel `zxguest`.
    fn import_guest(&self, nodes: &[&str], guest: &Path) {
        for node in nodes {
            ok(command(&self.dir.path().join(node))
                .arg("image")
                .arg("import")
                .arg(guest)
                .args(["--kind", "kernel", "--name", "zxguest"])
                .output()
                .expect("run zixiao"));
        }
    }
}

/// Every complete `ZX: count=N` value of a console, in order.
fn counts(console: &str) -> Vec<u64> {
    console
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .filter_map(|l| l.trim().strip_prefix("ZX: count="))
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

/// The set-up of a VMM microVM's test: [`Cluster::start`] where KVM runs
/// and `zixiao-vmm` is next to the `zixiao` binary (where the agents find
/// it). `None` (after saying why) skips the test, or fails it under
/// `ZIXIAO_REQUIRE_RUNTIMES`.
fn vmm_cluster() -> Option<Cluster> {
    if let Some(reason) = zixiao_vmm::kvm_skip_reason() {
        assert!(!runtimes_required(), "{reason}");
        eprintln!("skipped: {reason}");
        return None;
    }
    let vmm = Path::new(env!("CARGO_BIN_EXE_zixiao")).with_file_name("zixiao-vmm");
    if !vmm.is_file() {
        assert!(!runtimes_required(), "{} is not built", vmm.display());
        eprintln!("skipped: {} is not built", vmm.display());
        return None;
    }
    Cluster::start()
}

/// Whether process `pid` runs (and is not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
    })
}

/// Writes `marker` at `offset` of the file at `path`.
fn write_marker(path: &Path, offset: u64, marker: &[u8]) {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.seek(SeekFrom::Start(offset)).expect("seek");
    file.write_all(marker).expect("write the marker");
    file.sync_all().expect("sync");
}

/// A QEMU microVM with two writable disks (`data`, `scratch`) and a
/// read-only one (`tools`), whose disks the test marked while it was
/// stopped, migrates cold from node A: first to node C, whose store lacks
/// `scratch`, which its agent refuses before a byte is written, so the
/// migration fails naming step `copying` and the microVM runs on A again,
/// its disks as they were, nothing of it on C; then to node B: same id and
/// name, it boots there, A holds nothing of it, B's copies of both
/// writable disks are A's byte for byte (markers and all), the operation
/// went through the cold steps and counted both disks' bytes. A second
/// microVM with only the read-only disk migrates cold too: stopped on A,
/// started on B, nothing copied, the operation's progress saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qemu_microvm_migrates_cold_with_its_writable_disks() {
    let Some(set) = Cluster::start() else {
        return;
    };
    let pid = std::process::id();
    let (a, b, c) = (
        format!("mc-a-{pid}"),
        format!("mc-b-{pid}"),
        format!("mc-c-{pid}"),
    );
    let (data, scratch, tools) = (
        set.image("data", 1 << 20),
        set.image("scratch", 2 << 20),
        set.image("tools", 64 << 10),
    );
    let all = [
        (data.as_path(), "data"),
        (scratch.as_path(), "scratch"),
        (tools.as_path(), "tools"),
    ];
    set.import(&a, &all);
    set.import(&b, &all);
    set.import(&c, &[(data.as_path(), "data"), (tools.as_path(), "tools")]);
    let client = zixiao_api::connect(&set.server.addr).expect("client");
    let _a = set.agent(&a);
    wait_for_status(&client, &a, NodeStatus::Ready).await;

    let name = format!("mcold-{pid}");
    let created = set.create(&name, &["data", "scratch", "tools:ro"]);
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["node"], a.as_str(), "{created}");
    set.status_is(&name, "running").await;

    // The markers, written while it is stopped, in its copies on A.
    ok(set.run(&["instance", "stop", &name]));
    set.status_is(&name, "stopped").await;
    let on_a = set.microvm_dir(&a, &id).join("disks");
    let (disk0_a, disk1_a) = (on_a.join("disk0.img"), on_a.join("disk1.img"));
    write_marker(&disk0_a, 4096, b"h-cold2 data marker");
    write_marker(&disk1_a, (2 << 20) - 512, b"h-cold2 scratch marker");
    let reference = (
        std::fs::read(&disk0_a).expect("disk0"),
        std::fs::read(&disk1_a).expect("disk1"),
    );
    ok(set.run(&["instance", "start", &name]));
    set.status_is(&name, "running").await;

    let _b = set.agent(&b);
    let _c = set.agent(&c);
    wait_for_status(&client, &b, NodeStatus::Ready).await;
    wait_for_status(&client, &c, NodeStatus::Ready).await;

    // C lacks `scratch`: its agent refuses the copy; A runs it again.
    let refused = set.run(&["instance", "migrate", &name, "--cold", "--to", &c]);
    let said = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(
        said.contains("scratch"),
        "the missing image is named: {said}"
    );
    assert_refused(
        refused,
        "a cold migration to a node without a disk's image",
        1,
        "internal",
        &format!("at step `copying` (it runs on node `{a}` again, its disk as it was)"),
    );
    let shown = set.status_is(&name, "running").await;
    assert_eq!(shown["node"], a.as_str(), "{shown}");
    assert!(shown["migrate_to"].is_null(), "{shown}");
    assert_eq!(std::fs::read(&disk0_a).expect("disk0"), reference.0);
    assert_eq!(std::fs::read(&disk1_a).expect("disk1"), reference.1);
    assert!(!set.microvm_dir(&c, &id).exists(), "C keeps files of it");
    let node_c = client.get_node(&c).await.expect("node c");
    assert_eq!(node_c.allocated.instances, 0, "{node_c:?}");

    // The cold one, to B.
    let started = Instant::now();
    let moved = json(set.run(&["instance", "migrate", &name, "--cold", "--to", &b]));
    let took = started.elapsed();
    assert_eq!(moved["id"], id.as_str(), "{moved}");
    assert_eq!(moved["name"], name.as_str(), "{moved}");
    assert_eq!(moved["node"], b.as_str(), "{moved}");
    let shown = set.status_is(&name, "running").await;
    assert_eq!(shown["node"], b.as_str(), "{shown}");
    assert!(!set.microvm_dir(&a, &id).exists(), "A keeps its files");
    let on_b = set.microvm_dir(&b, &id).join("disks");
    assert!(
        std::fs::read(on_b.join("disk0.img")).expect("disk0 on B") == reference.0,
        "disk0 differs on B"
    );
    assert!(
        std::fs::read(on_b.join("disk1.img")).expect("disk1 on B") == reference.1,
        "disk1 differs on B"
    );
    // Its kernel boots on B.
    set.logs_show(&name, "Linux version").await;
    println!(
        "cold migration of a QEMU microVM with 3 MiB of writable disks through the CLI: {} ms",
        took.as_millis()
    );
    let node_a = client.get_node(&a).await.expect("node a");
    let node_b = client.get_node(&b).await.expect("node b");
    assert_eq!(node_a.allocated.instances, 0, "{node_a:?}");
    assert_eq!(node_b.allocated.instances, 1, "{node_b:?}");
    let op = moved["operation"].as_str().expect("its operation");
    let operation = json(set.run(&["operation", "get", op]));
    assert_eq!(operation["phase"], "succeeded", "{operation}");
    assert_eq!(
        operation["steps"],
        serde_json::json!(["placing", "stopping", "copying", "starting", "done"]),
        "{operation}"
    );
    let progress = &operation["progress"];
    assert_eq!(progress["unit"], "bytes", "{operation}");
    assert_eq!(progress["done"], 3 << 20, "{operation}");
    assert_eq!(progress["total"], 3 << 20, "{operation}");

    // Only a read-only disk: nothing to copy, a stop and a start.
    let plain = format!("mcold-ro-{pid}");
    let created = set.create(&plain, &["tools:ro"]);
    let plain_id = created["id"].as_str().expect("id").to_owned();
    let moved = json(set.run(&["instance", "migrate", &plain, "--cold", "--to", &b]));
    assert_eq!(moved["id"], plain_id.as_str(), "{moved}");
    assert_eq!(moved["node"], b.as_str(), "{moved}");
    let shown = set.status_is(&plain, "running").await;
    assert_eq!(shown["node"], b.as_str(), "{shown}");
    assert!(
        !set.microvm_dir(&a, &plain_id).exists(),
        "A keeps its files"
    );
    let op = moved["operation"].as_str().expect("its operation");
    let operation = json(set.run(&["operation", "get", op]));
    assert_eq!(operation["phase"], "succeeded", "{operation}");
    assert_eq!(
        operation["progress"],
        serde_json::json!({"done": 0, "total": 0, "unit": "writable disks (none: nothing to copy)"}),
        "{operation}"
    );

    for instance in [&name, &plain] {
        ok(set.run(&["instance", "delete", instance]));
    }
}

/// The same on the vmm backend (`/dev/kvm`), with what its guest wrote:
/// zixiao-vmm's virtio test guest writes its pattern to sector 1 of its
/// writable disk and loops writing sector 2; the test marks the disk at
/// 4 KiB while it is stopped. Cold-migrated to node B, it keeps its id and
/// name, boots there (its guest writes again on B's copy), A holds nothing
/// of it, and B's copy holds the guest's pattern and the test's marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vmm_microvm_migrates_cold_with_what_its_guest_wrote() {
    let Some(set) = vmm_cluster() else {
        return;
    };
    let guest = zixiao_vmm::test_guest::virtio_kernel_path().expect("the virtio test guest");
    let pid = std::process::id();
    let (a, b) = (format!("mv-a-{pid}"), format!("mv-b-{pid}"));
    let data = set.image("data", 64 << 10);
    for node in [&a, &b] {
        set.import(node, &[(data.as_path(), "data")]);
    }
    set.import_guest(&[&a, &b], &guest);
    let client = zixiao_api::connect(&set.server.addr).expect("client");
    let _a = set.agent(&a);
    wait_for_status(&client, &a, NodeStatus::Ready).await;
    let name = format!("mvcold-{pid}");
    let created = set.create_vmm(&name, "console=ttyS0 zx.blk=loop", &["--disk", "data"]);
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["node"], a.as_str(), "{created}");
    assert_eq!(created["runtime"], "vmm", "{created}");
    set.logs_show(&name, "ZX: blk0 write ok").await;
    ok(set.run(&["instance", "stop", &name]));
    set.status_is(&name, "stopped").await;
    let disk_a = set.microvm_dir(&a, &id).join("disks/disk0.img");
    write_marker(&disk_a, 4096, b"h-cold2 vmm marker");
    ok(set.run(&["instance", "start", &name]));
    set.status_is(&name, "running").await;

    let _b = set.agent(&b);
    wait_for_status(&client, &b, NodeStatus::Ready).await;
    let moved = json(set.run(&["instance", "migrate", &name, "--cold", "--to", &b]));
    assert_eq!(moved["id"], id.as_str(), "{moved}");
    assert_eq!(moved["name"], name.as_str(), "{moved}");
    assert_eq!(moved["node"], b.as_str(), "{moved}");
    assert!(!set.microvm_dir(&a, &id).exists(), "A keeps its files");
    let shown = set.status_is(&name, "running").await;
    assert_eq!(shown["runtime"], "vmm", "{shown}");
    let on_b = std::fs::read(set.microvm_dir(&b, &id).join("disks/disk0.img")).expect("on B");
    // Sector 1 as the guest wrote it on A (byte j = j * 13 + 7), the
    // test's marker at 4 KiB.
    let pattern: Vec<u8> = (0..512u32).map(|j| (j * 13 + 7) as u8).collect();
    assert!(on_b[512..1024] == pattern[..], "the guest's sector 1 on B");
    assert_eq!(&on_b[4096..4096 + 18], b"h-cold2 vmm marker");
    // Its guest boots on B and writes to B's copy.
    set.logs_show(&name, "ZX: blk0 write ok").await;
    ok(set.run(&["instance", "delete", &name]));
}

/// A VMM microVM whose guest counts (zixiao-vmm's test guest in `dirty`
/// mode, writing pages as it counts) migrates live from node A to node B
/// with `instance migrate --live --to B`: it keeps its id, name and
/// runtime, its node is B, A's VMM process is gone and A holds no file of
/// it, and its console, read with `instance logs`, goes on counting on B
/// from past where it was (no boot, no count from 0). The operation went
/// through the live steps and keeps the VMM's figures. Then `node drain
/// B` picks live for it: back on A, still counting on. A QEMU microVM is
/// refused `--live`, saying to use `--cold`, and stays where it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vmm_microvm_migrates_live_and_its_count_goes_on() {
    let Some(set) = vmm_cluster() else {
        return;
    };
    let guest = zixiao_vmm::test_guest::kernel_path().expect("the test guest");
    let pid = std::process::id();
    let (a, b) = (format!("ml-a-{pid}"), format!("ml-b-{pid}"));
    set.import_guest(&[&a, &b], &guest);
    set.import(&a, &[]);
    let client = zixiao_api::connect(&set.server.addr).expect("client");
    let _a = set.agent(&a);
    wait_for_status(&client, &a, NodeStatus::Ready).await;
    let name = format!("mvlive-{pid}");
    let created = set.create_vmm(&name, "console=ttyS0 zx.mode=dirty zx.pages=4", &[]);
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["node"], a.as_str(), "{created}");
    assert_eq!(created["runtime"], "vmm", "{created}");
    set.status_is(&name, "running").await;
    // And a QEMU microVM, on A too.
    let plain = format!("mlqemu-{pid}");
    let created = set.create(&plain, &[]);
    assert_eq!(created["node"], a.as_str(), "{created}");
    let before = *set.counts_past(&name, 5).await.last().expect("a count");
    let on_a = set.microvm_dir(&a, &id);
    let vmm_on_a: u32 = std::fs::read_to_string(on_a.join("vmm/vmm.pid"))
        .expect("A's vmm.pid")
        .trim()
        .parse()
        .expect("a pid");

    let _b = set.agent(&b);
    wait_for_status(&client, &b, NodeStatus::Ready).await;
    let moved = json(set.run(&["instance", "migrate", &name, "--live", "--to", &b]));
    assert_eq!(moved["id"], id.as_str(), "{moved}");
    assert_eq!(moved["name"], name.as_str(), "{moved}");
    assert_eq!(moved["node"], b.as_str(), "{moved}");
    let shown = set.status_is(&name, "running").await;
    assert_eq!(shown["node"], b.as_str(), "{shown}");
    assert_eq!(shown["runtime"], "vmm", "{shown}");
    assert!(shown["migrate_to"].is_null(), "{shown}");
    assert!(!alive(vmm_on_a), "A's VMM {vmm_on_a} still runs");
    assert!(!on_a.exists(), "A keeps {}", on_a.display());
    assert!(
        set.microvm_dir(&b, &id).join("vmm/vmm.pid").exists(),
        "B runs it from its own run directory"
    );

    // Its console on B goes on from past where it was on A.
    let after = set.counts_past(&name, before + 5).await;
    assert!(
        after[0] > before && !after.contains(&0),
        "on A it had counted to {before}; on B it shows {after:?}"
    );
    assert!(
        !set.logs(&name).contains("ZX: ready"),
        "it booted again on B"
    );
    let op = moved["operation"].as_str().expect("its operation");
    let operation = json(set.run(&["operation", "get", op]));
    assert_eq!(operation["phase"], "succeeded", "{operation}");
    assert_eq!(
        operation["steps"],
        serde_json::json!(["placing", "preparing", "migrating", "switching", "done"]),
        "{operation}"
    );
    let unit = operation["progress"]["unit"].as_str().unwrap_or_default();
    assert!(
        unit.contains("copy rounds") && unit.contains("ms downtime"),
        "{operation}"
    );
    assert!(
        operation["progress"]["done"].as_u64().unwrap_or(0) >= 4096,
        "{operation}"
    );
    let node_a = client.get_node(&a).await.expect("node a");
    let node_b = client.get_node(&b).await.expect("node b");
    assert_eq!(node_a.allocated.instances, 1, "the QEMU one: {node_a:?}");
    assert_eq!(node_b.allocated.instances, 1, "{node_b:?}");

    // A drain of B moves it live, back to A.
    let reached = *after.last().expect("a count");
    let report = json(set.run(&["node", "drain", &b]));
    assert_eq!(
        report["migrated"],
        serde_json::json!([{"name": name, "mode": "live", "to": a}]),
        "{report}"
    );
    assert_eq!(report["not_migrated"], serde_json::json!({}), "{report}");
    let shown = set.status_is(&name, "running").await;
    assert_eq!(shown["node"], a.as_str(), "{shown}");
    let back = set.counts_past(&name, reached + 5).await;
    assert!(
        back[0] > reached,
        "it had counted to {reached}; back on A: {back:?}"
    );
    ok(set.run(&["node", "uncordon", &b]));

    // The QEMU microVM: refused live, saying to migrate it cold.
    set.status_is(&plain, "running").await;
    let refused = set.run(&["instance", "migrate", &plain, "--live", "--to", &b]);
    let said = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert_refused(
        refused,
        "a live migration of a QEMU microVM",
        1,
        "unsupported",
        "--cold",
    );
    assert!(said.contains("qemu backend"), "{said}");
    let shown = set.status_is(&plain, "running").await;
    assert_eq!(shown["node"], a.as_str(), "{shown}");
    assert!(shown["migrate_to"].is_null(), "{shown}");

    for instance in [&name, &plain] {
        ok(set.run(&["instance", "delete", instance]));
    }
}

/// A VMM microVM with a vsock device (zixiao-vmm's virtio test guest,
/// which echoes every connection to its port 1234), placed on node A of a
/// cluster: a process on A talks to the guest through the socket that
/// `instance get` names there. Migrated live to B, `instance get` names a
/// socket on B, A's is gone, a connection that was open on A has ended,
/// the guest saw its transport reset, and a process on B talks to it
/// through B's socket, with the CID kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vmm_microvm_with_vsock_is_reached_through_the_socket_of_the_node_it_runs_on() {
    let Some(set) = vmm_cluster() else {
        return;
    };
    let guest = zixiao_vmm::test_guest::virtio_kernel_path()
        .expect("the virtio test guest is built with the other");
    let pid = std::process::id();
    let (a, b) = (format!("va-{pid}"), format!("vb-{pid}"));
    set.import_guest(&[&a, &b], &guest);
    let client = zixiao_api::connect(&set.server.addr).expect("client");
    let _a = set.agent(&a);
    wait_for_status(&client, &a, NodeStatus::Ready).await;
    let name = format!("mvsock-{pid}");
    let created = set.create_vmm(&name, "console=ttyS0", &["--vsock", "7"]);
    assert_eq!(created["node"], a.as_str(), "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    set.status_is(&name, "running").await;
    set.logs_show(&name, "ZX: vsock cid=7").await;
    let vsock = |at: &str| {
        let got = json(set.run(&["instance", "get", &name]));
        assert_eq!(got["node"], at, "{got}");
        assert_eq!(got["vsock"]["cid"], 7, "{got}");
        PathBuf::from(got["vsock"]["socket"].as_str().expect("a vsock socket"))
    };
    let on_a = vsock(&a);
    assert!(
        on_a.starts_with(set.microvm_dir(&a, &id)),
        "{} is not in A's directory of the microVM",
        on_a.display()
    );
    echoes(connect_to_guest(&on_a, 1234), 64 * 1024, "on A");
    set.logs_show(&name, "bytes=65536").await;
    let open_on_a = connect_to_guest(&on_a, 1234);

    let _b = set.agent(&b);
    wait_for_status(&client, &b, NodeStatus::Ready).await;
    let moved = json(set.run(&["instance", "migrate", &name, "--live", "--to", &b]));
    assert_eq!(moved["node"], b.as_str(), "{moved}");
    set.status_is(&name, "running").await;
    let on_b = vsock(&b);
    assert!(
        on_b.starts_with(set.microvm_dir(&b, &id)),
        "{} is not in B's directory of the microVM",
        on_b.display()
    );
    assert!(!on_a.exists(), "A's socket {} is left", on_a.display());
    let mut ended = [0u8; 1];
    assert!(
        !matches!(std::io::Read::read(&mut &open_on_a, &mut ended), Ok(1)),
        "the connection open on A goes on after the microVM left A"
    );
    set.logs_show(&name, "ZX: vsock transport reset").await;
    echoes(connect_to_guest(&on_b, 1234), 64 * 1024, "on B");

    ok(set.run(&["instance", "delete", &name]));
    assert!(!on_b.exists(), "B's socket {} is left", on_b.display());
}
