//! End-to-end benchmark of the vm driver on a real libvirtd, measured in
//! one run on the same machine:
//!
//! - create to Linux boot marker through Zixiao (the embedded controller:
//!   create_instance, converge, the driver's overlay + define + start,
//!   until the guest prints `ZIXIAO-BOOT-OK` on its serial console),
//!   against `virsh create` of the same domain XML (its overlay made
//!   beforehand, untimed), alternating, `ZIXIAO_BENCH_RUNS` each (default 5);
//! - snapshot create (with memory) and revert of a running guest.
//!
//! ```text
//! eval "$(scripts/services/libvirt.sh start)"
//! cargo bench -p zixiao-drivers --features libvirt --bench vm_boot
//! ```
//! Without `ZIXIAO_TEST_LIBVIRT_URI` it prints why and exits.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zixiao_core::host::HostFacts;
use zixiao_core::{
    Controller, CreateInstance, Driver, Instance, InstanceSpec, InstanceStatus, LocalAgent,
};
use zixiao_drivers::libvirt::{LibvirtDriver, LibvirtOptions};
use zixiao_store::EmbeddedStore;

const MARKER: &str = "ZIXIAO-BOOT-OK";
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

struct Setup {
    uri: String,
    kernel: PathBuf,
    initrd: PathBuf,
    base: PathBuf,
}

fn setup() -> Option<Setup> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (
        var("ZIXIAO_TEST_LIBVIRT_URI"),
        var("ZIXIAO_TEST_VM_KERNEL"),
        var("ZIXIAO_TEST_VM_INITRD"),
        var("ZIXIAO_TEST_VM_BASE_IMAGE"),
    ) {
        (Some(uri), Some(kernel), Some(initrd), Some(base)) => Some(Setup {
            uri,
            kernel: kernel.into(),
            initrd: initrd.into(),
            base: base.into(),
        }),
        _ => None,
    }
}

fn spec(s: &Setup) -> InstanceSpec {
    let mut spec = InstanceSpec::vm(s.base.to_string_lossy()).with_size(1, 256);
    spec.kernel = Some(s.kernel.clone());
    spec.initrd = Some(s.initrd.clone());
    spec.cmdline = Some("console=ttyS0 panic=-1 quiet".to_owned());
    spec
}

fn instance(name: &str, spec: InstanceSpec) -> Instance {
    zixiao_testing::fake_driver::placed_instance(name, spec)
}

