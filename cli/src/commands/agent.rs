//! `zixiao agent`: a compute node's agent, from flags or `--config
//! agent.yaml` with environment overrides; and `zixiao watchdog`, the
//! per-node fencing process the agent starts in a session of its own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use zixiao_cluster::config::{process_env, AgentConfig};
use zixiao_cluster::onboarding::SmokeTest;
use zixiao_cluster::{agent, watchdog, AgentOptions, Timing};
use zixiao_core::{Error, Result};

use crate::args::Cli;

/// `zixiao agent` flags; they win over the config file and the environment.
#[derive(Debug, Args)]
pub(crate) struct AgentArgs {
    /// An agent.yaml (see zixiao-cluster/examples/agent.yaml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Server endpoints, comma-separated (host:port or http://host:port).
    #[arg(long, value_name = "URL[,URL...]", value_delimiter = ',')]
    server: Vec<String>,
    /// The node's name, unique in the cluster [default: the hostname].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// The node's region.
    #[arg(long, value_name = "REGION")]
    region: Option<String>,
    /// The node's zone.
    #[arg(long, value_name = "ZONE")]
    zone: Option<String>,
    /// AgentService listen address [default: 127.0.0.1:50052]. Without
    /// --ca-cert (no TLS), anything but loopback needs --insecure-no-tls.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Listen on an address other than loopback without TLS: whoever
    /// reaches the port controls this node's instances as root.
    #[arg(long)]
    insecure_no_tls: bool,
    /// The cluster CA certificate (the server's `ca.pem`): the agent then
    /// joins over TLS and speaks mutual TLS with its node certificate.
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// A join token (`zixiao token create --role agent`), exchanged on the
    /// first start for the node certificate, kept 0600 in the state
    /// directory (later starts need no token).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "ZIXIAO_JOIN_TOKEN",
        hide_env_values = true
    )]
    join_token: Option<String>,
    /// Renew the node certificate when it expires within this long
    /// (`30d`, `12h`): at start, and hourly while the agent runs.
    #[arg(long, value_name = "DURATION", default_value = "30d")]
    renew_cert_before: String,
    /// The host:port servers dial to reach this agent [default: hostname:port].
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// Run without a watchdog (no self-fencing: not for production).
    #[arg(long)]
    no_watchdog: bool,
    /// Do not set up the cluster's networks on this node (no bridges, no
    /// removal of stale `zx…` devices); the node does not declare the
    /// `networks` trait.
    #[arg(long)]
    no_networks: bool,
    /// This node's IP address between nodes, which networks' VXLAN
    /// overlays (UDP 4789) leave from and other nodes send to [default: the
    /// host of --advertise when it is an IP address other than loopback].
    /// Without one the node cannot carry a network that spans nodes.
    #[arg(long, value_name = "ADDR")]
    underlay: Option<String>,
    /// This node's libvirtd as other nodes' libvirtd reach it, for live
    /// migrations to this node (the target node's agent answers it when a
    /// migration comes) [default: drivers.libvirt_migration_uri of
    /// --config, else qemu+tls://ADDRESS/system].
    #[arg(long, value_name = "URI")]
    libvirt_migration_uri: Option<String>,
    /// The address other nodes' QEMU sends a live migration's memory and
    /// disk to [default: drivers.libvirt_migration_address of --config,
    /// else the underlay address; none: the node takes no live migrations].
    #[arg(long, value_name = "ADDR")]
    libvirt_migration_address: Option<std::net::IpAddr>,
    /// Where containers' network namespaces are pinned [default: /run/zixiao/netns].
    #[arg(long, value_name = "DIR")]
    netns_dir: Option<PathBuf>,
    /// On Ctrl-C or SIGTERM, leave the cluster for good: drain the node (its
    /// instances move or stop), deregister it and stop its watchdog. Without
    /// it the node stays registered, its instances keep running, and an
    /// agent restarted within the lease re-adopts them.
    #[arg(long)]
    leave_on_exit: bool,
    /// Serve Prometheus metrics on http://ADDR/metrics: this node's
    /// instances by type and status, and each running instance's CPU time
    /// and memory from its runtime (port 0: any free port, printed at
    /// start). Loopback addresses only.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// The most connections the AgentService listener holds open at once
    /// (TLS handshakes included); beyond it, new callers wait until one
    /// closes.
    #[arg(long, value_name = "N", default_value_t = super::server::default_max_connections())]
    max_connections: std::num::NonZeroUsize,
    /// Mark the node ready when it joins, without the smoke test (for
    /// labs); `node get` says it was skipped. Without it the node is
    /// `onboarding` until one small instance of each runtime it offers has
    /// booted and been deleted, and `onboarding_failed` (with the reason
    /// in `node get`) if one did not; restarting the agent retries.
    #[arg(long)]
    skip_smoke_test: bool,
    /// The container image the smoke test boots on containerd: a name in
    /// the node's image store, or a registry reference, pulled first when
    /// containerd does not hold it (anonymously, unless
    /// --smoke-registry-auth says otherwise) [default:
    /// onboarding.container_image of --config; none: containerd is only
    /// checked to answer].
    #[arg(long, value_name = "IMAGE")]
    smoke_image: Option<String>,
    /// CA certificates (PEM) the smoke image's pull trusts besides the
    /// system roots, for a registry of a private CA
    /// [default: onboarding.registry.ca_file of --config].
    #[arg(long, value_name = "FILE")]
    smoke_registry_ca: Option<PathBuf>,
    /// A docker-style config.json (mode 0600) with the smoke image
    /// registry's credentials (`auths.<registry>.auth`, as `docker login`
    /// writes it) [default: onboarding.registry.auth_file of --config].
    #[arg(long, value_name = "FILE")]
    smoke_registry_auth: Option<PathBuf>,
    /// A registry (`host[:port]`) the smoke image may be pulled from over
    /// plain HTTP; repeatable. Loopback registries always may
    /// [default: onboarding.registry.insecure of --config].
    #[arg(long, value_name = "HOST")]
    smoke_insecure_registry: Vec<String>,
    /// How long each smoke instance may take to run (`90s`, `2m`)
    /// [default: 60s].
    #[arg(long, value_name = "DURATION")]
    smoke_timeout: Option<String>,
}

