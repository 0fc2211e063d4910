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
use zixiao_embedded::{Embedded, EmbeddedConfig};

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
        Some(endpoint) => zixiao_api::connect(endpoint)?,
        None => open_embedded(&cli).await?.client(),
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

async fn open_embedded(cli: &Cli) -> Result<Embedded> {
    let mut config = EmbeddedConfig::new(state_dir(cli)?);
    config.drivers.containerd_socket = cli.containerd_socket.clone();
    config.drivers.libvirt_uri = cli.libvirt_uri.clone();
    config.drivers.libvirt_domain_type = cli.libvirt_domain_type.clone();
    zixiao_embedded::open(config).await
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
