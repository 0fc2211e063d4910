//! `zixiao template ...`

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde::Deserialize;
use zixiao_core::model::{TemplateInfo, TemplateSpec};
use zixiao_core::{Client, InstanceSpec, Result};

use super::instance::spec_file;
use crate::args::{Format, TemplateCommand, TemplateFileArgs};
use crate::output::{age, print, Table};

pub(crate) async fn run(
    client: Client,
    format: Format,
    command: TemplateCommand,
) -> Result<ExitCode> {
    match command {
        TemplateCommand::Create(args) => {
            let spec = read_spec(&args)?;
            let created = client.create_template(&args.name, spec).await?;
            print(format, &created, render_one)?;
        }
        TemplateCommand::Update(args) => {
            let spec = read_spec(&args)?;
            let updated = client.update_template(&args.name, spec).await?;
            print(format, &updated, render_one)?;
        }
        TemplateCommand::List => {
            let templates = client.list_templates().await?;
            print(format, &templates, |t| render_list(t))?;
        }
        TemplateCommand::Get { name, version } => {
            let template = client.get_template(&name, version).await?;
            print(format, &template, render_one)?;
        }
        TemplateCommand::Delete { name, version } => {
            client.delete_template(&name, version).await?;
            let what = match version {
                Some(v) => format!("version {v} of template {name}"),
                None => format!("template {name}"),
            };
            print(
                format,
                &serde_json::json!({ "deleted": name, "version": version }),
                |_| format!("deleted {what}\n"),
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An instance's spec file, as a template reads it: its `name`, if any,
/// belongs to an instance and is not kept.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateFile {
    #[serde(default, rename = "name")]
    _name: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    spec: InstanceSpec,
}

fn read_spec(args: &TemplateFileArgs) -> Result<TemplateSpec> {
    let file: TemplateFile = spec_file(&args.file)?;
    Ok(TemplateSpec {
        labels: file.labels,
        spec: file.spec,
    })
}

/// Each version on a row, with its users.
fn render_one(template: &TemplateInfo) -> String {
    render_list(std::slice::from_ref(template))
}

fn render_list(templates: &[TemplateInfo]) -> String {
    let mut table = Table::new(vec![
        "NAME",
        "VERSION",
        "TYPE",
        "IMAGE",
        "CPUS",
        "MEMORY",
        "IN USE",
        "INSTANCES",
        "AGE",
    ]);
    for t in templates {
        for v in &t.versions {
            let spec = &v.version.spec;
            let mut version = v.version.version.to_string();
            if v.version.deleting {
                version.push_str(" (deleting)");
            }
            table.row(vec![
                t.name.to_string(),
                version,
                spec.instance_type.as_str().to_owned(),
                spec.image.clone().unwrap_or_else(|| "-".to_owned()),
                spec.cpus.to_string(),
                format!("{} MiB", spec.memory_mib),
                v.in_use.to_string(),
                if v.instances.is_empty() {
                    "-".to_owned()
                } else {
                    v.instances.join(",")
                },
                age(v.version.created_at),
            ]);
        }
    }
    table.render()
}
