//! The driver against libvirt's mock hypervisor (`test:///default`): no
//! daemon, no guest, so these run everywhere and fast. They cover the XML
//! libvirt accepts, the state mapping, idempotency, snapshots' bookkeeping,
//! recovery and name clashes.

use std::time::Duration;

use zixiao_core::{Driver, ErrorKind, InstanceSpec, InstanceType, RuntimeState};
use zixiao_drivers::libvirt::{DomainType, LibvirtDriver, LibvirtOptions};

use super::{instance, snap, unique};

const MOCK: &str = "test:///default";

struct Mock {
    driver: LibvirtDriver,
    kernel: std::path::PathBuf,
    dir: tempfile::TempDir,
}

async fn mock() -> Mock {
    let dir = tempfile::tempdir().expect("tempdir");
    let kernel = dir.path().join("vmlinuz");
    std::fs::write(&kernel, b"not a kernel: the mock never boots it").expect("kernel");
    let driver = LibvirtDriver::connect(LibvirtOptions::new(MOCK, dir.path()))
        .await
        .expect("the mock driver needs no daemon");
    Mock {
        driver,
        kernel,
        dir,
    }
}

fn kernel_spec(kernel: &std::path::Path) -> InstanceSpec {
    InstanceSpec::microvm(kernel).with_size(1, 128).into_vm()
}

trait IntoVm {
    fn into_vm(self) -> InstanceSpec;
}

impl IntoVm for InstanceSpec {
    fn into_vm(mut self) -> InstanceSpec {
        self.instance_type = InstanceType::Vm;
        self
    }
}

#[tokio::test]
async fn the_mock_is_detected_and_its_host_described() {
    let m = mock().await;
    assert_eq!(m.driver.domain_type(), DomainType::Test);
    let host = m.driver.host();
    assert!(host.cpus > 0 && host.memory_mib > 0, "{host:?}");
    assert!(!host.numa_cells.is_empty(), "{host:?}");
    assert_eq!(host.hypervisor, "TEST");
    assert!(host.labels().contains_key("libvirt.zixiao.dev/version"));
}

