//! Bad input: each a clear error of the right kind naming what is wrong,
//! with nothing left running and no stray files.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use zixiao_core::{Driver, ErrorKind, InstanceSpec, InstanceType, MicrovmBackend};
use zixiao_drivers::microvm::{MicrovmDriver, MicrovmOptions};
use zixiao_drivers::{discover, DriverConfig};

use super::{fixture, instance, state_dir, unique};

/// Nothing under the driver's state dir: no instance directory was left.
fn assert_no_files(state_dir: &Path) {
    let microvms = state_dir.join("microvm");
    let left: Vec<PathBuf> = std::fs::read_dir(&microvms)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn bad_kernels_initrds_and_sizes_are_refused_and_leave_nothing() {
    let Some(fx) = fixture() else {
        return;
    };
    let driver = fx.driver();
    let files = tempfile::tempdir().expect("tempdir");
    let text = files.path().join("notes.txt");
    std::fs::write(&text, b"this is not a kernel").expect("write");
    // An ELF file QEMU cannot boot (no PVH note): our header check passes,
    // QEMU refuses it at create.
    let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
    elf.resize(4096, 0);
    let bad_elf = files.path().join("vmlinux");
    std::fs::write(&bad_elf, &elf).expect("write");
    let huge = files.path().join("huge.img");
    std::fs::File::create(&huge)
        .and_then(|f| f.set_len(200 << 20))
        .expect("initrd");

    let with_kernel = |kernel: &Path| {
        let mut spec = fx.spec("");
        spec.kernel = Some(kernel.to_owned());
        spec
    };
    let cases: Vec<(&str, InstanceSpec, ErrorKind, &str)> = vec![
        (
            "missing kernel",
            with_kernel(&files.path().join("nope")),
            ErrorKind::NotFound,
            "spec.kernel",
        ),
        (
            "not a kernel",
            with_kernel(&text),
            ErrorKind::InvalidArgument,
            "spec.kernel",
        ),
        (
            "ELF without an entry QEMU can use",
            with_kernel(&bad_elf),
            ErrorKind::InvalidArgument,
            "spec.kernel",
        ),
        (
            "initrd larger than guest memory",
            {
                let mut spec = fx.spec("").with_size(1, 128);
                spec.initrd = Some(huge.clone());
                spec
            },
            ErrorKind::InvalidArgument,
            "spec.initrd",
        ),
        (
            "more vCPUs than the host has",
            fx.spec("").with_size(4096, 256),
            ErrorKind::InvalidArgument,
            "spec.cpus",
        ),
        (
            "more memory than the host has",
            fx.spec("").with_size(1, 64 << 20),
            ErrorKind::ResourceExhausted,
            "spec.memory_mib",
        ),
        (
            "a maximum memory the qemu backend cannot grow into",
            {
                let mut spec = fx.spec("").with_size(1, 128);
                spec.max_memory_mib = Some(256);
                spec
            },
            ErrorKind::Unsupported,
            "spec.max_memory_mib: the qemu backend cannot change",
        ),
    ];
    for (what, spec, kind, field) in cases {
        let vm = instance(&unique("bad"), spec);
        let err = driver.create(&vm).await.expect_err(what);
        assert_eq!(err.kind(), kind, "{what}: {err}");
        assert!(err.to_string().contains(field), "{what}: {err}");
        assert_no_files(fx.dir.path());
    }
    // A host with fewer CPUs than asked (but within a microVM's limit).
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    if cpus < 32 {
        let vm = instance(&unique("cpus"), fx.spec("").with_size(cpus + 1, 256));
        let err = driver.create(&vm).await.expect_err("too many cpus");
        assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
        assert!(err.to_string().contains("spec.cpus"), "{err}");
    }
    assert_no_files(fx.dir.path());
}

#[tokio::test]
async fn a_backend_the_node_cannot_run_is_unsupported() {
    let Some(fx) = fixture() else {
        return;
    };
    // QEMU present, no zixiao-vmm: `--backend vmm` is refused, naming why.
    let driver = MicrovmDriver::new(MicrovmOptions {
        vmm_binary: Some(PathBuf::from("/nonexistent/zixiao-vmm")),
        ..fx.options()
    })
    .expect("QEMU alone is enough");
    assert!(driver.vmm_binary().is_err());
    let mut spec = fx.spec("");
    spec.backend = MicrovmBackend::Vmm;
    let vm = instance(&unique("novmm"), spec);
    let err = driver.create(&vm).await.expect_err("vmm backend");
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("zixiao-vmm"), "{err}");
    // `auto` falls back to QEMU where the VMM cannot run.
    let mut spec = fx.spec("");
    spec.backend = MicrovmBackend::Auto;
    let auto = instance(&unique("auto"), spec);
    assert_eq!(driver.backend_of(&auto).expect("auto").as_str(), "qemu");
    assert_no_files(fx.dir.path());

    // A name that is no backend at all.
    let err = MicrovmBackend::from_str("firecracker").expect_err("unknown backend");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("spec.backend"), "{err}");
}

