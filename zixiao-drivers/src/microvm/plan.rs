//! What a microVM boots, checked before anything is made: the spec's
//! kernel (a file that really is a kernel the backend can boot), initrd,
//! command line, vCPUs and memory against the kernel's headers, the
//! backend's bounds and the host. Touches nothing. The same check runs
//! before a create is stored (`MicrovmDriver::check_create`) and when the
//! driver creates or relaunches the microVM.

use std::path::{Path, PathBuf};

use zixiao_core::{DriverError, Instance, InstanceSpec, InstanceType};

use super::kernel::{self, KernelFormat, KernelImage};
use super::layout::Backend;
use super::qemu::qemu_cmdline;
use crate::errors::invalid;

/// The kernel command line of a microVM that sets none: the console on the
/// first serial port, which the driver logs.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0";

/// The most vCPUs a microVM may have (the VMM's limit, and plenty for QEMU).
const MAX_VCPUS: u32 = 32;
/// The longest command line the VMM passes (its buffer less the NUL).
const VMM_CMDLINE_MAX: usize = zixiao_vmm::layout::CMDLINE_MAX - 1;

/// A validated boot request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BootPlan {
    pub(crate) kernel: PathBuf,
    pub(crate) initrd: Option<PathBuf>,
    /// The spec's command line, with an `ip=` argument per attachment.
    pub(crate) cmdline: String,
    pub(crate) cpus: u32,
    /// What the guest runs with: the spec's memory.
    pub(crate) memory_mib: u64,
    /// What the guest boots with (vmm backend): the spec's
    /// `max_memory_mib`, else its memory; its balloon holds the rest
    /// back from the start, so a live resize can give it up to this.
    pub(crate) max_memory_mib: u64,
    /// The network cards, one per attachment, in spec order.
    pub(crate) nics: Vec<Nic>,
    /// The cloud-init seed's files, when the spec has cloud-init data
    /// (QEMU backend only: see `MicrovmDriver::check_create`).
    pub(crate) seed: Option<crate::cloud_init::SeedFiles>,
    /// The virtio-block disks, in spec order.
    pub(crate) disks: Vec<PlannedDisk>,
    /// The virtio-vsock device's guest CID (vmm backend only).
    pub(crate) vsock: Option<zixiao_vmm::GuestCid>,
}

/// A virtio-block disk of the guest on a raw file of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlannedDisk {
    /// The file the monitor opens: the instance's own copy of a writable
    /// disk, the image itself for a read-only one.
    pub(crate) path: PathBuf,
    /// The image a writable disk's copy is made from, once, at create
    /// (see `disks::make_copies`); `None` for a read-only disk.
    pub(crate) copy_of: Option<PathBuf>,
    /// The guest sees it read-only, and the monitor opens it so.
    pub(crate) read_only: bool,
}

/// Where writable disk `index` of a microVM is copied in `disk_dir`.
pub(crate) fn disk_copy(disk_dir: &Path, index: usize) -> PathBuf {
    disk_dir.join(format!("disk{index}.img"))
}

/// A network card of the guest on a TAP device of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Nic {
    /// The host's TAP device.
    pub(crate) tap: String,
    /// The guest's MAC address.
    pub(crate) mac: String,
}

/// Checks `instance`'s spec (its files resolved to host paths) against
/// its files, `backend`'s limits and the host's `cpus` and `memory_mib`
/// (see [`check`]), and plans its boot, with its writable disks' copies
/// in `disk_dir`.
pub(crate) fn plan(
    instance: &Instance,
    host: (u32, u64),
    backend: Backend,
    disk_dir: &Path,
) -> Result<BootPlan, DriverError> {
    let spec = &instance.spec;
    let cmdline = spec
        .cmdline
        .clone()
        .unwrap_or_else(|| DEFAULT_CMDLINE.to_owned());
    // The guest's init (or the kernel) configures each interface from it.
    let cmdline = instance
        .attachments
        .iter()
        .filter_map(|a| a.kernel_ip_arg())
        .fold(cmdline, |line, arg| format!("{line} {arg}"));
    check(spec, &cmdline, backend, host)?;
    let nics = instance
        .attachments
        .iter()
        .map(|a| Nic {
            tap: a.host_interface.to_string(),
            mac: a.mac.clone(),
        })
        .collect();
    Ok(BootPlan {
        kernel: spec.kernel.clone().unwrap_or_default(),
        initrd: spec.initrd.clone(),
        cmdline,
        cpus: crate::errors::vcpus(spec)?,
        memory_mib: spec.memory_mib,
        max_memory_mib: spec
            .max_memory_mib
            .unwrap_or(spec.memory_mib)
            .max(spec.memory_mib),
        nics,
        // The kernel command line's `ip=` configures a microVM: static.
        seed: crate::cloud_init::seed_of(instance, crate::cloud_init::Addressing::Static),
        disks: spec
            .disks
            .iter()
            .enumerate()
            .map(|(i, disk)| {
                let image = PathBuf::from(&disk.image);
                match disk.read_only {
                    true => PlannedDisk {
                        path: image,
                        copy_of: None,
                        read_only: true,
                    },
                    false => PlannedDisk {
                        path: disk_copy(disk_dir, i),
                        copy_of: Some(image),
                        read_only: false,
                    },
                }
            })
            .collect(),
        vsock: spec.vsock.map(|v| vmm_cid(v.cid)).transpose()?,
    })
}

