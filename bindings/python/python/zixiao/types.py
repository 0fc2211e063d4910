"""Request dataclasses and the shapes of results.

``InstanceSpec`` and ``CreateInstance`` mirror the core's serde types of the
same names; a field left ``None`` is left out, so the core's default applies.
Results are plain dicts; the ``TypedDict`` classes here describe them for
type checkers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, TypedDict, Union


InstanceType = Literal["vm", "container", "microvm"]
ImageKind = Literal["container", "disk", "kernel", "initrd"]
MigrationMode = Literal["auto", "cold", "live", "restart"]
"""How ``migrate_instance`` moves an instance; ``live`` moves a running VM
between libvirt nodes, ``cold`` stops a VM, copies its disk and starts it on
the target from the copy."""
InstanceStatus = Literal[
    "pending",
    "scheduled",
    "creating",
    "running",
    "paused",
    "stopping",
    "stopped",
    "failed",
    "deleting",
]
DesiredState = Literal["running", "stopped", "deleted"]
NodeStatus = Literal[
    "ready",
    "not_ready",
    "cordoned",
    "maintenance",
    "draining",
    "decommissioned",
    "onboarding",
    "onboarding_failed",
]
RestartPolicy = Literal["never", "on_failure", "always"]
PullPolicy = Literal["missing", "always", "never"]
MicrovmBackend = Literal["auto", "vmm", "qemu"]


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


class SnapshotSchedule(TypedDict):
    """Snapshot every ``every`` (``"1h"``, ``"30m"``, ``"7d"``; at least
    ``"1m"``) and keep the newest ``keep`` (at least 1) of those snapshots,
    named ``auto-YYYYMMDD-HHMMSS``; hand-made snapshots are never deleted."""

    every: str
    keep: int


class DiskSpec(TypedDict, total=False):
    """A microVM's disk (the core's ``DiskSpec``)."""

    image: str
    """A raw disk image's name in the node's store, a registry reference,
    or (local administrator only) an absolute path on the node."""
    read_only: bool
    """The guest sees it read-only and the image is used as it is."""


class VsockSpec(TypedDict, total=False):
    """A microVM's virtio-vsock device (``vmm`` backend only)."""

    cid: int
    """The guest's CID: 3 (the default) or more, below 4294967295."""


class VsockEndpoint(TypedDict):
    """Where the host side of a microVM's vsock device is."""

    socket: str
    """A Unix socket path on the instance's node (in a cluster, not on the
    caller's machine): connect, write ``CONNECT <port>\\n`` and read
    ``OK <host port>\\n`` to reach the guest's vsock port; the guest's
    connections to host port P go to the socket ``<socket>_P``."""
    cid: int
    """The guest's CID."""


class ScheduledSnapshot(TypedDict):
    """The last snapshot a schedule took."""

    name: str
    at: str


