/* Types of Zixiao's requests and results, as plain objects shaped like the
 * CLI's JSON output. Prepended to the generated index.d.ts (napi.dtsHeaderFile). */

/** Every error the API rejects with carries its kind as `code`. */
export type ErrorCode =
  | 'not_found'
  | 'already_exists'
  | 'invalid_argument'
  | 'failed_precondition'
  | 'conflict'
  | 'unavailable'
  | 'unsupported'
  | 'resource_exhausted'
  | 'permission_denied'
  | 'unauthenticated'
  | 'internal'

/** The shape of a rejection: `code` is the error kind; `field` names an invalid field. */
export interface ZixiaoError extends Error {
  code: ErrorCode
  field?: string
}

export type InstanceType = 'vm' | 'container' | 'microvm'
export type InstanceStatus =
  | 'pending'
  | 'scheduled'
  | 'creating'
  | 'running'
  | 'paused'
  | 'stopping'
  | 'stopped'
  | 'failed'
  | 'deleting'
export type DesiredState = 'running' | 'stopped' | 'deleted'
export type NodeStatus =
  | 'ready'
  | 'not_ready'
  | 'cordoned'
  | 'maintenance'
  | 'draining'
  | 'decommissioned'
  | 'onboarding'
  | 'onboarding_failed'
export type RestartPolicy = 'never' | 'on_failure' | 'always'
export type PullPolicy = 'missing' | 'always' | 'never'

/** What to run and with how much. */
export interface InstanceSpec {
  type: InstanceType
  /** CPU: cores (`2`, `0.5`) or millicores (`'250m'`). A container's
   * request (what its node reserves; it may use idle CPU beyond it unless
   * `cpu_limit` caps it); a VM's or microVM's vCPUs, whole cores. */
  cpus: number | string
  /** Containers: the most CPU it may use, at least `cpus` (default: no cap). */
  cpu_limit?: number | string
  /** Memory in MiB: what the node reserves, and the cap unless
   * `memory_limit_mib` allows more. */
  memory_mib: number
  /** Containers: the most memory it may use, at least `memory_mib`. */
  memory_limit_mib?: number
  /** VMs: the most vCPUs `updateInstance` may give it live (whole cores,
   * at least `cpus`); the node reserves `cpus` only. */
  max_cpus?: number | string
  /** VMs: the most memory in MiB `updateInstance` may give it live (at
   * least `memory_mib`, held back by a balloon); the node reserves
   * `memory_mib` only. */
  max_memory_mib?: number
  /** An OCI image reference (containers) or a disk image (VMs). */
  image?: string
  /** Disk in GiB (default 0). */
  disk_gib?: number
  /** Kernel to boot directly (VMs, microVMs), an absolute path on the node. */
  kernel?: string
  initrd?: string
  cmdline?: string
  /** Which monitor runs a microVM (default `auto`: the node's choice). */
  backend?: 'auto' | 'vmm' | 'qemu'
  /** Command and arguments (containers). */
  command?: string[]
  env?: Record<string, string>
  restart?: RestartPolicy
  /** Where it may run: `zone`, `region`, `node_selector`, ... as in the YAML spec. */
  placement?: Record<string, unknown>
  /** Names of the networks it joins (`createNetwork` first), in interface order. */
  networks?: string[]
  /**
   * Ports of its node forwarded to its address on its first network,
   * `[HOST_IP:]HOST_PORT:GUEST_PORT[/tcp|udp]` (`"8080:80"`); needs `networks`.
   */
  publish?: string[]
  /** Snapshots taken in the background by the server's reconciler (VMs, microVMs on `vmm`). */
  snapshot_schedule?: SnapshotSchedule
  /** VMs and QEMU microVMs: first-boot data for cloud-init, on a read-only `cidata` disk. */
  cloud_init?: CloudInit
  /** microVMs: disks besides the kernel, in guest order (raw images of the node's store). */
  disks?: DiskSpec[]
  /** When the node pulls `image`, `kernel` and `initrd` given as registry
   * references: `missing` (default; only what it lacks), `always` (a moved
   * tag gives its new digest) or `never` (a missing image rejects the
   * create with `failed_precondition`). */
  pull?: PullPolicy
  /** microVMs on the `vmm` backend: a virtio-vsock device, `{ cid: 42 }`
   * (`{}`: CID 3); `getInstance` names its socket. */
  vsock?: VsockSpec
}

