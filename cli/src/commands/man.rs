//! `zixiao man`: man pages generated from the same clap definitions as
//! `--help`, so the two never disagree: zixiao(1), and one page per
//! subcommand at every depth named as man(1) expects
//! (`zixiao-instance-create.1`).

use std::path::Path;
use std::process::ExitCode;

use zixiao_core::{Error, Result};

/// Writes every page into `dir`, or zixiao(1) to stdout without one; the
/// written files are listed on stdout.
pub(crate) fn run(dir: Option<&Path>) -> Result<ExitCode> {
    let command = <crate::args::Cli as clap::CommandFactory>::command();
    match dir {
        None => crate::output::write_stdout(&render(&command)?)?,
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::invalid("--dir", format!("cannot create `{}`: {e}", dir.display()))
            })?;
            let mut written = String::new();
            write_pages(&command, "zixiao", dir, &mut written)?;
            crate::output::write_stdout(written.as_bytes())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `command`'s page as roff.
fn render(command: &clap::Command) -> Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut page)
        .map_err(|e| Error::Internal(format!("rendering a man page: {e}")))?;
    Ok(page)
}

/// Writes `command`'s page as `PAGE.1` in `dir`, where `bin` is how it is
/// typed (`zixiao instance create`, page `zixiao-instance-create`), then its
/// subcommands' pages, adding each path to `written`.
fn write_pages(command: &clap::Command, bin: &str, dir: &Path, written: &mut String) -> Result<()> {
    let page = bin.replace(' ', "-");
    // Titled with its full name, as man(1) looks it up.
    let titled = command
        .clone()
        .display_name(page.clone())
        .bin_name(bin.to_owned());
    let path = dir.join(format!("{page}.1"));
    std::fs::write(&path, render(&titled)?)
        .map_err(|e| Error::invalid("--dir", format!("cannot write `{}`: {e}", path.display())))?;
    written.push_str(&format!("{}\n", path.display()));
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        write_pages(sub, &format!("{bin} {}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
