//! `zixiao context ...`: the contexts of the client configuration file
//! (like kubectl's), read and written here; no server is called.

use std::path::Path;
use std::process::ExitCode;

use zixiao_auth::{AuthError, ClientConfigFile, Context};
use zixiao_core::{Error, Result};

use crate::args::{ContextCommand, Format};
use crate::output::{print, Table};

pub(crate) fn run(
    file: Option<&Path>,
    endpoint: Option<&str>,
    format: Format,
    command: ContextCommand,
) -> Result<ExitCode> {
    let path = ClientConfigFile::default_path(file).map_err(AuthError::from)?;
    let mut config = ClientConfigFile::load(&path).map_err(AuthError::from)?;
    match command {
        ContextCommand::List => {
            let contexts: Vec<serde_json::Value> = config
                .contexts
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "name": c.name,
                        "endpoint": c.endpoint,
                        "current": config.current_context.as_deref() == Some(c.name.as_str()),
                    })
                })
                .collect();
            print(format, &contexts, |_| {
                let mut table = Table::new(vec!["CURRENT", "NAME", "ENDPOINT"]);
                for c in &config.contexts {
                    let current = config.current_context.as_deref() == Some(c.name.as_str());
                    table.row(vec![
                        if current { "*" } else { "" }.to_owned(),
                        c.name.clone(),
                        c.endpoint.clone(),
                    ]);
                }
                table.render()
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        ContextCommand::Use { name } => {
            config.use_context(&name).map_err(AuthError::from)?;
        }
        ContextCommand::Add {
            name,
            ca_cert,
            token_file,
            client_cert,
            client_key,
        } => {
            let endpoint = endpoint.ok_or_else(|| {
                Error::invalid(
                    "--endpoint",
                    "a context needs its server: --endpoint https://host:port",
                )
            })?;
            let absolute =
                |p: Option<std::path::PathBuf>| p.map(|p| super::absolute(&p)).transpose();
            config
                .add_context(Context {
                    name,
                    endpoint: endpoint.to_owned(),
                    ca_file: absolute(ca_cert)?,
                    token_file: absolute(token_file)?,
                    client_cert_file: absolute(client_cert)?,
                    client_key_file: absolute(client_key)?,
                    ..Context::default()
                })
                .map_err(AuthError::from)?;
        }
    }
    config.save(&path).map_err(AuthError::from)?;
    let current = config.current_context.clone();
    print(
        format,
        &serde_json::json!({ "config": path, "current_context": current }),
        |_| {
            format!(
                "{} (current context: {})\n",
                path.display(),
                current.as_deref().unwrap_or("none")
            )
        },
    )?;
    Ok(ExitCode::SUCCESS)
}