/** A microVM's virtio-vsock device. */
export interface VsockSpec {
  /** The guest's CID: 3 (the default) or more, below 4294967295. */
  cid?: number
}

/** Where the host side of a microVM's vsock device is. */
export interface VsockEndpoint {
  /** A Unix socket path on the instance's node (in a cluster, not on the
   * caller's machine): connect, write `CONNECT <port>\n` and read
   * `OK <host port>\n` to reach the guest's vsock port; the guest's
   * connections to host port P go to the socket `<socket>_P`. */
  socket: string
  /** The guest's CID. */
  cid: number
}

/** A microVM's disk. */
export interface DiskSpec {
  /** A raw disk image's name in the node's store, a registry reference, or
   * (local administrator only) an absolute path on the node. */
  image: string
  /** The guest sees it read-only and the image is used as it is; otherwise
   * the instance writes its own copy of it. */
  read_only?: boolean
}

/**
 * cloud-init's NoCloud data (at most 64 KiB in all; never logged). Without
 * `meta_data`, Zixiao writes it (instance-id, local-hostname, the keys);
 * without `network_config`, it writes one from the instance's networks.
 */
export interface CloudInit {
  /** `#cloud-config` YAML, a script, or any format cloud-init reads. */
  user_data?: string
  meta_data?: string
  network_config?: string
  /** OpenSSH public keys, one per entry. */
  ssh_authorized_keys?: string[]
}

/**
 * Snapshot every `every` (`"1h"`, `"30m"`, `"7d"`; at least `"1m"`) and keep
 * the newest `keep` (at least 1) of those snapshots, named
 * `auto-YYYYMMDD-HHMMSS`; hand-made snapshots are never deleted.
 */
export interface SnapshotSchedule {
  every: string
  keep: number
}

/** A request to create an instance. */
export interface CreateInstance {
  /** Unique name, a DNS label. */
  name: string
  labels?: Record<string, string>
  spec: InstanceSpec
}

/** What `updateInstance` changes: every key optional, at least one that changes something. */
export interface InstanceUpdate {
  /** Labels to add or replace. */
  set_labels?: Record<string, string>
  /** Label keys to remove. */
  remove_labels?: string[]
  /** The new restart policy. */
  restart?: RestartPolicy
  /** The new CPU: cores (`0.5`) or millicores (`'250m'`); a VM's whole vCPUs. */
  cpus?: number | string
  /** A container's new CPU cap, at least its request. */
  cpu_limit?: number | string
  /** The new memory in MiB. */
  memory_mib?: number
  /** A container's new memory cap in MiB, at least its memory. */
  memory_limit_mib?: number
  /** A VM's new disk size in GiB: disks only grow. */
  disk_gib?: number
  /** Let a running instance whose runtime cannot resize live (a VM
   * beyond its maximums, a microVM) restart to take the new size; else such a change rejects
   * with `failed_precondition`. */
  restart_if_needed?: boolean
  /** How often the snapshot schedule snapshots (`"1h"`; at least `"1m"`).
   * An instance without a schedule needs `snapshot_keep` too. */
  snapshot_every?: string
  /** How many scheduled snapshots stay (at least 1). */
  snapshot_keep?: number
  /** Remove the snapshot schedule (the snapshots it took stay). */
  clear_snapshot_schedule?: boolean
}

