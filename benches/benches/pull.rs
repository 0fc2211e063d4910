//! Pulls from the loopback registry, against `skopeo copy` of the same
//! into a directory in the same run, and VM creates from a pulled disk
//! against creates from a local file:
//!
//! - busybox (`ZIXIAO_TEST_REGISTRY_BUSYBOX`): zixiao-registry's pull
//!   (manifest, config and layer fetched and verified into an OCI layout
//!   tar) against `skopeo copy docker://… dir:…`;
//! - a 100 MiB raw disk artifact pushed here (random bytes, so nothing
//!   compresses): the node image store's pull (fetched with its digest
//!   verified as it streams, content-checked, renamed into the store)
//!   against `skopeo copy` of the same artifact;
//! - create-to-running of a VM on the real libvirtd (`ZIXIAO_TEST_LIBVIRT_URI`,
//!   the test kernel, initrd and base image): its disk a local file (a host
//!   path), the same disk pulled into the store beforehand (by name), and
//!   by registry reference that the create pulls first.
//!
//! `cargo bench -p zixiao-benches --bench pull` (`PULL_ROUNDS=5`). Prints a
//! table and writes `target/bench-results/pull.json`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zixiao_benches::{machine, quantile, write_results};
use zixiao_core::driver::{Images, PullOptions, RuntimeState};
use zixiao_core::model::ImageRef;
use zixiao_core::{Driver, InstanceSpec};
use zixiao_drivers::libvirt::{LibvirtDriver, LibvirtOptions};
use zixiao_drivers::node_images::NodeImageStore;

/// The disk artifact's size.
const DISK_BYTES: usize = 100 << 20;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `skopeo copy docker://IMAGE dir:DIR` (plain HTTP to loopback): its time.
fn skopeo_copy(image: &str, dir: &Path) -> Duration {
    let _ = std::fs::remove_dir_all(dir);
    let began = Instant::now();
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{image}"))
        .arg(format!("dir:{}", dir.display()))
        .output()
        .expect("run skopeo");
    let took = began.elapsed();
    assert!(
        out.status.success(),
        "skopeo copy {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// QEMU, which libvirt runs as its own user, must reach the files under `dir`.
fn searchable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Row {
    what: String,
    ours: Vec<Duration>,
    theirs: Vec<Duration>,
    theirs_name: &'static str,
}

impl Row {
    fn print(&self) {
        println!(
            "{:<44} {:>10.1} {:>10.1} {:>12.1} {:>12.1}  ({})",
            self.what,
            ms(quantile(&self.ours, 0.5)),
            ms(self.ours.iter().copied().max().unwrap_or_default()),
            ms(quantile(&self.theirs, 0.5)),
            ms(self.theirs.iter().copied().max().unwrap_or_default()),
            self.theirs_name
        );
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "what": self.what,
            "zixiao_ms_p50": ms(quantile(&self.ours, 0.5)),
            "zixiao_ms_max": ms(self.ours.iter().copied().max().unwrap_or_default()),
            "against": self.theirs_name,
            "against_ms_p50": ms(quantile(&self.theirs, 0.5)),
            "against_ms_max": ms(self.theirs.iter().copied().max().unwrap_or_default()),
            "rounds": self.ours.len(),
        })
    }
}