/// The VMM's CID for a spec's (both refuse the same reserved values).
fn vmm_cid(cid: zixiao_core::model::GuestCid) -> Result<zixiao_vmm::GuestCid, DriverError> {
    zixiao_vmm::GuestCid::try_from(cid.get())
        .map_err(|reason| invalid(zixiao_core::model::GuestCid::FIELD, reason))
}

/// Checks that `backend` can give the guest `spec`'s vsock device, if it
/// asks for one. Errors: `Unsupported` naming `spec.vsock` on QEMU.
pub(crate) fn check_vsock(spec: &InstanceSpec, backend: Backend) -> Result<(), DriverError> {
    if spec.vsock.is_none() || backend == Backend::Vmm {
        return Ok(());
    }
    // QEMU's vsock device (vhost-vsock-device) is the host kernel's
    // vhost-vsock, whose CIDs are host-wide; it is not wired up, and most
    // hosts these run on (this project's among them) lack the module.
    let host = if Path::new("/dev/vhost-vsock").exists() {
        "the driver does not attach QEMU's vhost-vsock-device yet"
    } else {
        "QEMU's vsock device needs the host kernel's /dev/vhost-vsock, which this node lacks"
    };
    Err(DriverError::Unsupported(format!(
        "spec.vsock: a vsock device needs the vmm backend (--backend vmm); on the qemu backend {host}"
    )))
}

/// Checks a microVM's `max_memory_mib`: the vmm backend boots with it
/// (within its bounds) and balloons the rest; the qemu backend resizes
/// only by a restart, so it has no use for one and refuses it.
fn check_max_memory(spec: &InstanceSpec, backend: Backend) -> Result<(), DriverError> {
    let Some(max) = spec.max_memory_mib else {
        return Ok(());
    };
    if backend == Backend::Qemu {
        return Err(DriverError::Unsupported(
            "spec.max_memory_mib: the qemu backend cannot change a running microVM's memory; \
             it needs the vmm backend (--backend vmm)"
                .to_owned(),
        ));
    }
    if max > zixiao_vmm::MAX_MEMORY_MIB {
        return Err(invalid(
            "spec.max_memory_mib",
            format!(
                "{max} MiB is more than the vmm backend's maximum of {} MiB",
                zixiao_vmm::MAX_MEMORY_MIB
            ),
        ));
    }
    Ok(())
}

