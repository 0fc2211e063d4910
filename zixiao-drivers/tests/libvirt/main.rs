//! Integration tests of the vm driver. `mock` runs against libvirt's
//! built-in mock hypervisor (`test:///default`, no daemon) and always runs;
//! the others need a real libvirtd and the test kernel, initramfs and base
//! image that `scripts/services/libvirt.sh start` prepares and prints:
//!
//! ```text
//! scripts/services/libvirt.sh install
//! eval "$(scripts/services/libvirt.sh start)"
//! cargo test -p zixiao-drivers --features libvirt --test libvirt
//! scripts/services/libvirt.sh stop
//! ```
//!
//! Guests boot under TCG here (seconds each), so the boot tests are few
//! and each checks many things on one booted domain. `network` also needs
//! the network namespace libvirtd runs in (`ZIXIAO_TEST_LIBVIRT_NETNS`,
//! from the same script) and `ip`, `nft` and busybox (`scripts/services/net.sh install`).
//! `dual_stack` (with the `containerd` feature too) also needs containerd
//! (`scripts/services/containerd.sh start`): a container and a VM on one
//! network.
//! `migrate` also needs the second libvirtd the script starts
//! (`ZIXIAO_TEST_LIBVIRT2_URI`).

#![cfg(feature = "libvirt")]

mod bad_input;
mod boot;
mod clones;
mod cloud_image;
mod controller;
mod disks;
#[cfg(feature = "containerd")]
mod dual_stack;
mod migrate;
mod mock;
mod network;
mod pulled;
mod recovery;
mod resize;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use zixiao_core::{Driver, Instance, InstanceSpec};
use zixiao_drivers::libvirt::{LibvirtDriver, LibvirtOptions};
use zixiao_testing::wait::{runtime_endpoint, wait_until};

/// Tests name their snapshots with literals: `snap("s1")`.
pub(crate) use zixiao_testing::fake_driver::snapshot_name as snap;

/// How long a guest may take to boot to the marker under TCG on a busy machine.
pub(crate) const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// What the test initramfs prints on the serial console once booted.
pub(crate) const MARKER: &str = "ZIXIAO-BOOT-OK";

/// What the real-daemon tests need.
pub(crate) struct Fixture {
    pub(crate) driver: Arc<LibvirtDriver>,
    pub(crate) uri: String,
    pub(crate) kernel: PathBuf,
    pub(crate) initrd: PathBuf,
    pub(crate) base: PathBuf,
    /// The driver's state dir: under ZIXIAO_TEST_DIR, searchable by QEMU's user.
    pub(crate) dir: tempfile::TempDir,
}

/// The fixture, or `None` (skip) without a libvirtd configured.
pub(crate) async fn fixture() -> Option<Fixture> {
    let uri = runtime_endpoint("ZIXIAO_TEST_LIBVIRT_URI", "libvirtd")?;
    let kernel = runtime_endpoint("ZIXIAO_TEST_VM_KERNEL", "the test VM kernel")?;
    let initrd = runtime_endpoint("ZIXIAO_TEST_VM_INITRD", "the test VM initramfs")?;
    let base = runtime_endpoint("ZIXIAO_TEST_VM_BASE_IMAGE", "the test VM base image")?;
    let root = PathBuf::from(
        std::env::var("ZIXIAO_TEST_DIR").unwrap_or_else(|_| "/tmp/zixiao-test".to_owned()),
    )
    .join("libvirt");
    std::fs::create_dir_all(&root).expect("test dir");
    let dir = tempfile::Builder::new()
        .prefix("state-")
        .tempdir_in(&root)
        .expect("tempdir");
    searchable(dir.path());
    let driver = LibvirtDriver::connect(LibvirtOptions::new(&uri, dir.path()))
        .await
        .expect("connect to libvirtd");
    Some(Fixture {
        driver: Arc::new(driver),
        uri,
        kernel: kernel.into(),
        initrd: initrd.into(),
        base: base.into(),
        dir,
    })
}

/// QEMU runs as its own user: it must reach the overlays under `dir`.
pub(crate) fn searchable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A unique instance name for this process.
pub(crate) fn unique(name: &str) -> String {
    format!("t{}-{name}", std::process::id())
}

/// An instance as the controller would pass it, placed on `local`.
pub(crate) fn instance(name: &str, spec: InstanceSpec) -> Instance {
    zixiao_testing::fake_driver::placed_instance(name, spec)
}

impl Fixture {
    /// A VM booting the test kernel and initramfs, with an overlay on the base image.
    pub(crate) fn vm(&self, cmdline_extra: &str) -> InstanceSpec {
        let mut spec = InstanceSpec::vm(self.base.to_string_lossy()).with_size(1, 256);
        spec.kernel = Some(self.kernel.clone());
        spec.initrd = Some(self.initrd.clone());
        spec.cmdline = Some(format!("console=ttyS0 panic=-1 quiet {cmdline_extra}"));
        spec
    }
}

/// Types `command` on `vm`'s serial console and returns what it printed
/// until `done` appeared (the command must print it; the echo of what is
/// typed must not contain it: compute it, `$((40+2))`).
pub(crate) async fn on_console(
    driver: &LibvirtDriver,
    vm: &Instance,
    command: &str,
    done: &str,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = driver
        .console()
        .expect("console capability")
        .attach(vm)
        .await
        .expect("attach console");
    stream
        .input
        .write_all(format!("{command}\n").as_bytes())
        .await
        .expect("type");
    let mut seen = Vec::new();
    let finished = tokio::time::timeout(BOOT_TIMEOUT, async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains(done) {
            let n = stream.output.read(&mut buf).await.expect("read console");
            assert!(n > 0, "the console closed");
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let seen = String::from_utf8_lossy(&seen).into_owned();
    assert!(finished.is_ok(), "no `{done}` on the console: {seen}");
    seen
}

/// The instance's console log so far.
pub(crate) async fn console(driver: &LibvirtDriver, instance: &Instance) -> String {
    match driver.read_log(instance, 0, 1 << 20).await {
        Ok(chunk) => String::from_utf8_lossy(&chunk.data).into_owned(),
        Err(_) => String::new(),
    }
}

/// Waits until the console shows the boot marker `count` times.
pub(crate) async fn wait_for_boots(driver: &LibvirtDriver, instance: &Instance, count: usize) {
    wait_until(
        &format!("{} to boot to the marker {count} time(s)", instance.name),
        BOOT_TIMEOUT,
        || async {
            (console(driver, instance).await.matches(MARKER).count() >= count).then_some(())
        },
    )
    .await;
}

/// Checks that nothing of `instance` is left: no domain, no files.
pub(crate) async fn assert_nothing_left(driver: &LibvirtDriver, instance: &Instance) {
    let domains = driver.managed_domains().await.expect("list domains");
    assert!(
        !domains.iter().any(|d| d.instance_id == instance.id),
        "a domain of {} is left: {domains:?}",
        instance.name
    );
    let dir = driver.instance_dir(instance).expect("a UUID id");
    assert!(!dir.exists(), "{} is left", dir.display());
}
