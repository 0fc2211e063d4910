//! The command tree: clap definitions only, no behaviour.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use zixiao_core::{AllocationRatio, Cpus};

/// Run and orchestrate VMs, containers and microVMs.
///
/// Without a server, every command works on the embedded controller in
/// --state-dir: no daemon, no set-up. Each command drives the reconcilers
/// until what it asked for has converged.
#[derive(Debug, Parser)]
#[command(
    name = "zixiao",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub(crate) struct Cli {
    /// State directory of the embedded controller.
    #[arg(long, global = true, env = "ZIXIAO_STATE_DIR", value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,

    /// A Zixiao server (https://host:port, or host:port) to send commands
    /// to instead of the embedded controller; with a context, the
    /// context's CA and token go with it.
    #[arg(long, global = true, env = "ZIXIAO_ENDPOINT", value_name = "URL")]
    pub(crate) endpoint: Option<String>,

    /// The client configuration file (contexts: endpoint, CA, token)
    /// [default: ~/.config/zixiao/config.yaml]. Before the command: `zixiao
    /// server --config` and `zixiao agent --config` name their own files.
    #[arg(long, env = "ZIXIAO_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// The context of the configuration file to use [default: its current one].
    #[arg(long, global = true, env = "ZIXIAO_CONTEXT", value_name = "NAME")]
    pub(crate) context: Option<String>,

    /// Output format: table for people, json or yaml (full objects) for scripts.
    #[arg(short, long, global = true, value_enum, default_value_t = Format::Table)]
    pub(crate) output: Format,

    /// containerd's socket [default: the agent config's
    /// drivers.containerd_socket, else /run/containerd/containerd.sock].
    #[arg(
        long,
        global = true,
        env = "ZIXIAO_CONTAINERD_SOCKET",
        value_name = "PATH"
    )]
    pub(crate) containerd_socket: Option<PathBuf>,

    /// libvirt connection URI for VMs (`qemu:///system`, `qemu+tcp://host/system`,
    /// `ch:///system`) [default: the agent config's drivers.libvirt_uri,
    /// else qemu:///system].
    #[arg(long, global = true, env = "ZIXIAO_LIBVIRT_URI", value_name = "URI")]
    pub(crate) libvirt_uri: Option<String>,

    /// libvirt domain type for VMs: kvm or qemu (default: kvm where KVM is hardware-backed).
    #[arg(long, global = true, value_name = "TYPE")]
    pub(crate) libvirt_domain_type: Option<String>,

    /// How many MiB of each instance's log (a container's output, a
    /// microVM's console) the node keeps on disk; beyond it the oldest part
    /// is discarded, and `logs` says so [default: the agent config's
    /// drivers.log_limit_mib, else 16].
    #[arg(
        long,
        global = true,
        env = "ZIXIAO_LOG_LIMIT_MIB",
        value_name = "MIB",
        value_parser = clap::value_parser!(u64).range(1..=1 << 20)
    )]
    pub(crate) log_limit_mib: Option<u64>,

    /// Whether specs given to the embedded node may name host files: a
    /// disk, kernel or initrd by path, or a snapshot directory to restore
    /// from. Off, only images of the node's image store are used (`zixiao
    /// image import`). Callers over the network never may [default: true].
    #[arg(
        long,
        global = true,
        env = "ZIXIAO_ALLOW_HOST_PATHS",
        value_name = "BOOL",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub(crate) allow_host_paths: Option<bool>,

    /// More diagnostic logs on stderr: -v for info, -vv for debug, -vvv
    /// for trace [default: warnings; info for server, agent, watchdog and
    /// daemon]. `ZIXIAO_LOG` takes filter directives instead (for example
    /// `zixiao_cluster=debug,warn`).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,

    /// How diagnostic logs are written: text lines for people, or one JSON
    /// object per line [default: json with `-o json` or `-o yaml`, else text].
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub(crate) log_format: Option<LogFormat>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// How diagnostic logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// A line per event: time, level, where, message and fields.
    Text,
    /// A JSON object per event, with its span's fields.
    Json,
}

/// containerd's socket when nothing names one.
const DEFAULT_CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";

/// The libvirt URI when nothing names one.
const DEFAULT_LIBVIRT_URI: &str = "qemu:///system";

