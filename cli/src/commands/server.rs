//! `zixiao server`: serves the gRPC API (the user services, the agents'
//! MembershipService, reflection, health) over etcd (`--etcd`) or the
//! embedded store and a local agent (`--embedded`), from flags or
//! `--config server.yaml` with environment overrides. Runs until interrupted.
//! An embedded server is also its state directory's daemon, on the
//! directory's Unix socket; `zixiao daemon` is that alone, and `zixiao
//! daemon install` writes a systemd unit that keeps it running.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use zixiao_api::secure::ServerTls;
use zixiao_auth::{AuthError, SubjectName};
use zixiao_cluster::config::{process_env, ServerConfig};
use zixiao_cluster::{server, ServerOptions};
use zixiao_core::{Error, Result};

use crate::args::Cli;

/// `zixiao server` flags; they win over the config file and the environment.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    zixiao server init --dir /etc/zixiao/pki --etcd http://10.0.0.5:2379 --endpoint https://10.0.0.1:50051\n  \
    zixiao server --etcd http://10.0.0.5:2379 --pki /etc/zixiao/pki --listen 0.0.0.0:50051 --san zixiao.example.com\n  \
    zixiao server --embedded                  # TLS with a PKI made under --state-dir (pki/admin.yaml)")]
pub(crate) struct ServerArgs {
    #[command(subcommand)]
    action: Option<ServerAction>,
    /// The cluster PKI directory (`zixiao server init`): serve TLS with a
    /// certificate issued from it, and authenticate every call. Every
    /// replica gets the same directory.
    #[arg(long, value_name = "DIR")]
    pki: Option<PathBuf>,
    /// Another DNS name or address of this server for its certificate
    /// (repeatable; the listen address, localhost and the host name are in it).
    #[arg(long = "san", value_name = "NAME")]
    sans: Vec<String>,
    /// Serve without TLS and without authentication, also on addresses
    /// other than loopback: whoever reaches the port is an admin.
    #[arg(long)]
    insecure_no_tls: bool,
    /// A server.yaml (see zixiao-cluster/examples/server.yaml).
    // The store flags are global so that `server init --dir D --etcd URL`
    // reads as the help shows it: init needs the store to write the first
    // admin into.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// gRPC listen address [default: 0.0.0.0:50051].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// etcd client URLs, comma-separated (http://host:port,...).
    #[arg(
        long,
        global = true,
        value_name = "URL[,URL...]",
        value_delimiter = ','
    )]
    etcd: Vec<String>,
    /// Key prefix in etcd, to share one etcd between clusters.
    #[arg(long, global = true, value_name = "PREFIX")]
    etcd_prefix: Option<String>,
    /// Serve the embedded store and a local agent from --state-dir instead
    /// of etcd (with TLS from --state-dir/pki, made on first start, unless
    /// --pki or --insecure-no-tls).
    #[arg(long, global = true, conflicts_with = "etcd")]
    embedded: bool,
    /// This replica's id (shown as the leader) [default: hostname:port].
    #[arg(long, value_name = "ID")]
    id: Option<String>,
    /// Serve Prometheus metrics on http://ADDR/metrics (API calls by
    /// operation and outcome with their latency, instances by type and
    /// status, nodes by status; port 0: any free port, printed at start).
    /// Loopback addresses only: scrape it locally or through a proxy you
    /// secure.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Serve the web dashboard on ADDR (port 0: any free port, printed at
    /// start). With TLS (--pki, or the embedded server's own PKI) it is
    /// https://ADDR/ with the server's certificate (the browser must trust
    /// the cluster CA, DIR/ca.pem), may listen on any address, and the pages
    /// ask for a token: every call is authenticated, authorized and audited
    /// as over gRPC. Without TLS, http://ADDR/ on loopback addresses only.
    #[arg(long, value_name = "ADDR")]
    ui_listen: Option<std::net::SocketAddr>,
    /// Serve the dashboard as the local administrator even with TLS:
    /// `zixiao ui` running the state directory's daemon itself, whose
    /// caller holds the directory.
    #[arg(skip)]
    ui_local: bool,
    /// The most connections the API listener holds open at once (TLS
    /// handshakes included); beyond it, new clients wait until one closes.
    #[arg(long, value_name = "N", default_value_t = default_max_connections())]
    max_connections: std::num::NonZeroUsize,
}

