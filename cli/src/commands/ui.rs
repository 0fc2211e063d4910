//! `zixiao ui`: the web dashboard (zixiao-ui) of the deployment every
//! other command reaches (the state directory's daemon, or the server that
//! `--endpoint` or the context names), served on loopback as its caller.
//! Where no daemon runs for the state directory, `zixiao ui` runs it
//! (`zixiao daemon` with the dashboard), since an embedded deployment
//! opened in this process alone would not see what other commands do.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Args;
use zixiao_core::{Client, Result};

use super::server::{announce, loopback_listener, wait_for_signal};

/// `zixiao ui` flags.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    zixiao ui                                   # http://127.0.0.1:7780/\n  \
    zixiao ui --listen 127.0.0.1:0              # any free port, printed at start\n  \
    zixiao --context prod ui                    # a cluster, as that context's user")]
pub(crate) struct UiArgs {
    /// Where to serve the dashboard. Loopback addresses only: every page
    /// acts as you, with your state directory or credentials.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN, value_parser = loopback)]
    listen: SocketAddr,
}

impl UiArgs {
    /// Where to serve the dashboard (a loopback address).
    pub(crate) fn listen(&self) -> SocketAddr {
        self.listen
    }
}

/// Parses `--listen`: a loopback address only.
fn loopback(text: &str) -> std::result::Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|e| format!("`{text}` is not host:port: {e}"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("{addr} is not a loopback address: {WHY_LOOPBACK}"));
    }
    Ok(addr)
}

/// Why the dashboard serves loopback only.
const WHY_LOOPBACK: &str = "the dashboard acts as you, so it serves this machine only";

/// The dashboard's address when `--listen` is not given.
const DEFAULT_LISTEN: &str = "127.0.0.1:7780";

/// Serves the dashboard of `client`'s deployment until Ctrl-C or SIGTERM.
/// Errors: `InvalidArgument` (`--listen`: not loopback, or taken).
pub(crate) async fn run(client: Client, args: &UiArgs) -> Result<ExitCode> {
    let listener = loopback_listener("--listen", args.listen, WHY_LOOPBACK).await?;
    if let Ok(addr) = listener.local_addr() {
        // Scripts read this first line for the address.
        announce(format_args!("zixiao ui on http://{addr}/"));
    }
    zixiao_ui::serve(
        listener,
        zixiao_ui::Access::Local(client),
        wait_for_signal(),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}