/// Checks a fresh boot of `spec` on `backend` with the kernel command
/// line `cmdline` (the spec's, with its `ip=` arguments) before anything
/// is made: the kernel is a kernel (a regular, non-empty bzImage or x86-64
/// ELF, one QEMU can boot), the initrd a regular, non-empty file of at
/// most half the memory, the memory at least what the kernel's headers
/// need with that initrd and within the backend's bounds, the command line
/// within the kernel's and the backend's, the vCPUs within 32 and the
/// host's. Touches nothing.
///
/// Errors: `InvalidArgument` naming the field, `NotFound` (a kernel or
/// initrd that is not on this node), `ResourceExhausted` (more than the
/// host has).
pub(crate) fn check(
    spec: &InstanceSpec,
    cmdline: &str,
    backend: Backend,
    host: (u32, u64),
) -> Result<(), DriverError> {
    if spec.instance_type != InstanceType::Microvm {
        return Err(invalid(
            "spec.type",
            format!(
                "the microvm driver runs microvm instances, not {}",
                spec.instance_type
            ),
        ));
    }
    if spec.cloud_init.is_some() && backend == Backend::Vmm {
        // Our VMM can attach the seed as a disk, but no Linux guest boots
        // under it on the software-nested KVM where it is tested: refused
        // until that can be shown to work.
        return Err(DriverError::Unsupported(
            "cloud-init data on a microVM needs the qemu backend (--backend qemu);              the vmm backend does not take it yet"
                .to_owned(),
        ));
    }
    check_disks(spec, backend)?;
    check_vsock(spec, backend)?;
    let vcpus = crate::errors::vcpus(spec)?;
    if vcpus > MAX_VCPUS {
        return Err(invalid(
            "spec.cpus",
            format!("{vcpus} vCPUs asked; a microvm has at most {MAX_VCPUS}"),
        ));
    }
    if spec.memory_mib == 0 {
        return Err(invalid("spec.memory_mib", "must be at least 1"));
    }
    check_max_memory(spec, backend)?;
    if backend == Backend::Vmm {
        if spec.memory_mib < zixiao_vmm::MIN_MEMORY_MIB {
            return Err(invalid(
                "spec.memory_mib",
                format!(
                    "{} MiB is less than the vmm backend's minimum of {} MiB",
                    spec.memory_mib,
                    zixiao_vmm::MIN_MEMORY_MIB
                ),
            ));
        }
        if spec.memory_mib > zixiao_vmm::MAX_MEMORY_MIB {
            return Err(invalid(
                "spec.memory_mib",
                format!(
                    "{} MiB is more than the vmm backend's maximum of {} MiB",
                    spec.memory_mib,
                    zixiao_vmm::MAX_MEMORY_MIB
                ),
            ));
        }
    }
    let (host_cpus, host_memory_mib) = host;
    if vcpus > host_cpus {
        return Err(DriverError::ResourceExhausted(format!(
            "spec.cpus: {vcpus} vCPUs asked, the host has {host_cpus} CPUs"
        )));
    }
    if spec.memory_mib > host_memory_mib {
        return Err(DriverError::ResourceExhausted(format!(
            "spec.memory_mib: {} MiB asked, the host has {host_memory_mib} MiB",
            spec.memory_mib
        )));
    }
    if cmdline.contains('\0') {
        return Err(invalid("spec.cmdline", "contains a NUL byte"));
    }
    let Some(kernel_path) = &spec.kernel else {
        return Err(invalid("spec.kernel", "a microvm boots a kernel; set one"));
    };
    let kernel = KernelImage::read(kernel_path, "spec.kernel")?;
    if backend == Backend::Qemu && kernel.format == KernelFormat::Elf && !kernel.pvh {
        return Err(invalid(
            "spec.kernel",
            format!(
                "`{}` is an uncompressed ELF kernel without a PVH entry point, which QEMU \
                 cannot boot; give its bzImage, or run it on the vmm backend (--backend vmm)",
                kernel_path.display()
            ),
        ));
    }
    let initrd_len = match &spec.initrd {
        Some(initrd) => {
            let len = kernel::regular_len(initrd, "spec.initrd")?;
            if len > spec.memory_mib.saturating_mul(1 << 20) / 2 {
                return Err(invalid(
                    "spec.initrd",
                    format!(
                        "`{}` is {} MiB, too large for a guest of {} MiB (at most half its memory)",
                        initrd.display(),
                        len >> 20,
                        spec.memory_mib
                    ),
                ));
            }
            len
        }
        None => 0,
    };
    if let Some(least) = kernel.min_memory_mib(initrd_len) {
        if spec.memory_mib < least {
            let with_initrd = if initrd_len > 0 {
                " and its initrd"
            } else {
                ""
            };
            return Err(invalid(
                "spec.memory_mib",
                format!(
                    "{} MiB is too little for this kernel{with_initrd}: it needs at least {least} MiB \
                     to start (its header: where it runs and the room it decompresses into)",
                    spec.memory_mib
                ),
            ));
        }
    }
    let booted = match backend {
        Backend::Qemu => qemu_cmdline(cmdline),
        Backend::Vmm => cmdline.to_owned(),
    };
    let (most, whose) = match backend {
        Backend::Vmm if VMM_CMDLINE_MAX < kernel.cmdline_max => {
            (VMM_CMDLINE_MAX, "the vmm backend")
        }
        _ => (kernel.cmdline_max, "the kernel"),
    };
    if booted.len() > most {
        let added = if booted.len() > spec.cmdline.as_deref().unwrap_or("").len() {
            " with what the driver adds (`ip=` per network, `panic=-1` on QEMU)"
        } else {
            ""
        };
        return Err(invalid(
            "spec.cmdline",
            format!(
                "{} bytes{added}; {whose} takes at most {most}",
                booted.len()
            ),
        ));
    }
    Ok(())
}