/** Which instances `listInstances` returns; absent keys match everything. */
export interface InstanceFilter {
  instance_type?: InstanceType
  status?: InstanceStatus
  node?: string
  labels?: Record<string, string>
}

/** One page of `listInstancesPage`. */
export interface InstancePage {
  instances: Instance[]
  /** Pass back as `page.token` for the next page; absent after the last. */
  next_page_token?: string
}

export interface Resources {
  /** CPU in cores (`0.25`). */
  cpus: number
  memory_mib: number
  disk_gib: number
  instances: number
}

export interface Condition {
  type: 'scheduled' | 'runtime_ready' | 'exited' | 'snapshot_schedule'
  status: boolean
  reason: string
  message: string
  since: string
}

/** An instance as stored: identity, intent, observation. */
export interface Instance {
  id: string
  name: string
  labels: Record<string, string>
  spec: InstanceSpec
  desired: DesiredState
  status: InstanceStatus
  node: string | null
  /** The template version it was created from, if any. */
  template?: TemplateOrigin
  /** The instance it was cloned from, if any (`cloneInstance`). */
  clone_of?: CloneOrigin
  conditions: Condition[]
  exit: { code: number; oom_killed: boolean; at: string } | null
  reschedule: boolean
  restarts_requested: number
  restarts_done: number
  created_at: string
  updated_at: string
  started_at: string | null
  /** One per network of `spec.networks`, in order; absent when it joins none. */
  attachments?: NetworkAttachment[]
  /** The last snapshot its schedule took; absent before the first. */
  last_scheduled_snapshot?: { name: string; at: string }
  /** The last operation started on it (`op-...`), in the answers of the
   *  calls that start one and of `getInstance`. */
  operation?: string
  /** Where the host side of its vsock device (`spec.vsock`) is, once its
   *  node created it; absent without one. */
  vsock?: VsockEndpoint
  revision: number
}

/** What an operation does. */
export type OperationKind =
  | 'create' | 'start' | 'stop' | 'restart' | 'delete' | 'update'
  | 'snapshot' | 'revert' | 'clone' | 'drain' | 'image-import' | 'image-pull' | 'migrate'

/** Where an operation is in its life. */
export type OperationPhase = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled'

/** One long call, as recorded. */
export interface Operation {
  /** `op-` and 32 lowercase hex digits. */
  id: string
  kind: OperationKind
  /** An instance (id, name), a node (id), or an image (its node's id, its name). */
  target: { kind: 'instance' | 'node' | 'image'; id: string; name: string }
  /** Who asked, when a server identified the caller. */
  requested_by?: string
  phase: OperationPhase
  /** The kind's own step while it runs (`placing`, `creating`, `pulling`...). */
  step?: string
  /** The steps it went through, in order. */
  steps?: string[]
  progress?: { done: number; total?: number; unit: string }
  started_at: string
  finished_at?: string
  /** Why it failed or was cancelled: an error kind (`not_found`...) and a message. */
  error?: { kind: string; message: string }
  /** What it made: an instance id, a snapshot's or an image's name. */
  result?: string
  revision: number
}

/** Which operations `listOperations` returns; unknown keys are rejected. */
export interface OperationFilter {
  /** An instance's id or name, a node's id, an image's name. */
  target?: string
  kind?: OperationKind
  /** Only those that have not finished. */
  unfinished?: boolean
}

/** One address of an attachment, with its prefix length and gateway. */
export interface IpConfig {
  address: string
  prefix_len: number
  gateway: string
}

/** An instance's place on one network, allocated when it is created. */
export interface NetworkAttachment {
  network: string
  /** The interface inside the instance: `eth0`, `eth1`, ... in spec order. */
  interface: string
  /** The host-side veth (containers) or TAP device (VMs, microVMs). */
  host_interface: string
  bridge: string
  /** The network's installation (absent when recorded before installation ids). */
  installation?: string
  /** A stable, locally administered MAC address. */
  mac: string
  /** One address per subnet of the network. */
  addresses: IpConfig[]
}

