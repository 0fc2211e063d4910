//! Bad input: each case fails with a clear error of the right kind, leaves
//! no VMM process running and no run directory behind.

mod common;

use std::path::Path;

use common::*;
use zixiao_core::ErrorKind;
use zixiao_vmm::{launch, Boot, VmConfig, VmmError};

/// Processes whose command line names `run_dir`.
fn vmms_for(run_dir: &Path) -> Vec<u32> {
    let needle = run_dir.as_os_str().as_encoded_bytes().to_vec();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmd.windows(needle.len()).any(|w| w == needle.as_slice()) && alive(*pid)
        })
        .collect()
}

async fn rejected(config: VmConfig) -> VmmError {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("vm");
    let err = launch(&vmm_binary(), &run, Boot::Fresh(config))
        .await
        .unwrap_err();
    assert!(!run.exists(), "stray run dir after: {err}");
    assert!(vmms_for(&run).is_empty(), "VMM left running after: {err}");
    err
}

fn field(err: &VmmError) -> &str {
    match err {
        VmmError::InvalidArgument { field, .. } => field,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[tokio::test]
async fn missing_kernel_is_not_found() {
    let Some(kernel) = guest() else { return };
    let mut config = guest_config(&kernel, "");
    config.kernel = "/nonexistent/vmlinux".into();
    let err = rejected(config).await;
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(
        err.to_string().contains("kernel /nonexistent/vmlinux"),
        "{err}"
    );
}

#[tokio::test]
async fn unreadable_kernel_is_invalid() {
    let Some(kernel) = guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // A directory cannot be read as a kernel (root bypasses file modes, so a
    // chmod 000 file would be readable here).
    let mut config = guest_config(&kernel, "");
    config.kernel = tmp.path().to_path_buf();
    let err = rejected(config).await;
    assert_eq!(field(&err), "kernel", "{err}");
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

#[tokio::test]
async fn a_file_that_is_not_a_kernel_is_invalid() {
    let Some(kernel) = guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("notes.txt");
    std::fs::write(&text, "just some text, not a kernel\n".repeat(100)).unwrap();
    let mut config = guest_config(&kernel, "");
    config.kernel = text;
    let err = rejected(config).await;
    assert_eq!(field(&err), "kernel");
    assert!(err.to_string().contains("not a kernel"), "{err}");
}

#[tokio::test]
async fn a_kernel_the_loader_rejects_fails_inside_the_vmm_and_cleans_up() {
    let Some(kernel) = guest() else { return };
    // A valid ELF64 header whose entry point lies below 1 MiB: passes the
    // header check in launch(), fails in linux-loader inside the VMM process.
    let tmp = tempfile::tempdir().unwrap();
    let mut image = std::fs::read(&kernel).unwrap();
    image[24..32].copy_from_slice(&0x1000u64.to_le_bytes());
    let bad = tmp.path().join("low-entry.elf");
    std::fs::write(&bad, image).unwrap();
    let mut config = guest_config(&kernel, "");
    config.kernel = bad;
    let err = rejected(config).await;
    assert_eq!(field(&err), "kernel", "{err}");
    assert!(err.to_string().contains("cannot be loaded"), "{err}");
}

#[tokio::test]
async fn initrd_larger_than_memory_is_invalid() {
    let Some(kernel) = guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let initrd = tmp.path().join("huge.img");
    std::fs::File::create(&initrd)
        .unwrap()
        .set_len(64 << 20)
        .unwrap(); // sparse
    let mut config = guest_config(&kernel, "");
    config.initrd = Some(initrd);
    let err = rejected(config).await;
    assert_eq!(field(&err), "initrd", "{err}");
    assert!(err.to_string().contains("larger than"), "{err}");
}

#[tokio::test]
async fn memory_and_vcpus_the_host_cannot_give_are_rejected() {
    let Some(kernel) = guest() else { return };
    for (memory_mib, vcpus, expected) in [
        (0, 1, "memory_mib"),
        (1 << 20, 1, "memory_mib"),
        (32, 0, "vcpus"),
        (32, 200, "vcpus"),
    ] {
        let mut config = guest_config(&kernel, "");
        config.memory_mib = memory_mib;
        config.vcpus = vcpus;
        let err = rejected(config).await;
        assert_eq!(field(&err), expected, "{err}");
    }
    let mut config = guest_config(&kernel, "");
    config.cmdline = "x".repeat(5000);
    assert_eq!(field(&rejected(config).await), "cmdline");
}
