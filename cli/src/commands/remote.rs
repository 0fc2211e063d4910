//! `--endpoint URL` (or `ZIXIAO_ENDPOINT`): the node, cluster and instance
//! commands sent to a Zixiao server over gRPC instead of the embedded
//! controller. Answers and errors (kind, message, exit code) are the
//! server's. `logs --follow` polls the server for more while the instance
//! runs, and `console` is a session through the server to the node's
//! agent; snapshots are taken by the node's runtime through its agent.
//! `pause`/`resume` freeze and thaw the instance through its node's agent.
//! Commands that need the node's files (images, `restore`, `snapshot
//! create --to`) are not available remotely and say so.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use zixiao_core::controller::DrainReport;
use zixiao_core::{
    Client, Error, ErrorKind, Instance, InstanceFilter, InstanceStatus, InstanceType, Node, Result,
    Wait,
};

/// How often `logs --follow` asks the server for more.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

use super::instance::{snapshot_table, LOG_CHUNK};
use super::network::{render_list, render_one};
use crate::args::{
    ClusterCommand, Command, Format, InstanceCommand, ListArgs, NetworkCommand, NodeCommand, OnOff,
    SnapshotCommand,
};
use crate::output::{age, print, Table};

/// Runs `command` against the server at `endpoint`.
pub(crate) async fn run(endpoint: &str, format: Format, command: Command) -> Result<ExitCode> {
    match command {
        Command::Node(command) => node(endpoint, format, command).await?,
        Command::Cluster(ClusterCommand::Info) => {
            let info = zixiao_api::connect(endpoint)?.cluster_info().await?;
            print(format, &info, |info| {
                format!(
                    "nodes: {}\ninstances: {}\nleader: {}\n",
                    info.nodes,
                    info.instances,
                    info.leader.as_deref().unwrap_or("-")
                )
            })?;
        }
        Command::Instance(command) => instance(endpoint, format, command).await?,
        Command::Network(command) => network(endpoint, format, command).await?,
        Command::Image(_) => {
            return Err(Error::Unsupported(
                "images are not managed through --endpoint: they live in each node's \
                 runtime, and an instance uses the image its node holds; import, list or \
                 remove them with `zixiao image` on the node, without --endpoint"
                    .to_owned(),
            ))
        }
        _ => return Err(not_remote("this command")),
    }
    Ok(ExitCode::SUCCESS)
}

fn not_remote(what: &str) -> Error {
    Error::Unsupported(format!(
        "{what} is not available with --endpoint yet; run it on the node without --endpoint"
    ))
}

async fn node(endpoint: &str, format: Format, command: NodeCommand) -> Result<()> {
    let client = zixiao_api::connect(endpoint)?;
    let status = |n: &Node| format!("node {} is {}\n", n.id, n.status.as_str());
    match command {
        NodeCommand::List => print(format, &client.list_nodes().await?, |n| node_table(n))?,
        NodeCommand::Get { node } => print(format, &client.get_node(&node).await?, |n| {
            node_table(std::slice::from_ref(n))
        })?,
        NodeCommand::Cordon { node } => print(format, &client.cordon_node(&node).await?, status)?,
        NodeCommand::Uncordon { node } => {
            print(format, &client.uncordon_node(&node).await?, status)?
        }
        NodeCommand::Drain { node } => print(format, &client.drain_node(&node).await?, drained)?,
        NodeCommand::Maintenance { node, state } => print(
            format,
            &client.set_maintenance(&node, state == OnOff::On).await?,
            drained,
        )?,
    }
    Ok(())
}

fn node_table(nodes: &[Node]) -> String {
    let mut table = Table::new(vec![
        "ID", "STATUS", "REGION", "ZONE", "ADDRESS", "CPUS", "AGE",
    ]);
    for n in nodes {
        table.row(vec![
            n.id.clone(),
            n.status.as_str().to_owned(),
            n.region.clone(),
            n.zone.clone(),
            n.address.clone(),
            format!("{}/{}", n.allocated.cpus, n.capacity.cpus),
            age(n.created_at),
        ]);
    }
    table.render()
}

