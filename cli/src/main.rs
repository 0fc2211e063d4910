//! `zixiao`, the reference command line. It parses, calls the controller and
//! prints; all behaviour lives in the library crates.
//!
//! Exit codes: 0 on success, 2 for invalid input, 1 for everything else.

mod args;
mod commands;
mod output;

use std::process::ExitCode;

use clap::Parser;
use zixiao_core::{Error, ErrorKind};

use crate::args::{Cli, Format};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = cli.output;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
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

/// 2 for input the user can fix by changing the command, 1 otherwise.
fn exit_code(kind: ErrorKind) -> ExitCode {
    match kind {
        ErrorKind::InvalidArgument => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}
