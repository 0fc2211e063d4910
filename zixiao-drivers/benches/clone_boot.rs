//! End-to-end benchmark of clones, measured in one run on the same machine
//! through the embedded controller:
//!
//! - VMs on a real libvirtd: create to Linux boot marker of a fresh VM,
//!   of a full clone (a copy of the running source's disk, the source
//!   paused for it) and of a linked clone (an overlay on the source's
//!   frozen base; the base is frozen by the first run), alternating,
//!   `ZIXIAO_BENCH_RUNS` each (default 3); each is deleted before the next
//!   (the test host has two cores: the source holds one);
//! - microVMs on zixiao-vmm with its counting test guest: create to the
//!   guest's first output of a fresh boot (`ZX: ready`) against a clone
//!   (a memory snapshot of the running source taken, copied and restored)
//!   to its first count.
//!
//! ```text
//! eval "$(scripts/services/libvirt.sh start)"
//! cargo bench -p zixiao-drivers --features libvirt,microvm --bench clone_boot
//! ```
//! Each half prints why it is skipped without its runtime.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zixiao_core::controller::ControllerOptions;
use zixiao_core::host::HostFacts;
use zixiao_core::{
    Controller, CreateInstance, Driver, Instance, InstanceSpec, InstanceStatus, LocalAgent,
    MicrovmBackend,
};
use zixiao_drivers::libvirt::{LibvirtDriver, LibvirtOptions};
use zixiao_drivers::microvm::{MicrovmDriver, MicrovmOptions};
use zixiao_store::EmbeddedStore;

const MARKER: &str = "ZIXIAO-BOOT-OK";
const TIMEOUT: Duration = Duration::from_secs(180);

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{what:<40} median {:>8.1} ms   min {:>8.1} ms   max {:>8.1} ms   ({} runs)",
        ms(samples[samples.len() / 2]),
        ms(samples[0]),
        ms(samples[samples.len() - 1]),
        samples.len()
    );
}

/// A controller over a store in `dir` with one local node running `driver`.
async fn controller(dir: &Path, driver: Arc<dyn Driver>) -> Controller {
    let agent =
        LocalAgent::new(HostFacts::probe(dir).expect("host facts")).with_driver(driver.clone());
    let registration = agent.registration("local");
    let store = EmbeddedStore::open(&dir.join("store.redb")).expect("store");
    let c = Controller::builder(
        Arc::new(store),
        Arc::new(zixiao_sched::PluginScheduler::default()),
    )
    .agent("local", Arc::new(agent))
    .options(ControllerOptions {
        stop_grace: Duration::from_secs(1),
        ..ControllerOptions::default()
    })
    .build();
    c.register_node(registration).await.expect("register");
    c
}

