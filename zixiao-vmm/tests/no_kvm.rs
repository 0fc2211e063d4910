//! A host without usable KVM: simulated by pointing the VMM at another
//! device path (its own test binary: the override is process-wide).

mod common;

use common::*;
use zixiao_core::ErrorKind;
use zixiao_vmm::{kvm_support, launch, Boot, KvmSupport, VmConfig};

#[tokio::test]
async fn absent_or_unusable_kvm_is_reported_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let kernel = zixiao_vmm::test_guest::kernel_path().unwrap_or_else(|| tmp.path().join("k"));
    std::fs::write(tmp.path().join("k"), b"\x7fELF").ok();
    let run = tmp.path().join("vm");

    std::env::set_var("ZIXIAO_VMM_KVM_DEVICE", tmp.path().join("no-kvm"));
    let why = match kvm_support() {
        KvmSupport::Absent(why) => why,
        other => panic!("expected Absent, got {other:?}"),
    };
    assert!(why.contains("does not exist"), "{why}");
    if zixiao_vmm::test_guest::kernel_path().is_some() {
        let err = launch(&vmm_binary(), &run, Boot::Fresh(VmConfig::new(&kernel)))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
        assert!(err.to_string().contains("no-kvm does not exist"), "{err}");
        assert!(!run.exists());
    }

    // A device that is not KVM (e.g. a wrong node or a broken module).
    std::env::set_var("ZIXIAO_VMM_KVM_DEVICE", "/dev/null");
    assert!(matches!(kvm_support(), KvmSupport::Absent(why) if why.contains("not a KVM device")));
    if zixiao_vmm::test_guest::kernel_path().is_some() {
        let err = launch(&vmm_binary(), &run, Boot::Fresh(VmConfig::new(&kernel)))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(!run.exists());
    }
}