/// Checks the spec's disks (their images resolved to host paths): each a
/// raw disk (see [`crate::node_images::check_raw_disk`]), and on the vmm
/// backend no more virtio devices than it has interrupt lines for (the
/// balloon every VMM microVM has takes one).
/// Errors: `InvalidArgument` naming the field, `NotFound`.
fn check_disks(spec: &InstanceSpec, backend: Backend) -> Result<(), DriverError> {
    let most = zixiao_vmm::layout::MAX_DISKS - 1;
    let vsock = usize::from(spec.vsock.is_some());
    if backend == Backend::Vmm && spec.disks.len() + spec.networks.len() + vsock > most {
        return Err(invalid(
            "spec.disks",
            format!(
                "{} disks, {} networks and {vsock} vsock devices; a microVM on the vmm backend \
                 has at most {most} such virtio devices (one interrupt line each, one more is \
                 its balloon)",
                spec.disks.len(),
                spec.networks.len()
            ),
        ));
    }
    for (i, disk) in spec.disks.iter().enumerate() {
        crate::node_images::check_raw_disk(
            &zixiao_core::model::disk_field(i),
            Path::new(&disk.image),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use zixiao_core::{ErrorKind, InstanceSpec};

    fn instance(spec: InstanceSpec) -> Instance {
        zixiao_testing::fake_driver::placed_instance("m", spec)
    }

    /// [`super::plan`] of a microVM without writable disks.
    fn plan(
        instance: &Instance,
        host: (u32, u64),
        backend: Backend,
    ) -> Result<BootPlan, DriverError> {
        super::plan(instance, host, backend, Path::new("/no-disks"))
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

        let qemu = Backend::Qemu;
        let err = plan(&instance(InstanceSpec::microvm(&text)), host, qemu).expect_err("text");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("spec.kernel"), "{err}");

        let missing = dir.path().join("missing");
        let err =
            plan(&instance(InstanceSpec::microvm(&missing)), host, qemu).expect_err("missing");
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.to_string().contains("spec.kernel"), "{err}");

        let mut spec = InstanceSpec::microvm(&kernel).with_size(1, 64);
        spec.initrd = Some(big);
        let err = plan(&instance(spec), host, qemu).expect_err("initrd");
        assert!(err.to_string().contains("spec.initrd"), "{err}");

        let err = plan(
            &instance(InstanceSpec::microvm(&kernel).with_size(8, 64)),
            host,
            qemu,
        )
        .expect_err("cpus");
        assert_eq!(err.kind(), ErrorKind::ResourceExhausted);
        let err = plan(
            &instance(InstanceSpec::microvm(&kernel).with_size(1, 8192)),
            host,
            qemu,
        )
        .expect_err("memory");
        assert_eq!(err.kind(), ErrorKind::ResourceExhausted);

        let err = plan(
            &instance(InstanceSpec::microvm(&kernel).with_size(1, 8)),
            host,
            Backend::Vmm,
        )
        .expect_err("below the vmm's minimum");
        assert!(err.to_string().contains("vmm backend's minimum"), "{err}");
        let mut long = InstanceSpec::microvm(&kernel);
        long.cmdline = Some("x".repeat(250));
        let err = plan(&instance(long), host, qemu).expect_err("long command line");
        assert!(
            err.to_string().contains("spec.cmdline") && err.to_string().contains("at most 255"),
            "{err}"
        );

        let ok = plan(&instance(InstanceSpec::microvm(&kernel)), host, qemu).expect("bzImage");
        assert_eq!(ok.cmdline, DEFAULT_CMDLINE);
        assert!(ok.nics.is_empty());
        assert!(ok.seed.is_none());

        // cloud-init data: a seed on QEMU, refused on the vmm backend.
        let mut with_init = InstanceSpec::microvm(&kernel);
        with_init.cloud_init = Some(zixiao_core::model::CloudInit {
            user_data: Some("#cloud-config\n".to_owned()),
            ..Default::default()
        });
        let seeded = plan(&instance(with_init.clone()), host, qemu).expect("qemu takes it");
        let seed = seeded.seed.expect("a seed");
        assert_eq!(seed.0[0], ("user-data", "#cloud-config\n".to_owned()));
        assert!(!format!("{seed:?}").contains("cloud-config"), "{seed:?}");
        let err = plan(&instance(with_init), host, Backend::Vmm).expect_err("vmm");
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        assert!(err.to_string().contains("--backend qemu"), "{err}");

        // A vsock device: the vmm backend's, refused on QEMU naming it.
        let mut with_vsock = InstanceSpec::microvm(&kernel);
        with_vsock.vsock = Some(zixiao_core::model::VsockSpec {
            cid: 42.try_into().expect("a CID"),
        });
        let planned = plan(&instance(with_vsock.clone()), host, Backend::Vmm).expect("vmm");
        assert_eq!(planned.vsock.map(zixiao_vmm::GuestCid::get), Some(42));
        let err = plan(&instance(with_vsock), host, qemu).expect_err("qemu");
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        assert!(err.to_string().contains("spec.vsock"), "{err}");
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
        let planned = plan(&vm, (4, 4096), Backend::Qemu).expect("plan");
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
