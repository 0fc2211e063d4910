//! `zixiao`, the reference command line. It parses, calls the controller and
//! prints; all behaviour lives in the library crates.
//!
//! Exit codes: 0 on success, 2 for invalid input, 1 for everything else.

mod args;
mod commands;
mod logging;
mod output;

use std::process::ExitCode;

use clap::Parser;
use zixiao_core::{Error, ErrorKind};

use crate::args::{Cli, Format};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let format = cli.output;
    logging::init(&cli);
    // A one-shot command waits on one call at a time; a service (server,
    // agent, daemon, dashboard) answers many callers and converges many
    // instances at once, so it gets a worker thread per core.
    let mut runtime = if cli.command.serves() {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(error) => {
            report(format, &error);
            exit_code(error.kind())
        }
    }
}

/// Prints `error` on stderr: a line for people, a JSON object for scripts.
fn report(format: Format, error: &Error) {
    match format {
        Format::Table => eprintln!("error: {}", error.chain()),
        Format::Json | Format::Yaml => {
            let body = serde_json::json!({
                "error": { "kind": error.kind().as_str(), "message": error.chain() }
            });
            eprintln!("{body}");
        }
    }
}

/// A command line clap refused: with `-o json` (or yaml) one JSON error on
/// stderr, as for every other error; otherwise clap's own message (which
/// also prints `--help` and `--version`).
fn usage_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind as Clap;
    let wants_json = matches!(
        requested_format(std::env::args()),
        Some(Format::Json | Format::Yaml)
    );
    if !wants_json || matches!(error.kind(), Clap::DisplayHelp | Clap::DisplayVersion) {
        error.exit();
    }
    let message = error.render().to_string();
    let first = message.lines().next().unwrap_or_default();
    let message = first.strip_prefix("error: ").unwrap_or(first);
    report(Format::Json, &Error::invalid("command line", message));
    ExitCode::from(2)
}

/// The `-o`/`--output` format on a command line clap could not parse.
fn requested_format(args: impl Iterator<Item = String>) -> Option<Format> {
    let args: Vec<String> = args.collect();
    let value = args
        .iter()
        .enumerate()
        .find_map(|(i, arg)| match arg.as_str() {
            "-o" | "--output" => args.get(i + 1).cloned(),
            _ => arg
                .strip_prefix("--output=")
                .or_else(|| arg.strip_prefix("-o"))
                .filter(|v| !v.is_empty())
                .map(|v| v.trim_start_matches('=').to_owned()),
        })?;
    match value.as_str() {
        "json" => Some(Format::Json),
        "yaml" => Some(Format::Yaml),
        "table" => Some(Format::Table),
        _ => None,
    }
}

/// 2 for input the user can fix by changing the command, 1 otherwise.
fn exit_code(kind: ErrorKind) -> ExitCode {
    match kind {
        ErrorKind::InvalidArgument => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}