/// Converges `id` until it runs.
async fn running(c: &Controller, id: &str) -> Instance {
    let started = Instant::now();
    loop {
        let i = c.converge(id).await.expect("converge").expect("instance");
        if i.status == InstanceStatus::Running {
            return i;
        }
        assert!(i.status != InstanceStatus::Failed, "{:?}", i.conditions);
        assert!(started.elapsed() < TIMEOUT, "{} never ran", i.name);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls the instance's log until it holds `text`.
async fn logged(driver: &dyn Driver, instance: &Instance, text: &str, started: Instant) {
    loop {
        if let Ok(chunk) = driver.read_log(instance, 0, 1 << 20).await {
            if String::from_utf8_lossy(&chunk.data).contains(text) {
                return;
            }
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "no `{text}` from {}",
            instance.name
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn delete(c: &Controller, id: &str) {
    c.delete_instance(id).await.expect("delete");
    while c.get_instance(id).await.is_ok() {
        let _ = c.converge(id).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a run makes: a fresh instance of the source's spec, or a clone.
#[derive(Clone, Copy)]
enum Made {
    Fresh,
    Full,
    Linked,
}

/// Creates one instance as `made` says, and the time from the request to
/// `text` in its log; then deletes it.
async fn timed(
    c: &Controller,
    driver: &dyn Driver,
    source: &Instance,
    made: Made,
    name: &str,
    text: &str,
) -> Duration {
    let started = Instant::now();
    let created = match made {
        Made::Fresh => c
            .create_instance(CreateInstance::new(name, source.spec.clone()))
            .await
            .expect("create"),
        Made::Full => c
            .clone_instance(&source.id, name, false, None)
            .await
            .expect("clone"),
        Made::Linked => c
            .clone_instance(&source.id, name, true, None)
            .await
            .expect("linked clone"),
    };
    let created = running(c, &created.id).await;
    logged(driver, &created, text, started).await;
    let took = started.elapsed();
    delete(c, &created.id).await;
    took
}

fn runs() -> usize {
    std::env::var("ZIXIAO_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1)
}

fn state_dir(runtime: &str) -> tempfile::TempDir {
    let root = PathBuf::from(
        std::env::var("ZIXIAO_TEST_DIR").unwrap_or_else(|_| "/tmp/zixiao-test".into()),
    )
    .join(runtime);
    std::fs::create_dir_all(&root).expect("root");
    let dir = tempfile::Builder::new()
        .prefix("bench-")
        .tempdir_in(&root)
        .expect("tempdir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

async fn vms() {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (Some(uri), Some(kernel), Some(initrd), Some(base)) = (
        var("ZIXIAO_TEST_LIBVIRT_URI"),
        var("ZIXIAO_TEST_VM_KERNEL"),
        var("ZIXIAO_TEST_VM_INITRD"),
        var("ZIXIAO_TEST_VM_BASE_IMAGE"),
    ) else {
        println!(
            "clone_boot vm: skipped: no libvirtd (eval \"$(scripts/services/libvirt.sh start)\")"
        );
        return;
    };
    let dir = state_dir("libvirt");
    let driver = Arc::new(
        LibvirtDriver::connect(LibvirtOptions::new(&uri, dir.path()))
            .await
            .expect("connect"),
    );
    let c = controller(dir.path(), driver.clone()).await;
    let mut spec = InstanceSpec::vm(base).with_size(1, 256);
    spec.kernel = Some(kernel.into());
    spec.initrd = Some(initrd.into());
    spec.cmdline = Some("console=ttyS0 panic=-1 quiet".to_owned());
    let source = c
        .create_instance(CreateInstance::new("bench-src", spec))
        .await
        .expect("create the source");
    let source = running(&c, &source.id).await;
    logged(driver.as_ref(), &source, MARKER, Instant::now()).await;
    let (mut fresh, mut full, mut linked) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs() {
        for (kind, made, samples) in [
            ("fresh", Made::Fresh, &mut fresh),
            ("full", Made::Full, &mut full),
            ("linked", Made::Linked, &mut linked),
        ] {
            let name = format!("bench-{kind}-{run}");
            samples.push(timed(&c, driver.as_ref(), &source, made, &name, MARKER).await);
        }
    }
    println!("clone_boot vm: libvirt, create to `{MARKER}` on the serial console");
    report("fresh create", fresh);
    report("full clone (source running)", full);
    report("linked clone (base frozen by run 1)", linked);
    delete(&c, &source.id).await;
}

async fn microvms() {
    if let Some(reason) = zixiao_vmm::kvm_skip_reason() {
        println!("clone_boot microvm: skipped: {reason}");
        return;
    }
    let Some(guest) = zixiao_vmm::test_guest::kernel_path() else {
        println!("clone_boot microvm: skipped: zixiao-vmm's test guest was not built");
        return;
    };
    let dir = state_dir("microvm");
    let driver = match MicrovmDriver::new(MicrovmOptions::new(dir.path())) {
        Ok(driver) => Arc::new(driver),
        Err(e) => {
            println!("clone_boot microvm: skipped: {e}");
            return;
        }
    };
    let c = controller(dir.path(), driver.clone()).await;
    let mut spec = InstanceSpec::microvm(&guest).with_size(1, 64);
    spec.cmdline = Some("console=ttyS0 zx.mode=loop".to_owned());
    spec.backend = MicrovmBackend::Vmm;
    let source = c
        .create_instance(CreateInstance::new("bench-msrc", spec))
        .await
        .expect("create the source");
    let source = running(&c, &source.id).await;
    logged(driver.as_ref(), &source, "ZX: count=", Instant::now()).await;
    let (mut fresh, mut cloned) = (Vec::new(), Vec::new());
    for run in 0..runs() {
        let name = format!("bench-mf-{run}");
        fresh.push(
            timed(
                &c,
                driver.as_ref(),
                &source,
                Made::Fresh,
                &name,
                "ZX: ready",
            )
            .await,
        );
        let name = format!("bench-mc-{run}");
        cloned.push(
            timed(
                &c,
                driver.as_ref(),
                &source,
                Made::Full,
                &name,
                "ZX: count=",
            )
            .await,
        );
    }
    println!("clone_boot microvm: zixiao-vmm test guest, 64 MiB");
    report("fresh boot to `ZX: ready`", fresh);
    report("clone (snapshot+copy+restore) to a count", cloned);
    delete(&c, &source.id).await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    microvms().await;
    vms().await;
}
