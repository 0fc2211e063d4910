//! Sizes: what a domain is defined and runs with ([`DomainSize`], from an
//! instance's spec), and how a new one reaches it. A running domain takes
//! more vCPUs (hot-plugged) and new memory (its virtio balloon's target)
//! within the maximums it was defined with, and a bigger disk
//! (`virDomainBlockResize`), in place; beyond a maximum, or with fewer
//! vCPUs, it needs a restart ([`Resize::restart_needed`] says why), whose
//! start writes the new size into the definition. A stopped domain's definition is rewritten and its
//! overlay grown with `qemu-img resize`.

use async_trait::async_trait;
use virt::domain::Domain;
use virt::sys;
use zixiao_core::driver::Resize;
use zixiao_core::model::RuntimeSize;
use zixiao_core::{Cpus, DriverError, Instance, InstanceSpec};

use super::disks::{self, GIB};
use super::{error, LibvirtDriver};

/// The guest's disk: the overlay is attached as `vda` (see `xml`).
const DISK_TARGET: &str = "vda";

/// The size of a domain, as the instance's spec asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DomainSize {
    /// vCPUs it runs.
    pub(crate) vcpus: u32,
    /// The most it may run (`max_cpus`, else `vcpus`).
    pub(crate) max_vcpus: u32,
    /// Memory it runs with, in MiB.
    pub(crate) memory_mib: u64,
    /// The most it may run with (`max_memory_mib`, else `memory_mib`).
    pub(crate) max_memory_mib: u64,
    /// Its disk in bytes; 0: as made (the image's own size).
    pub(crate) disk_bytes: u64,
}

impl DomainSize {
    /// The size `spec` asks for. Errors: `InvalidArgument` naming the
    /// field (a fraction of a vCPU, no memory, a disk too large).
    pub(crate) fn of(spec: &InstanceSpec) -> Result<DomainSize, DriverError> {
        let vcpus = crate::errors::vcpus(spec)?;
        if spec.memory_mib == 0 {
            return Err(error::invalid("spec.memory_mib", "must be at least 1"));
        }
        let max_vcpus = match spec.max_cpus {
            Some(max) if !max.is_whole() => {
                return Err(error::invalid(
                    "spec.max_cpus",
                    format!("{max} is not a whole number of vCPUs"),
                ))
            }
            Some(max) => max.whole_cores().max(vcpus),
            None => vcpus,
        };
        let disk_bytes = spec.disk_gib.checked_mul(GIB).ok_or_else(|| {
            error::invalid(
                "spec.disk_gib",
                format!("{} GiB is too large", spec.disk_gib),
            )
        })?;
        Ok(DomainSize {
            vcpus,
            max_vcpus,
            memory_mib: spec.memory_mib,
            max_memory_mib: spec
                .max_memory_mib
                .unwrap_or(spec.memory_mib)
                .max(spec.memory_mib),
            disk_bytes,
        })
    }
}

