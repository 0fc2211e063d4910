//! One function per command: parse what clap could not, make one call of
//! the [`Client`](zixiao_core::Client), print.

pub(crate) mod agent;
mod cluster;
mod image;
mod instance;
mod network;
mod node;
pub(crate) mod server;
mod state;

use std::path::PathBuf;
use std::process::ExitCode;

use zixiao_core::{Error, Result};

use crate::args::{Cli, Command, StateCommand};

/// Runs the parsed command line; the exit code when it is not plain success.
pub(crate) async fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::Version = cli.command {
        let version = env!("CARGO_PKG_VERSION");
        crate::output::print(
            cli.output,
            &serde_json::json!({ "version": version }),
            |_| format!("zixiao {version}\n"),
        )?;
        return Ok(ExitCode::SUCCESS);
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
    let client = match &cli.endpoint {
        // A server: the same commands, through the gRPC implementation.
        Some(endpoint) => zixiao_client::connect(endpoint).await?,
        // The state directory's daemon if one runs, else in this process.
        None => zixiao_client::open(open_options(&cli)?).await?,
    };
    let format = cli.output;
    match cli.command {
        Command::State(StateCommand::Backup { file }) => state::backup(client, format, file).await,
        Command::Node(command) => node::run(client, format, command).await,
        Command::Instance(command) => instance::run(client, format, command).await,
        Command::Image(command) => image::run(client, format, command).await,
        Command::Cluster(command) => cluster::run(client, format, command).await,
        Command::Network(command) => network::run(client, format, command).await,
        Command::Version
        | Command::State(_)
        | Command::Daemon(_)
        | Command::Server(_)
        | Command::Agent(_)
        | Command::Watchdog(_) => Ok(ExitCode::SUCCESS),
    }
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
        containerd_socket: Some(cli.containerd_socket.clone()),
        containerd_namespace: None,
        libvirt_uri: Some(cli.libvirt_uri.clone()),
        libvirt_domain_type: cli.libvirt_domain_type.clone(),
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
