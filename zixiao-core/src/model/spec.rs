//! What a user asks for: [`CreateInstance`] and its [`InstanceSpec`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{
    CloudInit, Cpus, DiskSpec, PublishedPort, PullPolicy, Resources, SnapshotSchedule, VsockSpec,
};
use crate::scheduler::{CarbonPolicy, GroupRule, LabelSelector, Strategy, ZoneSpread};
use crate::Error;

/// The kind of workload, which decides the runtime driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceType {
    /// A full virtual machine (libvirt).
    Vm,
    /// An OCI container (containerd).
    Container,
    /// A microVM booted from a kernel (our own KVM monitor, or QEMU microvm).
    Microvm,
}

impl InstanceType {
    /// Every type, in display order.
    pub const ALL: [InstanceType; 3] = [
        InstanceType::Vm,
        InstanceType::Container,
        InstanceType::Microvm,
    ];

    /// The lowercase name used on the command line and in output.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceType::Vm => "vm",
            InstanceType::Container => "container",
            InstanceType::Microvm => "microvm",
        }
    }
}

impl fmt::Display for InstanceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for InstanceType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "vm" => Ok(InstanceType::Vm),
            "container" => Ok(InstanceType::Container),
            "microvm" => Ok(InstanceType::Microvm),
            other => Err(Error::invalid(
                "spec.type",
                format!("unknown instance type `{other}`: expected vm, container or microvm"),
            )),
        }
    }
}

/// Which monitor runs a microVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MicrovmBackend {
    /// The node decides: our own VMM where KVM is hardware-backed, QEMU otherwise.
    #[default]
    Auto,
    /// Zixiao's own KVM monitor (`zixiao-vmm`).
    Vmm,
    /// `qemu-system-x86_64 -M microvm`.
    Qemu,
}

impl MicrovmBackend {
    /// The lowercase name used on the command line and in output.
    pub fn as_str(self) -> &'static str {
        match self {
            MicrovmBackend::Auto => "auto",
            MicrovmBackend::Vmm => "vmm",
            MicrovmBackend::Qemu => "qemu",
        }
    }

    fn is_auto(&self) -> bool {
        *self == MicrovmBackend::Auto
    }
}

impl fmt::Display for MicrovmBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MicrovmBackend {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "auto" => Ok(MicrovmBackend::Auto),
            "vmm" => Ok(MicrovmBackend::Vmm),
            "qemu" => Ok(MicrovmBackend::Qemu),
            other => Err(Error::invalid(
                "spec.backend",
                format!("unknown microvm backend `{other}`: expected auto, vmm or qemu"),
            )),
        }
    }
}

/// What happens when an instance's workload exits by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    /// Leave it stopped.
    #[default]
    Never,
    /// Restart it when it exits with a failure.
    OnFailure,
    /// Always restart it.
    Always,
}

impl FromStr for RestartPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "never" => Ok(RestartPolicy::Never),
            "on-failure" | "on_failure" => Ok(RestartPolicy::OnFailure),
            "always" => Ok(RestartPolicy::Always),
            other => Err(Error::invalid(
                "spec.restart",
                format!("unknown restart policy `{other}`: expected never, on-failure or always"),
            )),
        }
    }
}