@dataclass
class InstanceSpec:
    """What to run and with how much (the core's ``InstanceSpec``)."""

    type: InstanceType
    """The workload's kind: ``vm``, ``container`` or ``microvm``."""
    cpus: Union[int, float, str]
    """CPU: cores (``2``, ``0.5``) or millicores (``"250m"``). A container's
    request (what its node reserves; it may use idle CPU beyond it unless
    ``cpu_limit`` caps it); a VM's or microVM's vCPUs, whole cores."""
    memory_mib: int
    """Memory in MiB: what the node reserves, and the cap unless
    ``memory_limit_mib`` allows more."""
    image: Optional[str] = None
    """An OCI image reference (containers) or a disk image (VMs)."""
    disk_gib: Optional[int] = None
    """Disk in GiB (default 0: the image's own size, or none)."""
    kernel: Optional[str] = None
    """Kernel to boot directly (VMs, microVMs), an absolute path on the node."""
    initrd: Optional[str] = None
    """Initial ramdisk, an absolute path on the node."""
    cmdline: Optional[str] = None
    """Kernel command line."""
    backend: Optional[MicrovmBackend] = None
    """Which monitor runs a microVM (default ``auto``: the node's choice)."""
    command: Optional[List[str]] = None
    """Command and arguments (containers): replaces the image's entrypoint."""
    env: Optional[Dict[str, str]] = None
    """Environment variables (containers)."""
    restart: Optional[RestartPolicy] = None
    """What to do when the workload exits by itself (default ``never``)."""
    placement: Optional[Dict[str, Any]] = None
    """Where it may run: ``zone``, ``region``, ``node_selector``, ... as in the YAML spec."""
    networks: Optional[List[str]] = None
    """Names of the networks it joins (``create_network`` first), in interface order."""
    snapshot_schedule: Optional["SnapshotSchedule"] = None
    """Snapshots taken in the background by the server's reconciler (VMs,
    microVMs on the ``vmm`` backend): ``{"every": "1h", "keep": 24}``."""
    cpu_limit: Optional[Union[int, float, str]] = None
    """Containers: the most CPU it may use, at least ``cpus`` (default: no cap)."""
    memory_limit_mib: Optional[int] = None
    """Containers: the most memory it may use, at least ``memory_mib``."""
    max_cpus: Optional[Union[int, float, str]] = None
    """VMs: the most vCPUs ``update_instance`` may give it live (whole
    cores, at least ``cpus``); the node reserves ``cpus`` only."""
    max_memory_mib: Optional[int] = None
    """VMs: the most memory in MiB ``update_instance`` may give it live (at
    least ``memory_mib``, held back by a balloon); the node reserves
    ``memory_mib`` only."""
    disks: Optional[List["DiskSpec"]] = None
    """microVMs: disks besides the kernel, in guest order: raw images of
    the node's store, ``{"image": "data"}`` (the instance writes its own
    copy) or ``{"image": "tools", "read_only": True}``."""
    vsock: Optional["VsockSpec"] = None
    """microVMs on the ``vmm`` backend: a virtio-vsock device,
    ``{"cid": 42}`` (``{}``: CID 3); ``get_instance`` names its socket."""
    pull: Optional[PullPolicy] = None
    """When the node pulls ``image``, ``kernel`` and ``initrd`` given as
    registry references: ``missing`` (default; only what it lacks),
    ``always`` (a moved tag gives its new digest) or ``never`` (a missing
    image fails the create with ``FailedPrecondition``)."""

    def to_dict(self) -> Dict[str, Any]:
        """The spec as the dict the controller reads, without unset fields."""
        return _without_none(dataclasses.asdict(self))


@dataclass
class CreateInstance:
    """A request to create an instance (the core's ``CreateInstance``)."""

    name: str
    """Unique name, a DNS label."""
    spec: Union[InstanceSpec, Dict[str, Any]]
    """What to run."""
    labels: Dict[str, str] = field(default_factory=dict)
    """Free-form labels."""

    def to_dict(self) -> Dict[str, Any]:
        """The request as the dict the controller reads, without unset fields."""
        spec = self.spec.to_dict() if isinstance(self.spec, InstanceSpec) else self.spec
        return {"name": self.name, "labels": dict(self.labels), "spec": spec}


class Resources(TypedDict):
    cpus: Union[int, float]
    """CPU in cores (``0.25``); whole amounts are ints."""
    memory_mib: int
    disk_gib: int
    instances: int


class Condition(TypedDict):
    type: Literal["scheduled", "runtime_ready", "exited", "snapshot_schedule"]
    status: bool
    reason: str
    message: str
    since: str


class ExitStatus(TypedDict):
    code: int
    oom_killed: bool
    at: str


class IpConfig(TypedDict):
    """One address of an attachment, with its prefix length and gateway."""

    address: str
    prefix_len: int
    gateway: str


class _NetworkAttachmentOptional(TypedDict, total=False):
    installation: str
    """The network's installation (absent when recorded before installation ids)."""


class NetworkAttachment(_NetworkAttachmentOptional):
    """An instance's place on one network, allocated when it is created."""

    network: str
    interface: str
    """The interface inside the instance: ``eth0``, ``eth1``, ... in spec order."""
    host_interface: str
    """The host-side veth (containers) or TAP device (VMs, microVMs)."""
    bridge: str
    mac: str
    """A stable, locally administered MAC address."""
    addresses: List[IpConfig]
    """One address per subnet of the network."""


class _InstanceOptional(TypedDict, total=False):
    attachments: List[NetworkAttachment]
    """One per network of ``spec["networks"]``, in order; absent when it joins none."""
    last_scheduled_snapshot: ScheduledSnapshot
    """The last snapshot its schedule took; absent before the first."""
    operation: str
    """The last operation started on it (``op-...``), in the answers of the
    calls that start one and of ``get_instance``."""
    vsock: VsockEndpoint
    """Where the host side of its vsock device (``spec["vsock"]``) is, once
    its node created it; absent without one."""


class Instance(_InstanceOptional):
    """An instance as stored: identity, intent, observation."""

    id: str
    name: str
    labels: Dict[str, str]
    spec: Dict[str, Any]
    desired: DesiredState
    status: InstanceStatus
    node: Optional[str]
    conditions: List[Condition]
    exit: Optional[ExitStatus]
    reschedule: bool
    restarts_requested: int
    restarts_done: int
    created_at: str
    updated_at: str
    started_at: Optional[str]
    revision: int


