//! `zixiao user|token|project|audit ...`: access control, each command
//! one call of the [`Client`], carried out by the server's access layer
//! (or the embedded deployment's, for its local administrator).

use std::path::PathBuf;
use std::process::ExitCode;

use zixiao_client::ConnectOptions;
use zixiao_core::api::{
    AuditQuery, AuditRecord, IssuedToken, Outcome, ProjectInfo, Quota, Role, TokenInfo, TokenTerms,
    UserInfo,
};
use zixiao_core::{Client, Error, Result};

use crate::args::{AuditCommand, Format, ProjectCommand, TokenCommand, UserCommand};
use crate::commands::duration;
use crate::output::{age, details, print, Table};

pub(crate) async fn user(
    client: Client,
    format: Format,
    command: UserCommand,
    connection: Option<&ConnectOptions>,
) -> Result<ExitCode> {
    match command {
        UserCommand::Create {
            name,
            role,
            projects,
            ttl,
            out,
        } => {
            let role: Role = role.parse()?;
            let ttl = ttl.map(|t| duration("--ttl", &t)).transpose()?;
            let out = out
                .map(|path| config_target(path, connection))
                .transpose()?;
            let (user, token) = client.create_user(&name, role, projects, ttl).await?;
            match out {
                Some((path, connection)) => {
                    write_config(&path, &user.name, &connection, &token)?;
                    let shown = serde_json::json!({ "user": user, "config": path });
                    print(format, &shown, |_| {
                        format!(
                            "user {} ({}) created; its client configuration is {}\n",
                            user.name,
                            user.role,
                            path.display()
                        )
                    })?;
                }
                None => {
                    let shown = serde_json::json!({ "user": user, "token": token });
                    print(format, &shown, |_| {
                        format!(
                            "user {} ({}) created\ntoken {} (shown once): {}\n",
                            user.name,
                            user.role,
                            token.token.id,
                            token.secret.expose()
                        )
                    })?;
                }
            }
        }
        UserCommand::List => {
            let users = client.list_users().await?;
            print(format, &users, |u| user_table(u))?;
        }
        UserCommand::Delete { name } => {
            client.delete_user(&name).await?;
            print(format, &serde_json::json!({ "deleted": name }), |_| {
                format!("user {name} deleted\n")
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where `--out` writes, checked before the user is made: a new file, and
/// a connection to name in it.
fn config_target(
    path: PathBuf,
    connection: Option<&ConnectOptions>,
) -> Result<(PathBuf, ConnectOptions)> {
    if path.exists() {
        return Err(Error::invalid(
            "--out",
            format!("`{}` exists; choose a new file", path.display()),
        ));
    }
    let connection = connection.cloned().ok_or_else(|| {
        Error::invalid(
            "--out",
            "the configuration names this connection's server: connect with --endpoint or a \
             context",
        )
    })?;
    Ok((path, connection))
}

fn write_config(
    path: &std::path::Path,
    name: &str,
    connection: &ConnectOptions,
    token: &IssuedToken,
) -> Result<()> {
    let (endpoint, _) = connection.resolved_endpoint()?;
    let mut config = zixiao_auth::ClientConfigFile::default();
    config
        .add_context(zixiao_auth::Context {
            name: name.to_owned(),
            endpoint,
            ca_pem: connection.ca_pem.clone(),
            token: Some(token.secret.expose().to_owned()),
            ..zixiao_auth::Context::default()
        })
        .map_err(zixiao_auth::AuthError::from)?;
    config.save(path).map_err(zixiao_auth::AuthError::from)?;
    Ok(())
}

fn user_table(users: &[UserInfo]) -> String {
    let mut table = Table::new(vec!["NAME", "ROLE", "PROJECTS", "AGE"]);
    for u in users {
        let projects: Vec<&str> = u.projects.iter().map(String::as_str).collect();
        table.row(vec![
            u.name.clone(),
            u.role.to_string(),
            projects.join(","),
            age(u.created_at),
        ]);
    }
    table.render()
}

pub(crate) async fn token(
    client: Client,
    format: Format,
    command: TokenCommand,
) -> Result<ExitCode> {
    match command {
        TokenCommand::Create {
            user,
            role,
            projects,
            ttl,
            reusable,
        } => {
            let join = role.as_deref() == Some("agent");
            if reusable && !join {
                return Err(Error::invalid(
                    "--reusable",
                    "only a join token (--role agent) is single-use by default",
                ));
            }
            let terms = TokenTerms {
                role: match role {
                    Some(role) if !join => Some(role.parse::<Role>()?),
                    _ => None,
                },
                projects: (!projects.is_empty()).then_some(projects),
                ttl: ttl.map(|t| duration("--ttl", &t)).transpose()?,
                purpose: if join {
                    zixiao_core::api::TokenPurpose::Join
                } else {
                    zixiao_core::api::TokenPurpose::User
                },
                reusable,
            };
            let issued = client.create_token(user.as_deref(), terms).await?;
            print(format, &issued, |t| {
                format!(
                    "token {} of {} (shown once): {}\n",
                    t.token.id,
                    t.token.owner,
                    t.secret.expose()
                )
            })?;
        }
        TokenCommand::List { user } => {
            let tokens = client.list_tokens(user.as_deref()).await?;
            print(format, &tokens, |t| token_table(t))?;
        }
        TokenCommand::Revoke { id } => {
            let token = client.revoke_token(&id).await?;
            print(format, &token, |t| format!("token {} revoked\n", t.id))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn token_table(tokens: &[TokenInfo]) -> String {
    let mut table = Table::new(vec![
        "ID", "OWNER", "PURPOSE", "ROLE", "PROJECTS", "EXPIRES", "STATE", "AGE",
    ]);
    for t in tokens {
        let projects = match &t.projects {
            Some(p) => p.iter().map(String::as_str).collect::<Vec<_>>().join(","),
            None => "(owner's)".to_owned(),
        };
        let purpose = match t.purpose {
            zixiao_core::api::TokenPurpose::User => "user",
            zixiao_core::api::TokenPurpose::Join => "join",
        };
        table.row(vec![
            t.id.clone(),
            t.owner.clone(),
            purpose.to_owned(),
            t.role.map(|r| r.to_string()).unwrap_or_default(),
            projects,
            t.expires_at
                .map(|at| at.to_rfc3339())
                .unwrap_or_else(|| "never".to_owned()),
            if t.revoked { "revoked" } else { "active" }.to_owned(),
            age(t.created_at),
        ]);
    }
    table.render()
}

pub(crate) async fn project(
    client: Client,
    format: Format,
    command: ProjectCommand,
) -> Result<ExitCode> {
    match command {
        ProjectCommand::Create { name, quota } => {
            let quota = quota.map(|q| quota_of(&q)).transpose()?.unwrap_or_default();
            let project = client.create_project(&name, quota).await?;
            print(format, &project, project_details)?;
        }
        ProjectCommand::List => {
            let projects = client.list_projects().await?;
            print(format, &projects, |p| project_table(p))?;
        }
        ProjectCommand::Get { name } => {
            let project = client.get_project(&name).await?;
            print(format, &project, project_details)?;
        }
        ProjectCommand::Update { name, quota } => {
            let project = client.update_project(&name, quota_of(&quota)?).await?;
            print(format, &project, project_details)?;
        }
        ProjectCommand::Delete { name } => {
            client.delete_project(&name).await?;
            print(format, &serde_json::json!({ "deleted": name }), |_| {
                format!("project {name} deleted\n")
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--quota`, its errors naming the flag.
fn quota_of(text: &str) -> Result<Quota> {
    text.parse::<Quota>().map_err(|e| match e {
        Error::InvalidArgument { field, reason } => {
            Error::invalid(field.replacen("quota", "--quota", 1), reason)
        }
        other => other,
    })
}

fn limit<T: ToString>(used: T, limit: Option<T>) -> String {
    match limit {
        Some(limit) => format!("{}/{}", used.to_string(), limit.to_string()),
        None => used.to_string(),
    }
}

fn project_details(p: &ProjectInfo) -> String {
    details(&[
        ("name", p.name.clone()),
        ("cpus", limit(p.usage.cpus, p.quota.cpus)),
        ("memory mib", limit(p.usage.memory_mib, p.quota.memory_mib)),
        (
            "instances",
            limit(
                u64::from(p.usage.instances),
                p.quota.instances.map(u64::from),
            ),
        ),
        ("disk gib", limit(p.usage.disk_gib, p.quota.disk_gib)),
        (
            "created",
            p.created_at
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| "(implicit)".to_owned()),
        ),
    ])
}

fn project_table(projects: &[ProjectInfo]) -> String {
    let mut table = Table::new(vec!["NAME", "CPUS", "MEMORY MIB", "INSTANCES", "DISK GIB"]);
    for p in projects {
        table.row(vec![
            p.name.clone(),
            limit(p.usage.cpus, p.quota.cpus),
            limit(p.usage.memory_mib, p.quota.memory_mib),
            limit(
                u64::from(p.usage.instances),
                p.quota.instances.map(u64::from),
            ),
            limit(p.usage.disk_gib, p.quota.disk_gib),
        ]);
    }
    table.render()
}

pub(crate) async fn audit(
    client: Client,
    format: Format,
    command: AuditCommand,
) -> Result<ExitCode> {
    let AuditCommand::List {
        since,
        user,
        project,
    } = command;
    let since = since
        .map(|s| {
            let ago = chrono::Duration::from_std(duration("--since", &s)?)
                .map_err(|_| Error::invalid("--since", "too long"))?;
            Ok::<_, Error>(chrono::Utc::now() - ago)
        })
        .transpose()?;
    let query = AuditQuery {
        since,
        user,
        project,
    };
    let records = client.list_audit(query).await?;
    print(format, &records, |r| audit_table(r))?;
    Ok(ExitCode::SUCCESS)
}

fn audit_table(records: &[AuditRecord]) -> String {
    let mut table = Table::new(vec![
        "TIME",
        "IDENTITY",
        "OPERATION",
        "TARGET",
        "PROJECT",
        "OUTCOME",
    ]);
    for r in records {
        let outcome = match &r.outcome {
            Outcome::Started => "started (end not recorded)".to_owned(),
            Outcome::Done => "done".to_owned(),
            Outcome::Failed { kind } => format!("failed: {}", kind.as_str()),
            Outcome::Denied { permission, .. } => format!("denied: {permission}"),
            Outcome::Unauthenticated { reason } => format!("unauthenticated: {reason}"),
        };
        table.row(vec![
            r.time.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            r.identity.clone(),
            r.operation.clone(),
            r.target.clone().unwrap_or_default(),
            r.project.clone().unwrap_or_default(),
            outcome,
        ]);
    }
    table.render()
}