/// Where an instance may be placed, and how it prefers to be placed.
///
/// ```yaml
/// placement:
///   zone: z1
///   node_selector:                 # or the original map form: {disk: ssd}
///     - {key: disk, operator: in, values: [ssd, nvme]}
///     - {key: gpu, operator: does_not_exist}
///   forbidden_traits: [spot]
///   groups: [{name: db, policy: anti_affinity, scope: zone}]
///   spread: {group: db, targets: {z1: 50, z2: 50}}
///   strategy: spread
///   carbon: {max_intensity: 200}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// Only nodes in this region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Only nodes in this zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Only nodes whose labels meet all these requirements.
    #[serde(default, skip_serializing_if = "LabelSelector::is_empty")]
    pub node_selector: LabelSelector,
    /// Only nodes declaring all these traits.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub required_traits: BTreeSet<String>,
    /// Only nodes declaring none of these traits.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub forbidden_traits: BTreeSet<String>,
    /// Only nodes in every one of these host aggregates.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub aggregates: BTreeSet<String>,
    /// Only nodes in at least one host aggregate whose metadata meets all
    /// these requirements.
    #[serde(default, skip_serializing_if = "LabelSelector::is_empty")]
    pub aggregate_selector: LabelSelector,
    /// Groups the instance is a member of, each with its (anti-)affinity policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupRule>,
    /// Spread across zones towards target shares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<ZoneSpread>,
    /// Overrides the cluster's default strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// Prefer low-carbon nodes, optionally with a hard maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carbon: Option<CarbonPolicy>,
}

/// What to run and with how much: the part of an instance a user writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    /// The workload's kind.
    #[serde(rename = "type")]
    pub instance_type: InstanceType,
    /// Image: an OCI image reference for containers; for VMs a disk image,
    /// by its name in the node's image store (or, for the local
    /// administrator only, an absolute path on the node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU. For a container, its request: what placement reserves on the
    /// node and its share of CPU time under contention (`0.25`, `250m`);
    /// it may use idle CPU beyond that unless [`Self::cpu_limit`] caps
    /// it. For a VM or microVM, its vCPUs: whole cores, all reserved.
    pub cpus: Cpus,
    /// Containers only: the most CPU it may use (the cgroup's CFS quota),
    /// at least [`Self::cpus`]. None: no cap beyond the node's idle CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<Cpus>,
    /// Memory in MiB: what placement reserves, and the most it may use
    /// unless [`Self::memory_limit_mib`] allows more.
    pub memory_mib: u64,
    /// Containers only: the most memory it may use (the cgroup's limit)
    /// when that is more than it reserves. None: [`Self::memory_mib`].
    /// Memory beyond the reservation is not promised: under pressure the
    /// container is the one the kernel reclaims from or kills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_mib: Option<u64>,
    /// VMs only: the most vCPUs a live resize may give it (whole cores,
    /// at least [`Self::cpus`]). The domain is defined with this many and
    /// runs [`Self::cpus`] of them; placement reserves [`Self::cpus`]
    /// only. None: its vCPUs change only through a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cpus: Option<Cpus>,
    /// VMs and microVMs (the vmm backend's; the qemu backend refuses
    /// it): the most memory in MiB a live resize may give it (at least
    /// [`Self::memory_mib`]): the guest boots with this much and a balloon
    /// hands back what is above [`Self::memory_mib`]; placement reserves
    /// [`Self::memory_mib`] only. None: its memory grows only through a
    /// restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mib: Option<u64>,
    /// Disk in GiB (0: the image's own size, or none).
    #[serde(default)]
    pub disk_gib: u64,
    /// Kernel to boot directly (VMs and microVMs): a kernel image's name in
    /// the node's image store, or (local administrator only) an absolute
    /// path on the node. See [`super::NodeFile`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk for the kernel: an initrd image's name in the node's
    /// image store, or (local administrator only) an absolute path on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// Which monitor runs a microVM (microVMs only).
    #[serde(default, skip_serializing_if = "MicrovmBackend::is_auto")]
    pub backend: MicrovmBackend,
    /// A microVM snapshot directory (taken by the `vmm` backend) to resume
    /// from instead of booting the kernel, an absolute path on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<PathBuf>,
    /// Names of the networks the instance joins, in interface order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// Ports of its node forwarded to its address on its first network
    /// (`8080:80`, `192.0.2.7:53:53/udp`): see [`PublishedPort`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<PublishedPort>,
    /// Command and arguments (containers): replaces the image's entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Environment variables (containers).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// What to do when the workload exits by itself.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Where it may run.
    #[serde(default)]
    pub placement: Placement,
    /// Snapshots taken in the background, and how many of them are kept
    /// (VMs and microVMs on the `vmm` backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_schedule: Option<SnapshotSchedule>,
    /// VMs and QEMU microVMs: first-boot data for cloud-init in the guest
    /// (user data, SSH keys), given to it on a read-only `cidata` disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init: Option<CloudInit>,
    /// microVMs only: disks besides the kernel and initrd, in guest order
    /// (`/dev/vda`, ...): raw images of the node's store (see [`DiskSpec`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskSpec>,
    /// microVMs on the `vmm` backend only: a virtio-vsock device with this
    /// guest CID, its host side a Unix socket of the microVM's on its node
    /// (see [`super::VsockEndpoint`], which `instance get` shows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<VsockSpec>,
    /// When the create pulls what [`Self::image`], [`Self::kernel`] and
    /// [`Self::initrd`] name by registry reference: only what the node
    /// lacks (the default), always, or never.
    #[serde(default, skip_serializing_if = "PullPolicy::is_missing")]
    pub pull: PullPolicy,
}