/** A request to create a network; unknown keys are rejected. */
export interface CreateNetwork {
  /** Unique name, a DNS label. */
  name: string
  /** CIDR prefixes, at most one IPv4 and one IPv6: `['10.10.0.0/24']`. */
  subnets: string[]
  /** At most one per subnet; default: each subnet's first usable address. */
  gateways?: string[]
  /** Addresses or prefixes inside the subnets never handed out. */
  reserved?: string[]
  /** Masquerade traffic leaving the subnets (default true). */
  nat?: boolean
  /** Drop traffic to and from other Zixiao networks (default true). */
  isolated?: boolean
}

export interface Subnet {
  cidr: string
  gateway: string
  reserved: string[]
}

/** A network as stored: a bridge on every node with one IPv4 and/or one IPv6 subnet. */
export interface Network {
  name: string
  subnets: Subnet[]
  bridge: string
  /** The store's installation id (absent when stored before installation ids). */
  installation?: string
  nat: boolean
  isolated: boolean
  created_at: string
  /** Present (true) while the network is being deleted. */
  deleting?: boolean
  revision: number
}

/** One part of a network on a node. */
export interface NetworkPart {
  kind: 'bridge' | 'vxlan' | 'peers' | 'rules' | 'dhcp' | 'links'
  state: 'ok' | 'missing' | 'drifted' | 'not_needed'
  /** What is there, or what is missing or wrong (absent when nothing to say). */
  detail?: string
}

/** A network on one node. */
export interface NodeNetworkState {
  node: string
  parts: NetworkPart[]
  /** Why the node could not be asked, if it could not. */
  error?: string
}

/** A network (its fields) and its state on every node that sets up networks. */
export interface NetworkStatus extends Network {
  nodes: NodeNetworkState[]
  /** What a repair mended, per node (`node: what`). */
  repaired?: string[]
}

/** What a template version holds: the `labels` and `spec` of an instance's request. */
export interface TemplateSpec {
  labels?: Record<string, string>
  spec: InstanceSpec
}

/** One version of a template (never changed once stored) and its users. */
export interface TemplateVersion {
  version: number
  labels: Record<string, string>
  spec: InstanceSpec
  created_at: string
  /** Present (true) while a delete checks that no instance uses it. */
  deleting?: boolean
  /** How many instances use it. */
  in_use: number
  /** Their names, in name order. */
  instances: string[]
}

/** A template: its versions, oldest first. */
export interface Template {
  name: string
  versions: TemplateVersion[]
}

/** Where a clone came from. */
export interface CloneOrigin {
  /** The source instance's id. */
  source: string
  /** The source's node, where the clone runs. */
  node: string
  /** Its disk is an overlay on a frozen base of the source's (VMs). */
  linked: boolean
  /** The source's snapshot it started from. */
  snapshot?: string
}

/** The template version an instance was created from. */
export interface TemplateOrigin {
  name: string
  version: number
}

/** Labels and traits from one source: a node's agent, or its operators. */
export interface NodeMetadata {
  labels?: Record<string, string>
  traits?: string[]
}

/** A host aggregate: a named group of nodes with metadata. */
export interface Aggregate {
  name: string
  metadata: Record<string, string>
  nodes: string[]
  created_at: string
  updated_at: string
}

/** A node as stored. */
export interface Node {
  id: string
  hostname: string
  address: string
  region: string
  zone: string
  role: 'worker' | 'control' | 'combined'
  status: NodeStatus
  capacity: Resources
  allocated: Resources
  /** What placement matches: `reported` and `operator` merged. */
  labels: Record<string, string>
  traits: string[]
  /** What its agent reported (read-only); absent when empty. */
  reported?: NodeMetadata
  /** What operators declared (`labelNode`, `addNodeTraits`); absent when empty. */
  operator?: NodeMetadata
  runtimes: InstanceType[]
  missing_runtimes: Partial<Record<InstanceType, string>>
  carbon_intensity: number | null
  last_heartbeat: string | null
  created_at: string
  updated_at: string
  revision: number
}

