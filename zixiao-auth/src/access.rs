//! [`AccessApi`]: the wrapper over an [`Api`] that carries out the
//! requests of access control itself (users, tokens, projects, the audit
//! log) over an [`AuthStore`] and an [`AuditLog`], and passes every other
//! request to the `Api` it wraps. A server serves
//! `secure(AccessApi<WithLeader<Controller>>, caller, log)`: authorization
//! and audit see these requests as they see every other.
//!
//! It also owns one rule of projects that spans both sides: an instance
//! is created only in a project that exists, and a project is deleted
//! only while no instance is in it. A create checks here first and again
//! in its own transaction (the quota admission, [`ProjectQuota`](crate::ProjectQuota),
//! rewrites the project's record there), so a create and a delete of its
//! project racing each other cannot both commit once the delete has read
//! the record. One gap remains: the delete counts the instances from the
//! controller's cache, which may lag a create committed through another
//! server just before it read the record, by the watch's delay; in that
//! window both pass and the instance stays, listed, in a project that is
//! gone (an admin can still delete it).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use zixiao_core::api::{
    list_all_instances, Api, AuditQuery, IssuedToken, ProjectInfo, Quota, Request, Response,
    TokenInfo, TokenPurpose, TokenText, UserInfo,
};
use zixiao_core::{Error, InstanceFilter, Resources, Result};

use crate::accounts::{AuthStore, Project, User};
use crate::audit::AuditLog;
use crate::error::AuthError;
use crate::names::{ProjectName, TokenId, UserName};
use crate::quota::{no_such_project, project_of_create, usage_by_project};
use crate::token::{Token, TokenKind, TokenSecret};

/// An [`Api`] that answers users, tokens, projects and the audit log from
/// the store, and passes everything else to `inner`. Cheap to clone when
/// `A` is.
#[derive(Clone)]
pub struct AccessApi<A> {
    inner: A,
    accounts: AuthStore,
    log: Arc<AuditLog>,
}

impl<A> AccessApi<A> {
    /// Access control over `accounts` and `log`, in front of `inner`.
    pub fn new(inner: A, accounts: AuthStore, log: Arc<AuditLog>) -> Self {
        AccessApi {
            inner,
            accounts,
            log,
        }
    }

    /// The wrapped `Api`.
    pub fn inner(&self) -> &A {
        &self.inner
    }

    /// The wrapped `Api`, unwrapped.
    pub fn into_inner(self) -> A {
        self.inner
    }
}

impl<A: fmt::Debug> fmt::Debug for AccessApi<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessApi")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

fn user_name(field: &str, value: String) -> Result<UserName> {
    UserName::try_from(value).map_err(|e| AuthError::invalid_name(field, e).into())
}

fn project_name(field: &str, value: String) -> Result<ProjectName> {
    ProjectName::try_from(value).map_err(|e| AuthError::invalid_name(field, e).into())
}

fn project_names(field: &str, values: Vec<String>) -> Result<BTreeSet<ProjectName>> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, value)| project_name(&format!("{field}[{i}]"), value))
        .collect()
}

/// A user as the API shows it.
pub fn user_info(user: &User) -> UserInfo {
    UserInfo {
        name: user.name.to_string(),
        role: user.role,
        projects: user.projects.iter().map(ToString::to_string).collect(),
        created_at: user.created_at,
    }
}

/// A token as the API shows it (never its secret).
pub fn token_info(token: &Token) -> TokenInfo {
    let (purpose, role, projects) = match &token.kind {
        TokenKind::User { role, projects } => (
            TokenPurpose::User,
            Some(*role),
            projects
                .as_ref()
                .map(|p| p.iter().map(ToString::to_string).collect()),
        ),
        TokenKind::Join { .. } => (TokenPurpose::Join, None, None),
    };
    TokenInfo {
        id: token.id.to_string(),
        purpose,
        owner: token.owner.to_string(),
        role,
        projects,
        expires_at: token.expires_at,
        revoked: token.revoked,
        created_at: token.created_at,
    }
}

fn issued(token: &Token, secret: &TokenSecret) -> IssuedToken {
    IssuedToken {
        token: token_info(token),
        secret: TokenText::new(secret.expose()),
    }
}

fn project_info(project: Project, usage: Resources) -> ProjectInfo {
    ProjectInfo {
        name: project.name.to_string(),
        quota: project.quota,
        usage,
        created_at: project.created_at,
    }
}

impl<A: Api> AccessApi<A> {
    /// What the instances of each project hold together, read through
    /// the inner `Api` (see [`usage_by_project`]).
    async fn usage(&self) -> Result<BTreeMap<ProjectName, Resources>> {
        let instances = list_all_instances(&self.inner, InstanceFilter::default()).await?;
        Ok(usage_by_project(&instances))
    }

    async fn project_usage(&self, project: &ProjectName) -> Result<Resources> {
        Ok(self.usage().await?.remove(project).unwrap_or_default())
    }

    /// Refuses a create in a project that does not exist, before anything
    /// is placed (the quota admission checks again in the create's
    /// transaction).
    async fn check_project_exists(&self, labels: &BTreeMap<String, String>) -> Result<()> {
        let project = project_of_create(labels)?;
        match self.accounts.get_project(&project).await {
            Ok(_) => Ok(()),
            Err(AuthError::NotFound { .. }) => Err(no_such_project(&project)),
            Err(e) => Err(e.into()),
        }
    }