/// `zixiao watchdog` flags (started by the agent).
#[derive(Debug, Args)]
pub(crate) struct WatchdogArgs {
    /// Fence when the agent's last renewal is older than this.
    #[arg(long, value_name = "MS", default_value_t = Timing::default().fence_after_ms)]
    fence_after_ms: u64,
}

fn state_dir(cli: &Cli, configured: Option<PathBuf>) -> Result<PathBuf> {
    match configured.or_else(|| cli.state_dir.clone()) {
        Some(dir) => super::absolute(&dir),
        None => Ok(zixiao_embedded::default_state_dir()?.join("agent")),
    }
}

/// The drivers' settings: the command line's, else `configured`
/// (`drivers:` of agent.yaml), else the defaults.
fn driver_config(
    cli: &Cli,
    configured: &zixiao_cluster::config::DriversSection,
    state_dir: &std::path::Path,
    netns_dir: Option<&std::path::Path>,
    underlay: Option<std::net::IpAddr>,
) -> Result<zixiao_embedded::zixiao_drivers::DriverConfig> {
    let mut drivers = zixiao_embedded::zixiao_drivers::DriverConfig::new(state_dir.join("runtime"));
    drivers.containerd_socket = cli.containerd_socket(configured.containerd_socket.as_deref());
    drivers.libvirt_uri = cli.libvirt_uri(configured.libvirt_uri.as_deref());
    drivers.libvirt_domain_type = cli.libvirt_domain_type.clone();
    drivers.libvirt_migration = configured.libvirt_migration(underlay);
    if let Some(mib) = cli.log_limit_mib.or(configured.log_limit_mib) {
        drivers.log_limit.max_bytes = mib << 20;
    }
    if let Some(dir) = netns_dir {
        drivers.netns_dir = super::absolute(dir)?;
    }
    Ok(drivers)
}