impl InstanceSpec {
    /// A container spec for `image` requesting
    /// [`InstanceSpec::DEFAULT_CONTAINER_CPUS`] (with no cap) and 128 MiB.
    pub fn container(image: impl Into<String>) -> Self {
        InstanceSpec {
            image: Some(image.into()),
            cpus: Self::DEFAULT_CONTAINER_CPUS,
            ..Self::empty(InstanceType::Container, 1, 128)
        }
    }

    /// What a container requests when nobody says: a tenth of a core, so
    /// dozens of small containers fit on a laptop. It is a reservation and
    /// a weight, not a cap: an uncapped container uses whatever is idle.
    pub const DEFAULT_CONTAINER_CPUS: Cpus = Cpus::from_millis(100);

    /// What an instance of `instance_type` requests when nobody says:
    /// [`Self::DEFAULT_CONTAINER_CPUS`] for containers, one vCPU for VMs
    /// and microVMs (they reserve what they get).
    pub fn default_cpus(instance_type: InstanceType) -> Cpus {
        match instance_type {
            InstanceType::Container => Self::DEFAULT_CONTAINER_CPUS,
            InstanceType::Vm | InstanceType::Microvm => Cpus::cores(1),
        }
    }

    /// A microVM spec booting `kernel` with 1 CPU and 128 MiB.
    pub fn microvm(kernel: impl Into<PathBuf>) -> Self {
        InstanceSpec {
            kernel: Some(kernel.into()),
            ..Self::empty(InstanceType::Microvm, 1, 128)
        }
    }

    /// A VM spec booting from the disk image `image` with 1 CPU and 512 MiB.
    pub fn vm(image: impl Into<String>) -> Self {
        InstanceSpec {
            image: Some(image.into()),
            ..Self::empty(InstanceType::Vm, 1, 512)
        }
    }

    /// A spec of `instance_type` with `cpus` whole cores and nothing else set.
    pub fn empty(instance_type: InstanceType, cpus: u32, memory_mib: u64) -> Self {
        InstanceSpec {
            instance_type,
            image: None,
            cpus: Cpus::cores(cpus),
            cpu_limit: None,
            memory_mib,
            memory_limit_mib: None,
            max_cpus: None,
            max_memory_mib: None,
            disk_gib: 0,
            kernel: None,
            initrd: None,
            cmdline: None,
            backend: MicrovmBackend::Auto,
            restore_from: None,
            networks: Vec::new(),
            publish: Vec::new(),
            command: Vec::new(),
            env: BTreeMap::new(),
            restart: RestartPolicy::Never,
            placement: Placement::default(),
            snapshot_schedule: None,
            cloud_init: None,
            disks: Vec::new(),
            vsock: None,
            pull: PullPolicy::Missing,
        }
    }

