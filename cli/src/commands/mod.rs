//! One function per command: parse what clap could not, make one call of
//! the [`Client`](zixiao_core::Client), print.

mod access;
pub(crate) mod agent;
mod aggregate;
mod cluster;
mod context;
mod image;
mod instance;
mod man;
mod network;
mod node;
mod operation;
pub(crate) mod server;
mod state;
mod template;
pub(crate) mod ui;

use std::path::PathBuf;
use std::process::ExitCode;

use zixiao_core::{Error, ErrorKind, Result};

use crate::args::{Cli, Command, StateCommand};

/// Runs the parsed command line; the exit code when it is not plain success.
pub(crate) async fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::Completion { shell } = cli.command {
        // Into memory first: generating straight to stdout panics when the
        // reader goes away (`| head`); write_stdout does not.
        let mut script = Vec::new();
        let mut command = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut command, "zixiao", &mut script);
        crate::output::write_stdout(&script)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Version = cli.command {
        return version(cli.output);
    }
    if let Command::Man { dir } = &cli.command {
        return man::run(dir.as_deref());
    }
    match &cli.command {
        Command::Server(args) => return server::run(&cli, args).await,
        Command::Daemon(args) => return server::run_daemon(&cli, args).await,
        Command::Agent(args) => return agent::run(&cli, args).await,
        Command::Watchdog(args) => return agent::run_watchdog(&cli, args).await,
        _ => {}
    }
    // Checking and restoring the store file must not open it first.
    match &cli.command {
        Command::State(StateCommand::Check) => return state::check(&state_dir(&cli)?, cli.output),
        Command::State(StateCommand::Restore { file }) => {
            return state::restore(&state_dir(&cli)?, cli.output, file)
        }
        _ => {}
    }
    if let Command::Context(command) = cli.command {
        return context::run(
            cli.config.as_deref(),
            cli.endpoint.as_deref(),
            cli.output,
            command,
        );
    }
    let connection = connection(&cli)?;
    if let (Command::Ui(args), None) = (&cli.command, &connection) {
        // The dashboard follows every change only through the daemon.
        let socket = zixiao_api::local::socket_path(&state_dir(&cli)?);
        if !zixiao_api::local::answers(&socket).await {
            return server::run_daemon_with_ui(&cli, args.listen()).await;
        }
    }
    let client = match &connection {
        // A server: the same commands, through the gRPC implementation.
        Some(options) => zixiao_client::connect(options.clone()).await?,
        // The state directory's daemon if one runs, else in this process.
        None => zixiao_client::open(open_options(&cli)?).await?,
    };
    let format = cli.output;
    match cli.command {
        Command::User(command) => access::user(client, format, command, connection.as_ref()).await,
        Command::Token(command) => access::token(client, format, command).await,
        Command::Project(command) => access::project(client, format, command).await,
        Command::Audit(command) => access::audit(client, format, command).await,
        Command::State(StateCommand::Backup { file }) => state::backup(client, format, file).await,
        Command::Node(command) => node::run(client, format, command).await,
        Command::Aggregate(command) => aggregate::run(client, format, command).await,
        Command::Instance(command) => instance::run(client, format, command).await,
        Command::Image(command) => image::run(client, format, command).await,
        Command::Operation(command) => operation::run(client, format, command).await,
        Command::Cluster(command) => cluster::run(client, format, command).await,
        Command::Network(command) => network::run(client, format, command).await,
        Command::Template(command) => template::run(client, format, command).await,
        Command::Ui(args) => ui::run(client, &args).await,
        Command::Version
        | Command::Man { .. }
        | Command::Completion { .. }
        | Command::Context(_)
        | Command::State(_)
        | Command::Daemon(_)
        | Command::Server(_)
        | Command::Agent(_)
        | Command::Watchdog(_) => Ok(ExitCode::SUCCESS),
    }
}