/** One change of one instance, from `watchInstances`. */
export interface InstanceEvent {
  kind: 'added' | 'modified' | 'deleted'
  revision: number
  instance: Instance | null
  id: string
}

export interface ClusterInfo {
  nodes: number
  nodes_by_status: Partial<Record<NodeStatus, number>>
  instances: number
  instances_by_type: Partial<Record<InstanceType, Partial<Record<InstanceStatus, number>>>>
  capacity: Resources
  allocated: Resources
  schedulable_free: Resources
}

export interface InstanceStats {
  cpu_time_ns: number
  memory_bytes: number
  memory_limit_bytes: number | null
  pids: number | null
  disk_read_bytes: number | null
  disk_write_bytes: number | null
  net_rx_bytes: number | null
  net_tx_bytes: number | null
}

/** One sample of a server's stats history; counters are totals since start. */
export interface StatsSample extends InstanceStats {
  /** When it was taken (RFC 3339). */
  at: string
}

/** One sample of what a node's instances used together, and of what its whole host used. */
export interface NodeUsageSample {
  /** When it was taken (RFC 3339). */
  at: string
  /** How many of its instances were sampled. */
  instances: number
  /** CPU used since the previous sample, in thousandths of a core. */
  cpu_millicores: number
  /** Memory in use, in bytes. */
  memory_bytes: number
  /** CPU the whole host used, in thousandths of a core; null: unknown. */
  host_cpu_millicores: number | null
  /** The host's online CPUs, in thousandths of a core; null: unknown. */
  host_cpu_capacity_millicores: number | null
  /** Memory the whole host uses, in bytes (a bigint above 2^32 - 1); null: unknown. */
  host_memory_bytes: number | bigint | null
  /** The host's memory, in bytes (a bigint above 2^32 - 1); null: unknown. */
  host_memory_capacity_bytes: number | bigint | null
  /** The host's one-minute load average; null: unknown. */
  host_load1: number | null
}

/** An instance a drain or a maintenance migrated, and how. */
export interface MigratedInstance {
  name: string
  mode: 'live' | 'cold'
  /** The node it runs on now. */
  to: string
}

/** What a drain, a maintenance or a decommission did to each instance. */
export interface DrainReport {
  node: string
  /** Migrated live or cold: disks kept (and, live, guests running). */
  migrated: MigratedInstance[]
  /** Restarted on other nodes from their images. */
  moved: string[]
  pending: string[]
  stopped: string[]
  status: NodeStatus | null
  /** Why a VM or microVM was not migrated, by instance name. */
  not_migrated: Record<string, string>
}

/** One change of one node, from `watchNodes`. */
export interface NodeEvent {
  kind: 'added' | 'modified' | 'deleted'
  revision: number
  node: Node | null
  id: string
}

/** A piece of a log or of console output. */
export type LogPiece = Buffer

/** A snapshot of one instance. */
export interface Snapshot {
  name: string
  created_at: string | null
  /** Whether it holds the memory (the instance was running) as well as the disks. */
  includes_memory: boolean
  /** Whether it is the one the instance last took or reverted to. */
  current: boolean
}

/** An image a node's runtime holds. */
export interface Image {
  name: string
  digest: string
  size_bytes: number
  /** What it holds: `container`, or `disk`, `kernel`, `initrd` of the node's image store. */
  kind: 'container' | 'disk' | 'kernel' | 'initrd'
  /** Its format for the store's images (`qcow2`, `raw`, `bzimage`, `elf`, `cpio`, `gzip`...). */
  format?: string
  /** When it was imported (RFC 3339), where the runtime records it. */
  created_at?: string
}

/** What a state backup holds. */
export interface StoreSummary {
  revision: number
  keys: number
  history: number
  leases: number
}
