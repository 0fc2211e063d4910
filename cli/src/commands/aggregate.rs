//! `zixiao aggregate ...`

use std::process::ExitCode;

use zixiao_core::model::Aggregate;
use zixiao_core::{Client, Result};

use super::key_values;
use crate::args::{AggregateCommand, Format};
use crate::output::{age, details, print, Table};

pub(crate) async fn run(
    client: Client,
    format: Format,
    command: AggregateCommand,
) -> Result<ExitCode> {
    match command {
        AggregateCommand::Create { name, metadata } => {
            let metadata = key_values("--meta", &metadata)?;
            let created = client.create_aggregate(&name, metadata).await?;
            print(format, &created, aggregate_details)?;
        }
        AggregateCommand::Delete { name } => {
            client.delete_aggregate(&name).await?;
            print(format, &serde_json::json!({ "deleted": name }), |_| {
                format!("deleted aggregate {name}\n")
            })?;
        }
        AggregateCommand::List => {
            let aggregates = client.list_aggregates().await?;
            print(format, &aggregates, |a| aggregate_table(a))?;
        }
        AggregateCommand::Get { name } => {
            let aggregate = client.get_aggregate(&name).await?;
            print(format, &aggregate, aggregate_details)?;
        }
        AggregateCommand::Set { name, metadata } => {
            let aggregate = client.set_aggregate_metadata(&name, &metadata).await?;
            print(format, &aggregate, |a| {
                format!("aggregate {} metadata: {}\n", a.name, metadata_text(a))
            })?;
        }
        AggregateCommand::AddNode { name, node } => {
            let aggregate = client.add_aggregate_node(&name, &node).await?;
            print(format, &aggregate, |a| {
                format!("aggregate {} nodes: {}\n", a.name, nodes_text(a))
            })?;
        }
        AggregateCommand::RmNode { name, node } => {
            let aggregate = client.remove_aggregate_node(&name, &node).await?;
            print(format, &aggregate, |a| {
                format!("aggregate {} nodes: {}\n", a.name, nodes_text(a))
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn metadata_text(a: &Aggregate) -> String {
    if a.metadata.is_empty() {
        return "-".to_owned();
    }
    a.metadata
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn nodes_text(a: &Aggregate) -> String {
    if a.nodes.is_empty() {
        return "-".to_owned();
    }
    a.nodes.iter().cloned().collect::<Vec<_>>().join(",")
}

fn aggregate_table(aggregates: &[Aggregate]) -> String {
    let mut table = Table::new(vec!["NAME", "METADATA", "NODES", "AGE"]);
    for a in aggregates {
        table.row(vec![
            a.name.to_string(),
            metadata_text(a),
            nodes_text(a),
            age(a.created_at),
        ]);
    }
    table.render()
}

fn aggregate_details(a: &Aggregate) -> String {
    details(&[
        ("name", a.name.to_string()),
        ("metadata", metadata_text(a)),
        ("nodes", nodes_text(a)),
        ("created", a.created_at.to_rfc3339()),
        ("updated", a.updated_at.to_rfc3339()),
    ])
}
