//! What a microVM boots, checked before anything is made: the spec's
//! kernel (a file that really is a Linux kernel), initrd, command line,
//! vCPUs and memory against the host. Touches nothing.

use std::io::Read;
use std::path::{Path, PathBuf};

use zixiao_core::{DriverError, Instance, InstanceType};

use crate::errors::invalid;

/// The kernel command line of a microVM that sets none: the console on the
/// first serial port, which the driver logs.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0";

/// The most vCPUs a microVM may have (the VMM's limit, and plenty for QEMU).
const MAX_VCPUS: u32 = 32;

/// A validated boot request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BootPlan {
    pub(crate) kernel: PathBuf,
    pub(crate) initrd: Option<PathBuf>,
    /// The spec's command line, with an `ip=` argument per attachment.
    pub(crate) cmdline: String,
    pub(crate) cpus: u32,
    pub(crate) memory_mib: u64,
    /// The network cards, one per attachment, in spec order.
    pub(crate) nics: Vec<Nic>,
}

/// A network card of the guest on a TAP device of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Nic {
    /// The host's TAP device.
    pub(crate) tap: String,
    /// The guest's MAC address.
    pub(crate) mac: String,
}

/// Checks `instance`'s spec against its files and the host's `cpus` and
/// `memory_mib`. Errors: `InvalidArgument` naming the field, `NotFound`
/// (a kernel or initrd that is not there), `ResourceExhausted`.
pub(crate) fn plan(instance: &Instance, host: (u32, u64)) -> Result<BootPlan, DriverError> {
    let spec = &instance.spec;
    if spec.instance_type != InstanceType::Microvm {
        return Err(invalid(
            "spec.type",
            format!(
                "the microvm driver runs microvm instances, not {}",
                spec.instance_type
            ),
        ));
    }
    if spec.cpus == 0 {
        return Err(invalid("spec.cpus", "must be at least 1"));
    }
    if spec.cpus > MAX_VCPUS {
        return Err(invalid(
            "spec.cpus",
            format!(
                "{} vCPUs asked; a microvm has at most {MAX_VCPUS}",
                spec.cpus
            ),
        ));
    }
    if spec.memory_mib == 0 {
        return Err(invalid("spec.memory_mib", "must be at least 1"));
    }
    let (host_cpus, host_memory_mib) = host;
    if spec.cpus > host_cpus {
        return Err(DriverError::ResourceExhausted(format!(
            "spec.cpus: {} vCPUs asked, the host has {host_cpus} CPUs",
            spec.cpus
        )));
    }
    if spec.memory_mib > host_memory_mib {
        return Err(DriverError::ResourceExhausted(format!(
            "spec.memory_mib: {} MiB asked, the host has {host_memory_mib} MiB",
            spec.memory_mib
        )));
    }
    let cmdline = spec
        .cmdline
        .clone()
        .unwrap_or_else(|| DEFAULT_CMDLINE.to_owned());
    if cmdline.contains('\0') {
        return Err(invalid("spec.cmdline", "contains a NUL byte"));
    }
    // The guest's init (or the kernel) configures each interface from it.
    let cmdline = instance
        .attachments
        .iter()
        .filter_map(|a| a.kernel_ip_arg())
        .fold(cmdline, |line, arg| format!("{line} {arg}"));
    let nics = instance
        .attachments
        .iter()
        .map(|a| Nic {
            tap: a.host_interface.to_string(),
            mac: a.mac.clone(),
        })
        .collect();
    let Some(kernel) = spec.kernel.clone() else {
        return Err(invalid("spec.kernel", "a microvm boots a kernel; set one"));
    };
    check_kernel(&kernel)?;
    let initrd = spec.initrd.clone();
    if let Some(initrd) = &initrd {
        let len = file_len("spec.initrd", initrd)?;
        if len > spec.memory_mib.saturating_mul(1 << 20) / 2 {
            return Err(invalid(
                "spec.initrd",
                format!(
                    "{} is {} MiB, too large for a guest of {} MiB (at most half its memory)",
                    initrd.display(),
                    len >> 20,
                    spec.memory_mib
                ),
            ));
        }
    }
    Ok(BootPlan {
        kernel,
        initrd,
        cmdline,
        cpus: spec.cpus,
        memory_mib: spec.memory_mib,
        nics,
    })
}

/// The size of a regular file the guest needs, or why it cannot be used.
fn file_len(field: &str, path: &Path) -> Result<u64, DriverError> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DriverError::NotFound(format!(
                "{field} {} on this node",
                path.display()
            )))
        }
        Err(e) => {
            return Err(invalid(
                field,
                format!("cannot read {}: {e}", path.display()),
            ))
        }
    };
    if !meta.is_file() {
        return Err(invalid(
            field,
            format!("{} is not a regular file", path.display()),
        ));
    }
    // Opening proves it is readable by us (and so by the monitor we start).
    std::fs::File::open(path)
        .map_err(|e| invalid(field, format!("cannot read {}: {e}", path.display())))?;
    Ok(meta.len())
}

