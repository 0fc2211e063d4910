//! Countable resources: what a node offers and what an instance takes.

use serde::{Deserialize, Serialize};

use super::Cpus;

/// An amount of every resource the scheduler counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU, in thousandths of a core (see [`Cpus`]).
    pub cpus: Cpus,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Disk in GiB.
    pub disk_gib: u64,
    /// Number of instances (a node's capacity here is its instance limit).
    pub instances: u32,
}

impl Resources {
    /// Whether `other` fits in what is left of `self` after `used`.
    ///
    /// ```
    /// use zixiao_core::{Cpus, Resources};
    /// let capacity = Resources { cpus: Cpus::cores(4), memory_mib: 4096, disk_gib: 10, instances: 10 };
    /// let used = Resources { cpus: Cpus::cores(3), memory_mib: 1024, disk_gib: 0, instances: 1 };
    /// let want = Resources { cpus: Cpus::cores(2), memory_mib: 512, disk_gib: 0, instances: 1 };
    /// assert!(!capacity.fits(&used, &want));
    /// ```
    pub fn fits(&self, used: &Resources, other: &Resources) -> bool {
        let free = self.saturating_sub(used);
        other.cpus <= free.cpus
            && other.memory_mib <= free.memory_mib
            && other.disk_gib <= free.disk_gib
            && other.instances <= free.instances
    }

    /// Field-wise `self - other`, never below zero.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            cpus: self.cpus.saturating_sub(other.cpus),
            memory_mib: self.memory_mib.saturating_sub(other.memory_mib),
            disk_gib: self.disk_gib.saturating_sub(other.disk_gib),
            instances: self.instances.saturating_sub(other.instances),
        }
    }

    /// Field-wise `self + other`, saturating at the maximum.
    pub fn saturating_add(&self, other: &Resources) -> Resources {
        Resources {
            cpus: self.cpus.saturating_add(other.cpus),
            memory_mib: self.memory_mib.saturating_add(other.memory_mib),
            disk_gib: self.disk_gib.saturating_add(other.disk_gib),
            instances: self.instances.saturating_add(other.instances),
        }
    }
}