/// Makes the definition of the inactive `domain` boot with `size`, its
/// maximums included, unless it does already. Its disk is not touched
/// (see [`grow_overlay`]).
pub(crate) fn define_size(
    domain: &Domain,
    name: &str,
    size: &DomainSize,
) -> Result<(), DriverError> {
    let kib = |mib: u64| mib.saturating_mul(1024);
    let info = domain
        .info()
        .map_err(|e| error::failed(format!("read the size of domain {name}"), e))?;
    let set = |what: &str, result: Result<(), virt::error::Error>| {
        result.map_err(|e| error::failed(format!("set the {what} of domain {name}"), e))
    };
    if info.max_mem != kib(size.max_memory_mib) || info.memory != kib(size.memory_mib) {
        // The maximum first: the current size may not exceed it, and a
        // lower maximum lowers the current size with it.
        set(
            "maximum memory",
            domain.set_memory_flags(
                kib(size.max_memory_mib),
                sys::VIR_DOMAIN_MEM_CONFIG | sys::VIR_DOMAIN_MEM_MAXIMUM,
            ),
        )?;
        set(
            "memory",
            domain.set_memory_flags(kib(size.memory_mib), sys::VIR_DOMAIN_MEM_CONFIG),
        )?;
    }
    let max_vcpus = domain
        .vcpus_flags(sys::VIR_DOMAIN_VCPU_CONFIG | sys::VIR_DOMAIN_VCPU_MAXIMUM)
        .map_err(|e| error::failed(format!("read the vCPUs of domain {name}"), e))?;
    if info.nr_virt_cpu != size.vcpus || max_vcpus != size.max_vcpus {
        set(
            "maximum vCPUs",
            domain.set_vcpus_flags(
                size.max_vcpus,
                sys::VIR_DOMAIN_VCPU_CONFIG | sys::VIR_DOMAIN_VCPU_MAXIMUM,
            ),
        )?;
        set(
            "vCPUs",
            domain.set_vcpus_flags(size.vcpus, sys::VIR_DOMAIN_VCPU_CONFIG),
        )?;
    }
    Ok(())
}

/// Grows the overlay of a stopped domain to `bytes` (0, or its size
/// already: nothing to do). Errors: `InvalidArgument` on `disk_gib` when
/// it is bigger than that (disks only grow), qemu-img's.
pub(crate) fn grow_overlay(overlay: &std::path::Path, bytes: u64) -> Result<(), DriverError> {
    if bytes == 0 || !overlay.is_file() {
        return Ok(());
    }
    let current = disks::inspect(overlay)?.virtual_size;
    refuse_shrink(bytes, current)?;
    if bytes > current {
        let size = bytes.to_string();
        disks::qemu_img(&[
            "resize".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            overlay.as_os_str(),
            size.as_ref(),
        ])?;
    }
    Ok(())
}

/// Refuses a disk of `asked` bytes smaller than the `current` one.
fn refuse_shrink(asked: u64, current: u64) -> Result<(), DriverError> {
    if asked < current {
        return Err(error::invalid(
            "disk_gib",
            format!(
                "disks only grow: {} GiB is below the current {:.2} GiB",
                asked / GIB,
                current as f64 / GIB as f64
            ),
        ));
    }
    Ok(())
}

/// Gives the running `domain` `size` in place: vCPUs, the balloon's
/// target and the disk, each in the running domain and its definition.
/// Errors: `FailedPrecondition` (beyond a maximum: a restart is needed),
/// `InvalidArgument` (a smaller disk), libvirt's.
fn resize_live(domain: &Domain, name: &str, size: &DomainSize) -> Result<(), DriverError> {
    let failed = |what: &str| {
        let what = format!("{what} of domain {name}");
        move |e| error::failed(what, e)
    };
    let live = sys::VIR_DOMAIN_VCPU_LIVE;
    let config = sys::VIR_DOMAIN_VCPU_CONFIG;
    let max_vcpus = domain
        .vcpus_flags(live | sys::VIR_DOMAIN_VCPU_MAXIMUM)
        .map_err(failed("read the maximum vCPUs"))?;
    let info = domain.info().map_err(failed("read the size"))?;
    let memory_kib = size.memory_mib.saturating_mul(1024);
    if size.vcpus > max_vcpus || memory_kib > info.max_mem {
        return Err(DriverError::FailedPrecondition(format!(
            "domain {name} runs at most {max_vcpus} vCPUs and {} MiB: {} vCPUs and {} MiB \
             need a restart",
            info.max_mem / 1024,
            size.vcpus,
            size.memory_mib
        )));
    }
    if domain.vcpus_flags(live).map_err(failed("read the vCPUs"))? != size.vcpus {
        domain
            .set_vcpus_flags(size.vcpus, live)
            .map_err(failed("hot-plug the vCPUs"))?;
    }
    if domain
        .vcpus_flags(config)
        .map_err(failed("read the vCPUs"))?
        != size.vcpus
    {
        domain
            .set_vcpus_flags(size.vcpus, config)
            .map_err(failed("set the vCPUs"))?;
    }
    // The balloon's target; the guest gives back or takes the difference.
    domain
        .set_memory_flags(memory_kib, sys::VIR_DOMAIN_MEM_LIVE)
        .map_err(failed("set the balloon target"))?;
    domain
        .set_memory_flags(memory_kib, sys::VIR_DOMAIN_MEM_CONFIG)
        .map_err(failed("set the memory"))?;
    if size.disk_bytes > 0 {
        let capacity = domain
            .block_info(DISK_TARGET, 0)
            .map_err(failed("read the disk size"))?
            .capacity;
        refuse_shrink(size.disk_bytes, capacity)?;
        if size.disk_bytes > capacity {
            domain
                .block_resize(
                    DISK_TARGET,
                    size.disk_bytes,
                    sys::VIR_DOMAIN_BLOCK_RESIZE_BYTES,
                )
                .map_err(failed("grow the disk"))?;
        }
    }
    Ok(())
}