/// Creates and starts `spec` as a VM, waits for libvirt to say it runs,
/// deletes it: the time from create to running.
async fn create_to_running(driver: &LibvirtDriver, name: &str, spec: InstanceSpec) -> Duration {
    let vm = zixiao_testing::fake_driver::placed_instance(name, spec);
    let began = Instant::now();
    driver.create(&vm).await.expect("create");
    driver.start(&vm).await.expect("start");
    let deadline = Instant::now() + Duration::from_secs(60);
    while driver.inspect(&vm).await.expect("inspect") != RuntimeState::Running {
        assert!(Instant::now() < deadline, "{name} did not run");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = began.elapsed();
    driver.delete(&vm).await.expect("delete");
    took
}

#[tokio::main]
async fn main() {
    let rounds: usize = env("PULL_ROUNDS").and_then(|r| r.parse().ok()).unwrap_or(5);
    let (Some(registry), Some(busybox)) = (
        env("ZIXIAO_TEST_REGISTRY"),
        env("ZIXIAO_TEST_REGISTRY_BUSYBOX"),
    ) else {
        eprintln!(
            "skipped: no loopback registry (ZIXIAO_TEST_REGISTRY, scripts/services/registry.sh)"
        );
        return;
    };
    let machine = machine();
    let root = std::path::PathBuf::from(
        env("ZIXIAO_TEST_DIR").unwrap_or_else(|| "/tmp/zixiao-test".to_owned()),
    )
    .join("libvirt");
    std::fs::create_dir_all(&root).expect("bench dir");
    let dir = tempfile::Builder::new()
        .prefix("bench-pull-")
        .tempdir_in(&root)
        .expect("tempdir");
    searchable(dir.path());
    let mut rows = Vec::new();

    // busybox: the client's fetch-and-verify against skopeo's.
    let reference = ImageRef::try_from(busybox.as_str()).expect("busybox reference");
    let mut row = Row {
        what: "busybox image".to_owned(),
        ours: Vec::new(),
        theirs: Vec::new(),
        theirs_name: "skopeo copy to dir:",
    };
    for _ in 0..rounds {
        let began = Instant::now();
        let pulled =
            zixiao_registry::pull(&reference, &PullOptions::default(), dir.path(), &|_| {})
                .await
                .expect("pull busybox");
        row.ours.push(began.elapsed());
        pulled.close().expect("close");
        row.theirs
            .push(skopeo_copy(&busybox, &dir.path().join("skopeo")));
    }
    rows.push(row);

    // A 100 MiB disk artifact: into the node's store against skopeo's copy.
    let disk_file = dir.path().join("disk.raw");
    {
        let mut bytes = vec![0u8; DISK_BYTES];
        let mut rng = zixiao_benches::SplitMix::new(20);
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes()[..chunk.len()]);
        }
        std::fs::write(&disk_file, bytes).expect("write the disk");
    }
    let disk_image = format!("{registry}/h-ociart/bench-disk-{}:1", std::process::id());
    zixiao_testing::registry::push_artifact(
        &disk_image,
        zixiao_registry::manifest::ARTIFACT_DISK_RAW,
        &disk_file,
    )
    .expect("push the disk artifact");
    let disk_ref = ImageRef::try_from(disk_image.as_str()).expect("disk reference");
    let mut row = Row {
        what: "100 MiB disk artifact into the node store".to_owned(),
        ours: Vec::new(),
        theirs: Vec::new(),
        theirs_name: "skopeo copy to dir:",
    };
    for round in 0..rounds {
        let store = NodeImageStore::new(&dir.path().join(format!("store-{round}")));
        let began = Instant::now();
        store
            .pull(&disk_ref, &PullOptions::default(), &|_| {})
            .await
            .expect("pull the disk");
        row.ours.push(began.elapsed());
        let _ = std::fs::remove_dir_all(store.root());
        row.theirs
            .push(skopeo_copy(&disk_image, &dir.path().join("skopeo")));
    }
    rows.push(row);

    // Create-to-running on libvirt: a local file, a pulled image, a reference.
    let libvirt = (
        env("ZIXIAO_TEST_LIBVIRT_URI"),
        env("ZIXIAO_TEST_VM_KERNEL"),
        env("ZIXIAO_TEST_VM_INITRD"),
        env("ZIXIAO_TEST_VM_BASE_IMAGE"),
    );
    if let (Some(uri), Some(kernel), Some(initrd), Some(base)) = libvirt {
        let state = dir.path().join("vm-state");
        std::fs::create_dir_all(&state).expect("state dir");
        searchable(&state);
        let driver = Arc::new(
            LibvirtDriver::connect(LibvirtOptions::new(&uri, &state))
                .await
                .expect("connect to libvirtd"),
        );
        let base_image = format!("{registry}/h-ociart/bench-base-{}:1", std::process::id());
        zixiao_testing::registry::push_artifact(
            &base_image,
            zixiao_registry::manifest::ARTIFACT_DISK_QCOW2,
            Path::new(&base),
        )
        .expect("push the base disk");
        let base_ref = ImageRef::try_from(base_image.as_str()).expect("base reference");
        let images = driver.images().expect("the node store");
        let pulled = images
            .pull(&base_ref, &PullOptions::default(), &|_| {})
            .await
            .expect("pull the base disk");
        let spec = |image: String| {
            let mut spec = InstanceSpec::vm(image).with_size(1, 128);
            spec.kernel = Some(kernel.clone().into());
            spec.initrd = Some(initrd.clone().into());
            spec.cmdline = Some("console=ttyS0 panic=-1 quiet".to_owned());
            spec
        };
        let pid = std::process::id();
        let mut by_name = Row {
            what: "VM create-to-running, disk pulled (by name)".to_owned(),
            ours: Vec::new(),
            theirs: Vec::new(),
            theirs_name: "the same disk as a local file",
        };
        let mut by_reference = Row {
            what: "VM create-to-running, disk pulled on create".to_owned(),
            ours: Vec::new(),
            theirs: Vec::new(),
            theirs_name: "the same disk as a local file",
        };
        for round in 0..rounds {
            by_name.ours.push(
                create_to_running(
                    &driver,
                    &format!("b{pid}-name-{round}"),
                    spec(pulled.name.clone()),
                )
                .await,
            );
            by_name.theirs.push(
                create_to_running(&driver, &format!("b{pid}-file-{round}"), spec(base.clone()))
                    .await,
            );
            images
                .remove(&pulled.name)
                .await
                .expect("remove the pulled disk");
            by_reference.ours.push(
                create_to_running(
                    &driver,
                    &format!("b{pid}-ref-{round}"),
                    spec(base_image.clone()),
                )
                .await,
            );
            by_reference.theirs.push(by_name.theirs[round]);
        }
        rows.push(by_name);
        rows.push(by_reference);
    } else {
        eprintln!("VM creates skipped: no libvirtd or test VM files (scripts/services/libvirt.sh)");
    }

    println!("{machine}; {rounds} rounds each, times in ms");
    println!(
        "{:<44} {:>10} {:>10} {:>12} {:>12}  against",
        "what", "p50", "max", "against p50", "against max"
    );
    for row in &rows {
        row.print();
    }
    let path = write_results("pull", &machine, rows.iter().map(Row::json).collect())
        .expect("write the results");
    println!("wrote {}", path.display());
}