#[tokio::test]
async fn discovery_says_what_is_missing_and_honours_the_node_default() {
    let dir = state_dir();
    let mut config = DriverConfig::new(dir.path());
    config.qemu_binary = Some(PathBuf::from("/nonexistent/qemu-system-x86_64"));
    config.vmm_binary = Some(PathBuf::from("/nonexistent/zixiao-vmm"));
    let found = discover(&config).await;
    let (_, reason) = found
        .missing
        .iter()
        .find(|(t, _)| *t == InstanceType::Microvm)
        .expect("microvm is missing");
    assert!(
        reason.contains("/nonexistent/qemu-system-x86_64"),
        "{reason}"
    );
    assert!(reason.contains("zixiao-vmm"), "{reason}");

    let Some(fx) = fixture() else {
        return;
    };
    let mut config = DriverConfig::new(fx.dir.path());
    config.qemu_binary = Some(fx.qemu.clone());
    config.microvm_backend = Some(MicrovmBackend::Qemu);
    let found = discover(&config).await;
    let driver = found
        .drivers
        .iter()
        .find(|d| d.instance_type() == InstanceType::Microvm)
        .expect("the microvm driver");
    let mut spec = fx.spec("");
    spec.backend = MicrovmBackend::Auto;
    assert_eq!(driver.runtime_of(&instance("auto", spec)), "qemu");
}

#[tokio::test]
async fn bad_disks_are_refused_naming_the_disk_and_leave_nothing() {
    let Some(fx) = fixture() else {
        return;
    };
    let driver = fx.driver();
    let files = tempfile::tempdir().expect("tempdir");
    let raw = files.path().join("raw.img");
    std::fs::write(&raw, vec![7u8; 4096]).expect("write");
    let mut qcow = b"QFI\xfb\0\0\0\x03".to_vec();
    qcow.resize(4096, 0);
    let qcow2 = files.path().join("disk.qcow2");
    std::fs::write(&qcow2, &qcow).expect("write");
    let tiny = files.path().join("tiny.img");
    std::fs::write(&tiny, b"short").expect("write");
    let with_disks = |disks: &[String]| {
        let mut spec = fx.spec("");
        spec.disks = disks.iter().map(|d| d.parse().expect("disk")).collect();
        spec
    };
    let path = |p: &Path| p.display().to_string();
    let cases: Vec<(&str, InstanceSpec, ErrorKind, &str)> = vec![
        (
            "an image the node's store lacks",
            with_disks(&[path(&raw), "nosuchdisk".to_owned()]),
            ErrorKind::NotFound,
            "spec.disks[1].image: disk image `nosuchdisk`",
        ),
        (
            "a host file that is not there",
            with_disks(&[path(&files.path().join("gone.img"))]),
            ErrorKind::NotFound,
            "spec.disks[0].image",
        ),
        (
            "a qcow2 disk",
            with_disks(&[path(&qcow2)]),
            ErrorKind::InvalidArgument,
            "a microVM takes raw disks only",
        ),
        (
            "less than a sector",
            with_disks(&[path(&tiny)]),
            ErrorKind::InvalidArgument,
            "less than one 512-byte sector",
        ),
        (
            "a directory",
            with_disks(&[path(files.path())]),
            ErrorKind::InvalidArgument,
            "spec.disks[0].image",
        ),
        (
            "more disks than a microVM has",
            with_disks(&vec![path(&raw); zixiao_core::model::MAX_DISKS + 1]),
            ErrorKind::InvalidArgument,
            "at most 8",
        ),
        (
            "a restore that would take disks",
            {
                let mut spec = with_disks(&[path(&raw)]);
                spec.backend = MicrovmBackend::Vmm;
                spec.restore_from = Some(files.path().to_owned());
                spec
            },
            ErrorKind::Unsupported,
            "spec.disks",
        ),
    ];
    for (what, spec, kind, text) in cases {
        // Checked before it is stored (the controller's check) ...
        let checked = spec
            .validate()
            .map_err(|e| (e.kind(), e.to_string()))
            .and_then(|()| {
                driver
                    .check_create(&spec)
                    .map_err(|e| (e.kind(), e.to_string()))
            })
            .expect_err(what);
        assert_eq!(checked.0, kind, "{what}: {}", checked.1);
        assert!(checked.1.contains(text), "{what}: {}", checked.1);
        // ... and by the create itself, which leaves nothing.
        if spec.validate().is_ok() {
            let vm = instance(&unique("disk"), spec);
            let err = driver.create(&vm).await.expect_err(what);
            assert_eq!(err.kind(), kind, "{what}: {err}");
            assert!(err.to_string().contains(text), "{what}: {err}");
        }
        assert_no_files(fx.dir.path());
    }
    assert_eq!(std::fs::read(&raw).expect("raw"), vec![7u8; 4096]);
}
