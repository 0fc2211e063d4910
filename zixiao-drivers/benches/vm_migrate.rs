//! Live migration of a libvirt VM between the two libvirt daemons
//! `scripts/services/libvirt.sh start` runs (two nodes on one machine),
//! in one run on the same machine:
//!
//! - through Zixiao: the target driver's `prepare_incoming`, then the
//!   source driver's `migrate_live` (timed);
//! - by hand: the same kind of domain (defined and started by the driver,
//!   its target overlay made by `prepare_incoming`, its destination XML
//!   written beforehand, all untimed), moved by `virsh migrate --live
//!   --p2p --persistent --undefinesource --copy-storage-inc` (timed).
//!
//! The guest (256 MiB, busybox initramfs) prints a counter on its serial
//! console every 10 ms. Per migration: the total time, libvirt's downtime
//! (its completed job's figure on the target), and the longest gap between
//! two consecutive counts as they arrive in the source's then the target's
//! console log (polled every 0.2 ms), against the median gap before
//! migrating (the tick). Alternating, `ZIXIAO_BENCH_RUNS` each (default 3).
//!
//! ```text
//! eval "$(scripts/services/libvirt.sh start)"
//! cargo bench -p zixiao-drivers --features libvirt --bench vm_migrate
//! ```
//! Prints a table and writes `target/bench-results/vm-migration.json`.
//! Without `ZIXIAO_TEST_LIBVIRT_URI` and `ZIXIAO_TEST_LIBVIRT2_URI` it
//! prints why and exits.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use zixiao_core::driver::LiveMigrate;
use zixiao_core::{Driver, Instance, InstanceSpec};
use zixiao_drivers::libvirt::{LibvirtDriver, LibvirtOptions};
use zixiao_testing::guest::{console_counts, counter_initramfs, longest_gap, CounterWatcher};

const COUNT_TIMEOUT: Duration = Duration::from_secs(120);

struct Setup {
    uri1: String,
    uri2: String,
    kernel: PathBuf,
    base: PathBuf,
}

fn setup() -> Option<Setup> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    Some(Setup {
        uri1: var("ZIXIAO_TEST_LIBVIRT_URI")?,
        uri2: var("ZIXIAO_TEST_LIBVIRT2_URI")?,
        kernel: var("ZIXIAO_TEST_VM_KERNEL")?.into(),
        base: var("ZIXIAO_TEST_VM_BASE_IMAGE")?.into(),
    })
}

