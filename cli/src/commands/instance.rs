//! `zixiao instance ...`

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::str::FromStr;

use futures::StreamExt;
use zixiao_core::api::Page;
use zixiao_core::driver::{ConsoleStream, SnapshotInfo};
use zixiao_core::model::FromTemplate;
use zixiao_core::model::{
    DiskSpec, GuestCid, PullPolicy, SnapshotInterval, SnapshotKeep, SnapshotName, SnapshotSchedule,
    VsockSpec,
};
use zixiao_core::scheduler::{LabelRequirement, LabelSelector};
use zixiao_core::{
    Client, CreateInstance, Error, Instance, InstanceFilter, InstanceSpec, InstanceStats,
    InstanceStatus, InstanceType, InstanceUpdate, MicrovmBackend, Placement, PublishedPort,
    RestartPolicy, Result, Wait,
};

use super::{absolute, key_values};
use crate::args::{CreateArgs, Format, InstanceCommand, ListArgs, SnapshotCommand, UpdateArgs};
use crate::output::{age, bytes, details, print, Table};

/// How much of a log one read asks for.
const LOG_CHUNK: u64 = 64 * 1024;

pub(crate) async fn run(
    client: Client,
    format: Format,
    command: InstanceCommand,
) -> Result<ExitCode> {
    match command {
        InstanceCommand::List(args) => {
            let filter = filter(&args)?;
            if args.page_size.is_none() && args.page_token.is_none() {
                let instances = client.list_instances(filter).await?;
                print(format, &instances, |i| instance_table(i))?;
            } else {
                list_page(&client, format, filter, &args).await?;
            }
            Ok(ExitCode::SUCCESS)
        }
        InstanceCommand::Get { instance } => {
            let instance = client.get_instance(&instance).await?;
            print(format, &instance, instance_details)?;
            Ok(ExitCode::SUCCESS)
        }
        InstanceCommand::Create(args) => {
            let wait = wait(args.no_wait);
            if let Some(template) = &args.template {
                let name = args.name.clone().unwrap_or_default();
                let request = FromTemplate::parse(name, template, &args.set)
                    .map_err(|e| flag(e, &["template", "set"]))?;
                if wait.settled() {
                    progress(
                        format,
                        &format!("creating {} from {template}", request.name),
                    );
                }
                let created = client.create_from_template(request, wait).await?;
                return report_settled(format, &created, wait);
            }
            let request = create_request(*args)?;
            if wait.settled() {
                progress(format, &format!("creating {}", request.name));
            }
            let created = client.create_instance(request, wait).await?;
            report_settled(format, &created, wait)
        }
        InstanceCommand::Start { instance, no_wait } => {
            let wait = wait(no_wait);
            let started = client.start_instance(&instance, wait).await?;
            report_settled(format, &started, wait)
        }
        InstanceCommand::Stop { instance, no_wait } => {
            let wait = wait(no_wait);
            let stopped = client.stop_instance(&instance, wait).await?;
            report_settled(format, &stopped, wait)
        }
        InstanceCommand::Restart { instance, no_wait } => {
            let wait = wait(no_wait);
            let restarted = client.restart_instance(&instance, wait).await?;
            report_settled(format, &restarted, wait)
        }
        InstanceCommand::Update(args) => {
            let wait = wait(args.no_wait);
            let instance = args.instance.clone();
            let updated = client
                .update_instance(&instance, update_request(args)?, wait)
                .await?;
            report_settled(format, &updated, wait)
        }
        InstanceCommand::Pause { instance } => {
            let paused = client.pause_instance(&instance).await?;
            print(format, &paused, instance_details)?;
            Ok(ExitCode::SUCCESS)
        }
        InstanceCommand::Resume { instance } => {
            let resumed = client.resume_instance(&instance).await?;
            print(format, &resumed, instance_details)?;
            Ok(ExitCode::SUCCESS)
        }
        InstanceCommand::Delete {
            instance,
            no_wait: true,
        } => match client.delete_instance(&instance, Wait::No).await? {
            Some(deleting) => report_settled(format, &deleting, Wait::No),
            None => Err(Error::Internal(
                "instance.delete without waiting answered no instance".to_owned(),
            )),
        },
        InstanceCommand::Delete {
            instance,
            no_wait: false,
        } => {
            let before = client.get_instance(&instance).await?;
            match client.delete_instance(&before.id, Wait::Settled).await? {
                None => {
                    print(
                        format,
                        &serde_json::json!({ "deleted": before.id, "name": before.name }),
                        |_| format!("deleted instance {}\n", before.name),
                    )?;
                    Ok(ExitCode::SUCCESS)
                }
                Some(left) => unconverged(format, &left),
            }
        }
        InstanceCommand::Stats {
            instance,
            history: false,
        } => {
            let stats = client.instance_stats(&instance).await?;
            print(format, &stats, stats_details)?;
            Ok(ExitCode::SUCCESS)
        }
        InstanceCommand::Stats {
            instance,
            history: true,
        } => {
            let samples = client.instance_stats_history(&instance).await?;
            print(format, &samples, |samples| stats_history_table(samples))?;
            Ok(ExitCode::SUCCESS)
        }
        InstanceCommand::Logs { instance, follow } => {
            let mut stdout = std::io::stdout();
            if follow {
                let mut log = client.follow_log(&instance, 0).await?;
                // Followers may run for hours: an embedded client lets go
                // of the state directory so other commands can use it.
                drop(client);
                loop {
                    tokio::select! {
                        piece = log.next() => match piece {
                            Some(piece) => {
                                let _ = stdout.write_all(&piece?);
                                let _ = stdout.flush();
                            }
                            None => break,
                        },
                        _ = tokio::signal::ctrl_c() => break,
                    }
                }
            } else {
                let mut offset = 0;
                loop {
                    let chunk = client.read_log(&instance, offset, LOG_CHUNK).await?;
                    if chunk.next_offset <= offset {
                        break;
                    }
                    let _ = stdout.write_all(&chunk.data);
                    offset = chunk.next_offset;
                }
                let _ = stdout.flush();
            }
            Ok(ExitCode::SUCCESS)
        }
        InstanceCommand::Snapshot(command) => {
            snapshot(&client, format, command).await?;
            Ok(ExitCode::SUCCESS)
        }
        InstanceCommand::Restore(args) => {
            let wait = wait(args.no_wait);
            let restored = client.restore_instance(&args.name, args.from, wait).await?;
            report_settled(format, &restored, wait)
        }
        InstanceCommand::Clone(args) => {
            let wait = wait(args.no_wait);
            let snapshot = args.snapshot.map(SnapshotName::try_from).transpose()?;
            if wait.settled() {
                progress(format, &format!("cloning {} as {}", args.source, args.name));
            }
            let cloned = client
                .clone_instance(&args.source, &args.name, args.linked, snapshot, wait)
                .await?;
            report_settled(format, &cloned, wait)
        }
        InstanceCommand::Migrate(args) => {
            let shown = show_migration_steps(&client, format, &args.instance);
            let moved = client
                .migrate_instance(&args.instance, args.to.as_deref(), args.mode())
                .await;
            if let Some(shown) = shown {
                shown.abort();
            }
            let moved = moved?;
            print(format, &moved, |i| {
                format!(
                    "migrated {} to node {} (restarted there)\n{}",
                    i.name,
                    i.node.as_deref().unwrap_or("-"),
                    instance_details(i)
                )
            })?;
            Ok(ExitCode::SUCCESS)
        }
        InstanceCommand::Console { instance } => {
            let console = client.attach_console(&instance).await?;
            drop(client);
            progress(format, "attached; press Ctrl-C to detach");
            terminal_session(console).await;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Joins `console` to this terminal until the instance's output ends (it
/// exited), standard input ends, or Ctrl-C.
///
/// Standard input is read on a thread of its own rather than with
/// `tokio::io::stdin`: tokio reads it on its blocking pool, which the
/// runtime waits for when the command returns, so a session whose shell had
/// exited would hang until the user pressed Enter once more.
async fn terminal_session(console: ConsoleStream) {
    use tokio::io::AsyncWriteExt;
    let ConsoleStream {
        mut output,
        mut input,
    } = console;
    let (typed, mut to_send) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin().lock();
        let mut buffer = vec![0u8; 8192];
        loop {
            match stdin.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if typed.blocking_send(buffer[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let typing = async {
        while let Some(chunk) = to_send.recv().await {
            if input.write_all(&chunk).await.is_err() || input.flush().await.is_err() {
                break;
            }
        }
    };
    let mut stdout = tokio::io::stdout();
    tokio::select! {
        _ = tokio::io::copy(&mut output, &mut stdout) => {}
        () = typing => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let _ = stdout.flush().await;
}

/// The [`InstanceUpdate`] the flags of `instance update` ask for.
fn update_request(args: UpdateArgs) -> Result<InstanceUpdate> {
    let mut update = InstanceUpdate {
        cpus: args.cpus,
        cpu_limit: args.cpu_limit,
        memory_mib: args.memory,
        memory_limit_mib: args.memory_limit,
        disk_gib: args.disk,
        restart: args
            .restart
            .as_deref()
            .map(|policy| {
                RestartPolicy::from_str(policy).map_err(|_| {
                    Error::invalid(
                        "--restart",
                        format!("unknown restart policy `{policy}`: expected never, on-failure or always"),
                    )
                })
            })
            .transpose()?,
        restart_if_needed: args.restart_if_needed,
        snapshot_every: args
            .snapshot_every
            .as_deref()
            .map(snapshot_every)
            .transpose()?,
        snapshot_keep: args.snapshot_keep.map(snapshot_keep).transpose()?,
        clear_snapshot_schedule: args.no_snapshot_schedule,
        ..InstanceUpdate::default()
    };
    for label in &args.labels {
        match (label.split_once('='), label.strip_suffix('-')) {
            (Some((key, value)), _) if !key.is_empty() => {
                update.set_labels.insert(key.to_owned(), value.to_owned());
            }
            (None, Some(key)) if !key.is_empty() => {
                update.remove_labels.insert(key.to_owned());
            }
            _ => {
                return Err(Error::invalid(
                    "--label",
                    format!("`{label}` is neither KEY=VALUE (set) nor KEY- (remove)"),
                ))
            }
        }
    }
    Ok(update)
}

/// `--snapshot-every`'s interval; errors name the flag.
fn snapshot_every(text: &str) -> Result<SnapshotInterval> {
    text.parse()
        .map_err(|e| flag(e, &[SnapshotInterval::FIELD]))
}

/// `--snapshot-keep`'s count; errors name the flag.
fn snapshot_keep(keep: u32) -> Result<SnapshotKeep> {
    SnapshotKeep::try_from(keep).map_err(|e| flag(e, &[SnapshotKeep::FIELD]))
}

/// The schedule `--snapshot-every` and `--snapshot-keep` ask for (clap
/// makes sure they come together).
fn snapshot_schedule(every: Option<&str>, keep: Option<u32>) -> Result<Option<SnapshotSchedule>> {
    match (every, keep) {
        (Some(every), Some(keep)) => Ok(Some(SnapshotSchedule {
            every: snapshot_every(every)?,
            keep: snapshot_keep(keep)?,
        })),
        _ => Ok(None),
    }
}

fn wait(no_wait: bool) -> Wait {
    if no_wait {
        Wait::No
    } else {
        Wait::Settled
    }
}

async fn snapshot(client: &Client, format: Format, command: SnapshotCommand) -> Result<()> {
    match command {
        SnapshotCommand::Create { instance, name, to } => {
            let taken = match to {
                Some(to) => {
                    let taken = client
                        .create_snapshot_to(&instance, &name, to.clone())
                        .await?;
                    progress(
                        format,
                        &format!("copied snapshot {name} to {}", to.display()),
                    );
                    taken
                }
                None => client.create_snapshot(&instance, &name).await?,
            };
            print(format, &taken, |s| snapshot_table(std::slice::from_ref(s)))
        }
        SnapshotCommand::List { instance } => {
            let all = client.list_snapshots(&instance).await?;
            print(format, &all, |s| snapshot_table(s))
        }
        SnapshotCommand::Revert { instance, name } => {
            client.revert_snapshot(&instance, &name).await?;
            print(format, &serde_json::json!({ "reverted": name }), |_| {
                format!("instance {instance} is back at snapshot {name}\n")
            })
        }
        SnapshotCommand::Delete { instance, name } => {
            client.delete_snapshot(&instance, &name).await?;
            print(format, &serde_json::json!({ "deleted": name }), |_| {
                format!("deleted snapshot {name}\n")
            })
        }
    }
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

/// Prints an instance a call answered; when the call waited and the
/// instance has not reached what was asked, also says why and exits 1.
/// Prints what a call that changes an instance answered: without
/// waiting, its operation's id alone in a table (so a script can follow
/// it with `operation watch`), the instance in JSON or YAML; after
/// waiting, the instance, failing unless it reached what was asked.
fn report_settled(format: Format, instance: &Instance, wait: Wait) -> Result<ExitCode> {
    if wait.settled() && !instance.has_converged() {
        return unconverged(format, instance);
    }
    if let (false, Format::Table, Some(operation)) = (wait.settled(), format, &instance.operation) {
        crate::output::write_stdout(format!("{operation}\n").as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    print(format, instance, instance_details)?;
    Ok(ExitCode::SUCCESS)
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

/// On a terminal, prints the steps of `instance`'s migration as they pass
/// (the migrate call answers only at the end), until aborted.
fn show_migration_steps(
    client: &Client,
    format: Format,
    instance: &str,
) -> Option<tokio::task::JoinHandle<()>> {
    if format != Format::Table || !std::io::stderr().is_terminal() {
        return None;
    }
    let filter = zixiao_core::api::OperationFilter {
        target: Some(instance.to_owned()),
        kind: Some(zixiao_core::OperationKind::Migrate),
        unfinished: true,
    };
    let client = client.clone();
    Some(tokio::spawn(async move {
        let mut shown = 0;
        loop {
            let listed = client
                .list_operations(filter.clone(), Page::default())
                .await;
            if let Some(op) = listed.ok().and_then(|l| l.operations.into_iter().last()) {
                for step in op.steps.iter().skip(shown) {
                    eprintln!("{step}");
                }
                shown = op.steps.len();
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }))
}

fn progress(format: Format, message: &str) {
    if format == Format::Table && std::io::stderr().is_terminal() {
        eprintln!("{message}");
    }
}

/// One page of `instance list`: the instances, and the token of the next
/// page (in the JSON and YAML object; for a table, a hint on stderr).
async fn list_page(
    client: &Client,
    format: Format,
    filter: InstanceFilter,
    args: &ListArgs,
) -> Result<()> {
    let page = Page::parse(args.page_size.unwrap_or(0), args.page_token.as_deref())?;
    let listed = client.list_instances_page(filter, page).await?;
    print(format, &listed, |l| instance_table(&l.instances))?;
    if let (Format::Table, Some(token)) = (format, &listed.next_page) {
        let size = args
            .page_size
            .map(|n| format!(" --page-size {n}"))
            .unwrap_or_default();
        eprintln!("more: zixiao instance list{size} --page-token {token}");
    }
    Ok(())
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

/// `error` with the field named as the flag that gave it (`set` as
/// `--set`), when it is one of `fields`.
fn flag(error: Error, fields: &[&str]) -> Error {
    match error {
        Error::InvalidArgument { field, reason } if fields.contains(&field.as_str()) => {
            Error::invalid(format!("--{}", field.replace('_', "-")), reason)
        }
        other => other,
    }
}

/// A `--kernel` or `--initrd` value: a bare name stays an image name of
/// the node's store, a registry reference (`127.0.0.1:5000/vm/kernel:6.1`)
/// an artifact the node pulls; anything else with a `/` is a path on this
/// machine, made absolute.
fn node_file(value: &std::path::Path) -> Result<std::path::PathBuf> {
    match value.to_str() {
        Some(name) if !name.contains('/') || zixiao_core::model::NodeFile::is_reference(name) => {
            Ok(std::path::PathBuf::from(name))
        }
        _ => absolute(value),
    }
}

/// The `--disk` values: a number is the disk size in GiB (at most one),
/// anything else a microVM's disk `NAME[:ro]`, its image made a path on
/// this machine as `--kernel`'s is.
fn disk_flags(values: &[String]) -> Result<(u64, Vec<DiskSpec>)> {
    let mut size = None;
    let mut disks = Vec::new();
    for value in values {
        let digits = value.strip_prefix('-').unwrap_or(value);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            let gib = value
                .parse::<u64>()
                .map_err(|_| Error::invalid("--disk", format!("`{value}` is not a size in GiB")))?;
            if size.replace(gib).is_some() {
                return Err(Error::invalid("--disk", "a size in GiB is given once"));
            }
            continue;
        }
        let mut disk = DiskSpec::from_str(value).map_err(|e| flag(e, &["disk"]))?;
        disk.image = node_file(std::path::Path::new(&disk.image))?
            .to_string_lossy()
            .into_owned();
        disks.push(disk);
    }
    Ok((size.unwrap_or(0), disks))
}

/// The request from `-f FILE`, or from the flags.
pub(crate) fn create_request(args: CreateArgs) -> Result<CreateInstance> {
    if let Some(file) = &args.file {
        return spec_file(file);
    }
    let instance_type = InstanceType::from_str(args.instance_type.as_deref().unwrap_or_default())?;
    let (disk_gib, disks) = disk_flags(&args.disks)?;
    let spec = InstanceSpec {
        instance_type,
        image: args.image,
        cpus: args
            .cpus
            .unwrap_or_else(|| InstanceSpec::default_cpus(instance_type)),
        cpu_limit: args.cpu_limit,
        memory_mib: args.memory,
        memory_limit_mib: args.memory_limit,
        max_cpus: args.max_cpus,
        max_memory_mib: args.max_memory,
        disk_gib,
        kernel: args.kernel.as_deref().map(node_file).transpose()?,
        initrd: args.initrd.as_deref().map(node_file).transpose()?,
        cmdline: args.cmdline,
        backend: MicrovmBackend::from_str(&args.backend)?,
        restore_from: None,
        networks: args.networks,
        publish: args
            .publish
            .iter()
            .map(|p| PublishedPort::try_from(p.as_str()).map_err(|e| e.at("--publish")))
            .collect::<Result<_>>()?,
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
            aggregates: args.aggregates.into_iter().collect(),
            ..Placement::default()
        },
        snapshot_schedule: snapshot_schedule(args.snapshot_every.as_deref(), args.snapshot_keep)?,
        cloud_init: cloud_init(
            args.user_data.as_deref(),
            args.meta_data.as_deref(),
            args.network_config.as_deref(),
            &args.ssh_keys,
        )?,
        disks,
        vsock: args
            .vsock
            .as_deref()
            .map(|cid| GuestCid::from_str(cid).map(|cid| VsockSpec { cid }))
            .transpose()?,
        pull: PullPolicy::from_str(&args.pull)?,
    };
    let mut labels = key_values("--label", &args.labels)?;
    if let Some(project) = args.project {
        labels.insert(zixiao_auth::PROJECT_LABEL.to_owned(), project);
    }
    Ok(CreateInstance {
        name: args.name.unwrap_or_default(),
        labels,
        spec,
    })
}

/// The cloud-init data of the `--user-data`, `--meta-data`,
/// `--network-config` and `--ssh-key` files (read here, on the caller's
/// machine, and sent as text), or none when no flag is given. Each file
/// must be UTF-8 text; a key file gives each of its non-comment lines.
fn cloud_init(
    user_data: Option<&std::path::Path>,
    meta_data: Option<&std::path::Path>,
    network_config: Option<&std::path::Path>,
    ssh_keys: &[std::path::PathBuf],
) -> Result<Option<zixiao_core::model::CloudInit>> {
    // Anything larger is refused by the spec's own limit anyway.
    let limit = zixiao_core::model::MAX_CLOUD_INIT_BYTES as u64 + 1;
    let text = |path: &std::path::Path, flag: &str| -> Result<String> {
        let bytes = zixiao_core::files::read_regular(path, flag, limit)?;
        String::from_utf8(bytes)
            .map_err(|_| Error::invalid(flag, format!("{} is not UTF-8 text", path.display())))
    };
    let read = |path: Option<&std::path::Path>, flag: &str| path.map(|p| text(p, flag)).transpose();
    let mut keys = Vec::new();
    for path in ssh_keys {
        let file = text(path, "--ssh-key")?;
        keys.extend(
            file.lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(str::to_owned),
        );
    }
    let init = zixiao_core::model::CloudInit {
        user_data: read(user_data, "--user-data")?,
        meta_data: read(meta_data, "--meta-data")?,
        network_config: read(network_config, "--network-config")?,
        ssh_authorized_keys: keys,
    };
    Ok((!init.is_empty()).then_some(init))
}

/// The largest spec file `-f` reads: a request is a few hundred bytes.
const MAX_SPEC_FILE: u64 = 1024 * 1024;

/// What a YAML or JSON spec file holds (an instance's request, or a
/// template's labels and spec). A syntax error says where it is (line and
/// column); a field of the wrong shape is named by its path (`spec.cpus`),
/// as the flags would name it.
pub(crate) fn spec_file<T: serde::de::DeserializeOwned>(file: &std::path::Path) -> Result<T> {
    let bytes = zixiao_core::files::read_regular(file, "--file", MAX_SPEC_FILE)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        Error::invalid(
            "--file",
            format!("{} is not UTF-8 text: {e}", file.display()),
        )
    })?;
    let invalid =
        |e: &dyn std::fmt::Display| Error::invalid("--file", format!("{}: {e}", file.display()));
    if text.trim_start().starts_with('{') {
        // JSON: its own parser, whose errors name the line and column of a
        // syntax error (YAML's would call a trailing comma a type error).
        let mut json = serde_json::Deserializer::from_str(text);
        return serde_path_to_error::deserialize(&mut json).map_err(|e| {
            if e.inner().is_data() {
                invalid(&format!("`{}`: {}", e.path(), e.inner()))
            } else {
                invalid(e.inner())
            }
        });
    }
    // YAML's errors name the field's path and the line themselves.
    serde_yaml::from_str(text).map_err(|e| invalid(&e))
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
    if let Some(max) = s.max_cpus {
        pairs.push(("max cpus", max.to_string()));
    }
    if let Some(max) = s.max_memory_mib {
        pairs.push(("max memory", format!("{max} MiB")));
    }
    // Until the runtime has taken the new size (a balloon moving).
    if let Some(running) = &i.runtime_size {
        pairs.push((
            "running with",
            format!(
                "{} cpus, {} MiB (changing to the spec's)",
                running.cpus, running.memory_mib
            ),
        ));
    }
    if let Some(origin) = &i.template {
        pairs.push(("template", origin.to_string()));
    }
    if let Some(origin) = &i.clone_of {
        pairs.push(("clone_of", origin.to_string()));
    }
    if let Some(operation) = &i.operation {
        pairs.push(("operation", operation.to_string()));
    }
    if s.disk_gib > 0 {
        pairs.push(("disk", format!("{} GiB", s.disk_gib)));
    }
    if let Some(image) = &s.image {
        pairs.push(("image", image.clone()));
    }
    if let Some(kernel) = &s.kernel {
        pairs.push(("kernel", kernel.display().to_string()));
    }
    for disk in &s.disks {
        pairs.push(("disk", disk.to_string()));
    }
    if let Some(from) = &s.restore_from {
        pairs.push(("restored from", from.display().to_string()));
    }
    if let Some(runtime) = &i.runtime {
        pairs.push(("runtime", runtime.clone()));
    }
    // The socket is a path on the instance's node.
    match (&i.vsock, &s.vsock) {
        (Some(vsock), _) => pairs.push((
            "vsock",
            format!(
                "cid {}, socket {} (on node {})",
                vsock.cid,
                vsock.socket.display(),
                i.node.as_deref().unwrap_or("-")
            ),
        )),
        (None, Some(asked)) => {
            pairs.push(("vsock", format!("cid {} (not created yet)", asked.cid)))
        }
        (None, None) => {}
    }
    if !s.command.is_empty() {
        pairs.push(("command", s.command.join(" ")));
    }
    pairs.push(("restart", format!("{:?}", s.restart).to_lowercase()));
    if let Some(schedule) = &s.snapshot_schedule {
        pairs.push((
            "snapshot schedule",
            format!("every {}, keep {}", schedule.every, schedule.keep.get()),
        ));
    }
    if let Some(last) = &i.last_scheduled_snapshot {
        pairs.push((
            "last scheduled snapshot",
            format!("{} at {}", last.name, last.at.to_rfc3339()),
        ));
    }
    // What it asks of a node: what an Unschedulable condition below refers to.
    let placement = &s.placement;
    let joined = |set: &std::collections::BTreeSet<String>| {
        set.iter().cloned().collect::<Vec<_>>().join(", ")
    };
    for (what, set) in [
        ("required traits", &placement.required_traits),
        ("forbidden traits", &placement.forbidden_traits),
        ("aggregates", &placement.aggregates),
    ] {
        if !set.is_empty() {
            pairs.push((what, joined(set)));
        }
    }
    for (what, selector) in [
        ("node selector", &placement.node_selector),
        ("aggregate selector", &placement.aggregate_selector),
    ] {
        if !selector.is_empty() {
            pairs.push((what, selector.to_string()));
        }
    }
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
    for port in &s.publish {
        pairs.push(("published", published_to(i, port)));
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

/// A published port and where it leads: `8080:80/tcp -> 10.0.0.5:80`, or
/// the port alone before the instance has an address.
fn published_to(instance: &Instance, port: &PublishedPort) -> String {
    let to: Vec<String> = instance
        .attachments
        .first()
        .into_iter()
        .flat_map(|a| &a.addresses)
        .filter(|ip| {
            (ip.address.is_ipv4() && port.covers_ipv4())
                || (ip.address.is_ipv6() && port.covers_ipv6())
        })
        .map(|ip| match ip.address {
            std::net::IpAddr::V6(a) => format!("[{a}]:{}", port.guest_port()),
            a => format!("{a}:{}", port.guest_port()),
        })
        .collect();
    if to.is_empty() {
        port.to_string()
    } else {
        format!("{port} -> {}", to.join(", "))
    }
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

/// One row per sample: its time, the cores used since the sample before
/// (CPU time over wall time), memory and processes.
fn stats_history_table(samples: &[zixiao_core::api::StatsSample]) -> String {
    if samples.is_empty() {
        return "no samples yet: the server samples running instances every few seconds\n"
            .to_owned();
    }
    let mut table = Table::new(vec!["TIME", "CPU", "MEMORY", "PIDS"]);
    let mut before: Option<&zixiao_core::api::StatsSample> = None;
    for sample in samples {
        let cpu = before
            .and_then(|b| {
                let wall = (sample.at - b.at).num_nanoseconds()?;
                let used = sample.stats.cpu_time_ns.checked_sub(b.stats.cpu_time_ns)?;
                (wall > 0).then(|| format!("{:.3}", used as f64 / wall as f64))
            })
            .unwrap_or_else(|| "-".to_owned());
        table.row(vec![
            sample.at.format("%H:%M:%S").to_string(),
            cpu,
            bytes(sample.stats.memory_bytes),
            sample
                .stats
                .pids
                .map_or_else(|| "-".to_owned(), |p| p.to_string()),
        ]);
        before = Some(sample);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_port_shows_where_it_leads() {
        let mut spec = InstanceSpec::container("busybox");
        spec.networks = vec!["lan".into()];
        let mut instance =
            Instance::new("id", CreateInstance::new("web", spec), chrono::Utc::now());
        let port = |t: &str| PublishedPort::try_from(t).unwrap();
        assert_eq!(published_to(&instance, &port("8080:80")), "8080:80/tcp");
        let lan = zixiao_core::model::NetworkName::try_from("lan").unwrap();
        let installation = zixiao_core::model::InstallationId::generate();
        instance.attachments = vec![zixiao_core::NetworkAttachment {
            host_interface: zixiao_core::model::InterfaceName::of(
                zixiao_core::model::InterfaceKind::Veth,
                &installation,
                "id",
                &lan,
            ),
            bridge: zixiao_core::model::BridgeName::of(&installation, &lan),
            network: lan,
            installation: Some(installation),
            interface: "eth0".into(),
            mac: "02:00:00:00:00:01".into(),
            addresses: ["10.0.0.5", "fd00::5"]
                .iter()
                .map(|a| zixiao_core::model::IpConfig {
                    address: a.parse().unwrap(),
                    prefix_len: 24,
                    gateway: "10.0.0.1".parse().unwrap(),
                })
                .collect(),
        }];
        assert_eq!(
            published_to(&instance, &port("8080:80")),
            "8080:80/tcp -> 10.0.0.5:80, [fd00::5]:80"
        );
        assert_eq!(
            published_to(&instance, &port("192.0.2.7:53:5353/udp")),
            "192.0.2.7:53:5353/udp -> 10.0.0.5:5353"
        );
        instance.spec.publish = vec![port("8080:80")];
        // `-o json` prints the spec's ports in their canonical text.
        let json = serde_json::to_value(&instance).unwrap();
        assert_eq!(json["spec"]["publish"], serde_json::json!(["8080:80/tcp"]));
        assert!(
            instance_details(&instance).contains("8080:80/tcp -> 10.0.0.5:80"),
            "{}",
            instance_details(&instance)
        );
    }
}
