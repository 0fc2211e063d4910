//! Is KVM usable on this host, and is it hardware-backed? Used to pick a
//! backend and to decide whether KVM tests run or skip.

use std::path::Path;

use crate::VmmError;

/// The KVM device every VM is created through.
pub const KVM_DEVICE: &str = "/dev/kvm";
/// Overrides [`KVM_DEVICE`] (tests use it to simulate a host without KVM).
pub const KVM_DEVICE_ENV: &str = "ZIXIAO_VMM_KVM_DEVICE";

pub(crate) fn kvm_device() -> String {
    std::env::var(KVM_DEVICE_ENV)
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| KVM_DEVICE.to_string())
}

/// How KVM is available here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmSupport {
    /// No usable /dev/kvm; says why.
    Absent(String),
    /// KVM works but is software-nested (e.g. `kvm_pvm`): guest kernel code is
    /// emulated, so stock Linux kernels do not boot; tiny guests do.
    SoftwareNested,
    /// Hardware-assisted KVM (`kvm_intel` / `kvm_amd`).
    Hardware,
}

/// Probes /dev/kvm and the loaded KVM vendor module.
pub fn kvm_support() -> KvmSupport {
    if let Err(err) = open_kvm() {
        return KvmSupport::Absent(err.to_string());
    }
    if module_loaded("kvm_pvm") {
        KvmSupport::SoftwareNested
    } else if module_loaded("kvm_intel") || module_loaded("kvm_amd") {
        KvmSupport::Hardware
    } else {
        // Without a known vendor module (e.g. a nested hypervisor that does not
        // show its modules), assume the cautious answer.
        KvmSupport::SoftwareNested
    }
}

/// For tests: `Some(reason)` when KVM tests must skip (printed to stderr);
/// panics instead when `ZIXIAO_REQUIRE_RUNTIMES=1`.
pub fn kvm_skip_reason() -> Option<String> {
    match kvm_support() {
        KvmSupport::Absent(why) => {
            assert!(
                std::env::var("ZIXIAO_REQUIRE_RUNTIMES").as_deref() != Ok("1"),
                "KVM is required (ZIXIAO_REQUIRE_RUNTIMES=1) but unusable: {why}"
            );
            eprintln!("skipped: KVM is not available: {why}");
            Some(why)
        }
        _ => None,
    }
}

fn module_loaded(name: &str) -> bool {
    if let Ok(modules) = std::fs::read_to_string("/proc/modules") {
        if modules
            .lines()
            .any(|l| l.split_whitespace().next() == Some(name))
        {
            return true;
        }
    }
    Path::new("/sys/module").join(name).exists()
}

/// Opens /dev/kvm, classifying failures: absent => Unsupported, not
/// accessible => Unavailable with the reason.
pub(crate) fn open_kvm() -> Result<kvm_ioctls::Kvm, VmmError> {
    let device = kvm_device();
    match std::fs::metadata(&device) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(VmmError::Unsupported {
                message: format!(
                    "{device} does not exist: this host has no KVM (load kvm_intel/kvm_amd, \
                     or enable nested virtualization)"
                ),
            })
        }
        Err(err) => {
            return Err(VmmError::Unavailable {
                message: format!("{device} cannot be inspected: {err}"),
            })
        }
        Ok(_) => {}
    }
    let path = std::ffi::CString::new(device.clone()).map_err(|_| VmmError::Unavailable {
        message: format!("{device}: not a valid path"),
    })?;
    let kvm = kvm_ioctls::Kvm::new_with_path(&path).map_err(|err| match err.errno() {
        libc::EACCES | libc::EPERM => VmmError::Unavailable {
            message: format!(
                "{device} is not accessible: permission denied (add the user to the `kvm` group)"
            ),
        },
        _ => VmmError::Unavailable {
            message: format!("{device} cannot be opened: {err}"),
        },
    })?;
    // KVM_GET_API_VERSION is 12 on every KVM since 2.6.22; anything else is not KVM.
    if kvm.get_api_version() != 12 {
        return Err(VmmError::Unavailable {
            message: format!("{device} is not a KVM device (KVM_GET_API_VERSION failed)"),
        });
    }
    Ok(kvm)
}