/// A directory QEMU's user can reach, under the test directory.
fn searchable_dir(root: &Path, prefix: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(root)
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// Boots a counting guest on `driver`, and waits until it counts.
async fn boot(driver: &LibvirtDriver, spec: &InstanceSpec, name: &str) -> Instance {
    let vm = zixiao_testing::fake_driver::placed_instance(name, spec.clone());
    driver.create(&vm).await.expect("create");
    driver.start(&vm).await.expect("start");
    let log = driver.console_log_path(&vm).expect("a UUID id");
    let started = Instant::now();
    loop {
        let text = std::fs::read(&log).unwrap_or_default();
        if console_counts(&String::from_utf8_lossy(&text)).len() > 100 {
            return vm;
        }
        assert!(started.elapsed() < COUNT_TIMEOUT, "{name} does not count");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `watcher` saw `more` counts beyond `seen`.
async fn wait_counts(watcher: &CounterWatcher, seen: usize, more: usize) {
    let started = Instant::now();
    while watcher.counts().len() < seen + more {
        assert!(
            started.elapsed() < COUNT_TIMEOUT,
            "the guest stopped counting"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// libvirt's downtime of the migration that brought `domain` to `uri`
/// (`virsh domjobinfo --completed`), in ms.
fn virsh_downtime(uri: &str, domain: &str) -> Option<f64> {
    let out = Command::new("virsh")
        .args(["-c", uri, "domjobinfo", "--completed", domain])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("Total downtime:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// The domain's migratable XML on `uri`, with paths under `from` moved
/// under `to`: what a user writes for `virsh migrate --xml`.
fn dest_xml(uri: &str, domain: &str, inactive: bool, from: &Path, to: &Path) -> String {
    let mut args = vec!["-c", uri, "dumpxml", "--migratable", "--security-info"];
    if inactive {
        args.push("--inactive");
    }
    args.push(domain);
    let out = Command::new("virsh").args(&args).output().expect("virsh");
    assert!(out.status.success(), "virsh dumpxml: {out:?}");
    String::from_utf8_lossy(&out.stdout).replace(
        &format!("{}/", from.display()),
        &format!("{}/", to.display()),
    )
}

struct Nodes {
    setup: Setup,
    node1: LibvirtDriver,
    node2: LibvirtDriver,
    spec: InstanceSpec,
}

/// One migration of a freshly booted guest from node 1 to node 2, through
/// the driver (`by_hand == false`) or `virsh migrate`.
async fn one(nodes: &Nodes, run: usize, by_hand: bool) -> Value {
    let mode = if by_hand { "virsh" } else { "zixiao" };
    let name = format!("bench-mig-{}-{mode}-{run}", std::process::id());
    let vm = boot(&nodes.node1, &nodes.spec, &name).await;
    let watcher = CounterWatcher::start(vec![
        nodes.node1.console_log_path(&vm).expect("a UUID id"),
        nodes.node2.console_log_path(&vm).expect("a UUID id"),
    ]);
    wait_counts(&watcher, 0, 50).await;
    let before = watcher.counts();
    let tick = median(before.windows(2).map(|w| ms(w[1].0 - w[0].0)).collect());
    let target = nodes.node2.prepare_incoming(&vm).await.expect("prepare");
    let seen = watcher.counts().len();
    let (total, libvirt_downtime) = if by_hand {
        let domain = nodes.node1.domain_name(&vm);
        let dir = std::env::temp_dir().join(format!("{name}.xml"));
        let persistent = dir.with_extension("persistent.xml");
        let from = nodes.node1.options().state_dir.clone();
        let to = nodes.node2.options().state_dir.clone();
        std::fs::write(
            &dir,
            dest_xml(&nodes.setup.uri1, &domain, false, &from, &to),
        )
        .expect("xml");
        std::fs::write(
            &persistent,
            dest_xml(&nodes.setup.uri1, &domain, true, &from, &to),
        )
        .expect("xml");
        let started = Instant::now();
        let out = Command::new("virsh")
            .args(["-c", &nodes.setup.uri1, "migrate", "--live", "--p2p"])
            .args(["--persistent", "--undefinesource", "--copy-storage-inc"])
            .args(["--abort-on-error", "--migrateuri", "tcp://127.0.0.1"])
            .arg("--xml")
            .arg(&dir)
            .arg("--persistent-xml")
            .arg(&persistent)
            .args([&domain, target.uri()])
            .output()
            .expect("virsh migrate");
        let total = started.elapsed();
        assert!(out.status.success(), "virsh migrate: {out:?}");
        let _ = std::fs::remove_file(&dir);
        let _ = std::fs::remove_file(&persistent);
        (total, virsh_downtime(&nodes.setup.uri2, &domain))
    } else {
        let report = nodes
            .node1
            .migrate_live(&vm, &target)
            .await
            .expect("migrate");
        (report.total, report.downtime.map(ms))
    };
    wait_counts(&watcher, seen, 50).await;
    let counts = watcher.finish();
    let (gap, consecutive) = longest_gap(&counts);
    nodes.node2.delete(&vm).await.expect("delete on node 2");
    // virsh leaves the source's files; the driver's delete removes them.
    nodes.node1.delete(&vm).await.expect("clean node 1");
    json!({
        "mode": mode,
        "run": run,
        "total_ms": ms(total),
        "libvirt_downtime_ms": libvirt_downtime,
        "longest_counter_gap_ms": ms(gap),
        "tick_ms": tick,
        "counter_continuous": consecutive,
    })
}

fn print_row(mode: &str, rows: &[Value]) {
    let of = |key: &str| -> Vec<f64> {
        rows.iter()
            .filter(|r| r["mode"] == mode)
            .filter_map(|r| r[key].as_f64())
            .collect()
    };
    let continuous = rows
        .iter()
        .filter(|r| r["mode"] == mode)
        .all(|r| r["counter_continuous"] == true);
    println!(
        "{mode:<8} {:>10.0} {:>14.0} {:>16.0} {:>8.1} {:>12} {:>5}",
        median(of("total_ms")),
        median(of("libvirt_downtime_ms")),
        median(of("longest_counter_gap_ms")),
        median(of("tick_ms")),
        continuous,
        of("total_ms").len()
    );
}

fn write_json(rows: Vec<Value>) {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    let dir = target.join("bench-results");
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let doc =
        json!({"name": "vm-migration", "profile": profile, "memory_mib": 256, "results": rows});
    let path = dir.join("vm-migration.json");
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap_or_default()));
    match written {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => println!("could not write {}: {e}", path.display()),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(setup) = setup() else {
        println!(
            "vm_migrate: skipped: ZIXIAO_TEST_LIBVIRT_URI, ZIXIAO_TEST_LIBVIRT2_URI and the test \
             VM files are not set (eval \"$(scripts/services/libvirt.sh start)\")"
        );
        return;
    };
    // `cargo test --benches` runs this without --bench: one run each.
    let runs = if std::env::args().any(|a| a == "--bench") {
        std::env::var("ZIXIAO_BENCH_RUNS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(3)
    } else {
        1
    };
    let root = PathBuf::from(
        std::env::var("ZIXIAO_TEST_DIR").unwrap_or_else(|_| "/tmp/zixiao-test".to_owned()),
    )
    .join("libvirt");
    let dir1 = searchable_dir(&root, "bench-node1-");
    let dir2 = searchable_dir(&root, "bench-node2-");
    let files = searchable_dir(&root, "bench-counter-");
    let initrd = files.path().join("counter.cpio");
    counter_initramfs(&initrd).expect("counter initramfs");
    let node1 = LibvirtDriver::connect(LibvirtOptions::new(&setup.uri1, dir1.path()))
        .await
        .expect("connect to node 1");
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let node2 = LibvirtDriver::connect(
        LibvirtOptions::new(&setup.uri2, dir2.path()).with_migration(&setup.uri2, loopback),
    )
    .await
    .expect("connect to node 2");
    let mut spec = InstanceSpec::vm(setup.base.to_string_lossy()).with_size(1, 256);
    spec.kernel = Some(setup.kernel.clone());
    spec.initrd = Some(initrd);
    spec.cmdline = Some("console=ttyS0 panic=-1 quiet".to_owned());
    let nodes = Nodes {
        setup,
        node1,
        node2,
        spec,
    };
    let mut rows = Vec::new();
    for run in 0..runs {
        rows.push(one(&nodes, run, false).await);
        rows.push(one(&nodes, run, true).await);
    }
    println!(
        "live migration of a 256 MiB libvirt VM between two libvirtd ({} domain), medians",
        nodes.node1.domain_type()
    );
    println!(
        "{:<8} {:>10} {:>14} {:>16} {:>8} {:>12} {:>5}",
        "mode", "total ms", "libvirt down ms", "counter gap ms", "tick ms", "continuous", "runs"
    );
    print_row("zixiao", &rows);
    print_row("virsh", &rows);
    write_json(rows);
}
