//! Diagnostic logs: the `tracing` events of every layer (servers, agents,
//! watchdogs, the controller's reconcilers, the API's request spans) on
//! stderr, as text or JSON. Results stay on stdout and errors keep their
//! own one-line report (`main::report`): logs are for the operator, never
//! something a script parses instead of `-o json`.

use tracing_subscriber::filter::{EnvFilter, LevelFilter};

use crate::args::{Cli, Command, Format, LogFormat};

/// The environment variable with filter directives that replace `-v`.
pub(crate) const LOG_ENV: &str = "ZIXIAO_LOG";

/// The crates whose events `-v` turns up; everything else (HTTP/2, TLS,
/// the gRPC transport) stays at warnings unless `ZIXIAO_LOG` says otherwise.
const OUR_CRATES: &[&str] = &[
    "zixiao",
    "zixiao_api",
    "zixiao_auth",
    "zixiao_client",
    "zixiao_cluster",
    "zixiao_core",
    "zixiao_drivers",
    "zixiao_embedded",
    "zixiao_metrics",
    "zixiao_net",
    "zixiao_registry",
    "zixiao_sched",
    "zixiao_store",
];

/// Installs the stderr subscriber `cli` asks for. A `ZIXIAO_LOG` that does
/// not parse is reported and the default used: logs never stop a command.
pub(crate) fn init(cli: &Cli) {
    let format = cli.log_format.unwrap_or(match cli.output {
        Format::Table => LogFormat::Text,
        Format::Json | Format::Yaml => LogFormat::Json,
    });
    let (filter, bad_directives) = filter(level(cli), std::env::var(LOG_ENV).ok().as_deref());
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_ansi(false);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
    if installed.is_ok() {
        if let Some(error) = bad_directives {
            tracing::warn!(variable = LOG_ENV, %error, "ignoring the log filter");
        }
    }
}

/// Our crates' level: warnings for a command, information for the
/// long-running processes, each `-v` one step more.
fn level(cli: &Cli) -> LevelFilter {
    let long_running = matches!(
        cli.command,
        Command::Server(_)
            | Command::Agent(_)
            | Command::Watchdog(_)
            | Command::Daemon(_)
            | Command::Ui(_)
    );
    let base = if long_running { 2 } else { 1 };
    match base + usize::from(cli.verbose) {
        0 | 1 => LevelFilter::WARN,
        2 => LevelFilter::INFO,
        3 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// The filter: `directives` (from `ZIXIAO_LOG`) when given and valid, else
/// warnings everywhere and `ours` for our crates. With invalid directives,
/// also the parse error.
fn filter(ours: LevelFilter, directives: Option<&str>) -> (EnvFilter, Option<String>) {
    let default = || {
        OUR_CRATES.iter().fold(
            EnvFilter::default().add_directive(LevelFilter::WARN.into()),
            |filter, krate| match format!("{krate}={ours}").parse() {
                Ok(directive) => filter.add_directive(directive),
                Err(_) => filter,
            },
        )
    };
    match directives.map(str::trim).filter(|d| !d.is_empty()) {
        None => (default(), None),
        Some(directives) => match EnvFilter::builder().parse(directives) {
            Ok(filter) => (filter, None),
            Err(e) => (default(), Some(e.to_string())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_filter_raises_only_our_crates() {
        let (chosen, error) = filter(LevelFilter::DEBUG, None);
        assert!(error.is_none());
        let text = chosen.to_string();
        assert!(text.contains("zixiao_cluster=debug"), "{text}");
        assert!(text.contains("warn"), "{text}");
        assert!(!text.contains("h2=debug"), "{text}");
    }

    #[test]
    fn directives_replace_the_default_and_bad_ones_are_reported() {
        let (chosen, error) = filter(LevelFilter::WARN, Some("zixiao_core=trace"));
        assert!(error.is_none());
        assert_eq!(chosen.to_string(), "zixiao_core=trace");
        let (chosen, error) = filter(LevelFilter::WARN, Some("zixiao_core=loud"));
        assert!(
            error.is_some_and(|e| e.contains("level")),
            "a level that is not one"
        );
        assert!(chosen.to_string().contains("zixiao_core=warn"));
    }
}
