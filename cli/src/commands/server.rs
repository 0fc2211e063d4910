//! `zixiao server`: serves the gRPC API (the user services, the agents'
//! MembershipService, reflection, health) over etcd (`--etcd`) or the
//! embedded store and a local agent (`--embedded`), from flags or
//! `--config server.yaml` with environment overrides. Runs until interrupted.

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
    let controller = if args.embedded || config.store.embedded.is_some() {
        embedded_controller(cli, config.store.embedded.clone()).await?
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
    println!("zixiao server {id} listening on {}", handle.addr());
    wait_for_signal().await;
    handle.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn embedded_controller(cli: &Cli, dir: Option<PathBuf>) -> Result<Controller> {
    let state_dir = match dir.or_else(|| cli.state_dir.clone()) {
        Some(dir) => super::absolute(&dir)?,
        None => zixiao_embedded::default_state_dir()?,
    };
    let mut config = zixiao_embedded::EmbeddedConfig::new(state_dir);
    // The server's leader loop converges; requests only wait.
    config.convergence = zixiao_core::controller::Convergence::Background;
    config.drivers.containerd_socket = cli.containerd_socket.clone();
    config.drivers.libvirt_uri = cli.libvirt_uri.clone();
    config.drivers.libvirt_domain_type = cli.libvirt_domain_type.clone();
    Ok(zixiao_embedded::open(config).await?.controller)
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
