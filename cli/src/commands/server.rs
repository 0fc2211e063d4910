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
use zixiao_cluster::config::{process_env, ServerConfig};
use zixiao_cluster::{server, ServerOptions};
use zixiao_core::{Controller, Error, Result};

use crate::args::Cli;

/// `zixiao server` flags; they win over the config file and the environment.
#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// A server.yaml (see zixiao-cluster/examples/server.yaml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// gRPC listen address [default: 0.0.0.0:50051].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// etcd client URLs, comma-separated (http://host:port,...).
    #[arg(long, value_name = "URL[,URL...]", value_delimiter = ',')]
    etcd: Vec<String>,
    /// Key prefix in etcd, to share one etcd between clusters.
    #[arg(long, value_name = "PREFIX")]
    etcd_prefix: Option<String>,
    /// Serve the embedded store and a local agent from --state-dir instead of etcd.
    #[arg(long, conflicts_with = "etcd")]
    embedded: bool,
    /// This replica's id (shown as the leader) [default: hostname:port].
    #[arg(long, value_name = "ID")]
    id: Option<String>,
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
    /// Also serve the gRPC API on this TCP address (no TLS yet: keep it on
    /// loopback) [default: 127.0.0.1 on any free port].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
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
        None => {
            let server = ServerArgs {
                config: None,
                listen: Some(
                    args.listen
                        .clone()
                        .unwrap_or_else(|| "127.0.0.1:0".to_owned()),
                ),
                etcd: Vec::new(),
                etcd_prefix: None,
                embedded: true,
                id: None,
            };
            run(cli, &server).await
        }
    }
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
        containerd = cli.containerd_socket.display(),
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

/// Runs the server until Ctrl-C or SIGTERM.
pub(crate) async fn run(cli: &Cli, args: &ServerArgs) -> Result<ExitCode> {
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
    let listen: SocketAddr = config.server.listen.parse().map_err(|e| {
        Error::invalid(
            "listen",
            format!("`{}` is not host:port: {e}", config.server.listen),
        )
    })?;
    let mut embedded = None;
    let controller = if args.embedded || config.store.embedded.is_some() {
        let deployment = embedded_deployment(cli, config.store.embedded.clone()).await?;
        let controller = deployment.0.controller.clone();
        embedded = Some(deployment);
        controller
    } else if !config.store.etcd.is_empty() {
        etcd_controller(&config).await?
    } else {
        return Err(Error::invalid(
            "etcd",
            "give --etcd URL[,URL...] (or store.etcd in --config, or ZIXIAO_ETCD_ENDPOINTS), \
             or --embedded",
        ));
    };
    let id = config.server.id.clone().unwrap_or_else(|| {
        let host = zixiao_core::host::HostFacts::probe(std::path::Path::new("/"))
            .map(|h| h.hostname)
            .unwrap_or_else(|_| "server".to_owned());
        format!("{host}:{}", listen.port())
    });
    let handle = server::start(
        controller,
        ServerOptions {
            id: id.clone(),
            listen,
            timing: config.timing,
        },
    )
    .await?;
    // The embedded deployment is also the state directory's daemon: the
    // CLI and the bindings on that directory reach it through its socket
    // instead of failing on the store's lock.
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
            let api = std::sync::Arc::new(deployment);
            let task = tokio::spawn(bound.serve(api, async {
                let _ = stopped.await;
            }));
            (Some(stop), Some((task, state_dir, path)))
        }
        None => (None, None),
    };
    // Scripts read the first line for the address.
    // Scripts read the first line for the address, and may close the pipe
    // after it: a line nobody reads must not end the server.
    announce(format_args!(
        "zixiao server {id} listening on {}",
        handle.addr()
    ));
    if let Some((_, state_dir, path)) = &socket {
        announce(format_args!(
            "zixiao daemon of {} on {}",
            state_dir.display(),
            path.display()
        ));
    }
    wait_for_signal().await;
    if let (Some(stop), Some((task, _, _))) = (stop_socket, socket) {
        let _ = stop.send(());
        let _ = task.await;
    }
    handle.shutdown().await;
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
    config.drivers.containerd_socket = cli.containerd_socket.clone();
    config.drivers.libvirt_uri = cli.libvirt_uri.clone();
    config.drivers.libvirt_domain_type = cli.libvirt_domain_type.clone();
    Ok((zixiao_embedded::open(config).await?, state_dir))
}

#[cfg(feature = "etcd")]
async fn etcd_controller(config: &ServerConfig) -> Result<Controller> {
    let options = zixiao_store::EtcdStoreOptions::new(config.store.etcd.clone())
        .key_prefix(config.store.etcd_prefix.clone());
    let store = zixiao_store::EtcdStore::connect(options).await?;
    Ok(server::controller(std::sync::Arc::new(store)))
}

#[cfg(not(feature = "etcd"))]
async fn etcd_controller(_config: &ServerConfig) -> Result<Controller> {
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