#[async_trait]
impl Resize for LibvirtDriver {
    /// A running domain in place (within its maximums); a stopped one's
    /// definition and overlay.
    async fn resize(&self, instance: &Instance) -> Result<(), DriverError> {
        let size = DomainSize::of(&instance.spec)?;
        let overlay = self.overlay_path(instance)?;
        let has_disk = instance.spec.image.is_some() || instance.spec.disk_gib > 0;
        if size.disk_bytes > 0 && !has_disk {
            return Err(error::invalid(
                "disk_gib",
                "the vm has no disk to grow (it boots a kernel without one)",
            ));
        }
        self.with_domain(instance, "resize", move |domain, name| {
            let active = domain
                .is_active()
                .map_err(|e| error::failed(format!("read state of domain {name}"), e))?;
            if active {
                resize_live(domain, name, &size)
            } else {
                grow_overlay(&overlay, size.disk_bytes)?;
                define_size(domain, name, &size)
            }
        })
        .await
    }

    fn restart_needed(&self, running: &InstanceSpec, next: &InstanceSpec) -> Option<String> {
        running.vm_restart_needed(next)
    }

    /// The running domain's vCPUs and the memory its balloon leaves the
    /// guest (`virsh dominfo`'s `CPU(s)` and `Used memory`).
    async fn running_size(&self, instance: &Instance) -> Result<Option<RuntimeSize>, DriverError> {
        let size = self
            .with_domain_if_any(instance, "read the size", |domain, name| {
                let active = domain
                    .is_active()
                    .map_err(|e| error::failed(format!("read state of domain {name}"), e))?;
                if !active {
                    return Ok(None);
                }
                let info = domain
                    .info()
                    .map_err(|e| error::failed(format!("read the size of domain {name}"), e))?;
                Ok(Some(RuntimeSize {
                    cpus: Cpus::cores(info.nr_virt_cpu),
                    memory_mib: info.memory / 1024,
                }))
            })
            .await?;
        Ok(size.flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zixiao_core::InstanceType;

    fn vm(cpus: u32, memory_mib: u64) -> InstanceSpec {
        let mut spec = InstanceSpec::empty(InstanceType::Vm, cpus, memory_mib);
        spec.image = Some("base".into());
        spec
    }

    #[test]
    fn a_size_without_maximums_is_its_own_maximum() {
        let size = DomainSize::of(&vm(2, 256)).expect("size");
        assert_eq!((size.max_vcpus, size.max_memory_mib), (2, 256));
        let mut spec = vm(1, 256);
        spec.max_cpus = Some(Cpus::from_millis(1500));
        assert!(DomainSize::of(&spec).is_err());
    }

    #[test]
    fn a_smaller_disk_is_refused() {
        assert!(refuse_shrink(2 * GIB, GIB).is_ok());
        let err = refuse_shrink(GIB, 2 * GIB).unwrap_err();
        assert!(err.to_string().contains("disks only grow"), "{err}");
    }
}