    /// Sets `name`'s quota. Every create in a project rewrites its record
    /// (the quota's serial), so a busy project's record may change between
    /// the read and the write: read it again and set the quota again.
    async fn set_quota(&self, name: &ProjectName, quota: Quota) -> Result<Project> {
        let mut attempts = 0;
        loop {
            let mut project = self.accounts.get_project(name).await?;
            project.quota = quota;
            match self.accounts.update_project(project).await {
                Err(AuthError::Conflict { .. }) if attempts < QUOTA_UPDATE_ATTEMPTS => {
                    attempts += 1;
                    tokio::task::yield_now().await;
                }
                other => return Ok(other?),
            }
        }
    }
}

/// How many times a quota update is tried against concurrent creates.
const QUOTA_UPDATE_ATTEMPTS: u32 = 16;

#[async_trait]
impl<A: Api> Api for AccessApi<A> {
    async fn call(&self, request: Request) -> Result<Response> {
        let accounts = &self.accounts;
        Ok(match request {
            Request::CreateUser {
                name,
                role,
                projects,
                token_ttl,
            } => {
                let name = user_name("name", name)?;
                let projects = project_names("projects", projects)?;
                let user = accounts.create_user(name, role, projects).await?;
                let (token, secret) = accounts
                    .issue_user_token(&user.name, role, None, token_ttl)
                    .await?;
                Response::NewUser(user_info(&user), issued(&token, &secret))
            }
            Request::ListUsers => {
                Response::Users(accounts.list_users().await?.iter().map(user_info).collect())
            }
            Request::DeleteUser { name } => {
                accounts.delete_user(&user_name("name", name)?).await?;
                Response::Done
            }
            Request::CreateToken { owner, terms } => {
                let owner = owner.ok_or_else(|| {
                    Error::invalid(
                        "owner",
                        "name the token's owner: the caller is not a stored user",
                    )
                })?;
                let owner = user_name("owner", owner)?;
                if terms.purpose == TokenPurpose::Join {
                    if terms.role.is_some() || terms.projects.is_some() {
                        return Err(Error::invalid(
                            "role",
                            "a join token grants no role and no projects: it only lets an \
                             agent get its node certificate",
                        ));
                    }
                    let (token, secret) = accounts
                        .issue_join_token(&owner, terms.reusable, terms.ttl)
                        .await?;
                    return Ok(Response::Token(issued(&token, &secret)));
                }
                if terms.reusable {
                    return Err(Error::invalid(
                        "reusable",
                        "only a join token is single-use; a user's token is reusable already",
                    ));
                }
                let role = match terms.role {
                    Some(role) => role,
                    None => accounts.get_user(&owner).await?.role,
                };
                let projects = terms
                    .projects
                    .map(|p| project_names("projects", p))
                    .transpose()?;
                let (token, secret) = accounts
                    .issue_user_token(&owner, role, projects, terms.ttl)
                    .await?;
                Response::Token(issued(&token, &secret))
            }
            Request::ListTokens { owner } => {
                let owner = owner.map(|o| user_name("owner", o)).transpose()?;
                let tokens = accounts.list_tokens().await?;
                Response::Tokens(
                    tokens
                        .iter()
                        .filter(|t| owner.as_ref().is_none_or(|o| &t.owner == o))
                        .map(token_info)
                        .collect(),
                )
            }
            Request::RevokeToken { id } => {
                let id = TokenId::try_from(id).map_err(|e| AuthError::invalid_name("id", e))?;
                Response::TokenInfo(token_info(&accounts.revoke_token(&id).await?))
            }
            Request::CreateProject { name, quota } => {
                let name = project_name("name", name)?;
                let project = accounts.create_project(name, quota).await?;
                Response::Project(project_info(project, Resources::default()))
            }
            Request::ListProjects => {
                let mut usage = self.usage().await?;
                let projects = accounts.list_projects().await?;
                Response::Projects(
                    projects
                        .into_iter()
                        .map(|p| {
                            let used = usage.remove(&p.name).unwrap_or_default();
                            project_info(p, used)
                        })
                        .collect(),
                )
            }
            Request::GetProject { name } => {
                let name = project_name("name", name)?;
                let project = accounts.get_project(&name).await?;
                Response::Project(project_info(project, self.project_usage(&name).await?))
            }
            Request::UpdateProject { name, quota } => {
                let name = project_name("name", name)?;
                let project = self.set_quota(&name, quota).await?;
                Response::Project(project_info(project, self.project_usage(&name).await?))
            }
            Request::DeleteProject { name } => {
                let name = project_name("name", name)?;
                let used = self.project_usage(&name).await?;
                if used.instances > 0 {
                    return Err(Error::FailedPrecondition(format!(
                        "project `{name}` still has {} instance(s): delete them first",
                        used.instances
                    )));
                }
                accounts.delete_project(&name).await?;
                Response::Done
            }
            Request::ListAudit { query } => {
                let AuditQuery {
                    since,
                    user,
                    project,
                } = query;
                let user = user.map(|u| user_name("user", u)).transpose()?;
                let project = project.map(|p| project_name("project", p)).transpose()?;
                let records = self
                    .log
                    .list(since, user.as_ref(), project.as_ref())
                    .await?;
                Response::AuditRecords(records)
            }
            Request::CreateInstance { request, wait } => {
                self.check_project_exists(&request.labels).await?;
                return self
                    .inner
                    .call(Request::CreateInstance { request, wait })
                    .await;
            }
            other => return self.inner.call(other).await,
        })
    }
}