class _InstancePageOptional(TypedDict, total=False):
    next_page_token: str
    """Pass back as ``page_token`` for the next page; absent after the last."""


class InstancePage(_InstancePageOptional):
    """One page of ``list_instances_page``."""

    instances: List[Instance]


class NodeMetadata(TypedDict, total=False):
    """Labels and traits from one source: a node's agent, or its operators."""

    labels: Dict[str, str]
    traits: List[str]


class Aggregate(TypedDict):
    """A host aggregate: a named group of nodes with metadata."""

    name: str
    metadata: Dict[str, str]
    nodes: List[str]
    created_at: str
    updated_at: str


class Node(TypedDict, total=False):
    """A node as stored. ``labels`` and ``traits`` are what placement
    matches: ``reported`` (its agent's, read-only) and ``operator`` (set
    with ``label_node`` and ``add_node_traits``) merged; either is left out
    when empty."""

    id: str
    hostname: str
    address: str
    region: str
    zone: str
    role: Literal["worker", "control", "combined"]
    status: NodeStatus
    capacity: Resources
    allocated: Resources
    labels: Dict[str, str]
    traits: List[str]
    reported: NodeMetadata
    operator: NodeMetadata
    runtimes: List[InstanceType]
    missing_runtimes: Dict[str, str]
    carbon_intensity: Optional[int]
    last_heartbeat: Optional[str]
    created_at: str
    updated_at: str
    revision: int


class InstanceEvent(TypedDict):
    """One change of one instance, from ``watch_instances``."""

    kind: Literal["added", "modified", "deleted"]
    revision: int
    instance: Optional[Instance]
    id: str


class ClusterInfo(TypedDict):
    nodes: int
    nodes_by_status: Dict[str, int]
    instances: int
    instances_by_type: Dict[str, Dict[str, int]]
    capacity: Resources
    allocated: Resources
    schedulable_free: Resources


class InstanceStats(TypedDict):
    cpu_time_ns: int
    memory_bytes: int
    memory_limit_bytes: Optional[int]
    pids: Optional[int]
    disk_read_bytes: Optional[int]
    disk_write_bytes: Optional[int]
    net_rx_bytes: Optional[int]
    net_tx_bytes: Optional[int]


class StatsSample(InstanceStats):
    """One sample of a server's stats history: `at` (RFC 3339) and the
    usage then; counters are totals since the instance started."""

    at: str


class NodeUsageSample(TypedDict):
    """One sample of what a node's instances used together: `at` (RFC
    3339), how many `instances` were sampled, the CPU they used since the
    sample before in thousandths of a core, and their memory in bytes.
    Then what the whole host used (every process) and its capacity, in the
    same units, and its one-minute load: `None` when unknown (no reading
    arrived for that sample, e.g. from an older agent)."""

    at: str
    instances: int
    cpu_millicores: int
    memory_bytes: int
    host_cpu_millicores: Optional[int]
    host_cpu_capacity_millicores: Optional[int]
    host_memory_bytes: Optional[int]
    host_memory_capacity_bytes: Optional[int]
    host_load1: Optional[float]


class MigratedInstance(TypedDict):
    """An instance a drain or a maintenance migrated, and how."""

    name: str
    mode: Literal["live", "cold"]
    to: str


class DrainReport(TypedDict):
    """What a drain, a maintenance or a decommission did to each instance:
    ``migrated`` (live or cold, disks kept), ``moved`` (restarted elsewhere
    from their images), ``pending`` or ``stopped``; ``not_migrated`` says
    why a VM did not migrate."""

    node: str
    migrated: List[MigratedInstance]
    moved: List[str]
    pending: List[str]
    stopped: List[str]
    status: Optional[NodeStatus]
    not_migrated: Dict[str, str]


class NodeEvent(TypedDict):
    """One change of one node, from ``watch_nodes``."""

    kind: Literal["added", "modified", "deleted"]
    revision: int
    node: Optional[Node]
    id: str


class Snapshot(TypedDict):
    """A snapshot of one instance, from ``create_snapshot`` and ``list_snapshots``."""

    name: str
    created_at: Optional[str]
    includes_memory: bool
    """Whether it holds the memory (the instance was running) as well as the disks."""
    current: bool
    """Whether it is the one the instance last took or reverted to."""


