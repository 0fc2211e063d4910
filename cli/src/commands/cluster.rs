//! `zixiao cluster ...`

use std::process::ExitCode;

use zixiao_core::{Client, ClusterInfo, Result};

use crate::args::{ClusterCommand, Format};
use crate::output::{details, print};

pub(crate) async fn run(
    client: Client,
    format: Format,
    command: ClusterCommand,
) -> Result<ExitCode> {
    match command {
        ClusterCommand::Info => {
            let info = client.cluster_info().await?;
            print(format, &info, render)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn render(info: &ClusterInfo) -> String {
    let counts = |m: Vec<(String, usize)>| {
        if m.is_empty() {
            "-".to_owned()
        } else {
            m.into_iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let nodes = counts(
        info.nodes_by_status
            .iter()
            .map(|(s, n)| (s.as_str().to_owned(), *n))
            .collect(),
    );
    let mut pairs = vec![
        ("nodes", format!("{} ({nodes})", info.nodes)),
        ("instances", info.instances.to_string()),
    ];
    if let Some(leader) = &info.leader {
        pairs.push(("leader", leader.clone()));
    }
    for (ty, by_status) in &info.instances_by_type {
        let line = counts(
            by_status
                .iter()
                .map(|(s, n)| (s.as_str().to_owned(), *n))
                .collect(),
        );
        pairs.push((ty.as_str(), format!("  {line}")));
    }
    let (c, a, f) = (&info.capacity, &info.allocated, &info.schedulable_free);
    pairs.push((
        "cpus",
        format!(
            "{} allocated of {} ({} free on ready nodes)",
            a.cpus, c.cpus, f.cpus
        ),
    ));
    pairs.push((
        "memory",
        format!(
            "{} MiB allocated of {} MiB ({} MiB free on ready nodes)",
            a.memory_mib, c.memory_mib, f.memory_mib
        ),
    ));
    pairs.push((
        "disk",
        format!(
            "{} GiB allocated of {} GiB ({} GiB free on ready nodes)",
            a.disk_gib, c.disk_gib, f.disk_gib
        ),
    ));
    details(&pairs)
}
