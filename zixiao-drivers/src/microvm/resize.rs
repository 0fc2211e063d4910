//! Resizing a running microVM: on the vmm backend its memory moves by the
//! balloon every VMM microVM has (the target is what the VMM booted with
//! minus the new size). One created with `max_memory_mib` boots with that
//! much, its balloon holding back the rest, so it shrinks and grows live
//! up to that maximum. Without one, it shrinks live and grows back only by
//! a restart: the size it booted with is the spec's memory at its start,
//! which the spec no longer holds once shrunk, and [`Resize::restart_needed`]
//! sees only specs. vCPUs, and anything on the qemu backend, need a
//! restart.

use async_trait::async_trait;
use zixiao_core::driver::Resize;
use zixiao_core::model::RuntimeSize;
use zixiao_core::{DriverError, Instance, InstanceSpec, RuntimeState};

use super::{Backend, MicrovmDriver};
use zixiao_core::Driver;

#[async_trait]
impl Resize for MicrovmDriver {
    async fn resize(&self, instance: &Instance) -> Result<(), DriverError> {
        let (dir, backend) = self.existing(instance)?;
        match backend {
            Backend::Vmm => {
                self.vmm_backend()?
                    .set_memory(&dir, instance.spec.memory_mib)
                    .await
            }
            // Not running: its next start takes the stored size.
            Backend::Qemu => match self.inspect(instance).await? {
                RuntimeState::Running | RuntimeState::Paused => Err(DriverError::Unsupported(
                    "the qemu backend cannot resize a running microVM; restart it".to_owned(),
                )),
                _ => Ok(()),
            },
        }
    }

    fn restart_needed(&self, running: &InstanceSpec, next: &InstanceSpec) -> Option<String> {
        if self.choose_for(running).ok() != Some(Backend::Vmm) {
            return Some("the qemu backend cannot change a running microVM's size".to_owned());
        }
        if next.cpus != running.cpus {
            return Some(format!(
                "cpus {} differs from the {} vCPUs it booted with (the vmm backend has no \
                 vCPU hotplug)",
                next.cpus, running.cpus
            ));
        }
        // The balloon moves memory within what the VMM booted with: the
        // maximum, else the spec's memory (at most that, once shrunk).
        match running.max_memory_mib {
            Some(max) if next.memory_mib > max => Some(format!(
                "memory {} MiB is above max_memory_mib {max} set at create",
                next.memory_mib
            )),
            None if next.memory_mib > running.memory_mib => Some(format!(
                "memory {} MiB is above the {} MiB it runs with (without max_memory_mib \
                 the vmm backend's balloon only takes memory back)",
                next.memory_mib, running.memory_mib
            )),
            _ => None,
        }
    }

    /// On the vmm backend, the vCPUs the running guest booted with and
    /// the memory its balloon leaves it (see `VmmBackend::running_size`);
    /// `None` on the qemu backend, which only resizes by a restart (so a
    /// running guest has its spec's size), and when nothing runs.
    async fn running_size(&self, instance: &Instance) -> Result<Option<RuntimeSize>, DriverError> {
        let (dir, backend) = match self.existing(instance) {
            Ok(found) => found,
            // Not created here (yet): nothing runs.
            Err(DriverError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        match backend {
            Backend::Vmm => self.vmm_backend()?.running_size(&dir).await,
            Backend::Qemu => Ok(None),
        }
    }
}