class Image(TypedDict):
    """An image a node's runtime holds, from ``import_images`` and ``list_images``."""

    name: str
    digest: str
    size_bytes: int
    kind: ImageKind
    """``container``, or ``disk``, ``kernel``, ``initrd`` of the node's image store."""
    format: Optional[str]
    """The store images' format (``qcow2``, ``raw``, ``bzimage``, ``elf``, ``cpio``...); absent for containers."""
    created_at: Optional[str]
    """When it was imported (RFC 3339), where the runtime records it."""


class StoreSummary(TypedDict):
    """What a state backup holds, from ``backup_state``."""

    revision: int
    keys: int
    history: int
    leases: int


class Subnet(TypedDict):
    cidr: str
    gateway: str
    reserved: List[str]


class _NetworkOptional(TypedDict, total=False):
    deleting: bool
    """Present (``True``) while the network is being deleted."""
    installation: str
    """The store's installation id (absent when stored before installation ids)."""


class Network(_NetworkOptional):
    """A network as stored: a bridge on every node with one IPv4 and/or one IPv6 subnet."""

    name: str
    subnets: List[Subnet]
    bridge: str
    nat: bool
    isolated: bool
    created_at: str
    revision: int


class _CreateNetworkRequired(TypedDict):
    name: str
    """Unique name, a DNS label."""
    subnets: List[str]
    """CIDR prefixes, at most one IPv4 and one IPv6: ``["10.10.0.0/24"]``."""


class CreateNetwork(_CreateNetworkRequired, total=False):
    """A request to create a network (the core's ``CreateNetwork``); unknown keys are rejected."""

    gateways: List[str]
    """At most one per subnet; default: each subnet's first usable address."""
    reserved: List[str]
    """Addresses or prefixes inside the subnets never handed out."""
    nat: bool
    """Masquerade traffic leaving the subnets (default ``True``)."""
    isolated: bool
    """Drop traffic to and from other Zixiao networks (default ``True``)."""


class InstanceFilter(TypedDict, total=False):
    """Which instances ``list_instances`` returns; absent keys match everything."""

    instance_type: InstanceType
    status: InstanceStatus
    node: str
    labels: Dict[str, str]


class InstanceUpdate(TypedDict, total=False):
    """What ``update_instance`` changes (the core's ``InstanceUpdate``):
    every key optional, at least one that changes something."""

    set_labels: Dict[str, str]
    """Labels to add or replace."""
    remove_labels: List[str]
    """Label keys to remove."""
    restart: RestartPolicy
    """The new restart policy."""
    cpus: Union[int, float, str]
    """The new CPU: cores (``0.5``) or millicores (``"250m"``); a VM's whole vCPUs."""
    cpu_limit: Union[int, float, str]
    """A container's new CPU cap, at least its request."""
    memory_mib: int
    """The new memory in MiB."""
    memory_limit_mib: int
    """A container's new memory cap in MiB, at least its memory."""
    disk_gib: int
    """A VM's new disk size in GiB: disks only grow."""
    restart_if_needed: bool
    """Let a running instance whose runtime cannot resize live (a VM
    beyond its maximums, a microVM) restart to take the new size (else such
    a change raises ``FailedPrecondition``)."""
    snapshot_every: str
    """How often the snapshot schedule snapshots (``"1h"``; at least
    ``"1m"``). An instance without a schedule needs ``snapshot_keep`` too."""
    snapshot_keep: int
    """How many scheduled snapshots stay (at least 1)."""
    clear_snapshot_schedule: bool
    """Remove the snapshot schedule (the snapshots it took stay)."""


CreateRequest = Union[CreateInstance, Dict[str, Any]]


OperationPhase = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class OperationTarget(TypedDict):
    """What an operation acts on."""

    kind: Literal["instance", "node", "image"]
    id: str
    """The instance's or node's id; for an image, its node's."""
    name: str


class OperationProgress(TypedDict, total=False):
    """How far an operation got (``total`` when known)."""

    done: int
    total: int
    unit: str


class OperationError(TypedDict):
    """Why an operation failed or was cancelled."""

    kind: str
    """An error kind: ``not_found``, ``failed_precondition``..."""
    message: str


class _OperationOptional(TypedDict, total=False):
    requested_by: str
    step: str
    steps: List[str]
    """The steps it went through, in order."""
    progress: OperationProgress
    finished_at: str
    error: OperationError
    result: str


class Operation(_OperationOptional):
    """One long call, as recorded (``Controller.get_operation``)."""

    id: str
    kind: str
    """create, start, stop, restart, delete, update, snapshot, revert,
    clone, drain, image-import, image-pull or migrate."""
    target: OperationTarget
    phase: OperationPhase
    started_at: str
    revision: int