/// Runs the agent until Ctrl-C or SIGTERM.
pub(crate) async fn run(cli: &Cli, args: &AgentArgs) -> Result<ExitCode> {
    let mut config = AgentConfig::load(args.config.as_deref(), &process_env)?;
    if !args.server.is_empty() {
        config.agent.servers = args.server.clone();
    }
    if let Some(v) = &args.name {
        config.node.name = Some(v.clone());
    }
    if let Some(v) = &args.region {
        config.node.region = v.clone();
    }
    if let Some(v) = &args.zone {
        config.node.zone = v.clone();
    }
    if let Some(v) = &args.listen {
        config.agent.listen = v.clone();
    }
    if let Some(v) = &args.advertise {
        config.agent.advertise = Some(v.clone());
    }
    if args.skip_smoke_test {
        config.onboarding.skip_smoke_test = true;
    }
    if let Some(image) = &args.smoke_image {
        config.onboarding.container_image = Some(image.clone());
    }
    if let Some(timeout) = &args.smoke_timeout {
        let timeout = super::duration("--smoke-timeout", timeout)?;
        config.onboarding.timeout_ms = Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
    }
    if args.smoke_registry_ca.is_some()
        || args.smoke_registry_auth.is_some()
        || !args.smoke_insecure_registry.is_empty()
    {
        let registry = config
            .onboarding
            .registry
            .get_or_insert_with(Default::default);
        if let Some(ca) = &args.smoke_registry_ca {
            registry.ca_file = Some(ca.clone());
        }
        if let Some(auth) = &args.smoke_registry_auth {
            registry.auth_file = Some(auth.clone());
        }
        if !args.smoke_insecure_registry.is_empty() {
            registry.insecure = args.smoke_insecure_registry.clone();
        }
    }
    let smoke_test = SmokeTest::try_from(&config.onboarding)?;
    if let Some(v) = &args.underlay {
        config.agent.underlay = Some(v.clone());
    }
    let underlay: Option<agent::Underlay> = match &config.agent.underlay {
        Some(text) => Some(text.parse()?),
        // Only an address of this machine: an advertised one behind NAT
        // or a floating IP would fail every network set-up here.
        None => config
            .agent
            .advertise
            .as_deref()
            .and_then(agent::Underlay::from_advertise)
            .filter(|underlay| {
                let local = underlay.is_local();
                if !local {
                    tracing::warn!(
                        address = %underlay.address(),
                        "the advertised address is not one of this machine's, so it carries no                          overlay; give --underlay ADDR for networks that span nodes"
                    );
                }
                local
            }),
    };
    if config.agent.servers.is_empty() {
        return Err(Error::invalid(
            "server",
            "give --server URL[,URL...] (or agent.servers in --config, or ZIXIAO_SERVERS)",
        ));
    }
    let mut listen: SocketAddr = config.agent.listen.parse().map_err(|e| {
        Error::invalid(
            "listen",
            format!("`{}` is not host:port: {e}", config.agent.listen),
        )
    })?;
    // The AgentService has no TLS and no caller identity yet: anyone who
    // reaches it controls this node, so by default only this machine may.
    if args.listen.is_none()
        && config.agent.listen == zixiao_cluster::config::AgentConfig::default().agent.listen
    {
        listen.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let tls = match &args.ca_cert {
        Some(path) => Some(agent::AgentTls {
            ca_pem: std::fs::read_to_string(path).map_err(|e| {
                Error::invalid("ca_cert", format!("cannot read `{}`: {e}", path.display()))
            })?,
            join_token: args.join_token.clone(),
            renew_before: super::duration("--renew-cert-before", &args.renew_cert_before)?,
            renew_check: agent::RENEW_CHECK,
        }),
        None if args.join_token.is_some() => {
            return Err(Error::invalid(
                "ca_cert",
                "a join token needs the cluster CA certificate: give --ca-cert ca.pem",
            ))
        }
        None => None,
    };
    if !listen.ip().is_loopback() && !args.insecure_no_tls && tls.is_none() {
        return Err(Error::invalid(
            "listen",
            format!(
                "{listen} is not a loopback address, and this agent has no TLS: anyone who \
                 reaches it would control this node; join the cluster with --ca-cert and \
                 --join-token, listen on 127.0.0.1, or say --insecure-no-tls"
            ),
        ));
    }
    if args.insecure_no_tls && tls.is_none() && !listen.ip().is_loopback() {
        tracing::warn!(
            "--insecure-no-tls: no TLS and no authentication on \
             {listen}; every caller that reaches it controls this node"
        );
    }
    let state_dir = state_dir(cli, config.agent.state_dir.clone())?;
    if let Some(uri) = &args.libvirt_migration_uri {
        config.drivers.libvirt_migration_uri = Some(uri.clone());
    }
    if let Some(address) = args.libvirt_migration_address {
        config.drivers.libvirt_migration_address = Some(address);
    }
    let drivers = driver_config(
        cli,
        &config.drivers,
        &state_dir,
        args.netns_dir.as_deref(),
        underlay.map(|u| u.address()),
    )?;
    let mut local = zixiao_embedded::local_agent(&state_dir, &drivers).await?;
    if let Some(ratios) = config.node.allocation_ratios() {
        local = local.with_allocation_ratios(ratios);
    }
    // The scrape reads the runtimes through drivers of its own, as the
    // watchdog does: the agent's are moved into it.
    let metrics = match args.metrics_listen {
        Some(addr) => {
            let (metrics, listener) = super::server::metrics_listener(addr).await?;
            let scraped: Arc<dyn zixiao_core::NodeAgent> =
                Arc::new(zixiao_embedded::local_agent(&state_dir, &drivers).await?);
            let source = Arc::new(zixiao_cluster::node_metrics::NodeSource::new(
                &state_dir, scraped,
            ));
            let addr = listener.local_addr().ok();
            Some((
                tokio::spawn(zixiao_metrics::serve(listener, metrics, source)),
                addr,
            ))
        }
        None => None,
    };
    // As in the embedded deployment: without a netlink socket the node
    // simply sets up no networks (and does not declare that it does).
    let network = if args.no_networks {
        None
    } else {
        match agent::linux_network(&drivers.netns_dir, underlay) {
            Ok(host) => Some(host),
            Err(e) => {
                tracing::warn!("this node sets up no networks: {}", e.chain());
                None
            }
        }
    };
    let name =
        config.node.name.clone().unwrap_or_else(|| {
            zixiao_embedded::node_id_from_hostname(&local.describe_now().hostname)
        });
    if !args.no_watchdog {
        let exe = std::env::current_exe().map_err(|e| {
            Error::Internal(format!(
                "cannot find this program to start the watchdog: {e}"
            ))
        })?;
        let mut command = std::process::Command::new(exe);
        command
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--containerd-socket")
            .arg(&drivers.containerd_socket)
            .arg("--libvirt-uri")
            .arg(&drivers.libvirt_uri)
            .arg("watchdog")
            .arg("--fence-after-ms")
            .arg(config.timing.fence_after_ms.to_string());
        watchdog::spawn_detached(command)?;
    }
    let handle = agent::start_with_network(
        AgentOptions {
            name: name.clone(),
            servers: config.agent.servers.clone(),
            region: config.node.region.clone(),
            zone: config.node.zone.clone(),
            labels: config.node.labels.clone(),
            listen,
            advertise: config.agent.advertise.clone(),
            state_dir,
            timing: config.timing,
            tls,
            limits: zixiao_api::Limits::default()
                .with_max_connections(args.max_connections.get())?,
            onboarding: smoke_test,
        },
        local,
        network,
    )
    .await?;
    super::server::announce(format_args!(
        "zixiao agent {name} listening on {}",
        handle.addr()
    ));
    if let Some((_, Some(addr))) = &metrics {
        super::server::announce(format_args!(
            "zixiao agent {name} metrics on http://{addr}/metrics"
        ));
    }
    super::server::wait_for_signal().await;
    if let Some((task, _)) = metrics {
        task.abort();
    }
    if args.leave_on_exit {
        tracing::info!(node = %name, "draining and leaving the cluster");
        handle.leave().await?;
    } else {
        handle.shutdown().await;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the node's watchdog until its agent leaves.
pub(crate) async fn run_watchdog(cli: &Cli, args: &WatchdogArgs) -> Result<ExitCode> {
    let state_dir = state_dir(cli, None)?;
    // The agent that starts it names its runtimes on the command line.
    let configured = zixiao_cluster::config::DriversSection::default();
    let drivers = driver_config(cli, &configured, &state_dir, None, None)?;
    let local = zixiao_embedded::local_agent(&state_dir, &drivers).await?;
    let fence_after = std::time::Duration::from_millis(args.fence_after_ms);
    watchdog::run(&state_dir, fence_after, Arc::new(local)).await?;
    Ok(ExitCode::SUCCESS)
}
