//! Shared helpers of the KVM tests: the VMM binary, the test guest, run
//! directories, and waiting for console output.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use zixiao_vmm::{test_guest, VmConfig};

/// The `zixiao-vmm` binary cargo built for these tests, or the one
/// `ZIXIAO_VMM_TEST_BIN` names (an absolute path: the tests run in the
/// crate's directory): the suite then checks another build of
/// the same source, such as the static release binary
/// (`scripts/build-vmm.sh`; built with `--features test-hooks` for the
/// tests that need the hidden operations).
pub fn vmm_binary() -> PathBuf {
    std::env::var_os("ZIXIAO_VMM_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_zixiao-vmm")))
}

/// The test guest kernel, or None (after printing why) when KVM tests must skip.
pub fn guest() -> Option<PathBuf> {
    built_guest(test_guest::kernel_path(), "test guest")
}

/// The virtio test guest (guest/blk.c), or None (after printing why) when
/// KVM tests must skip.
pub fn virtio_guest() -> Option<PathBuf> {
    built_guest(test_guest::virtio_kernel_path(), "virtio test guest")
}

/// The ACPI test guest (guest/acpi.c), or None (after printing why) when
/// KVM tests must skip.
pub fn acpi_guest() -> Option<PathBuf> {
    built_guest(test_guest::acpi_kernel_path(), "ACPI test guest")
}

/// The balloon test guest (guest/balloon.c), or None (after printing why)
/// when KVM tests must skip.
pub fn balloon_guest() -> Option<PathBuf> {
    built_guest(test_guest::balloon_kernel_path(), "balloon test guest")
}

fn built_guest(path: Option<PathBuf>, what: &str) -> Option<PathBuf> {
    if zixiao_vmm::kvm_skip_reason().is_some() {
        return None;
    }
    if path.is_none() {
        assert!(
            !zixiao_testing::wait::runtimes_required(),
            "the {what} was not built (gcc/ld missing) but ZIXIAO_REQUIRE_RUNTIMES=1"
        );
        eprintln!("skipped: the {what} was not built (gcc/ld missing)");
    }
    path
}

/// A config booting the test guest with `cmdline`.
pub fn guest_config(kernel: &Path, cmdline: &str) -> VmConfig {
    VmConfig {
        kernel: kernel.to_path_buf(),
        initrd: None,
        cmdline: cmdline.to_string(),
        vcpus: 1,
        memory_mib: 32,
        disks: Vec::new(),
        nets: Vec::new(),
        vsock: None,
        balloon: None,
    }
}

/// Restores the snapshot in `snapshot_dir` into a new VMM in `run_dir`
/// (jailed, left paused).
pub async fn restore(run_dir: &Path, snapshot_dir: &Path) -> zixiao_vmm::VmmClient {
    zixiao_vmm::launch(
        &vmm_binary(),
        run_dir,
        zixiao_vmm::Boot::Restore {
            snapshot_dir: snapshot_dir.to_path_buf(),
        },
    )
    .await
    .unwrap()
}

/// Waits until console.log in `run_dir` contains `needle`; returns the log.
pub async fn wait_console(log: &Path, needle: &str, timeout: Duration) -> String {
    zixiao_testing::wait::wait_until(&format!("`{needle}` on the console"), timeout, || async {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        text.contains(needle).then_some(text)
    })
    .await
}

/// Every complete `ZX: count=N` line of `text`, in order.
pub fn counts(text: &str) -> Vec<u64> {
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .filter_map(|l| l.strip_prefix("ZX: count="))
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

/// The last complete `ZX: count=N` value in `text`.
pub fn last_count(text: &str) -> Option<u64> {
    counts(text).last().copied()
}

/// Whether a process with `pid` still runs (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next()),
            Some("Z") | Some("X")
        ),
        Err(_) => false,
    }
}

/// Kills a VMM (SIGKILL) when dropped: VMMs are detached by design, so a test
/// that fails half-way must not leave its VMM running.
pub struct Reaper(pub u32);

impl Drop for Reaper {
    fn drop(&mut self) {
        // Only our VMM: its pid may have been reused once it exited.
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.0)).unwrap_or_default();
        if alive(self.0) && String::from_utf8_lossy(&cmdline).contains("zixiao-vmm\0--run-dir") {
            let _ = std::process::Command::new("kill")
                .args(["-9", &self.0.to_string()])
                .status();
        }
    }
}

/// CRC-32 (IEEE), as the C test guest computes it.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = (c >> 1) ^ (0xedb8_8320 & 0u32.wrapping_sub(c & 1));
        }
    }
    !c
}
