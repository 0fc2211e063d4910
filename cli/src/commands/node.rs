//! `zixiao node ...`

use std::process::ExitCode;

use zixiao_core::api::NodeUsageSample;
use zixiao_core::controller::DrainReport;
use zixiao_core::model::{CarbonIntensity, Onboarding, OnboardingState};
use zixiao_core::{Client, ErrorKind, Node, Result};

use crate::args::{AddRm, Format, NodeCommand, OnOff};
use crate::output::{age, bytes, details, print, Table};

pub(crate) async fn run(client: Client, format: Format, command: NodeCommand) -> Result<ExitCode> {
    let controller = &client;
    match command {
        NodeCommand::List => {
            let nodes = controller.list_nodes().await?;
            print(format, &nodes, |nodes| node_table(nodes))?;
        }
        NodeCommand::Get { node } => {
            let node = controller.get_node(&node).await?;
            // The host's usage lives in the server's history, not in the
            // node: a frontend on the store itself has none to show.
            let host = match controller.node_stats_history(node.id.as_str()).await {
                Ok(samples) => latest_host(&samples),
                Err(e) if e.kind() == ErrorKind::Unsupported => None,
                Err(e) => return Err(e),
            };
            print(format, &node, |n| node_details(n, host.as_deref()))?;
        }
        NodeCommand::Stats { node } => {
            let samples = controller.node_stats_history(&node).await?;
            print(format, &samples, |samples| usage_table(samples))?;
        }
        NodeCommand::Cordon { node } => {
            let node = controller.cordon_node(&node).await?;
            print(format, &node, |n| {
                format!("node {} is {}\n", n.id, n.status.as_str())
            })?;
        }
        NodeCommand::Uncordon { node } => {
            let node = controller.uncordon_node(&node).await?;
            print(format, &node, |n| {
                format!("node {} is {}\n", n.id, n.status.as_str())
            })?;
        }
        NodeCommand::Drain { node } => {
            let report = controller.drain_node(&node).await?;
            print(format, &report, drain_summary)?;
        }
        NodeCommand::Maintenance { node, state } => {
            let report = controller
                .set_maintenance(&node, state == OnOff::On)
                .await?;
            print(format, &report, drain_summary)?;
        }
        NodeCommand::Decommission { node } => {
            let report = controller.decommission_node(&node).await?;
            print(format, &report, drain_summary)?;
        }
        NodeCommand::Delete { node } => {
            controller.deregister_node(&node).await?;
            print(format, &serde_json::json!({ "deleted": node }), |_| {
                format!("deleted node {node}\n")
            })?;
        }
        NodeCommand::Label { node, labels } => {
            let node = controller.label_node(&node, &labels).await?;
            print(format, &node, |n| {
                format!("node {} labels: {}\n", n.id, labels_text(n))
            })?;
        }
        NodeCommand::Trait {
            node,
            action,
            traits,
        } => {
            let node = match action {
                AddRm::Add => controller.add_node_traits(&node, &traits).await?,
                AddRm::Rm => controller.remove_node_traits(&node, &traits).await?,
            };
            print(format, &node, |n| {
                format!("node {} traits: {}\n", n.id, traits_text(n))
            })?;
        }
        NodeCommand::Set { node, carbon } => {
            let intensity = match carbon.as_str() {
                "none" => None,
                grams => Some(grams.parse::<CarbonIntensity>()?),
            };
            let node = controller.set_node_carbon(&node, intensity).await?;
            print(format, &node, |n| {
                format!("node {} carbon intensity: {}\n", n.id, carbon_text(n))
            })?;
        }
        NodeCommand::Update {
            node,
            cpu_allocation_ratio,
            memory_allocation_ratio,
        } => {
            let node = controller
                .set_allocation_ratios(&node, cpu_allocation_ratio, memory_allocation_ratio)
                .await?;
            print(format, &node, |n| {
                format!("node {}: {}\n", n.id, allocatable_text(n))
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn node_table(nodes: &[Node]) -> String {
    let mut table = Table::new(vec![
        "ID",
        "STATUS",
        "REGION",
        "ZONE",
        "CPUS",
        "MEMORY MIB",
        "DISK GIB",
        "INSTANCES",
        "RUNTIMES",
        "AGE",
    ]);
    for n in nodes {
        let runtimes = n
            .runtimes
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(",");
        table.row(vec![
            n.id.clone(),
            n.status.as_str().to_owned(),
            n.region.clone(),
            n.zone.clone(),
            format!("{}/{}", n.allocated.cpus, n.allocatable().cpus),
            format!("{}/{}", n.allocated.memory_mib, n.allocatable().memory_mib),
            format!("{}/{}", n.allocated.disk_gib, n.capacity.disk_gib),
            format!("{}/{}", n.allocated.instances, n.capacity.instances),
            if runtimes.is_empty() {
                "-".to_owned()
            } else {
                runtimes
            },
            age(n.created_at),
        ]);
    }
    table.render()
}

/// A node's carbon intensity and whose figure it is.
fn carbon_text(n: &Node) -> String {
    let whose = if n.operator.carbon_intensity.is_some() {
        "operators'"
    } else {
        "its agent's"
    };
    match n.carbon_intensity {
        Some(grams) => format!("{grams} gCO2e/kWh ({whose})"),
        None => "unknown".to_owned(),
    }
}

/// What placement may reserve on `n`, and how that follows from its
/// capacity and allocation ratios.
fn allocatable_text(n: &Node) -> String {
    let allocatable = n.allocatable();
    format!(
        "{} cores reservable ({} × cpu ratio {}), {} MiB ({} × memory ratio {})",
        allocatable.cpus,
        n.capacity.cpus,
        n.allocation_ratios.cpu,
        allocatable.memory_mib,
        n.capacity.memory_mib,
        n.allocation_ratios.memory
    )
}

fn node_details(n: &Node, host: Option<&str>) -> String {
    let mut pairs = vec![
        ("id", n.id.clone()),
        ("hostname", n.hostname.clone()),
        ("address", n.address.clone()),
        ("status", n.status.as_str().to_owned()),
        ("region/zone", format!("{}/{}", n.region, n.zone)),
        (
            "cpus",
            format!(
                "{} allocated of {} ({} cores × {})",
                n.allocated.cpus,
                n.allocatable().cpus,
                n.capacity.cpus,
                n.allocation_ratios.cpu
            ),
        ),
        (
            "memory",
            format!(
                "{} MiB allocated of {} MiB ({} MiB × {})",
                n.allocated.memory_mib,
                n.allocatable().memory_mib,
                n.capacity.memory_mib,
                n.allocation_ratios.memory
            ),
        ),
        (
            "disk",
            format!(
                "{} GiB allocated of {} GiB",
                n.allocated.disk_gib, n.capacity.disk_gib
            ),
        ),
        (
            "instances",
            format!(
                "{} of at most {}",
                n.allocated.instances, n.capacity.instances
            ),
        ),
    ];
    pairs.push(("labels", labels_text(n)));
    pairs.push(("traits", traits_text(n)));
    pairs.push(("carbon intensity", carbon_text(n)));
    for t in &n.runtimes {
        pairs.push(("runtime", format!("{t}: available")));
    }
    for (t, why) in &n.missing_runtimes {
        pairs.push(("runtime", format!("{t}: unavailable ({why})")));
    }
    if let Some(onboarding) = &n.onboarding {
        pairs.extend(onboarding_lines(onboarding));
    }
    if let Some(host) = host {
        pairs.push(("host", host.to_owned()));
    }
    pairs.push(("registered", n.created_at.to_rfc3339()));
    details(&pairs)
}

/// The host's usage in the newest sample that has it, in a line: `cpu
/// 0.70/2 cores, memory 3.1 GiB/23.0 GiB, load 0.42`.
fn latest_host(samples: &[NodeUsageSample]) -> Option<String> {
    let sample = samples
        .iter()
        .rev()
        .find(|s| s.host_memory_capacity_bytes.is_some())?;
    Some(format!(
        "cpu {}/{} cores, memory {}/{}, load {}",
        or_dash(sample.host_cpu_millicores.map(cores)),
        or_dash(sample.host_cpu_capacity_millicores.map(cores)),
        or_dash(sample.host_memory_bytes.map(bytes)),
        or_dash(sample.host_memory_capacity_bytes.map(bytes)),
        or_dash(sample.host_load1.map(|l| format!("{l:.2}"))),
    ))
}

/// Thousandths of a core in cores: `0.70`, `2`.
fn cores(millicores: u64) -> String {
    if millicores % 1000 == 0 {
        (millicores / 1000).to_string()
    } else {
        format!("{:.2}", millicores as f64 / 1000.0)
    }
}

/// A figure, or `-` for unknown.
fn or_dash(figure: Option<String>) -> String {
    figure.unwrap_or_else(|| "-".to_owned())
}

/// How the node's onboarding went: where it stands, then one line per
/// runtime's smoke test.
fn onboarding_lines(o: &Onboarding) -> Vec<(&'static str, String)> {
    let state = match o.state {
        OnboardingState::Running => format!("running since {}", o.started_at.to_rfc3339()),
        OnboardingState::Skipped => {
            "skipped (the agent was started with --skip-smoke-test)".to_owned()
        }
        OnboardingState::Passed | OnboardingState::Failed => format!(
            "{} at {}",
            o.state.as_str(),
            o.finished_at.unwrap_or(o.started_at).to_rfc3339()
        ),
    };
    let mut lines = vec![("onboarding", state)];
    for c in &o.checks {
        let outcome = match c.step {
            Some(step) => format!("failed at {}", step.as_str()),
            None => c.outcome.as_str().to_owned(),
        };
        lines.push((
            "smoke test",
            format!(
                "{}: {outcome} in {} ms: {}",
                c.runtime, c.duration_ms, c.detail
            ),
        ));
    }
    lines
}

fn drain_summary(report: &DrainReport) -> String {
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.join(", ")
        }
    };
    let mut lines = vec![
        ("node", report.node.clone()),
        (
            "status",
            report.status.map_or("-", |s| s.as_str()).to_owned(),
        ),
        ("migrated", migrated_text(report)),
        ("moved", list(&report.moved)),
        ("pending", list(&report.pending)),
        ("stopped", list(&report.stopped)),
    ];
    // Why a VM restarted (or waits, or stopped) rather than migrating.
    lines.extend(
        report
            .not_migrated
            .iter()
            .map(|(name, why)| ("not migrated", format!("{name}: {why}"))),
    );
    details(&lines)
}

/// `web (live to node-b), db (cold to node-c)`, or `-`.
fn migrated_text(report: &DrainReport) -> String {
    if report.migrated.is_empty() {
        return "-".to_owned();
    }
    let each: Vec<String> = report
        .migrated
        .iter()
        .map(|m| format!("{} ({} to {})", m.name, m.mode, m.to))
        .collect();
    each.join(", ")
}

/// Where a label or trait of `n` comes from: its operators, or (no mark)
/// its agent. Records from before the two were kept apart have no marks.
fn source(n: &Node, operator: bool) -> &'static str {
    if operator {
        " (operator)"
    } else if n.reported.is_empty() && n.operator.is_empty() {
        ""
    } else {
        " (agent)"
    }
}

/// The labels placement matches, each with where it comes from:
/// `disk=ssd (operator), arch=x86_64 (agent)`, or `-`.
fn labels_text(n: &Node) -> String {
    let labels: Vec<String> = n
        .labels
        .iter()
        .map(|(k, v)| {
            let operator = !n.reported.labels.contains_key(k) && n.operator.labels.contains_key(k);
            format!("{k}={v}{}", source(n, operator))
        })
        .collect();
    if labels.is_empty() {
        "-".to_owned()
    } else {
        labels.join(", ")
    }
}

/// The traits placement matches, each with where it comes from, or `-`.
fn traits_text(n: &Node) -> String {
    let traits: Vec<String> = n
        .traits
        .iter()
        .map(|t| {
            let operator = !n.reported.traits.contains(t) && n.operator.traits.contains(t);
            format!("{t}{}", source(n, operator))
        })
        .collect();
    if traits.is_empty() {
        "-".to_owned()
    } else {
        traits.join(", ")
    }
}

/// One row per sample: its time, how many instances it counts, the cores
/// they used since the sample before, and their memory.
fn usage_table(samples: &[NodeUsageSample]) -> String {
    if samples.is_empty() {
        return "no samples yet: the server samples every few seconds\n".to_owned();
    }
    let mut table = Table::new(vec![
        "TIME",
        "INSTANCES",
        "CPU",
        "MEMORY",
        "HOST CPU",
        "HOST MEMORY",
        "LOAD",
    ]);
    for sample in samples {
        let of = |used: Option<String>, total: Option<String>| match total {
            Some(total) => format!("{}/{total}", or_dash(used)),
            None => "-".to_owned(),
        };
        table.row(vec![
            sample.at.format("%H:%M:%S").to_string(),
            sample.instances.to_string(),
            format!("{:.3}", sample.cpu_millicores as f64 / 1000.0),
            bytes(sample.memory_bytes),
            of(
                sample.host_cpu_millicores.map(cores),
                sample.host_cpu_capacity_millicores.map(cores),
            ),
            of(
                sample.host_memory_bytes.map(bytes),
                sample.host_memory_capacity_bytes.map(bytes),
            ),
            or_dash(sample.host_load1.map(|l| format!("{l:.2}"))),
        ]);
    }
    table.render()
}