/// `zixiao daemon` flags.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    zixiao daemon &                      # until Ctrl-C; commands on the same --state-dir use it\n  \
    zixiao daemon install --print        # the systemd unit that keeps it running\n  \
    sudo zixiao daemon install && sudo systemctl enable --now zixiao")]
pub(crate) struct DaemonArgs {
    #[command(subcommand)]
    action: Option<DaemonAction>,
    /// Also serve the gRPC API on this TCP address, over TLS with the
    /// state directory's PKI (DIR/pki; its admin.yaml to connect)
    /// [default: 127.0.0.1 on any free port].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum ServerAction {
    /// Create the cluster's CA in DIR (ca.pem, ca-key.pem: 0600) and its
    /// first admin, user `admin`, with a client configuration
    /// DIR/admin.yaml (the CA inline, an admin token, and the servers'
    /// address: --endpoint, default https://127.0.0.1:50051). Takes the
    /// store flags of `zixiao server` (--etcd, or --embedded with --state-dir).
    Init {
        /// The PKI directory (made 0700); refused if it holds a CA already.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The cluster's name, in the CA's subject.
        #[arg(long, value_name = "NAME", default_value = "zixiao")]
        cluster: String,
    },
}

#[derive(Debug, clap::Subcommand)]
enum DaemonAction {
    /// Write a systemd unit that runs the daemon of --state-dir (system-wide
    /// as root, or for this user with --user).
    Install {
        /// A user unit (~/.config/systemd/user) instead of a system one.
        #[arg(long)]
        user: bool,
        /// Print the unit instead of writing it.
        #[arg(long)]
        print: bool,
    },
}

/// `zixiao daemon`: the embedded server of --state-dir, or its unit.
pub(crate) async fn run_daemon(cli: &Cli, args: &DaemonArgs) -> Result<ExitCode> {
    match &args.action {
        Some(DaemonAction::Install { user, print }) => install(cli, *user, *print),
        None => run(cli, &daemon_args(args.listen.clone(), None)).await,
    }
}

/// The server a daemon runs: the embedded deployment of --state-dir, its
/// API on `listen` (default 127.0.0.1, any free port), and with `ui` the
/// dashboard there as the local administrator.
fn daemon_args(listen: Option<String>, ui: Option<SocketAddr>) -> ServerArgs {
    ServerArgs {
        action: None,
        pki: None,
        sans: Vec::new(),
        insecure_no_tls: false,
        config: None,
        listen: Some(listen.unwrap_or_else(|| "127.0.0.1:0".to_owned())),
        etcd: Vec::new(),
        etcd_prefix: None,
        embedded: true,
        id: None,
        metrics_listen: None,
        ui_listen: ui,
        ui_local: ui.is_some(),
        max_connections: default_max_connections(),
    }
}

/// `zixiao ui` where no daemon runs for --state-dir: runs that daemon,
/// serving the dashboard on `listen` as its caller, so the pages see what
/// every other command does (they all go through the daemon).
pub(crate) async fn run_daemon_with_ui(cli: &Cli, listen: SocketAddr) -> Result<ExitCode> {
    run(cli, &daemon_args(None, Some(listen))).await
}