#[tokio::test]
async fn lifecycle_is_idempotent_and_read_back_from_libvirt() {
    let m = mock().await;
    let d = &m.driver;
    let vm = instance(&unique("life"), kernel_spec(&m.kernel));
    assert_eq!(
        d.inspect(&vm).await.expect("inspect"),
        RuntimeState::Missing
    );
    d.create(&vm).await.expect("create");
    d.create(&vm).await.expect("create again");
    assert_eq!(
        d.inspect(&vm).await.expect("inspect"),
        RuntimeState::Created
    );
    d.start(&vm).await.expect("start");
    d.start(&vm).await.expect("start again");
    assert_eq!(
        d.inspect(&vm).await.expect("inspect"),
        RuntimeState::Running
    );

    d.pause()
        .expect("pause capability")
        .pause(&vm)
        .await
        .expect("pause");
    d.pause()
        .expect("pause capability")
        .pause(&vm)
        .await
        .expect("pause again");
    assert_eq!(d.inspect(&vm).await.expect("inspect"), RuntimeState::Paused);
    d.pause()
        .expect("pause capability")
        .resume(&vm)
        .await
        .expect("resume");
    assert_eq!(
        d.inspect(&vm).await.expect("inspect"),
        RuntimeState::Running
    );
    // The mock reports no counters; the call and its freeing still run.
    d.stats()
        .expect("stats capability")
        .stats(&vm)
        .await
        .expect("stats");

    // The mock shuts down at once on the power button.
    d.stop(&vm, Duration::from_secs(5)).await.expect("stop");
    d.stop(&vm, Duration::from_secs(5))
        .await
        .expect("stop again");
    let stopped = d.inspect(&vm).await.expect("inspect");
    assert!(
        matches!(stopped, RuntimeState::Exited { code: 0, .. }),
        "{stopped:?}"
    );
    let err = d
        .pause()
        .expect("pause capability")
        .pause(&vm)
        .await
        .expect_err("a stopped domain cannot pause");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);

    d.delete(&vm).await.expect("delete");
    d.delete(&vm).await.expect("delete again");
    assert_eq!(
        d.inspect(&vm).await.expect("inspect"),
        RuntimeState::Missing
    );
    assert!(!d.instance_dir(&vm).expect("a UUID id").exists());
    let err = d.start(&vm).await.expect_err("start after delete");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn snapshots_are_listed_reverted_and_deleted() {
    let m = mock().await;
    let d = &m.driver;
    let vm = instance(&unique("snap"), kernel_spec(&m.kernel));
    d.create(&vm).await.expect("create");
    d.start(&vm).await.expect("start");
    let first = d
        .snapshots()
        .expect("snapshots")
        .create(&vm, &snap("s1"))
        .await
        .expect("snapshot");
    assert_eq!(first.name, "s1");
    assert!(first.includes_memory, "{first:?}");
    let again = d
        .snapshots()
        .expect("snapshots")
        .create(&vm, &snap("s1"))
        .await
        .expect("snapshot again");
    assert_eq!(again.name, "s1");
    d.snapshots()
        .expect("snapshots")
        .create(&vm, &snap("s2"))
        .await
        .expect("second snapshot");
    let names: Vec<_> = d
        .snapshots()
        .expect("snapshots")
        .list(&vm)
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["s1", "s2"]);
    d.snapshots()
        .expect("snapshots")
        .revert(&vm, &snap("s1"))
        .await
        .expect("revert");
    let current: Vec<_> = d
        .snapshots()
        .expect("snapshots")
        .list(&vm)
        .await
        .expect("list")
        .into_iter()
        .filter(|s| s.current)
        .map(|s| s.name)
        .collect();
    assert_eq!(current, ["s1"]);
    let err = d
        .snapshots()
        .expect("snapshots")
        .revert(&vm, &snap("nope"))
        .await
        .expect_err("no such snapshot");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    d.snapshots()
        .expect("snapshots")
        .delete(&vm, &snap("s2"))
        .await
        .expect("delete");
    d.snapshots()
        .expect("snapshots")
        .delete(&vm, &snap("s2"))
        .await
        .expect("delete again");
    assert_eq!(
        d.snapshots()
            .expect("snapshots")
            .list(&vm)
            .await
            .expect("list")
            .len(),
        1
    );
    d.delete(&vm)
        .await
        .expect("delete the vm with its snapshots");
    assert_eq!(
        d.inspect(&vm).await.expect("inspect"),
        RuntimeState::Missing
    );
}

#[tokio::test]
async fn a_restarted_driver_finds_its_domains() {
    let m = mock().await;
    let vm = instance(&unique("recover"), kernel_spec(&m.kernel));
    m.driver.create(&vm).await.expect("create");
    m.driver.start(&vm).await.expect("start");
    let again = LibvirtDriver::connect(m.driver.options().clone())
        .await
        .expect("reconnect");
    let found = again.managed_domains().await.expect("list");
    let ours = found
        .iter()
        .find(|d| d.instance_id == vm.id)
        .expect("the domain is found again");
    assert_eq!(ours.instance_name, vm.name);
    assert_eq!(ours.state, RuntimeState::Running);
    assert_eq!(
        again.inspect(&vm).await.expect("inspect"),
        RuntimeState::Running
    );
    again.delete(&vm).await.expect("delete");
}