/// What this build can run: the drivers and the stores compiled in (a
/// runtime left out says `Unsupported` when used, naming the feature).
const BUILT_IN: &[(&str, bool)] = &[
    ("containerd", cfg!(feature = "containerd")),
    ("libvirt", cfg!(feature = "libvirt")),
    ("microvm", cfg!(feature = "microvm")),
    ("etcd", cfg!(feature = "etcd")),
];

/// `zixiao version`: the version and the features built in.
fn version(format: crate::args::Format) -> Result<ExitCode> {
    let version = env!("CARGO_PKG_VERSION");
    let features: Vec<&str> = BUILT_IN
        .iter()
        .filter_map(|(name, on)| on.then_some(*name))
        .collect();
    crate::output::print(
        format,
        &serde_json::json!({ "version": version, "features": features }),
        |_| {
            let listed = if features.is_empty() {
                "none".to_owned()
            } else {
                features.join(", ")
            };
            format!("zixiao {version}\nbuilt in: {listed}\n")
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

/// The server the command line names, with what to connect with, or
/// `None` for the state directory's deployment:
///
/// - `--context NAME`: that context of the configuration file (`--endpoint`
///   replaces its endpoint);
/// - `--endpoint URL`: that server, with the current context's CA and token
///   when the file has one;
/// - neither: the current context, unless `--state-dir` (or
///   `ZIXIAO_STATE_DIR`) names a state directory; without a current
///   context, the state directory's deployment, as on a laptop.
fn connection(cli: &Cli) -> Result<Option<zixiao_client::ConnectOptions>> {
    let file = cli.config.as_deref();
    let context = match (&cli.context, &cli.endpoint, &cli.state_dir) {
        (Some(name), _, _) => Some(zixiao_client::context_options(file, Some(name))?),
        (None, _, Some(_)) if cli.endpoint.is_none() => None,
        (None, _, _) => match zixiao_client::context_options(file, None) {
            Ok(options) => Some(options),
            // No file, or no current context in it: none.
            Err(e) if matches!(e.kind(), ErrorKind::FailedPrecondition) => None,
            Err(e) => return Err(e),
        },
    };
    Ok(match (context, &cli.endpoint) {
        (Some(options), Some(endpoint)) => Some(zixiao_client::ConnectOptions {
            endpoint: endpoint.clone(),
            ..options
        }),
        (Some(options), None) => Some(options),
        (None, Some(endpoint)) => Some(zixiao_client::ConnectOptions::new(endpoint.clone())),
        (None, None) => None,
    })
}

/// A duration on the command line (`90s`, `30m`, `12h`, `7d`); `flag`
/// names it in errors.
pub(crate) fn duration(flag: &str, text: &str) -> Result<std::time::Duration> {
    zixiao_core::model::parse_duration(flag, text)
}

/// The state directory the command line names, or the default one.
fn state_dir(cli: &Cli) -> Result<PathBuf> {
    match &cli.state_dir {
        Some(dir) => absolute(dir),
        None => zixiao_embedded::default_state_dir(),
    }
}

/// Where the embedded deployment of the command line lives and finds its runtimes.
fn open_options(cli: &Cli) -> Result<zixiao_client::OpenOptions> {
    Ok(zixiao_client::OpenOptions {
        state_dir: Some(state_dir(cli)?),
        containerd_socket: Some(cli.containerd_socket(None)),
        containerd_namespace: None,
        libvirt_uri: Some(cli.libvirt_uri(None)),
        libvirt_domain_type: cli.libvirt_domain_type.clone(),
        log_limit_mib: cli.log_limit_mib,
        allow_host_paths: cli.allow_host_paths,
    })
}

/// Makes a path from the command line absolute against the working directory,
/// since the controller may use it from elsewhere.
pub(crate) fn absolute(path: &std::path::Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| {
        Error::invalid(
            path.display().to_string(),
            format!("cannot resolve the path: {e}"),
        )
    })
}

/// Splits `KEY=VALUE` arguments of `flag` into a map.
pub(crate) fn key_values(
    flag: &str,
    pairs: &[String],
) -> Result<std::collections::BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(Error::invalid(flag, format!("`{pair}` is not KEY=VALUE"))),
        })
        .collect()
}
