//! `zixiao image ...`

use std::io::IsTerminal;
use std::process::ExitCode;
use std::str::FromStr;

use zixiao_core::api::Progress;
use zixiao_core::driver::{ImageInfo, ImportProgress};
use zixiao_core::{Client, InstanceType, Result};

use crate::args::{Format, ImageCommand};
use crate::output::{bytes, print, Table};

pub(crate) async fn run(client: Client, format: Format, command: ImageCommand) -> Result<ExitCode> {
    match command {
        ImageCommand::Import { file, target } => {
            let ty = InstanceType::from_str(&target.instance_type)?;
            let show = format == Format::Table && std::io::stderr().is_terminal();
            let progress = Progress::new(move |p: ImportProgress| {
                if show && p.total > 0 {
                    eprint!(
                        "\rimporting {} of {} ({}%)",
                        bytes(p.done),
                        bytes(p.total),
                        p.done * 100 / p.total
                    );
                }
            });
            let images = client
                .import_images(target.node.as_deref(), ty, file, progress)
                .await?;
            if show {
                eprintln!();
            }
            print(format, &images, |i| image_table(i))?;
        }
        ImageCommand::List { target } => {
            let ty = InstanceType::from_str(&target.instance_type)?;
            let images = client.list_images(target.node.as_deref(), ty).await?;
            print(format, &images, |i| image_table(i))?;
        }
        ImageCommand::Rm { name, target } => {
            let ty = InstanceType::from_str(&target.instance_type)?;
            client
                .remove_image(target.node.as_deref(), ty, &name)
                .await?;
            print(format, &serde_json::json!({ "removed": name }), |_| {
                format!("removed image {name}\n")
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
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