#[tokio::test]
async fn a_domain_of_the_same_name_that_is_not_ours_is_left_alone_and_blocks_nothing() {
    let m = mock().await;
    let name = unique("clash");
    let ours = instance(&name, kernel_spec(&m.kernel));
    // Another instance's domain of the same name: an orphan left by a
    // deleted instance, say.
    let other = instance(&name, kernel_spec(&m.kernel));
    m.driver.create(&other).await.expect("create the other");
    m.driver
        .create(&ours)
        .await
        .expect("the name blocks nothing");
    m.driver.create(&ours).await.expect("create again");
    let named: Vec<_> = m
        .driver
        .managed_domains()
        .await
        .expect("list")
        .into_iter()
        .filter(|d| d.instance_name == name)
        .map(|d| (d.domain, d.instance_id))
        .collect();
    let preferred = m.driver.domain_name(&ours);
    assert_eq!(
        named,
        [
            (preferred.clone(), other.id.clone()),
            (format!("{preferred}-{}", ours.id), ours.id.clone()),
        ],
        "one domain each, the other's under its old name"
    );
    // Each call finds its own domain, never the other's.
    m.driver.start(&ours).await.expect("start ours");
    assert_eq!(
        m.driver.inspect(&ours).await.expect("inspect"),
        RuntimeState::Running
    );
    assert_eq!(
        m.driver.inspect(&other).await.expect("inspect"),
        RuntimeState::Created
    );
    m.driver.delete(&ours).await.expect("delete ours");
    assert_eq!(
        m.driver.inspect(&ours).await.expect("inspect"),
        RuntimeState::Missing
    );
    assert_eq!(
        m.driver.inspect(&other).await.expect("inspect"),
        RuntimeState::Created
    );

    // An id that is no UUID names no directory and no domain: a create or
    // a delete is refused before anything is looked up, made or removed.
    let libvirt_dir = m.dir.path().join("libvirt");
    let before = entries(&libvirt_dir);
    for id in ["legacy-1", "..", "../..", "/"] {
        let mut bad = instance(&name, kernel_spec(&m.kernel));
        bad.id = id.to_owned();
        for (what, err) in [
            ("create", m.driver.create(&bad).await.expect_err("create")),
            ("delete", m.driver.delete(&bad).await.expect_err("delete")),
        ] {
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{what} {id}: {err}");
            assert!(err.to_string().starts_with("invalid id:"), "{err}");
        }
        assert!(m.driver.instance_dir(&bad).is_err(), "{id}");
    }
    assert_eq!(entries(&libvirt_dir), before);
    assert_eq!(
        m.driver.inspect(&other).await.expect("inspect"),
        RuntimeState::Created
    );
    m.driver.delete(&other).await.expect("delete the other");
}

/// The names in directory `dir`, sorted.
fn entries(dir: &std::path::Path) -> Vec<std::ffi::OsString> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("read the driver's directory")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn the_xml_follows_the_spec() {
    let m = mock().await;
    let mut spec = kernel_spec(&m.kernel).with_size(2, 300);
    spec.cmdline = Some("console=ttyS0 x=<&>".to_owned());
    let vm = instance("xml", spec);
    let xml = m.driver.domain_xml(&vm).expect("xml");
    assert!(xml.starts_with(r#"<domain type="test">"#), "{xml}");
    assert!(xml.contains("<vcpu>2</vcpu>"), "{xml}");
    assert!(xml.contains(r#"<memory unit="MiB">300</memory>"#), "{xml}");
    assert!(xml.contains("x=&lt;&amp;&gt;"), "{xml}");
    assert!(xml.contains(&vm.id), "{xml}");
    assert!(!xml.contains("<disk"), "no image, no disk: {xml}");
}

#[tokio::test]
async fn an_unreachable_daemon_is_unavailable_with_the_uri() {
    let dir = tempfile::tempdir().expect("tempdir");
    let uri = format!(
        "qemu:///system?socket={}",
        dir.path().join("nope.sock").display()
    );
    let err = LibvirtDriver::connect(LibvirtOptions::new(&uri, dir.path()))
        .await
        .expect_err("no daemon there");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.to_string().contains(&uri), "{err}");

    let mut config = zixiao_drivers::DriverConfig::new(dir.path());
    config.libvirt_uri = uri.clone();
    let found = zixiao_drivers::discover(&config).await;
    let (_, reason) = found
        .missing
        .iter()
        .find(|(t, _)| *t == InstanceType::Vm)
        .expect("vm is missing");
    assert!(reason.contains(&uri), "{reason}");
    assert!(reason.contains(zixiao_drivers::LIBVIRT_URI_ENV), "{reason}");
}

#[tokio::test]
async fn published_ports_without_a_host_network_are_unsupported_and_nothing_is_defined() {
    let m = mock().await;
    let mut spec = kernel_spec(&m.kernel);
    spec.networks = vec!["lan".into()];
    spec.publish = vec![zixiao_core::PublishedPort::try_from("8080:80").unwrap()];
    let vm = instance(&unique("publish"), spec);
    let err = m.driver.create(&vm).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    let message = err.to_string();
    assert!(
        message.starts_with("spec.publish: instance `")
            && message.contains("this node's vm driver has no host network"),
        "{message}"
    );
    assert_eq!(
        m.driver.inspect(&vm).await.expect("inspect"),
        RuntimeState::Missing,
        "nothing defined"
    );
}
