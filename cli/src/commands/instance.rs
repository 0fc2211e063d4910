//! `zixiao instance ...`

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use zixiao_core::driver::SnapshotInfo;
use zixiao_core::scheduler::{LabelRequirement, LabelSelector};
use zixiao_core::{
    CreateInstance, Error, Instance, InstanceFilter, InstanceSpec, InstanceStats, InstanceStatus,
    InstanceType, MicrovmBackend, Placement, RestartPolicy, Result,
};
use zixiao_embedded::Embedded;

use super::{absolute, key_values};
use crate::args::{CreateArgs, Format, InstanceCommand, ListArgs, RestoreArgs, SnapshotCommand};
use crate::output::{age, bytes, details, print, Table};

/// How much of a log one read asks for.
pub(crate) const LOG_CHUNK: usize = 64 * 1024;
/// How often `logs --follow` looks for more.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

pub(crate) async fn run(
    embedded: Embedded,
    format: Format,
    command: InstanceCommand,
) -> Result<ExitCode> {
    let controller = &embedded.controller;
    match command {
        InstanceCommand::List(args) => {
            let filter = filter(&args)?;
            warn_unreconciled(controller.reconcile_all().await?);
            let instances = controller.list_instances(&filter).await?;
            print(format, &instances, |i| instance_table(i))?;
            Ok(ExitCode::SUCCESS)
        }
        InstanceCommand::Get { instance } => {
            let found = controller.get_instance(&instance).await?;
            let current = controller.converge(&found.id).await?.unwrap_or(found);
            print(format, &current, instance_details)?;
            Ok(ExitCode::SUCCESS)
        }
        InstanceCommand::Create(args) => {
            let no_wait = args.no_wait;
            let request = create_request(*args)?;
            let created = controller.create_instance(request).await?;
            if no_wait {
                print(format, &created, instance_details)?;
                return Ok(ExitCode::SUCCESS);
            }
            progress(
                format,
                &format!("created {}, waiting for it to run", created.name),
            );
            settle(&embedded, format, &created.id).await
        }
        InstanceCommand::Start { instance } => {
            let i = controller.start_instance(&instance).await?;
            settle(&embedded, format, &i.id).await
        }
        InstanceCommand::Stop { instance } => {
            let i = controller.stop_instance(&instance).await?;
            settle(&embedded, format, &i.id).await
        }
        InstanceCommand::Pause { instance } => {
            let i = controller.pause_instance(&instance).await?;
            print(format, &i, instance_details)?;
            Ok(ExitCode::SUCCESS)
        }
        InstanceCommand::Resume { instance } => {
            let i = controller.resume_instance(&instance).await?;
            print(format, &i, instance_details)?;
            Ok(ExitCode::SUCCESS)
        }
        InstanceCommand::Restart { instance } => {
            let i = controller.restart_instance(&instance).await?;
            settle(&embedded, format, &i.id).await
        }
        InstanceCommand::Delete { instance } => {
            let i = controller.delete_instance(&instance).await?;
            match controller.converge(&i.id).await? {
                None => {
                    print(
                        format,
                        &serde_json::json!({ "deleted": i.id, "name": i.name }),
                        |_| format!("deleted instance {}\n", i.name),
                    )?;
                    Ok(ExitCode::SUCCESS)
                }
                Some(left) => unconverged(format, &left),
            }
        }
        InstanceCommand::Stats { instance } => {
            let stats = controller.instance_stats(&instance).await?;
            print(format, &stats, stats_details)?;
            Ok(ExitCode::SUCCESS)
        }
        InstanceCommand::Logs { instance, follow } => {
            let reader = controller.logs(&instance).await?;
            // Followers may run for hours: release the state directory so
            // other commands can use it meanwhile.
            drop(embedded);
            let mut offset = 0;
            let mut stdout = std::io::stdout();
            loop {
                let chunk = reader.read(offset, LOG_CHUNK).await?;
                let _ = stdout.write_all(&chunk.data);
                let _ = stdout.flush();
                let got = chunk.next_offset > offset;
                offset = chunk.next_offset;
                if got {
                    continue;
                }
                if !follow || !reader.is_running().await? {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(FOLLOW_POLL) => {}
                    _ = tokio::signal::ctrl_c() => break,
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        InstanceCommand::Snapshot(command) => {
            snapshot(&embedded, format, command).await?;
            Ok(ExitCode::SUCCESS)
        }
        InstanceCommand::Restore(args) => {
            let no_wait = args.no_wait;
            let created = controller.create_instance(restore_request(&args)?).await?;
            if no_wait {
                print(format, &created, instance_details)?;
                return Ok(ExitCode::SUCCESS);
            }
            progress(
                format,
                &format!("created {}, waiting for it to resume", created.name),
            );
            settle(&embedded, format, &created.id).await
        }
        InstanceCommand::Console { instance } => {
            let console = controller.attach_console(&instance).await?;
            drop(embedded);
            progress(format, "attached; press Ctrl-C to detach");
            let mut output = console.output;
            let mut input = console.input;
            let mut stdout = tokio::io::stdout();
            let mut stdin = tokio::io::stdin();
            tokio::select! {
                _ = tokio::io::copy(&mut output, &mut stdout) => {}
                _ = tokio::io::copy(&mut stdin, &mut input) => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn snapshot(embedded: &Embedded, format: Format, command: SnapshotCommand) -> Result<()> {
    let controller = &embedded.controller;
    match command {
        SnapshotCommand::Create { instance, name, to } => {
            let taken = controller.snapshot_instance(&instance, &name).await?;
            if let Some(to) = to {
                let id = controller.get_instance(&instance).await?.id;
                export_snapshot(embedded, &id, &name, &absolute(&to)?)?;
                progress(
                    format,
                    &format!("copied snapshot {name} to {}", to.display()),
                );
            }
            print(format, &taken, |s| snapshot_table(std::slice::from_ref(s)))
        }
        SnapshotCommand::List { instance } => {
            let all = controller.list_snapshots(&instance).await?;
            print(format, &all, |s| snapshot_table(s))
        }
        SnapshotCommand::Revert { instance, name } => {
            controller.revert_snapshot(&instance, &name).await?;
            print_reverted(format, &instance, &name)
        }
        SnapshotCommand::Delete { instance, name } => {
            controller.delete_snapshot(&instance, &name).await?;
            print_snapshot_deleted(format, &name)
        }
    }
}

/// Copies a microVM's snapshot out of the driver's state (`--to DIR`).
#[cfg(feature = "microvm")]
fn export_snapshot(embedded: &Embedded, id: &str, name: &str, to: &std::path::Path) -> Result<()> {
    use zixiao_embedded::zixiao_drivers::microvm;
    Ok(microvm::export_snapshot(
        &embedded.drivers.state_dir,
        id,
        name,
        to,
    )?)
}

#[cfg(not(feature = "microvm"))]
fn export_snapshot(_: &Embedded, _: &str, _: &str, _: &std::path::Path) -> Result<()> {
    Err(no_microvm("--to"))
}

/// The request of `instance restore`: the snapshot's guest, resuming from it.
#[cfg(feature = "microvm")]
fn restore_request(args: &RestoreArgs) -> Result<CreateInstance> {
    use zixiao_embedded::zixiao_drivers::microvm::SnapshotManifest;
    let from = absolute(&args.from)?;
    let manifest = SnapshotManifest::read(&from, "--from")?;
    Ok(CreateInstance::new(
        &args.name,
        manifest.restore_spec(&from),
    ))
}

#[cfg(not(feature = "microvm"))]
fn restore_request(_: &RestoreArgs) -> Result<CreateInstance> {
    Err(no_microvm("instance restore"))
}

#[cfg(not(feature = "microvm"))]
fn no_microvm(what: &str) -> Error {
    Error::Unsupported(format!(
        "{what}: this build of zixiao has no microvm driver (build it with --features microvm)"
    ))
}

pub(crate) fn snapshot_table(snapshots: &[SnapshotInfo]) -> String {
    let mut table = Table::new(vec!["NAME", "CREATED", "MEMORY", "CURRENT"]);
    for s in snapshots {
        table.row(vec![
            s.name.clone(),
            s.created_at
                .map_or_else(|| "-".to_owned(), |t| t.to_rfc3339()),
            if s.includes_memory { "yes" } else { "no" }.to_owned(),
            if s.current { "*" } else { "" }.to_owned(),
        ]);
    }
    table.render()
}

/// Drives the instance to its intent, prints it, and exits 1 with the reason
/// when it could not get there.
async fn settle(embedded: &Embedded, format: Format, id: &str) -> Result<ExitCode> {
    match embedded.controller.converge(id).await? {
        Some(instance) if instance.has_converged() => {
            print(format, &instance, instance_details)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(instance) => unconverged(format, &instance),
        None => Err(Error::not_found(format!(
            "instance `{id}` (deleted meanwhile)"
        ))),
    }
}

fn unconverged(format: Format, instance: &Instance) -> Result<ExitCode> {
    print(format, instance, instance_details)?;
    eprintln!(
        "error: instance {} is {}: {}",
        instance.name,
        instance.status.as_str(),
        instance
            .problem()
            .unwrap_or("it has not reached what was asked yet")
    );
    Ok(ExitCode::FAILURE)
}

fn progress(format: Format, message: &str) {
    if format == Format::Table && std::io::stderr().is_terminal() {
        eprintln!("{message}");
    }
}

fn warn_unreconciled(report: zixiao_core::controller::ReconcileReport) {
    for (name, error) in report.errors {
        eprintln!("warning: could not reconcile instance {name}: {error}");
    }
}

fn filter(args: &ListArgs) -> Result<InstanceFilter> {
    let status = args
        .status
        .as_deref()
        .map(|s| {
            InstanceStatus::ALL
                .into_iter()
                .find(|st| st.as_str() == s)
                .ok_or_else(|| {
                    let all = InstanceStatus::ALL.map(|st| st.as_str()).join(", ");
                    Error::invalid(
                        "--status",
                        format!("unknown status `{s}`: expected one of {all}"),
                    )
                })
        })
        .transpose()?;
    Ok(InstanceFilter {
        instance_type: args
            .instance_type
            .as_deref()
            .map(InstanceType::from_str)
            .transpose()?,
        status,
        node: args.node.clone(),
        labels: key_values("--label", &args.labels)?,
    })
}

/// The request from `-f FILE`, or from the flags.
pub(crate) fn create_request(args: CreateArgs) -> Result<CreateInstance> {
    if let Some(file) = &args.file {
        let text = std::fs::read_to_string(file).map_err(|e| {
            Error::invalid("--file", format!("cannot read {}: {e}", file.display()))
        })?;
        return serde_yaml::from_str(&text)
            .map_err(|e| Error::invalid("--file", format!("{}: {e}", file.display())));
    }
    let instance_type = InstanceType::from_str(args.instance_type.as_deref().unwrap_or_default())?;
    let spec = InstanceSpec {
        instance_type,
        image: args.image,
        cpus: args.cpus,
        memory_mib: args.memory,
        disk_gib: args.disk,
        kernel: args.kernel.as_deref().map(absolute).transpose()?,
        initrd: args.initrd.as_deref().map(absolute).transpose()?,
        cmdline: args.cmdline,
        backend: MicrovmBackend::from_str(&args.backend)?,
        restore_from: None,
        networks: args.networks,
        command: args.command,
        env: key_values("--env", &args.env)?,
        restart: RestartPolicy::from_str(&args.restart)?,
        placement: Placement {
            region: args.region,
            zone: args.zone,
            node_selector: args
                .selector
                .iter()
                .map(|s| s.parse::<LabelRequirement>())
                .collect::<Result<LabelSelector>>()
                .map_err(|e| Error::invalid("--selector", e.to_string()))?,
            required_traits: args.traits.into_iter().collect(),
            ..Placement::default()
        },
    };
    Ok(CreateInstance {
        name: args.name.unwrap_or_default(),
        labels: key_values("--label", &args.labels)?,
        spec,
    })
}

fn instance_table(instances: &[Instance]) -> String {
    let mut table = Table::new(vec![
        "NAME", "TYPE", "STATUS", "NODE", "CPUS", "MEMORY", "AGE", "INFO",
    ]);
    for i in instances {
        let info = i.problem().map(str::to_owned).unwrap_or_else(|| {
            i.exit
                .as_ref()
                .map(|e| format!("exit code {}", e.code))
                .unwrap_or_default()
        });
        table.row(vec![
            i.name.clone(),
            i.spec.instance_type.as_str().to_owned(),
            i.status.as_str().to_owned(),
            i.node.clone().unwrap_or_else(|| "-".to_owned()),
            i.spec.cpus.to_string(),
            format!("{} MiB", i.spec.memory_mib),
            age(i.created_at),
            info,
        ]);
    }
    table.render()
}

fn instance_details(i: &Instance) -> String {
    let s = &i.spec;
    let mut pairs = vec![
        ("name", i.name.clone()),
        ("id", i.id.clone()),
        ("type", s.instance_type.as_str().to_owned()),
        ("status", i.status.as_str().to_owned()),
        ("desired", format!("{:?}", i.desired).to_lowercase()),
        ("node", i.node.clone().unwrap_or_else(|| "-".to_owned())),
        ("cpus", s.cpus.to_string()),
        ("memory", format!("{} MiB", s.memory_mib)),
    ];
    if s.disk_gib > 0 {
        pairs.push(("disk", format!("{} GiB", s.disk_gib)));
    }
    if let Some(image) = &s.image {
        pairs.push(("image", image.clone()));
    }
    if let Some(kernel) = &s.kernel {
        pairs.push(("kernel", kernel.display().to_string()));
    }
    if let Some(from) = &s.restore_from {
        pairs.push(("restored from", from.display().to_string()));
    }
    if let Some(runtime) = &i.runtime {
        pairs.push(("runtime", runtime.clone()));
    }
    if !s.command.is_empty() {
        pairs.push(("command", s.command.join(" ")));
    }
    pairs.push(("restart", format!("{:?}", s.restart).to_lowercase()));
    if let Some(exit) = &i.exit {
        let oom = if exit.oom_killed { " (OOM killed)" } else { "" };
        pairs.push((
            "exit",
            format!("code {}{oom} at {}", exit.code, exit.at.to_rfc3339()),
        ));
    }
    for a in &i.attachments {
        let addresses: Vec<String> = a.addresses.iter().map(ToString::to_string).collect();
        pairs.push((
            "network",
            format!(
                "{} {} {} mac {}",
                a.network,
                a.interface,
                addresses.join(" "),
                a.mac
            ),
        ));
    }
    for c in &i.conditions {
        let state = if c.status { "true" } else { "false" };
        pairs.push((
            "condition",
            format!("{:?}={state} {}: {}", c.condition_type, c.reason, c.message),
        ));
    }
    pairs.push((
        "created",
        format!("{} ({} ago)", i.created_at.to_rfc3339(), age(i.created_at)),
    ));
    details(&pairs)
}

fn stats_details(stats: &InstanceStats) -> String {
    let opt = |v: Option<u64>, f: fn(u64) -> String| v.map_or_else(|| "-".to_owned(), f);
    details(&[
        (
            "cpu time",
            format!("{:.3} s", stats.cpu_time_ns as f64 / 1e9),
        ),
        ("memory", bytes(stats.memory_bytes)),
        ("memory limit", opt(stats.memory_limit_bytes, bytes)),
        ("pids", opt(stats.pids, |n| n.to_string())),
        ("disk read", opt(stats.disk_read_bytes, bytes)),
        ("disk written", opt(stats.disk_write_bytes, bytes)),
        ("net received", opt(stats.net_rx_bytes, bytes)),
        ("net sent", opt(stats.net_tx_bytes, bytes)),
    ])
}

/// What `instance snapshot revert` prints, here and through a server.
pub(crate) fn print_reverted(format: Format, instance: &str, name: &str) -> Result<()> {
    print(format, &serde_json::json!({ "reverted": name }), |_| {
        format!("instance {instance} is back at snapshot {name}\n")
    })
}

/// What `instance snapshot delete` prints, here and through a server.
pub(crate) fn print_snapshot_deleted(format: Format, name: &str) -> Result<()> {
    print(format, &serde_json::json!({ "deleted": name }), |_| {
        format!("deleted snapshot {name}\n")
    })
}