    /// The same spec with `command`.
    pub fn with_command<S: Into<String>>(mut self, command: impl IntoIterator<Item = S>) -> Self {
        self.command = command.into_iter().map(Into::into).collect();
        self
    }

    /// The same spec with `cpus` whole cores and `memory_mib` MiB.
    pub fn with_size(mut self, cpus: u32, memory_mib: u64) -> Self {
        self.cpus = Cpus::cores(cpus);
        self.memory_mib = memory_mib;
        self
    }

    /// Why a VM running with this spec cannot take `next`'s size in
    /// place (`"cpus 4 is above max_cpus 2 set at create"`), or `None`
    /// when it can: its domain was defined with [`Self::max_cpus`] and
    /// [`Self::max_memory_mib`] (else its size), and vCPUs are added and
    /// memory moved (by the balloon) within them. Fewer vCPUs need a
    /// restart too: unplugging one waits on the guest, which may never
    /// let it go. What [`Resize::restart_needed`] answers for VMs.
    ///
    /// [`Resize::restart_needed`]: crate::driver::Resize::restart_needed
    ///
    /// ```
    /// use zixiao_core::{Cpus, InstanceSpec};
    /// let mut running = InstanceSpec::vm("disk").with_size(1, 256);
    /// running.max_cpus = Some(Cpus::cores(2));
    /// assert_eq!(running.vm_restart_needed(&running.clone().with_size(2, 256)), None);
    /// assert_eq!(
    ///     running.vm_restart_needed(&running.clone().with_size(4, 256)).as_deref(),
    ///     Some("cpus 4 is above max_cpus 2 set at create"),
    /// );
    /// ```
    pub fn vm_restart_needed(&self, next: &InstanceSpec) -> Option<String> {
        let max_cpus = self.max_cpus.unwrap_or(self.cpus);
        if next.cpus > max_cpus {
            return Some(match self.max_cpus {
                Some(max) => format!("cpus {} is above max_cpus {max} set at create", next.cpus),
                None => format!(
                    "cpus {} is above the {} vCPUs its domain was defined with (no max_cpus)",
                    next.cpus, self.cpus
                ),
            });
        }
        if next.cpus < self.cpus {
            return Some(format!(
                "cpus {} is below the {} vCPUs it runs: a running guest gives up a vCPU \
                 only if it cooperates",
                next.cpus, self.cpus
            ));
        }
        let max_memory = self.max_memory_mib.unwrap_or(self.memory_mib);
        if next.memory_mib > max_memory {
            return Some(match self.max_memory_mib {
                Some(max) => format!(
                    "memory {} MiB is above max_memory_mib {max} set at create",
                    next.memory_mib
                ),
                None => format!(
                    "memory {} MiB is above the {} MiB its domain was defined with \
                     (no max_memory_mib)",
                    next.memory_mib, self.memory_mib
                ),
            });
        }
        None
    }

    /// What the instance takes from its node: its size, not its
    /// maximums (a VM's `max_cpus` and `max_memory_mib` are not reserved).
    pub fn resources(&self) -> Resources {
        Resources {
            cpus: self.cpus,
            memory_mib: self.memory_mib,
            disk_gib: self.disk_gib,
            instances: 1,
        }
    }
}

/// A request to create an instance: its identity and its spec.
///
/// As YAML (`zixiao instance create -f web.yaml`):
/// ```yaml
/// name: web
/// labels: { app: web }
/// spec:
///   type: container
///   image: busybox
///   cpus: 1
///   memory_mib: 64
///   command: [echo, hi]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateInstance {
    /// Unique name, a DNS label.
    pub name: String,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// What to run.
    pub spec: InstanceSpec,
}

impl CreateInstance {
    /// A request for `name` running `spec`, without labels.
    pub fn new(name: impl Into<String>, spec: InstanceSpec) -> Self {
        CreateInstance {
            name: name.into(),
            labels: BTreeMap::new(),
            spec,
        }
    }
}