/// Polls the console log until the marker shows.
async fn wait_marker(log: &Path, started: Instant) -> Duration {
    loop {
        if let Ok(text) = std::fs::read(log) {
            if String::from_utf8_lossy(&text).contains(MARKER) {
                return started.elapsed();
            }
        }
        assert!(
            started.elapsed() < BOOT_TIMEOUT,
            "no marker in {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = samples[samples.len() / 2];
    println!(
        "{what:<46} median {:>8.1} ms   min {:>8.1} ms   max {:>8.1} ms   ({} runs)",
        ms(median),
        ms(samples[0]),
        ms(samples[samples.len() - 1]),
        samples.len()
    );
}

async fn zixiao_boot(
    controller: &Controller,
    driver: &LibvirtDriver,
    s: &Setup,
    run: usize,
) -> Duration {
    let name = format!("bench-z{}-{run}", std::process::id());
    let started = Instant::now();
    let created = controller
        .create_instance(CreateInstance::new(&name, spec(s)))
        .await
        .expect("create");
    loop {
        let i = controller
            .converge(&created.id)
            .await
            .expect("converge")
            .expect("instance");
        if i.status == InstanceStatus::Running {
            break;
        }
        assert!(
            i.status != InstanceStatus::Failed,
            "failed: {:?}",
            i.conditions
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = wait_marker(
        &driver.console_log_path(&created).expect("a UUID id"),
        started,
    )
    .await;
    controller
        .delete_instance(&created.id)
        .await
        .expect("delete");
    while controller.get_instance(&created.id).await.is_ok() {
        let _ = controller.converge(&created.id).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    took
}

async fn virsh_boot(driver: &LibvirtDriver, s: &Setup, run: usize) -> Duration {
    let vm = instance(&format!("bench-v{}-{run}", std::process::id()), spec(s));
    let xml = driver.domain_xml(&vm).expect("xml");
    let dir = driver.instance_dir(&vm).expect("a UUID id");
    std::fs::create_dir_all(&dir).expect("dir");
    let overlay = driver.overlay_path(&vm).expect("a UUID id");
    let made = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&s.base)
        .arg(&overlay)
        .status()
        .expect("qemu-img");
    assert!(made.success());
    let file = dir.join("domain.xml");
    std::fs::write(&file, xml).expect("xml file");
    let started = Instant::now();
    let status = Command::new("virsh")
        .args(["-q", "-c", &s.uri, "create"])
        .arg(&file)
        .status()
        .expect("virsh");
    assert!(status.success(), "virsh create failed");
    let took = wait_marker(&driver.console_log_path(&vm).expect("a UUID id"), started).await;
    let _ = Command::new("virsh")
        .args(["-q", "-c", &s.uri, "destroy", &driver.domain_name(&vm)])
        .status();
    let _ = std::fs::remove_dir_all(&dir);
    took
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(s) = setup() else {
        println!("vm_boot: skipped: ZIXIAO_TEST_LIBVIRT_URI and the test VM files are not set (eval \"$(scripts/services/libvirt.sh start)\")");
        return;
    };
    let runs: usize = std::env::var("ZIXIAO_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let root = PathBuf::from(
        std::env::var("ZIXIAO_TEST_DIR").unwrap_or_else(|_| "/tmp/zixiao-test".into()),
    )
    .join("libvirt");
    std::fs::create_dir_all(&root).expect("root");
    let dir = tempfile::Builder::new()
        .prefix("bench-")
        .tempdir_in(&root)
        .expect("tempdir");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    let driver = Arc::new(
        LibvirtDriver::connect(LibvirtOptions::new(&s.uri, dir.path()))
            .await
            .expect("connect"),
    );
    println!(
        "vm_boot: libvirt {} / {} {}, domain type {}, {} runs",
        driver.host().libvirt_version,
        driver.host().hypervisor,
        driver.host().hypervisor_version,
        driver.domain_type(),
        runs
    );
    let agent =
        LocalAgent::new(HostFacts::probe(dir.path()).expect("host")).with_driver(driver.clone());
    let registration = agent.registration("local");
    let store = EmbeddedStore::open(&dir.path().join("store.redb")).expect("store");
    let controller = Controller::builder(
        Arc::new(store),
        Arc::new(zixiao_sched::PluginScheduler::default()),
    )
    .agent("local", Arc::new(agent))
    .build();
    controller
        .register_node(registration)
        .await
        .expect("register");

    let (mut zixiao, mut virsh) = (Vec::new(), Vec::new());
    for run in 0..runs {
        zixiao.push(zixiao_boot(&controller, &driver, &s, run).await);
        virsh.push(virsh_boot(&driver, &s, run).await);
    }
    report("create to boot marker, Zixiao (controller)", zixiao);
    report("create to boot marker, virsh create (same XML)", virsh);

    // Snapshots of one running guest.
    let vm = instance(&format!("bench-s{}", std::process::id()), spec(&s));
    driver.create(&vm).await.expect("create");
    driver.start(&vm).await.expect("start");
    wait_marker(
        &driver.console_log_path(&vm).expect("a UUID id"),
        Instant::now(),
    )
    .await;
    let snapshots = driver.snapshots().expect("snapshots");
    let (mut create, mut revert, mut delete) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let name = zixiao_testing::fake_driver::snapshot_name(&format!("s{run}"));
        let t = Instant::now();
        snapshots.create(&vm, &name).await.expect("snapshot");
        create.push(t.elapsed());
        let t = Instant::now();
        snapshots.revert(&vm, &name).await.expect("revert");
        revert.push(t.elapsed());
        let t = Instant::now();
        snapshots.delete(&vm, &name).await.expect("delete snapshot");
        delete.push(t.elapsed());
    }
    report("snapshot create (running, with memory)", create);
    report("snapshot revert (running)", revert);
    report("snapshot delete", delete);
    driver.delete(&vm).await.expect("delete");
}