/// Checks that `kernel` is a Linux kernel image: a bzImage (the `HdrS`
/// setup header at 0x202) or an ELF `vmlinux`.
fn check_kernel(kernel: &Path) -> Result<(), DriverError> {
    file_len("spec.kernel", kernel)?;
    let mut head = Vec::with_capacity(0x210);
    std::fs::File::open(kernel)
        .and_then(|f| f.take(0x210).read_to_end(&mut head))
        .map_err(|e| {
            invalid(
                "spec.kernel",
                format!("cannot read {}: {e}", kernel.display()),
            )
        })?;
    let bzimage = head.get(0x202..0x206) == Some(b"HdrS".as_slice());
    let elf = head.starts_with(b"\x7fELF");
    if bzimage || elf {
        Ok(())
    } else {
        Err(invalid(
            "spec.kernel",
            format!(
                "{} is not a Linux kernel (neither a bzImage nor an ELF vmlinux)",
                kernel.display()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zixiao_core::{ErrorKind, InstanceSpec};

    fn instance(spec: InstanceSpec) -> Instance {
        zixiao_testing::fake_driver::placed_instance("m", spec)
    }

    #[test]
    fn rejects_what_cannot_boot_naming_the_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, b"not a kernel at all").expect("write");
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        let kernel = dir.path().join("bzImage");
        std::fs::write(&kernel, &bz).expect("write");
        let big = dir.path().join("big.img");
        std::fs::File::create(&big)
            .and_then(|f| f.set_len(40 << 20))
            .expect("initrd");
        let host = (4, 4096);

        let err = plan(&instance(InstanceSpec::microvm(&text)), host).expect_err("text");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("spec.kernel"), "{err}");

        let missing = dir.path().join("missing");
        let err = plan(&instance(InstanceSpec::microvm(&missing)), host).expect_err("missing");
        assert_eq!(err.kind(), ErrorKind::NotFound);

        let mut spec = InstanceSpec::microvm(&kernel).with_size(1, 64);
        spec.initrd = Some(big);
        let err = plan(&instance(spec), host).expect_err("initrd");
        assert!(err.to_string().contains("spec.initrd"), "{err}");

        let err = plan(
            &instance(InstanceSpec::microvm(&kernel).with_size(8, 64)),
            host,
        )
        .expect_err("cpus");
        assert_eq!(err.kind(), ErrorKind::ResourceExhausted);
        let err = plan(
            &instance(InstanceSpec::microvm(&kernel).with_size(1, 8192)),
            host,
        )
        .expect_err("memory");
        assert_eq!(err.kind(), ErrorKind::ResourceExhausted);

        let ok = plan(&instance(InstanceSpec::microvm(&kernel)), host).expect("bzImage");
        assert_eq!(ok.cmdline, DEFAULT_CMDLINE);
        assert!(ok.nics.is_empty());
    }

    #[test]
    fn each_attachment_is_a_nic_and_an_ip_argument_in_order() {
        use zixiao_core::model::{IpConfig, NetworkAttachment};
        let dir = tempfile::tempdir().expect("tempdir");
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        let kernel = dir.path().join("bzImage");
        std::fs::write(&kernel, &bz).expect("write");
        let mut spec = InstanceSpec::microvm(&kernel);
        spec.cmdline = Some("console=ttyS0 quiet".to_owned());
        let mut vm = instance(spec);
        let nic = |i: u8, address: &str, gateway: &str| NetworkAttachment {
            network: format!("n{i}").try_into().unwrap(),
            installation: None,
            interface: format!("eth{i}"),
            host_interface: format!("zxt000000000{i}").try_into().unwrap(),
            bridge: format!("zxb0000000{i}").try_into().unwrap(),
            mac: format!("02:00:00:00:00:0{i}"),
            addresses: vec![IpConfig {
                address: address.parse().expect("address"),
                prefix_len: if address.contains(':') { 64 } else { 24 },
                gateway: gateway.parse().expect("gateway"),
            }],
        };
        vm.attachments = vec![
            nic(0, "10.1.0.5", "10.1.0.1"),
            // IPv6 only: a card without an `ip=` argument.
            nic(1, "fd00::5", "fd00::1"),
            nic(2, "10.3.0.7", "10.3.0.1"),
        ];
        let planned = plan(&vm, (4, 4096)).expect("plan");
        assert_eq!(
            planned.cmdline,
            "console=ttyS0 quiet ip=10.1.0.5::10.1.0.1:255.255.255.0::eth0:off \
             ip=10.3.0.7::10.3.0.1:255.255.255.0::eth2:off"
        );
        let taps: Vec<&str> = planned.nics.iter().map(|n| n.tap.as_str()).collect();
        assert_eq!(taps, ["zxt0000000000", "zxt0000000001", "zxt0000000002"]);
        assert_eq!(planned.nics[2].mac, "02:00:00:00:00:02");
    }
}