impl Cli {
    /// containerd's socket: `--containerd-socket` (or its variable), else
    /// `configured` (an agent's `drivers.containerd_socket`), else the
    /// default.
    pub(crate) fn containerd_socket(&self, configured: Option<&Path>) -> PathBuf {
        self.containerd_socket
            .clone()
            .or_else(|| configured.map(Path::to_owned))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTAINERD_SOCKET))
    }

    /// The libvirt URI: `--libvirt-uri` (or its variable), else
    /// `configured` (an agent's `drivers.libvirt_uri`), else the default.
    pub(crate) fn libvirt_uri(&self, configured: Option<&str>) -> String {
        self.libvirt_uri
            .clone()
            .or_else(|| configured.map(str::to_owned))
            .unwrap_or_else(|| DEFAULT_LIBVIRT_URI.to_owned())
    }
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Aligned columns.
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Nodes: list, inspect, label, declare traits, cordon, drain, maintenance.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Host aggregates: named groups of nodes with metadata, that
    /// instances require (`instance create --aggregate NAME`).
    #[command(subcommand)]
    Aggregate(AggregateCommand),
    /// Instances: VMs, containers and microVMs.
    #[command(subcommand)]
    Instance(InstanceCommand),
    /// Images on a node: import local archives, list, remove.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Operations: the long calls (a create until the instance runs, a
    /// stop, a delete, a snapshot, a drain, an image pull) as records to
    /// list, follow and cancel.
    #[command(subcommand)]
    Operation(OperationCommand),
    /// The cluster as a whole.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Networks: subnets with a bridge on every node, NAT and isolation.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Templates: instance specs kept in numbered versions, to create
    /// instances from (`instance create --template NAME[@V]`).
    #[command(subcommand)]
    Template(TemplateCommand),
    /// The embedded store's file: check it, back it up, restore a backup.
    #[command(subcommand)]
    State(StateCommand),
    /// Run the state directory's daemon: the embedded deployment kept
    /// running, so restart policies work between commands and every command
    /// on --state-dir goes through it (its socket: DIR/zixiao.sock).
    Daemon(crate::commands::server::DaemonArgs),
    /// Serve the web dashboard of this deployment on loopback (the state
    /// directory's, or the server --endpoint names).
    Ui(crate::commands::ui::UiArgs),
    /// Serve the gRPC API over etcd (or --embedded): one control-plane replica.
    Server(crate::commands::server::ServerArgs),
    /// Run this machine's node agent: register with the servers and run what they assign.
    Agent(crate::commands::agent::AgentArgs),
    /// The per-node fencing process that `zixiao agent` starts.
    #[command(hide = true)]
    Watchdog(crate::commands::agent::WatchdogArgs),
    /// Users and their roles (admin, operator, viewer) and projects.
    #[command(subcommand)]
    User(UserCommand),
    /// Bearer tokens: issue, list, revoke.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Projects: groups of instances with a quota.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// The audit log: every change and every refusal.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Contexts of the client configuration file: which server, CA and token.
    #[command(subcommand)]
    Context(ContextCommand),
    /// Print the version and the runtimes and stores built in.
    Version,
    /// Write man pages: zixiao(1) and one per subcommand
    /// (`zixiao-instance-create(1)`), into DIR, or zixiao(1) on stdout.
    Man {
        /// The directory to write every page into (created if needed),
        /// e.g. `/usr/local/share/man/man1`.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Print a shell completion script, e.g. `zixiao completion bash >
    /// /etc/bash_completion.d/zixiao`, or `source <(zixiao completion bash)`.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

impl Command {
    /// Whether the command runs a long-lived service for other callers
    /// rather than making one call and printing its answer.
    pub(crate) fn serves(&self) -> bool {
        matches!(
            self,
            Command::Server(_) | Command::Agent(_) | Command::Daemon(_) | Command::Ui(_)
        )
    }
}

#[derive(Debug, Subcommand)]
#[command(after_help = "Examples:\n  \
    zixiao user create alice --role operator --project web --out alice.yaml\n  \
    zixiao user list\n  \
    zixiao user delete alice")]
pub(crate) enum UserCommand {
    /// Create a user and its first token (printed once, or written with --out).
    Create {
        /// The user's name.
        name: String,
        /// admin, operator or viewer.
        #[arg(long, value_name = "ROLE")]
        role: String,
        /// A project the user works in (repeatable).
        #[arg(long = "project", value_name = "PROJECT")]
        projects: Vec<String>,
        /// How long the first token works (`90m`, `12h`, `30d`) [default: until revoked].
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
        /// Write a client configuration for the user (mode 0600): this
        /// connection's endpoint and CA, and the new token.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// List users.
    List,
    /// Delete a user; its tokens stop working at once.
    Delete {
        /// The user's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
#[command(after_help = "Examples:\n  \
    zixiao token create --ttl 1h\n  \
    zixiao token create --user ci --role viewer --project web\n  \
    zixiao token list\n  \
    zixiao token revoke 0123456789abcdef")]
pub(crate) enum TokenCommand {
    /// Issue a token (printed once) [default: the caller's own, with its role].
    Create {
        /// Whose token [default: the caller's].
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// At most its owner's role: admin, operator or viewer; or `agent`
        /// for a join token an agent exchanges for its node certificate
        /// (`zixiao agent --join-token`).
        #[arg(long, value_name = "ROLE")]
        role: Option<String>,
        /// Limit it to this project of its owner's (repeatable).
        #[arg(long = "project", value_name = "PROJECT")]
        projects: Vec<String>,
        /// How long it works (`90m`, `12h`, `30d`) [default: until revoked].
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
        /// A join token (`--role agent`) that several agents may use
        /// [default: single-use].
        #[arg(long)]
        reusable: bool,
    },
    /// List tokens (never their secrets).
    List {
        /// Only this user's.
        #[arg(long, value_name = "USER")]
        user: Option<String>,
    },
    /// Revoke a token by its id: it stops working at once.
    Revoke {
        /// The token's id (16 hexadecimal digits).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
#[command(after_help = "Examples:\n  \
    zixiao project create web --quota cpus=16,memory=32768,instances=20,disk=500\n  \
    zixiao project get web\n  \
    zixiao project update web --quota cpus=32\n  \
    zixiao project delete web")]
pub(crate) enum ProjectCommand {
    /// Create a project.
    Create {
        /// Its name (a DNS label).
        name: String,
        /// Limits: cpus=N,memory=MiB,instances=N,disk=GiB (any of them).
        #[arg(long, value_name = "LIMITS")]
        quota: Option<String>,
    },
    /// List projects and what their instances use.
    List,
    /// Show a project, its quota and usage.
    Get {
        /// Its name.
        name: String,
    },
    /// Set a project's quota (`none`: no limits).
    Update {
        /// Its name.
        name: String,
        /// Limits: cpus=N,memory=MiB,instances=N,disk=GiB, or none.
        #[arg(long, value_name = "LIMITS")]
        quota: String,
    },
    /// Delete a project without instances or members.
    Delete {
        /// Its name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
#[command(after_help = "Examples:\n  \
    zixiao audit list --since 1h\n  \
    zixiao audit list --user alice -o json")]
pub(crate) enum AuditCommand {
    /// List audit records, oldest first.
    List {
        /// Only records of the last DURATION (`30m`, `12h`, `7d`).
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// Only this user's.
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// Only this project's.
        #[arg(long, value_name = "PROJECT")]
        project: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
#[command(after_help = "Examples:\n  \
    zixiao context add prod --endpoint https://10.0.0.1:50051 --ca-cert ca.pem --token-file token\n  \
    zixiao context use prod\n  \
    zixiao context list")]
pub(crate) enum ContextCommand {
    /// List the contexts; `*` marks the current one.
    List,
    /// Make a context the current one.
    Use {
        /// The context's name.
        name: String,
    },
    /// Add a context (the first one added becomes current); its server is
    /// the (global) --endpoint, https://host:port.
    Add {
        /// The context's name.
        name: String,
        /// The cluster's CA certificate (PEM).
        #[arg(long, value_name = "FILE")]
        ca_cert: Option<PathBuf>,
        /// A file holding the bearer token.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// A client certificate (PEM), with --client-key.
        #[arg(long, value_name = "FILE", requires = "client_key")]
        client_cert: Option<PathBuf>,
        /// The client certificate's key (PEM).
        #[arg(long, value_name = "FILE", requires = "client_cert")]
        client_key: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
#[command(after_help = "Examples:\n  \
    zixiao state check\n  \
    zixiao state backup ./zixiao-backup.redb\n  \
    zixiao state restore ./zixiao-backup.redb")]
pub(crate) enum StateCommand {
    /// Check the store file of --state-dir: every page and record read back.
    /// Runs only while no other zixiao process uses the state directory.
    Check,
    /// Copy the store, as of one moment, to a new file (while it is in use).
    Backup {
        /// The new file.
        file: PathBuf,
    },
    /// Replace the store file of --state-dir with a checked backup; the
    /// replaced file is kept as state.redb.before-restore. Runs only while
    /// no other zixiao process uses the state directory.
    Restore {
        /// The backup file.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum NodeCommand {
    /// List nodes.
    List,
    /// Show one node: capacity, allocation, labels, runtimes, for a node
    /// an agent joined with, its onboarding (each runtime's smoke test, or
    /// why it failed), and, through a server or daemon, what its host uses
    /// now (CPU, memory, load).
    Get {
        /// Node id or hostname.
        node: String,
    },
    /// What a node's instances used together recently (CPU in cores,
    /// memory), oldest first, as the server or daemon sampled them: one row
    /// per sample. Beside them, what the whole host used (every process:
    /// the system, the agent, the instances) of its capacity, and its load,
    /// as its agent reported with its heartbeats (`-`: unknown, e.g. an
    /// older agent). Needs a server or a daemon (`zixiao server`, `zixiao
    /// server --embedded`, `zixiao ui`).
    #[command(after_help = "Examples:\n  \
        zixiao node stats worker-1\n  \
        zixiao -o json node stats worker-1   # samples for a script or a chart")]
    Stats {
        /// Node id or hostname.
        node: String,
    },
    /// Stop new placements on a node; its instances keep running.
    Cordon {
        /// Node id or hostname.
        node: String,
    },
    /// Allow placements on a cordoned node again.
    Uncordon {
        /// Node id or hostname.
        node: String,
    },
    /// Empty a node, a few instances at a time: running VMs migrate live
    /// (else cold), instances that restart move elsewhere, the others stop.
    /// The report says per instance what happened and why a VM did not
    /// migrate.
    Drain {
        /// Node id or hostname.
        node: String,
    },
    /// Put a node into maintenance (emptied, unschedulable) or take it out.
    Maintenance {
        /// Node id or hostname.
        node: String,
        /// `on` or `off`.
        #[arg(value_enum)]
        state: OnOff,
    },
    /// Retire a node for good: empty it as a drain does, then mark it
    /// decommissioned, offering no runtime, so nothing is placed there again.
    #[command(
        long_about = "Retire a node for good.\n\n\
            The node is emptied as by `node drain` (from any status, maintenance included): \
            instances that restart elsewhere move, the others stop where they are. Then it \
            is marked decommissioned and withdraws every runtime, so no placement considers \
            it again and its agent's registrations do not bring it back. Instances that \
            stayed can still be read and deleted; once none is left, stop the node's agent \
            and `node delete` removes the record (an agent still running registers the \
            machine anew, as a new node). Running it again carries on where an interrupted \
            run stopped.",
        after_help = "Examples:\n  \
            zixiao node decommission worker-3\n  \
            zixiao instance list --node worker-3     # what stayed\n  \
            zixiao node delete worker-3"
    )]
    Decommission {
        /// Node id or hostname.
        node: String,
    },
    /// Remove the record of a node that holds no instances (decommission
    /// or drain it first).
    Delete {
        /// Node id or hostname.
        node: String,
    },
    /// Set (`KEY=VALUE`) or remove (`KEY-`) labels of a node, for node
    /// selectors (`instance create --selector`).
    #[command(
        long_about = "Set (KEY=VALUE) or remove (KEY-) labels of a node, for node selectors \
            (`instance create --selector`, a spec file's placement.node_selector).\n\n\
            Labels set here are the operators': they stay when the node's agent registers \
            again (at every agent restart). The labels the agent reports are facts about the \
            machine and read-only: setting or removing one is refused. Instances waiting for a \
            node are tried again at once.",
        after_help = "Examples:\n  \
            zixiao node label worker-1 disk=ssd tier=front\n  \
            zixiao node label worker-1 tier-\n  \
            zixiao node label worker-1 disk=nvme -o json"
    )]
    Label {
        /// Node id or hostname.
        node: String,
        /// `KEY=VALUE` to set a label, `KEY-` to remove one.
        #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
        labels: Vec<String>,
    },
    /// Add or remove traits of a node, for `instance create --trait`.
    #[command(
        long_about = "Add or remove traits of a node (`ssd`, `gpu`, `avx512`), for required \
            and forbidden traits (`instance create --trait`, a spec file's \
            placement.required_traits and forbidden_traits).\n\n\
            Traits added here are the operators': they stay when the node's agent registers \
            again. The traits the agent reports are read-only. Instances waiting for a node are \
            tried again at once.",
        after_help = "Examples:\n  \
            zixiao node trait worker-1 add ssd gpu\n  \
            zixiao node trait worker-1 rm gpu"
    )]
    Trait {
        /// Node id or hostname.
        node: String,
        /// `add` or `rm`.
        #[arg(value_enum)]
        action: AddRm,
        /// The traits.
        #[arg(required = true, value_name = "TRAIT")]
        traits: Vec<String>,
    },
    /// Set facts operators declare about a node: the carbon intensity of
    /// its power, for carbon-aware placement.
    #[command(
        long_about = "Set facts operators declare about a node.\n\n\
            --carbon is the carbon intensity of the node's power in gCO2e/kWh (at most 5000), \
            which carbon-aware placement reads (a spec's placement.carbon: prefer low-carbon \
            nodes, or refuse those above max_intensity). It wins over the figure the node's agent \
            reports; `none` takes it back. Instances waiting for a node are tried again at once.",
        after_help = "Examples:\n  \
            zixiao node set worker-1 --carbon 120\n  \
            zixiao node set worker-1 --carbon none"
    )]
    Set {
        /// Node id or hostname.
        node: String,
        /// gCO2e/kWh of the node's power, or `none` to clear it.
        #[arg(long, value_name = "G_PER_KWH|none")]
        carbon: String,
    },
    /// Change how far a node's CPU and memory may be promised beyond what
    /// it has.
    #[command(
        long_about = "Change how far a node's CPU and memory may be promised beyond what it \
            has (as Nova's cpu_allocation_ratio).\n\n\
            Placement counts instances' requests against the node's cores times its CPU ratio \
            and its memory times its memory ratio (`node get` shows both). CPU is compressible: \
            with ratio 4, instances that all get busy at once share the cores. Memory is not: \
            a ratio above 1 lets the kernel kill instances when they use what they reserved. \
            New nodes start at cpu 4, memory 1; an agent's --cpu-allocation-ratio and \
            --memory-allocation-ratio set them at each registration instead. A lower ratio \
            evicts nothing: the node just takes nothing new until its allocation fits. \
            Instances waiting for a node are tried again at once.",
        after_help = "Examples:\n  \
            zixiao node update worker-1 --cpu-allocation-ratio 8\n  \
            zixiao node update worker-1 --cpu-allocation-ratio 2 --memory-allocation-ratio 1.5 -o json"
    )]
    Update {
        /// Node id or hostname.
        node: String,
        /// Reserved CPU may be this many times the node's cores (0.1 to 64).
        #[arg(long, value_name = "RATIO")]
        cpu_allocation_ratio: Option<AllocationRatio>,
        /// Reserved memory may be this many times the node's memory (0.1 to 64).
        #[arg(long, value_name = "RATIO")]
        memory_allocation_ratio: Option<AllocationRatio>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum AddRm {
    /// Add them.
    Add,
    /// Remove them.
    #[value(alias = "remove")]
    Rm,
}

#[derive(Debug, Subcommand)]
#[command(after_help = "Examples:\n  \
    zixiao aggregate create fast --meta disk=ssd --meta tier=gold\n  \
    zixiao aggregate add-node fast worker-1\n  \
    zixiao aggregate set fast tier=silver disk-\n  \
    zixiao instance create --name db --type container --image busybox --aggregate fast\n  \
    zixiao aggregate list\n  \
    zixiao aggregate rm-node fast worker-1\n  \
    zixiao aggregate delete fast")]
pub(crate) enum AggregateCommand {
    /// Create a host aggregate (no nodes yet).
    Create {
        /// Aggregate name (a DNS label).
        name: String,
        /// Metadata, `KEY=VALUE` (repeatable), for a spec file's
        /// placement.aggregate_selector.
        #[arg(long = "meta", value_name = "KEY=VALUE")]
        metadata: Vec<String>,
    },
    /// Delete an aggregate that has no nodes.
    Delete {
        /// Aggregate name.
        name: String,
    },
    /// List aggregates with their metadata and nodes.
    List,
    /// Show one aggregate.
    Get {
        /// Aggregate name.
        name: String,
    },
    /// Set (`KEY=VALUE`) or remove (`KEY-`) metadata of an aggregate, for
    /// a spec file's placement.aggregate_selector; instances waiting for a
    /// node are tried again at once.
    Set {
        /// Aggregate name.
        name: String,
        /// `KEY=VALUE` to set a key, `KEY-` to remove one.
        #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
        metadata: Vec<String>,
    },
    /// Make a node a member of an aggregate; instances waiting for it are
    /// tried again at once.
    AddNode {
        /// Aggregate name.
        name: String,
        /// Node id or hostname.
        node: String,
    },
    /// Take a node out of an aggregate.
    #[command(alias = "remove-node")]
    RmNode {
        /// Aggregate name.
        name: String,
        /// Node id or hostname.
        node: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OnOff {
    On,
    Off,
}

#[derive(Debug, Subcommand)]
pub(crate) enum OperationCommand {
    /// List the unfinished operations (with --all, every one kept), oldest first.
    #[command(after_help = "Examples:\n  \
    zixiao operation list\n  \
    zixiao operation list --all --target web -o json")]
    List {
        /// Finished ones too (kept 24 hours, 1000 at most).
        #[arg(long)]
        all: bool,
        /// Only operations on this instance (id or name), node or image.
        #[arg(long, value_name = "ID|NAME")]
        target: Option<String>,
        /// Only this kind: create, start, stop, restart, delete, update,
        /// snapshot, revert, clone, drain, image-import, image-pull, migrate.
        #[arg(long)]
        kind: Option<String>,
    },
    /// Show one operation.
    Get {
        /// The operation's id (op-...).
        id: String,
    },
    /// Follow an operation until it ends, printing each change of its
    /// phase, step or progress; exit 0 once it succeeded, 1 with its error
    /// when it failed or was cancelled.
    #[command(after_help = "Example:\n  \
    zixiao operation watch $(zixiao instance create --no-wait --name web --type container --image busybox)")]
    Watch {
        /// The operation's id (op-...).
        id: String,
    },
    /// Cancel a running create (the instance is deleted), start or clone
    /// (the instance is stopped). Other kinds cannot be cancelled once
    /// running.
    Cancel {
        /// The operation's id (op-...).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum InstanceCommand {
    /// List instances.
    List(ListArgs),
    /// Show one instance, with the reasons it is not running if so.
    Get {
        /// Instance id or name.
        instance: String,
    },
    /// Create an instance and wait until it runs (or says why not).
    Create(Box<CreateArgs>),
    /// Start a stopped or failed instance and wait until it runs.
    Start {
        /// Instance id or name.
        instance: String,
        /// Return once the request is stored and print its operation's id
        /// (follow it with `zixiao operation watch ID`).
        #[arg(long)]
        no_wait: bool,
    },
    /// Stop a running instance (it stays on its node) and wait until it is stopped.
    Stop {
        /// Instance id or name.
        instance: String,
        /// Return once the request is stored and print its operation's id.
        #[arg(long)]
        no_wait: bool,
    },
    /// Freeze a running instance in place.
    Pause {
        /// Instance id or name.
        instance: String,
    },
    /// Thaw a paused instance.
    Resume {
        /// Instance id or name.
        instance: String,
    },
    /// Stop and start an instance, and wait until it runs again.
    Restart {
        /// Instance id or name.
        instance: String,
        /// Return once the request is stored and print its operation's id.
        #[arg(long)]
        no_wait: bool,
    },
    /// Change an instance's CPUs, memory, labels or restart policy.
    Update(UpdateArgs),
    /// Delete an instance and release its resources, and wait until it is gone.
    Delete {
        /// Instance id or name.
        instance: String,
        /// Return once the request is stored and print its operation's id.
        #[arg(long)]
        no_wait: bool,
    },
    /// Show an instance's resource usage.
    #[command(long_about = "Show an instance's resource usage.\n\n\
            With --history, its recent usage as the server sampled it (every 10 s by default, \
            the last hour), oldest first: CPU as cores used since the sample before, memory and \
            processes at each sample. Only a server keeps a history (`zixiao server`, or \
            `zixiao server --embedded` on this state directory); `-o json` gives the raw \
            samples, whose counters are totals since the instance started.")]
    Stats {
        /// Instance id or name.
        instance: String,
        /// Show the recent samples instead of the usage now.
        #[arg(long)]
        history: bool,
    },
    /// Print an instance's console or stdout/stderr log.
    Logs {
        /// Instance id or name.
        instance: String,
        /// Keep printing what it writes until it stops (Ctrl-C to quit).
        #[arg(short, long)]
        follow: bool,
    },
    /// Attach to an instance's console (Ctrl-C to detach).
    Console {
        /// Instance id or name.
        instance: String,
    },
    /// Snapshots of an instance: create, list, revert, delete.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Create a microVM that resumes from a snapshot directory
    /// (`instance snapshot create NAME SNAP --to DIR` makes one).
    Restore(RestoreArgs),
    /// Create a new instance as a clone of another, on its node.
    Clone(CloneArgs),
    /// Move a running instance to another node (same id, name, MAC and address).
    Migrate(MigrateArgs),
}

/// `zixiao instance migrate`.
#[derive(Debug, Args)]
#[command(
    long_about = "Move a running instance to another node, keeping its id, name, MACs and \
        addresses (its networks must exist there).\n\n\
        The target is NODE with --to (it must still fit the instance and its placement \
        constraints: a refusal says why), else the node the scheduler picks among the ready \
        nodes other than its own. The instance is removed from its node before it starts on \
        the target, so it never runs twice; if the target cannot run it, it goes back and \
        starts again where it was. The move is an operation of kind `migrate`; its steps \
        (placing, stopping, starting, done) are printed as they pass on a terminal, and \
        `zixiao operation get ID` lists them afterwards.\n\n\
        --live (VMs on libvirt nodes) moves it while it runs: its memory and disk are copied \
        to the target's libvirtd, the guest pauses briefly and goes on there (steps placing, \
        preparing, migrating, switching, done); a failed one leaves it running where it was. \
        --cold (VMs with a disk on libvirt nodes, microVMs) stops it, copies its disk to the \
        target (a microVM's writable disks; each checked against its SHA-256; the images it \
        boots must be in the target's store) and starts it there from the copy, keeping its \
        id, name, MACs and addresses (steps placing, stopping, copying with the bytes copied, \
        starting, done); a failed one starts it again where it was, its disk untouched. \
        --restart (any instance) restarts the workload on the target: a container starts \
        afresh from its image, a VM from its image (what its disk holds is lost). Without a \
        flag: live where both nodes can, else cold for a VM or microVM with a disk where \
        both nodes can copy it (else refused, since its disk would be lost), else a restart \
        (containers, diskless microVMs)."
)]
pub(crate) struct MigrateArgs {
    /// Instance id or name.
    pub(crate) instance: String,
    /// The node to move it to (id or hostname) [default: the scheduler's pick].
    #[arg(long, value_name = "NODE")]
    pub(crate) to: Option<String>,
    /// Stop it, copy its disk to the target and start it there from the copy.
    #[arg(long, group = "migration_mode")]
    pub(crate) cold: bool,
    /// Move it while it runs (VMs between two nodes' libvirtd).
    #[arg(long, group = "migration_mode")]
    pub(crate) live: bool,
    /// Restart it on the target, afresh from its image.
    #[arg(long, group = "migration_mode")]
    pub(crate) restart: bool,
}

impl MigrateArgs {
    /// The mode its flags ask for.
    pub(crate) fn mode(&self) -> zixiao_core::MigrationMode {
        use zixiao_core::MigrationMode;
        match (self.cold, self.live, self.restart) {
            (true, _, _) => MigrationMode::Cold,
            (_, true, _) => MigrationMode::Live,
            (_, _, true) => MigrationMode::Restart,
            _ => MigrationMode::Auto,
        }
    }
}

/// `zixiao instance clone`.
#[derive(Debug, Args)]
#[command(
    long_about = "Create a new instance as a clone of another, on the source's node.\n\n\
        The clone gets its own id, MACs and addresses, the source's labels and spec, and \
        `clone_of` naming the source (shown by `instance get`). A container clone is a new \
        container from the same image and spec. A VM clone starts from a full copy of the \
        source's disk, read at --snapshot or now (the source is paused during the copy and \
        resumed after); with --linked its disk is instead a qcow2 overlay on a read-only \
        base frozen from the source's disk once (at --snapshot, or when the first linked \
        clone is made) and shared by later linked clones: the source cannot be deleted \
        while linked clones use it. A microVM on the vmm backend resumes where the source \
        was, from --snapshot or from a snapshot taken for the clone (clone-...). Host ports \
        the source publishes are not copied: one instance holds a host port.",
    after_help = "Examples:\n  \
    zixiao instance clone web --name web-2\n  \
    zixiao instance clone vm1 --name vm2 --linked\n  \
    zixiao instance clone vm1 --name vm3 --snapshot before-upgrade\n  \
    zixiao instance clone mvm1 --name mvm2 -o json"
)]
pub(crate) struct CloneArgs {
    /// The source instance: id or name.
    pub(crate) source: String,
    /// The clone's name.
    #[arg(long)]
    pub(crate) name: String,
    /// Share a frozen base of the source's disk instead of copying it (VMs with a disk).
    #[arg(long)]
    pub(crate) linked: bool,
    /// Start from this snapshot of the source.
    #[arg(long, value_name = "SNAP")]
    pub(crate) snapshot: Option<String>,
    /// Return as soon as the clone is stored, without waiting until it
    /// runs, and print its operation's id (`zixiao operation watch ID`).
    #[arg(long)]
    pub(crate) no_wait: bool,
}

/// `zixiao instance update`.
#[derive(Debug, Args)]
#[command(
    long_about = "Change an instance's CPUs, memory (a container's caps too), a VM's disk \
        size, labels or restart policy.\n\n\
        A new size is checked against the free capacity of the instance's node and its \
        project's quota before anything changes; if the node cannot fit it, the error \
        says how much is missing (an update never moves an instance to another node). \
        A running container takes the new CPU and memory limits live, in place. A \
        running VM takes new vCPUs and memory live within the --max-cpus and \
        --max-memory it was created with (vCPUs hot-plugged, memory through its \
        balloon), and a bigger disk live. A running microVM on the vmm backend takes \
        less memory live (its balloon), and more up to the --max-memory it was created \
        with. Beyond them, and for any other change of a running microVM, the \
        update is refused, saying why, unless --restart-if-needed is given, and then \
        the instance restarts with the new size. A stopped instance takes the new size \
        at its next start (a VM's disk grows at once). Disks only grow. Labels, the \
        restart policy and the snapshot schedule never need a restart.\n\n\
        A snapshot schedule (--snapshot-every, --snapshot-keep) is run by the reconciler \
        of `zixiao server` or `zixiao daemon`: every interval it takes a snapshot named \
        auto-YYYYMMDD-HHMMSS and deletes the oldest scheduled ones beyond --snapshot-keep. \
        A failed one shows as the snapshot_schedule condition in `instance get` and is \
        tried again on the next tick.",
    after_help = "Examples:\n  \
    zixiao instance update web --cpus 2 --memory 512\n  \
    zixiao instance update web --cpus 250m --cpu-limit 1 --memory-limit 512\n  \
    zixiao instance update web --label tier=front --label old-\n  \
    zixiao instance update web --restart on-failure\n  \
    zixiao instance update vm1 --cpus 2 --memory 1024   (live, within --max-cpus/--max-memory)\n  \
    zixiao instance update vm1 --disk 20\n  \
    zixiao instance update vm1 --memory 2048 --restart-if-needed\n  \
    zixiao instance update vm1 --snapshot-every 1h --snapshot-keep 24\n  \
    zixiao instance update vm1 --no-snapshot-schedule\n  \
    zixiao instance update web --memory 256 -o json"
)]
pub(crate) struct UpdateArgs {
    /// Instance id or name.
    pub(crate) instance: String,
    /// New CPU: cores (`2`, `0.5`) or millicores (`250m`); a VM's whole vCPUs.
    #[arg(long, value_name = "CPUS", allow_negative_numbers = true)]
    pub(crate) cpus: Option<Cpus>,
    /// A container's new CPU cap, at least its request.
    #[arg(long, value_name = "CPUS", allow_negative_numbers = true)]
    pub(crate) cpu_limit: Option<Cpus>,
    /// New memory in MiB.
    #[arg(long, value_name = "MIB", allow_negative_numbers = true)]
    pub(crate) memory: Option<u64>,
    /// A container's new memory cap in MiB, at least its memory.
    #[arg(long, value_name = "MIB", allow_negative_numbers = true)]
    pub(crate) memory_limit: Option<u64>,
    /// A VM's new disk size in GiB: disks only grow.
    #[arg(long, value_name = "GIB", allow_negative_numbers = true)]
    pub(crate) disk: Option<u64>,
    /// Set a label (`key=value`) or remove one (`key-`); repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE|KEY-")]
    pub(crate) labels: Vec<String>,
    /// New restart policy: never, on-failure or always.
    #[arg(long, value_name = "POLICY")]
    pub(crate) restart: Option<String>,
    /// Let a running instance whose runtime cannot change its size live
    /// (a VM beyond its maximums, a microVM) restart to take the new
    /// size; without it such a change is refused and nothing changes.
    #[arg(long)]
    pub(crate) restart_if_needed: bool,
    /// Snapshot the instance this often (`1h`, `30m`, `7d`; at least 1m),
    /// by the server's reconciler (VMs, microVMs on the vmm backend).
    #[arg(long, value_name = "DURATION")]
    pub(crate) snapshot_every: Option<String>,
    /// How many scheduled snapshots to keep (the oldest beyond it are
    /// deleted; hand-made snapshots never are).
    #[arg(long, value_name = "N")]
    pub(crate) snapshot_keep: Option<u32>,
    /// Remove the snapshot schedule (the snapshots it took stay).
    #[arg(long, conflicts_with_all = ["snapshot_every", "snapshot_keep"])]
    pub(crate) no_snapshot_schedule: bool,
    /// Return as soon as the change is stored, without waiting for a
    /// restart it asked for; a restarting update prints its operation's id.
    #[arg(long)]
    pub(crate) no_wait: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  \
    zixiao instance snapshot create vm1 s1 --to ./vm1-s1\n  \
    zixiao instance restore --from ./vm1-s1 --name vm2")]
pub(crate) struct RestoreArgs {
    /// The snapshot directory (taken by a microVM on the vmm backend).
    #[arg(long, value_name = "DIR")]
    pub(crate) from: PathBuf,
    /// The new instance's name.
    #[arg(long)]
    pub(crate) name: String,
    /// Return as soon as the request is stored, without waiting, and print
    /// its operation's id.
    #[arg(long)]
    pub(crate) no_wait: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SnapshotCommand {
    /// Take a snapshot (with memory, when the instance runs).
    Create {
        /// Instance id or name.
        instance: String,
        /// Snapshot name.
        name: String,
        /// Also copy the snapshot to this new directory, to restore from
        /// (`instance restore --from DIR`; microVMs on the vmm backend).
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
    },
    /// List an instance's snapshots.
    List {
        /// Instance id or name.
        instance: String,
    },
    /// Go back to a snapshot.
    Revert {
        /// Instance id or name.
        instance: String,
        /// Snapshot name.
        name: String,
    },
    /// Delete a snapshot.
    Delete {
        /// Instance id or name.
        instance: String,
        /// Snapshot name.
        name: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only this type.
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) instance_type: Option<String>,
    /// Only this status (pending, running, stopped, failed, ...).
    #[arg(long)]
    pub(crate) status: Option<String>,
    /// Only instances on this node.
    #[arg(long)]
    pub(crate) node: Option<String>,
    /// Only instances with this label (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub(crate) labels: Vec<String>,
    /// Show one page of at most N instances (a server answers at most
    /// 1000 at a time) and the token of the next; without it, every
    /// instance, page after page.
    #[arg(long, value_name = "N")]
    pub(crate) page_size: Option<u32>,
    /// Go on after the page that printed this token (`next_page_token`).
    #[arg(long, value_name = "TOKEN")]
    pub(crate) page_token: Option<String>,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    zixiao instance create --name hello --type container --image busybox -- echo hi\n  \
    zixiao instance create --name web --type container --image nginx --cpus 250m --cpu-limit 2 --memory 64 --memory-limit 256\n  \
    zixiao instance create --name vm1 --type microvm --kernel ./vmlinux --memory 256\n  \
    zixiao instance create --name vm2 --type microvm --kernel k1 --initrd i1   (images of the node's store)\n  \
    zixiao instance create --name vm6 --type microvm --backend vmm --kernel k1 --network lan --disk data --disk tools:ro\n  \
    zixiao instance create --name vm7 --type microvm --backend vmm --kernel k1 --vsock 42   (`instance get` names its socket)\n  \
    zixiao instance create --name vm3 --type vm --image disk1 --memory 512   (a disk image of the store)\n  \
    zixiao instance create --name vm5 --type vm --image debian --user-data init.yaml --ssh-key ~/.ssh/id_ed25519.pub\n  \
    zixiao instance create --name vm4 --type vm --image disk1 --cpus 1 --max-cpus 4 --memory 512 --max-memory 2048\n  \
    zixiao instance create --name vm8 --type microvm --backend vmm --kernel k1 --memory 256 --max-memory 1024\n  \
    zixiao instance create --name db --type container --image busybox --trait ssd --aggregate fast\n  \
    zixiao instance create -f web.yaml")]
pub(crate) struct CreateArgs {
    /// A YAML or JSON file with the whole request (name, labels, spec).
    #[arg(short = 'f', long = "file", value_name = "FILE", conflicts_with_all = [
        "name", "instance_type", "image", "cpus", "cpu_limit", "memory", "memory_limit", "disks",
        "max_cpus", "max_memory",
        "kernel", "initrd",
        "cmdline", "labels", "env", "region", "zone", "selector", "traits", "aggregates", "restart",
        "command", "backend", "networks", "publish", "project", "template", "snapshot_every",
        "snapshot_keep", "user_data", "meta_data", "network_config", "ssh_keys", "pull", "vsock",
    ])]
    pub(crate) file: Option<PathBuf>,
    /// Create it from a template: its latest version, or version V
    /// (`web@2`). The instance records the version (see `instance get`);
    /// change the version's spec for this instance with --set.
    #[arg(long, value_name = "NAME[@V]", conflicts_with_all = [
        "instance_type", "image", "cpus", "cpu_limit", "memory", "memory_limit", "disks", "kernel",
        "max_cpus", "max_memory",
        "initrd", "cmdline", "labels", "env", "region", "zone", "selector", "traits", "aggregates", "restart",
        "command", "backend", "networks", "publish", "project", "snapshot_every", "snapshot_keep",
        "user_data", "meta_data", "network_config", "ssh_keys", "pull", "vsock",
    ])]
    pub(crate) template: Option<String>,
    /// With --template: change one field of the version's spec, FIELD=VALUE
    /// (repeatable): cpus, memory_mib, disk_gib, image, cmdline, restart,
    /// labels.KEY, env.NAME. Example: `--set cpus=2 --set labels.tier=web`.
    #[arg(long = "set", value_name = "FIELD=VALUE", requires = "template")]
    pub(crate) set: Vec<String>,
    /// The project it belongs to [default: default] (sets the label
    /// zixiao.io/project).
    #[arg(long, value_name = "PROJECT")]
    pub(crate) project: Option<String>,
    /// Unique name (a DNS label).
    #[arg(long, required_unless_present = "file")]
    pub(crate) name: Option<String>,
    /// vm, container or microvm.
    #[arg(
        long = "type",
        value_name = "TYPE",
        required_unless_present_any = ["file", "template"]
    )]
    pub(crate) instance_type: Option<String>,
    /// Image: OCI image for containers, disk image for VMs.
    #[arg(long)]
    pub(crate) image: Option<String>,
    /// CPU: cores (`2`, `0.5`) or millicores (`250m`). A container's
    /// request: what its node reserves and its share under contention;
    /// it may use idle CPU beyond it unless --cpu-limit caps it (default
    /// 0.1). A VM's or microVM's vCPUs: whole cores (default 1).
    #[arg(long, value_name = "CPUS", allow_negative_numbers = true)]
    pub(crate) cpus: Option<Cpus>,
    /// Containers: the most CPU it may use, at least --cpus (default: no cap).
    #[arg(long, value_name = "CPUS", allow_negative_numbers = true)]
    pub(crate) cpu_limit: Option<Cpus>,
    /// Memory in MiB.
    #[arg(
        long,
        allow_negative_numbers = true,
        value_name = "MIB",
        default_value_t = 128
    )]
    pub(crate) memory: u64,
    /// Containers: the most memory it may use in MiB, when more than the
    /// --memory it reserves (default: --memory).
    #[arg(long, value_name = "MIB", allow_negative_numbers = true)]
    pub(crate) memory_limit: Option<u64>,
    /// VMs: the most vCPUs `instance update --cpus` may give it live, at
    /// least --cpus (the node reserves --cpus only). Without it, more
    /// vCPUs need a restart.
    #[arg(long, value_name = "CPUS", allow_negative_numbers = true)]
    pub(crate) max_cpus: Option<Cpus>,
    /// VMs, and microVMs on the vmm backend (the qemu backend refuses
    /// it): the most memory in MiB `instance update --memory` may give it
    /// live, at least --memory (the guest boots with it and a balloon
    /// holds back the rest; the node reserves --memory only). Without
    /// it, more memory needs a restart.
    #[arg(long, value_name = "MIB", allow_negative_numbers = true)]
    pub(crate) max_memory: Option<u64>,
    /// A number: the disk size in GiB (VMs). Otherwise a microVM's disk
    /// (repeatable, in guest order): a raw disk image's name in the node's
    /// image store (`image import --kind disk`), a registry reference, or
    /// a path with a `/` on this machine (where the node takes paths),
    /// with `:ro` for a read-only disk. A writable disk is the instance's
    /// own copy of the image. Example: `--disk data --disk tools:ro`.
    #[arg(
        long = "disk",
        allow_negative_numbers = true,
        value_name = "GIB|NAME[:ro]"
    )]
    pub(crate) disks: Vec<String>,
    /// Kernel to boot (VMs, microVMs): a kernel image's name in the node's
    /// image store (`image import --kind kernel`), or a path with a `/`
    /// on this machine (only where the node is this machine: embedded, or
    /// its state directory's socket).
    #[arg(long, value_name = "NAME|PATH")]
    pub(crate) kernel: Option<PathBuf>,
    /// Initial ramdisk (with --kernel): an initrd image's name, or a path with a `/`.
    #[arg(long, value_name = "NAME|PATH")]
    pub(crate) initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long)]
    pub(crate) cmdline: Option<String>,
    /// Which monitor runs a microVM: auto (the node decides), vmm or qemu.
    #[arg(long, value_name = "BACKEND", default_value = "auto")]
    pub(crate) backend: String,
    /// microVMs on the vmm backend: a virtio-vsock device whose guest has
    /// CID (3 or more; 3 when none is given). Its host side is a Unix
    /// socket on the instance's node, which `instance get` names: connect
    /// and write `CONNECT PORT\n` to reach the guest's vsock port PORT;
    /// the guest's connections to host port P go to the socket `<path>_P`
    /// (one the jailed VMM's user may connect to). The qemu backend
    /// refuses it. The spec file's `vsock: {cid: CID}`.
    #[arg(long, value_name = "CID", num_args = 0..=1, default_missing_value = "3")]
    pub(crate) vsock: Option<String>,
    /// Network to join (repeatable, in interface order).
    #[arg(long = "network", value_name = "NETWORK")]
    pub(crate) networks: Vec<String>,
    /// Publish a port (repeatable): HOST_PORT on the node's addresses (or
    /// on HOST_IP only; an IPv6 one in brackets) forwards to GUEST_PORT at
    /// the instance's address on its first network (`--network`). TCP
    /// unless `/udp`. Containers and QEMU microVMs. Refused when another
    /// instance on the node publishes it or a process of the node holds
    /// it. Example: `--publish 8080:80`, `--publish 192.0.2.7:53:53/udp`.
    #[arg(
        long = "publish",
        short = 'p',
        value_name = "[HOST_IP:]HOST_PORT:GUEST_PORT[/tcp|udp]"
    )]
    pub(crate) publish: Vec<String>,
    /// Label (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub(crate) labels: Vec<String>,
    /// Environment variable for containers (repeatable).
    #[arg(long = "env", short = 'e', value_name = "NAME=VALUE")]
    pub(crate) env: Vec<String>,
    /// Only nodes in this region.
    #[arg(long)]
    pub(crate) region: Option<String>,
    /// Only nodes in this zone.
    #[arg(long)]
    pub(crate) zone: Option<String>,
    /// Only nodes whose labels match: `key=value`, `key!=value`,
    /// `key in (a,b)`, `key notin (a,b)`, `key` or `!key` (repeatable).
    #[arg(long = "selector", value_name = "EXPR")]
    pub(crate) selector: Vec<String>,
    /// Only nodes declaring this trait (repeatable): reported by their
    /// agent, or declared with `zixiao node trait NODE add TRAIT`. The
    /// spec file's `placement.required_traits`.
    #[arg(long = "trait", value_name = "TRAIT")]
    pub(crate) traits: Vec<String>,
    /// Only nodes in this host aggregate (repeatable: in every one named),
    /// see `zixiao aggregate`. The spec file's `placement.aggregates`.
    #[arg(long = "aggregate", value_name = "NAME")]
    pub(crate) aggregates: Vec<String>,
    /// What happens when it exits by itself: never, on-failure, always.
    #[arg(long, value_name = "POLICY", default_value = "never")]
    pub(crate) restart: String,
    /// When the node pulls the images named by registry reference (the
    /// container image; a VM's disk, kernel and initrd): missing (only
    /// what it lacks), always (ask the registry again, so a moved tag
    /// gives its new digest), never (a missing image fails the create).
    /// The spec file's `pull`.
    #[arg(long, value_name = "POLICY", default_value = "missing")]
    pub(crate) pull: String,
    /// Snapshot it this often (`1h`, `30m`, `7d`; at least 1m), by the
    /// server's reconciler (VMs, microVMs on the vmm backend).
    #[arg(long, value_name = "DURATION", requires = "snapshot_keep")]
    pub(crate) snapshot_every: Option<String>,
    /// How many scheduled snapshots to keep.
    #[arg(long, value_name = "N", requires = "snapshot_every")]
    pub(crate) snapshot_keep: Option<u32>,
    /// cloud-init user data (`#cloud-config` YAML or a script) from this
    /// file, given to a VM or QEMU microVM on a read-only `cidata` disk.
    #[arg(long, value_name = "FILE")]
    pub(crate) user_data: Option<PathBuf>,
    /// cloud-init meta-data from this file, instead of the one written
    /// for it (instance-id, local-hostname, --ssh-key keys).
    #[arg(long, value_name = "FILE")]
    pub(crate) meta_data: Option<PathBuf>,
    /// cloud-init network configuration (version 2) from this file,
    /// instead of the one written from its networks (address, gateway).
    #[arg(long, value_name = "FILE")]
    pub(crate) network_config: Option<PathBuf>,
    /// An OpenSSH public key file (`~/.ssh/id_ed25519.pub`) whose keys the
    /// guest's default user accepts, through cloud-init (repeatable).
    #[arg(long = "ssh-key", value_name = "FILE")]
    pub(crate) ssh_keys: Vec<PathBuf>,
    /// Return as soon as the request is stored, without waiting, and print
    /// its operation's id (`zixiao operation watch ID` follows it).
    #[arg(long)]
    pub(crate) no_wait: bool,
    /// Command and arguments for a container.
    #[arg(last = true, value_name = "COMMAND")]
    pub(crate) command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TemplateCommand {
    /// Store a template; the file is its version 1.
    Create(TemplateFileArgs),
    /// Store the file as the template's next version (the versions it has
    /// stay as they are).
    Update(TemplateFileArgs),
    /// List templates, with how many instances use each version.
    List,
    /// Show a template's versions and the instances that use each.
    // `--version` here is the template's: not the program's version flag.
    #[command(disable_version_flag = true)]
    Get {
        /// Template name.
        name: String,
        /// Only this version.
        #[arg(long, value_name = "V")]
        version: Option<u32>,
    },
    /// Delete a template, or one version of it; refused while an instance
    /// uses it (the instances are named).
    #[command(disable_version_flag = true)]
    Delete {
        /// Template name.
        name: String,
        /// Only this version.
        #[arg(long, value_name = "V")]
        version: Option<u32>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct TemplateFileArgs {
    /// Template name (a DNS label).
    pub(crate) name: String,
    /// A YAML or JSON file in the format `instance create -f` reads: its
    /// `labels` and `spec` (a `name` in it is not used: each instance
    /// gets its own with `instance create --template ... --name`).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub(crate) file: PathBuf,
}

#[derive(Debug, Subcommand)]
pub(crate) enum NetworkCommand {
    /// Create a network and set it up on the nodes.
    Create(CreateNetworkArgs),
    /// List networks.
    List,
    /// Show one network and its state on every node: bridge, VXLAN
    /// device, overlay peers, rules, DHCP responder and the instances'
    /// links, each `ok`, `missing`, `drifted` or `not_needed`.
    Get {
        /// Network name.
        name: String,
    },
    /// Put a network back as the store says on every node (recreate what
    /// is missing, put instances' links back on its bridge, set its
    /// overlay peers again) and show its state. Exits 1 if a node is still
    /// not in order afterwards.
    Repair {
        /// Network name.
        name: String,
    },
    /// Delete a network no instance uses.
    Delete {
        /// Network name.
        name: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct CreateNetworkArgs {
    /// Network name (a DNS label).
    name: String,
    /// A CIDR prefix, at most one IPv4 and one IPv6 (`10.10.0.0/24`, `fd10::/64`):
    /// repeat it for dual stack. On an IPv6 /64 guests form their address
    /// by SLAAC from the node's router advertisements (the one IPAM gives
    /// them, from their MAC); other IPv6 prefixes reach only containers and
    /// cloud-init network-config.
    #[arg(long = "subnet", value_name = "CIDR", required = true)]
    subnets: Vec<String>,
    /// The gateway of a subnet (default: its first address).
    #[arg(long = "gateway", value_name = "IP")]
    gateways: Vec<String>,
    /// An address or prefix never handed out.
    #[arg(long = "reserve", value_name = "CIDR")]
    reserved: Vec<String>,
    /// Do not masquerade traffic leaving the subnets.
    #[arg(long)]
    no_nat: bool,
    /// Let traffic flow to and from other networks.
    #[arg(long)]
    no_isolation: bool,
    /// Its VXLAN network identifier between nodes, 1 to 16777215 (default:
    /// derived from the name; another network's is refused).
    #[arg(long, value_name = "N")]
    vni: Option<u32>,
}

impl CreateNetworkArgs {
    /// The request these flags ask for, to the embedded controller or a server.
    pub(crate) fn request(self) -> zixiao_core::model::CreateNetwork {
        zixiao_core::model::CreateNetwork {
            name: self.name,
            subnets: self.subnets,
            gateways: self.gateways,
            reserved: self.reserved,
            nat: !self.no_nat,
            isolated: !self.no_isolation,
            vni: self.vni,
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// Nodes by status, instances by type and status, capacity and allocation.
    Info,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ImageCommand {
    /// Import every image of an OCI layout or docker-archive tar file; with
    /// --kind disk|kernel|initrd, one VM disk (qcow2 without a backing
    /// file, or raw), kernel (bzImage or ELF) or initrd (cpio, possibly
    /// compressed) into the node's image store, named by --name.
    #[command(after_help = "Examples:\n  \
        zixiao image import busybox.tar\n  \
        zixiao image import ./vmlinux --kind kernel --name k1\n  \
        zixiao image import ./initrd.cpio.gz --kind initrd --name i1\n  \
        zixiao image import ./debian.qcow2 --kind disk --name debian")]
    Import {
        /// The archive, or the disk, kernel or initrd file.
        file: PathBuf,
        /// Store the archive's one image as `NAME[:TAG]` (tag `latest` if
        /// left out), whatever the archive names it: for layouts whose ref
        /// name is only a tag, as umoci and skopeo write them, or none.
        /// Required for a disk, kernel or initrd: its name in the store
        /// (letters, digits, `.`, `_`, `-`).
        #[arg(long, value_name = "NAME[:TAG]")]
        name: Option<String>,
        /// What the file holds: container (an image archive), disk, kernel or initrd.
        #[arg(long, value_name = "KIND", default_value = "container")]
        kind: String,
        #[command(flatten)]
        target: ImageTarget,
    },
    /// Pull an image from an OCI registry (HTTPS; plain HTTP only for
    /// loopback registries and those given with --insecure-registry): a
    /// container image, or a disk, kernel or initrd OCI artifact
    /// (`application/vnd.zixiao.{disk.v1.qcow2,disk.v1.raw,kernel.v1,initrd.v1}`)
    /// into the node's image store, named after the reference
    /// (`REGISTRY/vm/debian:12` is `debian-12`).
    #[command(after_help = "Examples:\n  \
        zixiao image pull 127.0.0.1:5000/busybox:1\n  \
        zixiao image pull 127.0.0.1:5000/vm/debian:12 --kind disk")]
    Pull {
        /// `[registry[:port]/]repository[:tag|@sha256:digest]`.
        reference: String,
        /// The kind expected: container, disk, kernel or initrd (refused if
        /// the manifest's media types say another); by default, what they say.
        #[arg(long, value_name = "KIND")]
        kind: Option<String>,
        /// A registry (`host` or `host:port`) that may be reached over plain HTTP.
        #[arg(long = "insecure-registry", value_name = "HOST")]
        insecure_registries: Vec<String>,
        /// A PEM file of CA certificates to trust for this pull besides the
        /// node's roots, for a registry whose certificate a private CA
        /// issued (read here, sent to the node that pulls).
        #[arg(long = "registry-ca", value_name = "FILE")]
        registry_cas: Vec<std::path::PathBuf>,
        /// The platform to take from a multi-platform image (the node's own
        /// by default), such as `linux/arm64` or `linux/arm/v7`.
        #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
        platform: Option<String>,
        /// User name for the registry (with --password-stdin). Without it,
        /// the registry's entry in `$DOCKER_CONFIG/config.json` or
        /// `~/.docker/config.json` (`auths.<registry>.auth`), if any.
        #[arg(long, requires = "password_stdin")]
        username: Option<String>,
        /// Read the registry password from standard input.
        #[arg(long, requires = "username")]
        password_stdin: bool,
        #[command(flatten)]
        target: ImageTarget,
    },
    /// List images: the container runtime's and the node store's disks,
    /// kernels and initrds (with --type vm or microvm, the store's alone).
    List {
        #[command(flatten)]
        target: ImageTarget,
    },
    /// Show one image (with --kind, only of that kind).
    Get {
        /// Image name, as `image list` shows it.
        name: String,
        /// Its kind: container, disk, kernel or initrd.
        #[arg(long, value_name = "KIND")]
        kind: Option<String>,
        #[command(flatten)]
        target: ImageTarget,
    },
    /// Remove an image; a disk, kernel or initrd is refused while an
    /// instance uses it.
    Rm {
        /// Image name, as `image list` shows it.
        name: String,
        /// Its kind: container, disk, kernel or initrd.
        #[arg(long, value_name = "KIND", default_value = "container")]
        kind: String,
        #[command(flatten)]
        target: ImageTarget,
    },
}

/// Whose images: a node's runtime for one instance type.
#[derive(Debug, Args)]
pub(crate) struct ImageTarget {
    /// Node whose runtime keeps the images (default: the local node).
    #[arg(long)]
    pub(crate) node: Option<String>,
    /// Instance type whose runtime keeps them.
    #[arg(long = "type", value_name = "TYPE", default_value = "container")]
    pub(crate) instance_type: String,
}
