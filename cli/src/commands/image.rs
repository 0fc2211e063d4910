//! `zixiao image ...`

use std::io::IsTerminal;
use std::process::ExitCode;
use std::str::FromStr;

use zixiao_core::driver::{ImageInfo, ImportProgress};
use zixiao_core::{InstanceType, Result};
use zixiao_embedded::Embedded;

use super::absolute;
use crate::args::{Format, ImageCommand, ImageTarget};
use crate::output::{bytes, print, Table};

pub(crate) async fn run(
    embedded: Embedded,
    format: Format,
    command: ImageCommand,
) -> Result<ExitCode> {
    let controller = &embedded.controller;
    match command {
        ImageCommand::Import { file, target } => {
            let (node, ty) = resolve(&embedded, &target)?;
            let file = absolute(&file)?;
            let show = format == Format::Table && std::io::stderr().is_terminal();
            let progress = move |p: ImportProgress| {
                if show && p.total > 0 {
                    eprint!(
                        "\rimporting {} of {} ({}%)",
                        bytes(p.done),
                        bytes(p.total),
                        p.done * 100 / p.total
                    );
                }
            };
            let images = controller
                .import_images(&node, ty, &file, &progress)
                .await?;
            if show {
                eprintln!();
            }
            print(format, &images, |i| image_table(i))?;
        }
        ImageCommand::List { target } => {
            let (node, ty) = resolve(&embedded, &target)?;
            let images = controller.list_images(&node, ty).await?;
            print(format, &images, |i| image_table(i))?;
        }
        ImageCommand::Rm { name, target } => {
            let (node, ty) = resolve(&embedded, &target)?;
            controller.remove_image(&node, ty, &name).await?;
            print(format, &serde_json::json!({ "removed": name }), |_| {
                format!("removed image {name}\n")
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn resolve(embedded: &Embedded, target: &ImageTarget) -> Result<(String, InstanceType)> {
    let node = target
        .node
        .clone()
        .unwrap_or_else(|| embedded.node.id.clone());
    Ok((node, InstanceType::from_str(&target.instance_type)?))
}

fn image_table(images: &[ImageInfo]) -> String {
    let mut table = Table::new(vec!["NAME", "DIGEST", "SIZE"]);
    for image in images {
        let digest = image
            .digest
            .strip_prefix("sha256:")
            .unwrap_or(&image.digest);
        table.row(vec![
            image.name.clone(),
            digest.chars().take(12).collect(),
            bytes(image.size_bytes),
        ]);
    }
    table.render()
}