fn drained(report: &DrainReport) -> String {
    format!(
        "node {}: moved {}, pending {}, stopped {}\n",
        report.node,
        report.moved.len(),
        report.pending.len(),
        report.stopped.len()
    )
}

fn filter(args: &ListArgs) -> Result<InstanceFilter> {
    let instance_type = match &args.instance_type {
        Some(t) => Some(t.parse::<InstanceType>().map_err(|_| {
            Error::invalid("--type", format!("`{t}` is not vm, container or microvm"))
        })?),
        None => None,
    };
    let status = match &args.status {
        Some(s) => Some(
            InstanceStatus::ALL
                .into_iter()
                .find(|x| x.as_str() == s)
                .ok_or_else(|| Error::invalid("--status", format!("`{s}` is not a status")))?,
        ),
        None => None,
    };
    Ok(InstanceFilter {
        instance_type,
        status,
        node: args.node.clone(),
        labels: super::key_values("--label", &args.labels)?,
    })
}

async fn instance(endpoint: &str, format: Format, command: InstanceCommand) -> Result<()> {
    let client = zixiao_api::connect(endpoint)?;
    let one = |i: &Option<Instance>| match i {
        Some(i) => instance_table(std::slice::from_ref(i)),
        None => "deleted\n".to_owned(),
    };
    let wait = Wait::Settled;
    match command {
        InstanceCommand::List(args) => {
            let instances = client.list_instances(filter(&args)?).await?;
            print(format, &instances, |i| instance_table(i))?;
        }
        InstanceCommand::Get { instance } => {
            let instance = client.get_instance(&instance).await?;
            print(format, &instance, |i| {
                instance_table(std::slice::from_ref(i))
            })?;
        }
        InstanceCommand::Start { instance } => print(
            format,
            &Some(client.start_instance(&instance, wait).await?),
            one,
        )?,
        InstanceCommand::Stop { instance } => print(
            format,
            &Some(client.stop_instance(&instance, wait).await?),
            one,
        )?,
        InstanceCommand::Restart { instance } => print(
            format,
            &Some(client.restart_instance(&instance, wait).await?),
            one,
        )?,
        InstanceCommand::Delete { instance } => {
            print(format, &client.delete_instance(&instance, wait).await?, one)?
        }
        InstanceCommand::Pause { instance } => {
            let paused = client.pause_instance(&instance).await?;
            print(format, &paused, |i| instance_table(std::slice::from_ref(i)))?
        }
        InstanceCommand::Resume { instance } => {
            let resumed = client.resume_instance(&instance).await?;
            print(format, &resumed, |i| {
                instance_table(std::slice::from_ref(i))
            })?
        }
        InstanceCommand::Create(args) => {
            let wait = Wait::from(!args.no_wait);
            let request = super::instance::create_request(*args)?;
            let created = client.create_instance(request, wait).await?;
            print(format, &Some(created), one)?
        }
        InstanceCommand::Logs { instance, follow } => logs(&client, &instance, follow).await?,
        InstanceCommand::Snapshot(command) => snapshot(&client, format, command).await?,
        InstanceCommand::Restore(_) => {
            return Err(Error::Unsupported(
                "instance restore reads a snapshot directory on this machine, so it is not \
                 available with --endpoint; run it on the node without --endpoint"
                    .to_owned(),
            ))
        }
        InstanceCommand::Console { instance } => {
            let console = client.attach_console(&instance).await?;
            if format == Format::Table {
                eprintln!("attached; press Ctrl-C to detach");
            }
            let mut output = console.output;
            let mut input = console.input;
            let mut stdout = tokio::io::stdout();
            let mut stdin = tokio::io::stdin();
            tokio::select! {
                _ = tokio::io::copy(&mut output, &mut stdout) => {}
                _ = tokio::io::copy(&mut stdin, &mut input) => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        InstanceCommand::Stats { instance } => {
            let stats = client.instance_stats(&instance).await?;
            print(format, &stats, |s| {
                format!(
                    "cpu {} ns, memory {} bytes\n",
                    s.cpu_time_ns, s.memory_bytes
                )
            })?;
        }
    }
    Ok(())
}

/// Prints the instance's log; with `follow`, polls for more from the last
/// offset while the instance runs (as the server sees it), then prints
/// what is left and returns.
async fn logs(client: &Client, instance: &str, follow: bool) -> Result<()> {
    let mut offset = 0;
    let mut stdout = std::io::stdout();
    // One more read after the instance stopped, for what it wrote last.
    let mut last_pass = !follow;
    loop {
        let chunk = client.read_log(instance, offset, LOG_CHUNK as u64).await?;
        let got = chunk.next_offset > offset;
        let _ = stdout.write_all(&chunk.data);
        let _ = stdout.flush();
        offset = chunk.next_offset;
        if got {
            continue;
        }
        if last_pass {
            return Ok(());
        }
        let running = match client.get_instance(instance).await {
            Ok(found) => matches!(
                found.status,
                InstanceStatus::Pending
                    | InstanceStatus::Scheduled
                    | InstanceStatus::Creating
                    | InstanceStatus::Running
                    | InstanceStatus::Paused
            ),
            // Deleted while followed: nothing more will come.
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if !running {
            last_pass = true;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

async fn snapshot(client: &Client, format: Format, command: SnapshotCommand) -> Result<()> {
    match command {
        SnapshotCommand::Create { to: Some(_), .. } => Err(Error::invalid(
            "--to",
            "copying a snapshot out is done on the node (its files stay there); take the \
             snapshot without --to, or run the command on the node without --endpoint",
        )),
        SnapshotCommand::Create {
            instance,
            name,
            to: None,
        } => {
            let taken = client.create_snapshot(&instance, &name).await?;
            print(format, &taken, |s| snapshot_table(std::slice::from_ref(s)))
        }
        SnapshotCommand::List { instance } => {
            print(format, &client.list_snapshots(&instance).await?, |s| {
                snapshot_table(s)
            })
        }
        SnapshotCommand::Revert { instance, name } => {
            client.revert_snapshot(&instance, &name).await?;
            super::instance::print_reverted(format, &instance, &name)
        }
        SnapshotCommand::Delete { instance, name } => {
            client.delete_snapshot(&instance, &name).await?;
            super::instance::print_snapshot_deleted(format, &name)
        }
    }
}

async fn network(endpoint: &str, format: Format, command: NetworkCommand) -> Result<()> {
    let client = zixiao_api::connect(endpoint)?;
    match command {
        NetworkCommand::Create(args) => {
            print(
                format,
                &client.create_network(args.request()).await?,
                render_one,
            )?;
        }
        NetworkCommand::List => {
            print(format, &client.list_networks().await?, |n| render_list(n))?;
        }
        NetworkCommand::Get { name } => {
            print(format, &client.get_network(&name).await?, render_one)?;
        }
        NetworkCommand::Delete { name } => {
            client.delete_network(&name).await?;
            print(format, &serde_json::json!({ "deleted": name }), |_| {
                format!("deleted network {name}\n")
            })?;
        }
    }
    Ok(())
}

fn instance_table(instances: &[Instance]) -> String {
    let mut table = Table::new(vec!["NAME", "TYPE", "STATUS", "NODE", "AGE", "PROBLEM"]);
    for i in instances {
        table.row(vec![
            i.name.clone(),
            i.spec.instance_type.as_str().to_owned(),
            i.status.as_str().to_owned(),
            i.node.clone().unwrap_or_else(|| "-".to_owned()),
            age(i.created_at),
            i.problem().unwrap_or("-").to_owned(),
        ]);
    }
    table.render()
}