/// Writes (or prints) the systemd unit of the daemon of --state-dir.
fn install(cli: &Cli, user: bool, print: bool) -> Result<ExitCode> {
    let state_dir = match &cli.state_dir {
        Some(dir) => super::absolute(dir)?,
        None => zixiao_embedded::default_state_dir()?,
    };
    let exe = std::env::current_exe()
        .map_err(|e| Error::Internal(format!("cannot find this program's path: {e}")))?;
    let unit = format!(
        "[Unit]\n\
         Description=Zixiao daemon of {dir}\n\
         After=network-online.target containerd.service libvirtd.service\n\
         \n\
         [Service]\n\
         ExecStart={exe} --state-dir {dir} --containerd-socket {containerd} daemon\n\
         Restart=on-failure\n\
         # Only the daemon: containers, VMs and microVMs outlive its restarts.\n\
         KillMode=process\n\
         \n\
         [Install]\n\
         WantedBy={target}\n",
        dir = state_dir.display(),
        exe = exe.display(),
        containerd = cli.containerd_socket(None).display(),
        target = if user {
            "default.target"
        } else {
            "multi-user.target"
        },
    );
    if print {
        print!("{unit}");
        return Ok(ExitCode::SUCCESS);
    }
    let dir = if user {
        dirs::config_dir()
            .ok_or_else(|| Error::invalid("--user", "no user configuration directory is known"))?
            .join("systemd/user")
    } else {
        std::path::PathBuf::from("/etc/systemd/system")
    };
    let path = dir.join("zixiao.service");
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, unit))
        .map_err(|e| Error::invalid("install", format!("cannot write {}: {e}", path.display())))?;
    let scope = if user { " --user" } else { "" };
    println!(
        "wrote {}\nnow run: systemctl{scope} daemon-reload && systemctl{scope} enable --now zixiao",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The server configuration: the file, the environment, then the flags.
fn server_config(args: &ServerArgs) -> Result<ServerConfig> {
    let mut config = ServerConfig::load(args.config.as_deref(), &process_env)?;
    if let Some(listen) = &args.listen {
        config.server.listen = listen.clone();
    }
    if !args.etcd.is_empty() {
        config.store.etcd = args.etcd.clone();
    }
    if let Some(prefix) = &args.etcd_prefix {
        config.store.etcd_prefix = prefix.clone();
    }
    if let Some(id) = &args.id {
        config.server.id = Some(id.clone());
    }
    Ok(config)
}

/// The name of the first admin `zixiao server init` makes.
const ADMIN: &str = "admin";

/// The file of a PKI directory holding the first admin's configuration.
const ADMIN_CONFIG: &str = "admin.yaml";

/// Runs the server until Ctrl-C or SIGTERM.
pub(crate) async fn run(cli: &Cli, args: &ServerArgs) -> Result<ExitCode> {
    if let Some(ServerAction::Init { dir, cluster }) = &args.action {
        return init(cli, args, dir, cluster).await;
    }
    let mut config = server_config(args)?;
    let embedded_mode = args.embedded || config.store.embedded.is_some();
    // TLS with --pki; an embedded server makes its own PKI, unless told not to.
    let tls_wanted = !args.insecure_no_tls && (args.pki.is_some() || embedded_mode);
    if args.insecure_no_tls && args.pki.is_some() {
        return Err(Error::invalid(
            "--insecure-no-tls",
            "--pki serves TLS: give one or the other",
        ));
    }
    if !tls_wanted && args.listen.is_none() && config.server.listen == default_listen() {
        // Without TLS the default is this machine only.
        config.server.listen = "127.0.0.1:50051".to_owned();
    }
    let listen: SocketAddr = config.server.listen.parse().map_err(|e| {
        Error::invalid(
            "listen",
            format!("`{}` is not host:port: {e}", config.server.listen),
        )
    })?;
    if !tls_wanted && !listen.ip().is_loopback() && !args.insecure_no_tls {
        return Err(Error::invalid(
            "listen",
            format!(
                "{listen} is not a loopback address, and without TLS anyone who reaches it \
                 would be an admin: serve TLS with --pki DIR (see `zixiao server init`), or \
                 say --insecure-no-tls"
            ),
        ));
    }
    if args.insecure_no_tls {
        tracing::warn!(
            "--insecure-no-tls: no TLS and no authentication on \
             {listen}; every caller that reaches it is an admin"
        );
    }
    let mut embedded = None;
    let controller = if embedded_mode {
        let deployment = embedded_deployment(cli, config.store.embedded.clone()).await?;
        let controller = deployment.0.controller.clone();
        embedded = Some(deployment);
        controller
    } else if !config.store.etcd.is_empty() {
        server::controller(etcd_store(&config).await?)
    } else {
        return Err(Error::invalid(
            "etcd",
            "give --etcd URL[,URL...] (or store.etcd in --config, or ZIXIAO_ETCD_ENDPOINTS), \
             or --embedded",
        ));
    };
    // The PKI: --pki, or the embedded deployment's own, made at first start.
    let pki = match (&args.pki, &embedded) {
        _ if !tls_wanted => None,
        (Some(dir), _) => Some((zixiao_auth::Pki::load(dir).map_err(AuthError::from)?, false)),
        (None, Some((_, state_dir))) => Some(embedded_pki(&state_dir.join("pki"))?),
        (None, None) => None,
    };
    // Shared with the membership service, which signs joining agents' certificates.
    let pki = pki.map(|(pki, made)| (std::sync::Arc::new(pki), made));
    let id = config.server.id.clone().unwrap_or_else(|| {
        let host = zixiao_core::host::HostFacts::probe(std::path::Path::new("/"))
            .map(|h| h.hostname)
            .unwrap_or_else(|_| "server".to_owned());
        format!("{host}:{}", listen.port())
    });
    // A carbon source file the server cannot use stops it here, before it
    // listens: there are no last good values yet to keep.
    let carbon = config
        .server
        .carbon_file
        .clone()
        .map(zixiao_cluster::carbon::CarbonSource::open)
        .transpose()?;
    let metrics = match args.metrics_listen {
        Some(addr) => Some(metrics_listener(addr).await?),
        None => None,
    };
    // With TLS the dashboard serves HTTPS with the server's certificate and
    // may listen anywhere; as the local administrator (`zixiao ui`) or
    // without TLS it is plain HTTP, for this machine only.
    let ui_over_tls = tls_wanted && !args.ui_local;
    let ui_listener = match args.ui_listen {
        Some(addr) if ui_over_tls => Some(listener("--ui-listen", addr).await?),
        Some(addr) => Some(
            loopback_listener(
                "--ui-listen",
                addr,
                "without TLS the dashboard is plain HTTP, so it serves this machine only \
                 (serve TLS with --pki, or reach it through an SSH tunnel)",
            )
            .await?,
        ),
        None => None,
    };
    let options = ServerOptions {
        id: id.clone(),
        listen,
        timing: config.timing,
        metrics: metrics.as_ref().map(|(metrics, _)| metrics.clone()),
        limits: zixiao_api::Limits::default().with_max_connections(args.max_connections.get())?,
    };
    let store = controller.store().clone();
    // The scrape reads the controller itself: counted, never authorized or audited.
    let metrics_addr = metrics
        .as_ref()
        .and_then(|(_, listener)| listener.local_addr().ok());
    // The controller reports its placements, converges, failovers and
    // commits to the same metrics, and the scrape reads its queue.
    let queued = controller.clone();
    let source = zixiao_metrics::ApiSource::new(controller.clone())
        .with_converge_queue(Box::new(move || queued.converge_queue_depth()));
    if let Some((metrics, _)) = &metrics {
        controller.set_telemetry(metrics.clone());
    }
    // The dashboard presents the server's certificate: valid for its
    // address too.
    let listens: Vec<SocketAddr> = std::iter::once(listen)
        .chain(ui_listener.as_ref().and_then(|l| l.local_addr().ok()))
        .collect();
    let mut ui_tls = None;
    let mut handle = match &pki {
        Some((pki, _)) => {
            let tls = ServerTls::issue(pki, &server_names(&listens, &args.sans)?)?;
            if ui_over_tls {
                ui_tls = Some(tls.config().clone());
            }
            server::start_secure(controller, options, tls, pki.clone()).await?
        }
        None => server::start(controller, options).await?,
    };
    // Per-node gauges carry the newest sample of the server's usage series.
    let metrics_task = metrics.map(|(metrics, listener)| {
        let source = source.with_node_usage(handle.stats_history().latest_node_usage());
        tokio::spawn(zixiao_metrics::serve(
            listener,
            metrics,
            std::sync::Arc::new(source),
        ))
    });
    if let Some(source) = carbon {
        handle.follow_carbon_file(source);
    }
    // The embedded deployment's node is this machine, with no agent to
    // send its host's usage: the server reads it itself.
    if let Some((deployment, _)) = &embedded {
        handle
            .stats_history()
            .sample_local_host(deployment.node.id.as_str());
    }
    let scheme = if pki.is_some() { "https://" } else { "" };
    let mut endpoint_addr = handle.addr();
    if endpoint_addr.ip().is_unspecified() {
        endpoint_addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    if let Some((pki, true)) = &pki {
        // A PKI made just now: its first admin, to reach this server.
        let endpoint = format!("https://{endpoint_addr}");
        if let Err(e) = bootstrap_admin(store, pki, &endpoint).await {
            handle.shutdown().await;
            return Err(e);
        }
    }
    // The embedded deployment is also the state directory's daemon: the
    // CLI and the bindings on that directory reach it through its socket
    // instead of failing on the store's lock.
    let mut local_api = None;
    let (stop_socket, socket) = match embedded {
        Some((deployment, state_dir)) => {
            let path = zixiao_api::local::socket_path(&state_dir);
            let bound = match zixiao_api::local::UnixSocket::bind(&path).await {
                Ok(bound) => bound,
                Err(e) => {
                    handle.shutdown().await;
                    return Err(e);
                }
            };
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            // Its caller is the local admin: whoever opens it (0600) holds the machine.
            // It answers stats histories from the server's samples.
            let api: std::sync::Arc<dyn zixiao_core::api::Api> =
                std::sync::Arc::new(handle.stats_history().share_with(
                    zixiao_core::api::Traced::new(zixiao_client::local_access(deployment)),
                ));
            local_api = Some(api.clone());
            let task = tokio::spawn(bound.serve(api, async {
                let _ = stopped.await;
            }));
            (Some(stop), Some((task, state_dir, path)))
        }
        None => (None, None),
    };
    let ui_task = match ui_listener {
        Some(listener) => {
            let access = match (local_api, args.ui_local, pki.is_some()) {
                // `zixiao ui`'s own daemon: as the socket's caller.
                (Some(api), true, _) => Ok(zixiao_ui::Access::Local(zixiao_core::Client::new(api))),
                (_, _, true) => Ok(zixiao_ui::Access::Authenticated(handle.user_scope())),
                // No TLS: every caller is the local administrator, as on the API.
                _ => handle
                    .user_scope()
                    .api(Default::default())
                    .await
                    .map(|api| zixiao_ui::Access::Local(zixiao_core::Client::new(api))),
            };
            match access {
                Ok(access) => Some(dashboard(listener, ui_tls, access)?),
                Err(e) => {
                    handle.shutdown().await;
                    return Err(e);
                }
            }
        }
        None => None,
    };
    // Scripts read the first line for the address, and may close the pipe
    // after it: a line nobody reads must not end the server.
    announce(format_args!(
        "zixiao server {id} listening on {scheme}{}",
        handle.addr()
    ));
    if let Some((_, state_dir, path)) = &socket {
        announce(format_args!(
            "zixiao daemon of {} on {}",
            state_dir.display(),
            path.display()
        ));
    }
    if let Some(addr) = metrics_addr {
        announce(format_args!(
            "zixiao server {id} metrics on http://{addr}/metrics"
        ));
    }
    match &ui_task {
        // As `zixiao ui` says it where a daemon was running already.
        Some((_, addr)) if args.ui_local => announce(format_args!("zixiao ui on http://{addr}/")),
        Some((_, addr)) => announce(format_args!(
            "zixiao server {id} dashboard on {}://{addr}/",
            if ui_over_tls { "https" } else { "http" }
        )),
        None => {}
    }
    wait_for_signal().await;
    for task in metrics_task
        .into_iter()
        .chain(ui_task.map(|(task, _)| task))
    {
        task.abort();
    }
    if let (Some(stop), Some((task, _, _))) = (stop_socket, socket) {
        let _ = stop.send(());
        let _ = task.await;
    }
    handle.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Serves the web dashboard on `listener` to `access`'s callers, over TLS
/// with `tls`: the task serving it, and its address.
fn dashboard(
    listener: tokio::net::TcpListener,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    access: zixiao_ui::Access,
) -> Result<(tokio::task::JoinHandle<()>, SocketAddr)> {
    let addr = listener
        .local_addr()
        .map_err(|e| Error::invalid("--ui-listen", format!("no address: {e}")))?;
    let task = tokio::spawn(async move {
        let served = match tls {
            Some(tls) => zixiao_ui::serve_tls(listener, &tls, access, std::future::pending()).await,
            None => zixiao_ui::serve(listener, access, std::future::pending()).await,
        };
        if let Err(e) = served {
            tracing::warn!(error = %e, "the dashboard stopped");
        }
    });
    Ok((task, addr))
}

/// `--max-connections` of servers and agents when not given.
pub(crate) fn default_max_connections() -> std::num::NonZeroUsize {
    std::num::NonZeroUsize::new(zixiao_api::Limits::default().max_connections())
        .unwrap_or(std::num::NonZeroUsize::MIN)
}

/// Metrics for a server or agent, and the loopback listener they are
/// served on. Errors: `InvalidArgument` (`--metrics-listen`: not a
/// loopback address, or it cannot be bound).
pub(crate) async fn metrics_listener(
    addr: std::net::SocketAddr,
) -> Result<(
    std::sync::Arc<zixiao_metrics::Metrics>,
    tokio::net::TcpListener,
)> {
    let listener = loopback_listener(
        "--metrics-listen",
        addr,
        "the metrics listener has no TLS and no authentication, so it serves this machine \
         only (scrape it locally, or through a proxy you secure)",
    )
    .await?;
    Ok((
        std::sync::Arc::new(zixiao_metrics::Metrics::new()),
        listener,
    ))
}

/// A listener on `addr`, which `flag` gave: refused unless it is a
/// loopback address, for the reason `why`. Errors: `InvalidArgument`
/// (`flag`: not loopback, or it cannot be bound).
pub(crate) async fn loopback_listener(
    flag: &str,
    addr: std::net::SocketAddr,
    why: &str,
) -> Result<tokio::net::TcpListener> {
    if !addr.ip().is_loopback() {
        return Err(Error::invalid(
            flag,
            format!("{addr} is not a loopback address: {why}"),
        ));
    }
    listener(flag, addr).await
}

/// A listener on `addr`, which `flag` gave. Errors: `InvalidArgument`
/// (`flag`: it cannot be bound).
async fn listener(flag: &str, addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::invalid(flag, format!("cannot listen on {addr}: {e}")))
}

fn default_listen() -> String {
    ServerConfig::default().server.listen
}

/// The names a server's certificate is valid for: its listen addresses
/// (unless one is every address), loopback, the host name, and `sans`.
fn server_names(listens: &[SocketAddr], sans: &[String]) -> Result<Vec<SubjectName>> {
    let mut names = vec![
        SubjectName::Dns("localhost".to_owned()),
        SubjectName::Ip(std::net::Ipv4Addr::LOCALHOST.into()),
        SubjectName::Ip(std::net::Ipv6Addr::LOCALHOST.into()),
    ];
    for listen in listens {
        if !listen.ip().is_unspecified() && !listen.ip().is_loopback() {
            names.push(SubjectName::Ip(listen.ip()));
        }
    }
    if let Ok(facts) = zixiao_core::host::HostFacts::probe(std::path::Path::new("/")) {
        if let Ok(host) = facts.hostname.to_ascii_lowercase().parse::<SubjectName>() {
            names.push(host);
        }
    }
    for (i, san) in sans.iter().enumerate() {
        let name = san
            .parse::<SubjectName>()
            .map_err(|e| Error::invalid(format!("--san[{i}]"), e.to_string()))?;
        names.push(name);
    }
    names.dedup();
    Ok(names)
}

/// The embedded deployment's own PKI in `dir`, made if missing; whether
/// it was made just now.
fn embedded_pki(dir: &std::path::Path) -> Result<(zixiao_auth::Pki, bool)> {
    if dir.join(zixiao_auth::pki::CA_CERT_FILE).exists() {
        return Ok((zixiao_auth::Pki::load(dir).map_err(AuthError::from)?, false));
    }
    let pki = zixiao_auth::Pki::init(dir, "zixiao").map_err(AuthError::from)?;
    Ok((pki, true))
}

/// The cluster's first admin (user `admin`, or a new token for it if it
/// exists) and its client configuration `admin.yaml` in the PKI's
/// directory, naming `endpoint` with the CA inline. Returns the file.
async fn bootstrap_admin(
    store: std::sync::Arc<dyn zixiao_core::Store>,
    pki: &zixiao_auth::Pki,
    endpoint: &str,
) -> Result<PathBuf> {
    use zixiao_auth::{AuthStore, ClientConfigFile, Context, Role, UserName};
    let accounts = AuthStore::new(store, std::sync::Arc::new(zixiao_core::SystemClock));
    let admin = UserName::try_from(ADMIN).expect("a valid user name");
    match accounts
        .create_user(admin.clone(), Role::Admin, Default::default())
        .await
    {
        Ok(_) => {}
        Err(AuthError::AlreadyExists { .. }) => {
            let existing = accounts.get_user(&admin).await?;
            if existing.role != Role::Admin {
                return Err(Error::FailedPrecondition(format!(
                    "user `{ADMIN}` exists in this store as a {}; it cannot be the first admin",
                    existing.role
                )));
            }
        }
        Err(e) => return Err(e.into()),
    }
    let (_, token) = accounts
        .issue_user_token(&admin, Role::Admin, None, None)
        .await?;
    let mut config = ClientConfigFile::default();
    config
        .add_context(Context {
            name: ADMIN.to_owned(),
            endpoint: endpoint.to_owned(),
            ca_pem: Some(pki.ca_pem().to_owned()),
            token: Some(token.expose().to_owned()),
            ..Context::default()
        })
        .map_err(AuthError::from)?;
    let path = pki.dir().join(ADMIN_CONFIG);
    config.save(&path).map_err(AuthError::from)?;
    Ok(path)
}

/// `zixiao server init`: the CA in `dir`, the first admin in the store.
async fn init(
    cli: &Cli,
    args: &ServerArgs,
    dir: &std::path::Path,
    cluster: &str,
) -> Result<ExitCode> {
    let config = server_config(args)?;
    let store: std::sync::Arc<dyn zixiao_core::Store> =
        if args.embedded || config.store.embedded.is_some() {
            let state_dir = match config
                .store
                .embedded
                .clone()
                .or_else(|| cli.state_dir.clone())
            {
                Some(dir) => super::absolute(&dir)?,
                None => zixiao_embedded::default_state_dir()?,
            };
            std::fs::create_dir_all(&state_dir).map_err(|e| {
                Error::invalid(
                    "--state-dir",
                    format!("cannot create {}: {e}", state_dir.display()),
                )
            })?;
            let path = zixiao_embedded::store_path(&state_dir);
            std::sync::Arc::new(zixiao_store::EmbeddedStore::open(&path)?)
        } else if !config.store.etcd.is_empty() {
            etcd_store(&config).await?
        } else {
            return Err(Error::invalid(
                "etcd",
                "name the cluster's store: --etcd URL[,URL...], or --embedded",
            ));
        };
    let dir = super::absolute(dir)?;
    let pki = zixiao_auth::Pki::init(&dir, cluster).map_err(AuthError::from)?;
    let endpoint = cli
        .endpoint
        .clone()
        .unwrap_or_else(|| "https://127.0.0.1:50051".to_owned());
    let admin = bootstrap_admin(store, &pki, &endpoint).await?;
    crate::output::print(
        cli.output,
        &serde_json::json!({
            "ca": dir.join(zixiao_auth::pki::CA_CERT_FILE),
            "ca_key": dir.join(zixiao_auth::pki::CA_KEY_FILE),
            "admin_config": admin,
            "fingerprint": pki.trust().fingerprint(),
        }),
        |_| {
            format!(
                "cluster CA in {dir} ({fingerprint})\nadmin configuration: {admin} \
                 (use it with --config, or copy it to ~/.config/zixiao/config.yaml)\n",
                dir = dir.display(),
                fingerprint = pki.trust().fingerprint(),
                admin = admin.display()
            )
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

/// The embedded deployment a server serves, and its state directory.
async fn embedded_deployment(
    cli: &Cli,
    dir: Option<PathBuf>,
) -> Result<(zixiao_embedded::Embedded, PathBuf)> {
    let state_dir = match dir.or_else(|| cli.state_dir.clone()) {
        Some(dir) => super::absolute(&dir)?,
        None => zixiao_embedded::default_state_dir()?,
    };
    let mut config = zixiao_embedded::EmbeddedConfig::new(state_dir.clone());
    // The server's leader loop converges; requests only wait.
    config.convergence = zixiao_core::controller::Convergence::Background;
    config.drivers.containerd_socket = cli.containerd_socket(None);
    config.drivers.libvirt_uri = cli.libvirt_uri(None);
    config.drivers.libvirt_domain_type = cli.libvirt_domain_type.clone();
    if let Some(mib) = cli.log_limit_mib {
        config.drivers.log_limit.max_bytes = mib << 20;
    }
    if let Some(allow) = cli.allow_host_paths {
        config.allow_host_paths = allow;
    }
    Ok((zixiao_embedded::open(config).await?, state_dir))
}

#[cfg(feature = "etcd")]
async fn etcd_store(config: &ServerConfig) -> Result<std::sync::Arc<dyn zixiao_core::Store>> {
    let options = zixiao_store::EtcdStoreOptions::new(config.store.etcd.clone())
        .key_prefix(config.store.etcd_prefix.clone());
    let store = zixiao_store::EtcdStore::connect(options).await?;
    Ok(std::sync::Arc::new(store))
}

#[cfg(not(feature = "etcd"))]
async fn etcd_store(_config: &ServerConfig) -> Result<std::sync::Arc<dyn zixiao_core::Store>> {
    Err(Error::Unsupported(
        "this zixiao was built without etcd support (cargo feature `etcd`)".to_owned(),
    ))
}

/// Prints a line on stdout, flushed at once; a reader that has gone (a
/// closed pipe) is not an error.
pub(crate) fn announce(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Waits for Ctrl-C or SIGTERM.
pub(crate) async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(term) => { term.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
