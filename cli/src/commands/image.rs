//! `zixiao image ...`

use std::io::IsTerminal;
use std::process::ExitCode;
use std::str::FromStr;

use zixiao_core::api::Progress;
use zixiao_core::driver::{
    ImageInfo, ImagePlatform, ImportProgress, PullProgress, RegistryCa, RegistryCredentials,
};
use zixiao_core::model::{ImageKind, NodeImageName};
use zixiao_core::{Client, Error, ImageRef, InstanceType, Result};

use crate::args::{Format, ImageCommand};
use crate::output::{bytes, print, Table};

pub(crate) async fn run(client: Client, format: Format, command: ImageCommand) -> Result<ExitCode> {
    match command {
        ImageCommand::Import {
            file,
            name,
            kind,
            target,
        } => {
            let ty = InstanceType::from_str(&target.instance_type)?;
            let kind = ImageKind::from_str(&kind)?;
            if kind.in_node_store() {
                let name = NodeImageName::try_from(name.unwrap_or_default())?;
                let image = client
                    .import_node_image(target.node.as_deref(), file, kind, name)
                    .await?;
                print(format, &image, |i| image_table(std::slice::from_ref(i)))?;
                return Ok(ExitCode::SUCCESS);
            }
            let name = name
                .map(|n| zixiao_client::image_name("name", &n))
                .transpose()?;
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
                .import_images(target.node.as_deref(), ty, file, name, progress)
                .await?;
            if show {
                eprintln!();
            }
            print(format, &images, |i| image_table(i))?;
        }
        ImageCommand::Pull {
            reference,
            kind,
            insecure_registries,
            registry_cas,
            platform,
            username,
            password_stdin,
            target,
        } => {
            let ty = InstanceType::from_str(&target.instance_type)?;
            let reference = ImageRef::try_from(reference.as_str())?;
            let credentials = match (username, password_stdin) {
                (Some(username), true) => Some(RegistryCredentials {
                    username,
                    password: read_password().await?,
                }),
                _ => None,
            };
            let registry_cas = registry_cas
                .iter()
                .map(|file| RegistryCa::read(file))
                .collect::<Result<_, _>>()?;
            let platform = platform
                .as_deref()
                .map(ImagePlatform::try_from)
                .transpose()?;
            let options = zixiao_client::pull_options(
                &reference,
                credentials,
                insecure_registries,
                registry_cas,
                platform,
                kind.as_deref(),
            )?;
            let progress = Progress::new(|p: PullProgress| match p {
                PullProgress::Resolved {
                    digest,
                    blobs,
                    bytes: size,
                } => {
                    eprintln!("manifest {digest}: {blobs} blobs, {}", bytes(size))
                }
                PullProgress::Fetched {
                    digest,
                    size,
                    index,
                    count,
                } => {
                    eprintln!("[{index}/{count}] {digest} {} verified", bytes(size))
                }
                PullProgress::Unpacking => eprintln!("unpacking"),
            });
            let image = client
                .pull_image(target.node.as_deref(), ty, reference, options, progress)
                .await?;
            print(format, &image, |i| image_table(std::slice::from_ref(i)))?;
        }
        ImageCommand::List { target } => {
            let ty = InstanceType::from_str(&target.instance_type)?;
            let images = client.list_images(target.node.as_deref(), ty).await?;
            print(format, &images, |i| image_table(i))?;
        }
        ImageCommand::Get { name, kind, target } => {
            let ty = InstanceType::from_str(&target.instance_type)?;
            let kind = kind.as_deref().map(ImageKind::from_str).transpose()?;
            let images = client.list_images(target.node.as_deref(), ty).await?;
            let image = images
                .into_iter()
                .find(|i| i.name == name && kind.is_none_or(|k| k == i.kind))
                .ok_or_else(|| Error::not_found(format!("image `{name}`")))?;
            print(format, &image, |i| image_table(std::slice::from_ref(i)))?;
        }
        ImageCommand::Rm { name, kind, target } => {
            let ty = InstanceType::from_str(&target.instance_type)?;
            let kind = ImageKind::from_str(&kind)?;
            client
                .remove_image_of_kind(target.node.as_deref(), ty, kind, &name)
                .await?;
            print(format, &serde_json::json!({ "removed": name }), |_| {
                format!("removed image {name}\n")
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn image_table(images: &[ImageInfo]) -> String {
    let mut table = Table::new(vec!["NAME", "KIND", "FORMAT", "DIGEST", "SIZE"]);
    for image in images {
        let digest = image
            .digest
            .strip_prefix("sha256:")
            .unwrap_or(&image.digest);
        table.row(vec![
            image.name.clone(),
            image.kind.to_string(),
            if image.format.is_empty() {
                "-"
            } else {
                &image.format
            }
            .to_owned(),
            digest.chars().take(12).collect(),
            bytes(image.size_bytes),
        ]);
    }
    table.render()
}

/// The password on standard input, without its line ending.
async fn read_password() -> Result<String> {
    use tokio::io::AsyncReadExt;
    let mut password = String::new();
    // A password is short; the cap keeps a mistaken pipe from filling memory.
    tokio::io::stdin()
        .take(64 * 1024)
        .read_to_string(&mut password)
        .await
        .map_err(|e| {
            Error::invalid("password-stdin", format!("cannot read standard input: {e}"))
        })?;
    let password = password.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        return Err(Error::invalid(
            "password-stdin",
            "standard input held no password",
        ));
    }
    Ok(password)
}
