//! `zixiao network ...`

use std::process::ExitCode;

use zixiao_core::model::{Network, NetworkStatus};
use zixiao_core::{Client, Result};

use crate::args::{Format, NetworkCommand};
use crate::output::{age, details, print, Table};

pub(crate) async fn run(
    client: Client,
    format: Format,
    command: NetworkCommand,
) -> Result<ExitCode> {
    let controller = &client;
    match command {
        NetworkCommand::Create(args) => {
            let network = controller.create_network(args.request()).await?;
            print(format, &network, render_one)?;
        }
        NetworkCommand::List => {
            let networks = controller.list_networks().await?;
            print(format, &networks, |networks| render_list(networks))?;
        }
        NetworkCommand::Get { name } => {
            let status = controller.network_status(&name).await?;
            print(format, &status, render_status)?;
        }
        NetworkCommand::Repair { name } => {
            let status = controller.repair_network(&name).await?;
            print(format, &status, render_status)?;
            if !status.is_healthy() {
                return Ok(ExitCode::FAILURE);
            }
        }
        NetworkCommand::Delete { name } => {
            controller.delete_network(&name).await?;
            if format == Format::Table {
                println!("deleted network {name}");
            } else {
                print(format, &serde_json::json!({ "deleted": name }), |_| {
                    String::new()
                })?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn subnets(network: &Network) -> String {
    network
        .subnets
        .iter()
        .map(|s| s.cidr.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn on_off(on: bool) -> String {
    if on { "on" } else { "off" }.to_owned()
}

pub(crate) fn render_list(networks: &[Network]) -> String {
    let mut table = Table::new(vec!["NAME", "SUBNETS", "BRIDGE", "NAT", "ISOLATED", "AGE"]);
    for n in networks {
        table.row(vec![
            n.name.to_string(),
            subnets(n),
            n.bridge.to_string(),
            on_off(n.nat),
            on_off(n.isolated),
            age(n.created_at),
        ]);
    }
    table.render()
}

pub(crate) fn render_one(network: &Network) -> String {
    let mut pairs = vec![("name", network.name.to_string())];
    for s in &network.subnets {
        let reserved = if s.reserved.is_empty() {
            String::new()
        } else {
            let ranges: Vec<String> = s.reserved.iter().map(ToString::to_string).collect();
            format!(", reserved {}", ranges.join(","))
        };
        // How guests get their address there: said once, here.
        let how = if s.is_slaac() {
            ", SLAAC (router advertisements; each address formed from its MAC)"
        } else {
            ""
        };
        pairs.push((
            "subnet",
            format!("{} gateway {}{reserved}{how}", s.cidr, s.gateway),
        ));
    }
    pairs.push(("bridge", network.bridge.to_string()));
    pairs.push((
        "vni",
        network
            .vni
            .map_or_else(|| "none (stored before VNIs)".to_owned(), |v| v.to_string()),
    ));
    pairs.push(("nat", on_off(network.nat)));
    pairs.push(("isolated", on_off(network.isolated)));
    pairs.push(("nft table", format!("inet {}", network.nft_table())));
    pairs.push(("age", age(network.created_at)));
    details(&pairs)
}

/// `network get` and `network repair`: the network, then one row per part
/// per node, then what a repair mended.
fn render_status(status: &NetworkStatus) -> String {
    let mut out = render_one(&status.network);
    let mut table = Table::new(vec!["NODE", "PART", "STATE", "DETAIL"]);
    for node in &status.nodes {
        if let Some(error) = &node.error {
            table.row(vec![
                node.node.clone(),
                "-".to_owned(),
                "unknown".to_owned(),
                error.clone(),
            ]);
        }
        for part in &node.parts {
            table.row(vec![
                node.node.clone(),
                part.kind.to_string(),
                part.state.to_string(),
                part.detail.clone(),
            ]);
        }
    }
    if status.nodes.is_empty() {
        out.push_str("\nno node sets up networks\n");
    } else {
        out.push('\n');
        out.push_str(&table.render());
    }
    if !status.repaired.is_empty() {
        out.push_str("\nrepaired:\n");
        for line in &status.repaired {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}
