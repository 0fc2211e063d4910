//! `zixiao state ...`: the embedded store's file. `check` and `restore`
//! work on the file itself, so they run while nothing else holds it (and on
//! a file too damaged to open); `backup` copies it while it is in use.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use zixiao_core::store::StoreSummary;
use zixiao_core::{Client, Result};
use zixiao_store::EmbeddedStore;

use crate::args::Format;
use crate::output::{details, print};

/// `state check`: checks the store file in `state_dir`.
pub(crate) fn check(state_dir: &Path, format: Format) -> Result<ExitCode> {
    let path = zixiao_embedded::store_path(state_dir);
    let summary = EmbeddedStore::check_file(&path)?;
    report(format, &path, &summary, "intact")
}

/// `state restore FILE`: replaces the store file in `state_dir` with a backup.
pub(crate) fn restore(state_dir: &Path, format: Format, backup: &Path) -> Result<ExitCode> {
    let path = zixiao_embedded::store_path(state_dir);
    let summary = EmbeddedStore::restore_file(&super::absolute(backup)?, &path)?;
    report(
        format,
        &path,
        &summary,
        "restored (the file it replaced is kept as state.redb.before-restore)",
    )
}

/// Runs `state backup FILE` through the client (online).
pub(crate) async fn backup(client: Client, format: Format, to: PathBuf) -> Result<ExitCode> {
    let to = super::absolute(&to)?;
    let summary = client.backup_state(to.clone()).await?;
    report(format, &to, &summary, "written and checked")
}

fn report(
    format: Format,
    path: &std::path::Path,
    summary: &StoreSummary,
    done: &str,
) -> Result<ExitCode> {
    let body = serde_json::json!({
        "file": path,
        "revision": summary.revision,
        "keys": summary.keys,
        "history": summary.history,
        "leases": summary.leases,
    });
    print(format, &body, |_| {
        details(&[
            ("file", format!("{} {done}", path.display())),
            ("revision", summary.revision.to_string()),
            ("keys", summary.keys.to_string()),
            ("history", format!("{} revisions", summary.history)),
            ("leases", summary.leases.to_string()),
        ])
    })?;
    Ok(ExitCode::SUCCESS)
}
