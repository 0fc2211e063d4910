//! Users, their roles and projects, and projects with their quotas, as
//! objects in the [`Store`] under `/zixiao/auth/`, read and written by
//! [`AuthStore`]. Every update is compare-and-swap on the revision it was
//! read at; creating is put-if-absent.
//!
//! The project `default` exists without being created (no quota until one
//! is set), so a deployment that never creates a project has one.
//!
//! Stored objects accept fields they do not know (no
//! `deny_unknown_fields`): during a rolling upgrade, an older replica must
//! read what a newer one wrote.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use zixiao_core::store::{decode, put_object, Precondition, Revision, StoredObject, Txn};
use zixiao_core::{Clock, ErrorKind, Store, StoreError};

use crate::error::AuthError;
use crate::names::{ProjectName, UserName};

pub use zixiao_core::api::Role;

/// A person or a program that calls the API, with one role over a set of
/// projects (an admin's projects do not matter: it has all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Unique name.
    pub name: UserName,
    /// What the user may do.
    pub role: Role,
    /// Where the user may do it.
    #[serde(default)]
    pub projects: BTreeSet<ProjectName>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// The store revision it was read at (0: not stored).
    #[serde(skip)]
    pub revision: Revision,
}

impl StoredObject for User {
    const PREFIX: &'static str = "/zixiao/auth/users/";
    const KIND: &'static str = "user";

    fn id(&self) -> &str {
        self.name.as_str()
    }

    fn set_revision(&mut self, revision: Revision) {
        self.revision = revision;
    }

    fn revision(&self) -> Revision {
        self.revision
    }
}

pub use zixiao_core::api::{Quota, QuotaExceeded};

/// A group of instances with a quota; users are members of projects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    /// Unique name.
    pub name: ProjectName,
    /// Limits on what its instances hold together.
    #[serde(default)]
    pub quota: Quota,
    /// When it was created (`None` for the implicit `default`).
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    /// The store revision it was read at (0: not stored; the implicit
    /// `default` project has 0 until a quota is set on it).
    #[serde(skip)]
    pub revision: Revision,
}

impl Project {
    /// The implicit `default` project: no quota.
    pub fn implicit_default() -> Self {
        Project {
            name: ProjectName::default_project(),
            quota: Quota::default(),
            created_at: None,
            revision: 0,
        }
    }
}

impl StoredObject for Project {
    const PREFIX: &'static str = "/zixiao/auth/projects/";
    const KIND: &'static str = "project";

    fn id(&self) -> &str {
        self.name.as_str()
    }

    fn set_revision(&mut self, revision: Revision) {
        self.revision = revision;
    }

    fn revision(&self) -> Revision {
        self.revision
    }
}

/// Users, projects and tokens in a [`Store`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuthStore {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
}

/// Whether a store error says that someone else changed, created or
/// deleted the object between the read and the write (re-read, judge again).
pub(crate) fn lost_race(error: &StoreError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::Conflict | ErrorKind::AlreadyExists | ErrorKind::NotFound
    )
}

impl AuthStore {
    /// Access-control objects in `store`, timed by `clock`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        AuthStore { store, clock }
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The clock it reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Creates user `name` with `role` in `projects`, each of which must
    /// exist. Not idempotent. Errors: `AlreadyExists`, `NotFound` (a
    /// project), `Conflict` (a project was deleted meanwhile), `Unavailable`.
    pub async fn create_user(
        &self,
        name: UserName,
        role: Role,
        projects: BTreeSet<ProjectName>,
    ) -> Result<User, AuthError> {
        let mut txn = Txn::new();
        for project in &projects {
            txn = self.touch_project(txn, project).await?;
        }
        let mut user = User {
            name,
            role,
            projects,
            created_at: self.clock.now(),
            revision: 0,
        };
        let revision = self
            .store
            .commit(put_object(txn, &user))
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::AlreadyExists => AuthError::AlreadyExists {
                    what: format!("user `{}`", user.name),
                },
                _ if lost_race(&e) => AuthError::Conflict {
                    what: "the user's projects".to_owned(),
                },
                _ => AuthError::Store(e),
            })?;
        user.revision = revision;
        Ok(user)
    }

    /// User `name`. Read-only. Errors: `NotFound`, `Unavailable`.
    pub async fn get_user(&self, name: &UserName) -> Result<User, AuthError> {
        self.find_user(name)
            .await?
            .ok_or_else(|| AuthError::NotFound {
                what: format!("user `{name}`"),
            })
    }

    /// User `name` and the revision that created its key (its
    /// incarnation: a user deleted and made again has a new one).
    pub(crate) async fn user_with_incarnation(
        &self,
        name: &UserName,
    ) -> Result<Option<(User, Revision)>, AuthError> {
        match self.store.get(&User::key_for(name.as_str())).await? {
            Some(kv) => Ok(Some((decode::<User>(&kv)?, kv.create_revision))),
            None => Ok(None),
        }
    }

    async fn find_user(&self, name: &UserName) -> Result<Option<User>, AuthError> {
        Ok(self
            .user_with_incarnation(name)
            .await?
            .map(|(user, _)| user))
    }

    /// Every user, in name order. Read-only.
    pub async fn list_users(&self) -> Result<Vec<User>, AuthError> {
        let listing = self.store.list(User::PREFIX).await?;
        listing
            .items
            .iter()
            .map(|kv| decode(kv).map_err(AuthError::from))
            .collect()
    }

    /// Stores `user`'s new role and projects, if it is unchanged since it
    /// was read. Errors: `NotFound`, `Conflict` (changed meanwhile: re-read),
    /// `Unavailable`.
    pub async fn update_user(&self, mut user: User) -> Result<User, AuthError> {
        if user.revision == 0 {
            return Err(AuthError::invalid(
                "user.revision",
                "update a user read from the store",
            ));
        }
        let mut txn = Txn::new();
        for project in &user.projects {
            txn = self.touch_project(txn, project).await?;
        }
        let revision = self
            .store
            .commit(put_object(txn, &user))
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => AuthError::NotFound {
                    what: format!("user `{}`", user.name),
                },
                _ if lost_race(&e) => AuthError::Conflict {
                    what: format!("user `{}`", user.name),
                },
                _ => AuthError::Store(e),
            })?;
        user.revision = revision;
        Ok(user)
    }

    /// Deletes user `name`. Its tokens stop working at once: a token
    /// records the incarnation of its owner, so a user made again with the
    /// same name does not revive them. Idempotent.
    pub async fn delete_user(&self, name: &UserName) -> Result<(), AuthError> {
        self.store
            .commit(Txn::new().delete(User::key_for(name.as_str()), Precondition::None))
            .await?;
        Ok(())
    }

    /// Creates project `name` with `quota`. Errors: `AlreadyExists` (also
    /// for `default`, which always exists: set its quota with
    /// [`AuthStore::update_project`]), `Unavailable`.
    pub async fn create_project(
        &self,
        name: ProjectName,
        quota: Quota,
    ) -> Result<Project, AuthError> {
        if name.is_default() {
            return Err(AuthError::AlreadyExists {
                what: "project `default`".to_owned(),
            });
        }
        let mut project = Project {
            name,
            quota,
            created_at: Some(self.clock.now()),
            revision: 0,
        };
        project.revision = self
            .store
            .commit(put_object(Txn::new(), &project))
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::AlreadyExists => AuthError::AlreadyExists {
                    what: format!("project `{}`", project.name),
                },
                _ => AuthError::Store(e),
            })?;
        Ok(project)
    }

    /// Project `name`; `default` always exists. Errors: `NotFound`.
    pub async fn get_project(&self, name: &ProjectName) -> Result<Project, AuthError> {
        match self.find_project(name).await? {
            Some(project) => Ok(project),
            None if name.is_default() => Ok(Project::implicit_default()),
            None => Err(AuthError::NotFound {
                what: format!("project `{name}`"),
            }),
        }
    }

    async fn find_project(&self, name: &ProjectName) -> Result<Option<Project>, AuthError> {
        match self.store.get(&Project::key_for(name.as_str())).await? {
            Some(kv) => Ok(Some(decode(&kv)?)),
            None => Ok(None),
        }
    }

    /// Every project in name order, `default` included.
    pub async fn list_projects(&self) -> Result<Vec<Project>, AuthError> {
        let listing = self.store.list(Project::PREFIX).await?;
        let mut projects = listing
            .items
            .iter()
            .map(|kv| decode(kv).map_err(AuthError::from))
            .collect::<Result<Vec<Project>, _>>()?;
        if !projects.iter().any(|p| p.name.is_default()) {
            projects.push(Project::implicit_default());
            projects.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Ok(projects)
    }

    /// Stores `project`'s new quota, if unchanged since it was read (the
    /// implicit `default`, revision 0, is stored for the first time).
    /// Errors: `NotFound`, `Conflict`, `Unavailable`.
    pub async fn update_project(&self, mut project: Project) -> Result<Project, AuthError> {
        if project.revision == 0 && !project.name.is_default() {
            return Err(AuthError::invalid(
                "project.revision",
                "update a project read from the store",
            ));
        }
        project.revision = self
            .store
            .commit(put_object(Txn::new(), &project))
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => AuthError::NotFound {
                    what: format!("project `{}`", project.name),
                },
                _ if lost_race(&e) => AuthError::Conflict {
                    what: format!("project `{}`", project.name),
                },
                _ => AuthError::Store(e),
            })?;
        Ok(project)
    }

    /// Deletes project `name`. Errors: `FailedPrecondition` (it is
    /// `default`, or users are members of it: the message names them),
    /// `NotFound`, `Conflict`. Whether instances are still in it is the
    /// controller's check, made in the same transaction once instances
    /// carry a project (the integration step).
    pub async fn delete_project(&self, name: &ProjectName) -> Result<(), AuthError> {
        if name.is_default() {
            return Err(AuthError::FailedPrecondition(
                "project `default` cannot be deleted".to_owned(),
            ));
        }
        let project = self
            .find_project(name)
            .await?
            .ok_or_else(|| AuthError::NotFound {
                what: format!("project `{name}`"),
            })?;
        let users = self.store.list(User::PREFIX).await?;
        let mut members = Vec::new();
        let mut txn = Txn::new();
        for kv in &users.items {
            let user: User = decode(kv)?;
            if user.projects.contains(name) {
                members.push(user.name.to_string());
            }
        }
        if !members.is_empty() {
            return Err(AuthError::FailedPrecondition(format!(
                "project `{name}` still has members: {}",
                members.join(", ")
            )));
        }
        // Adding a member rewrites the project (see `touch_project`), so a
        // member added since the listing makes this delete fail instead.
        txn = txn.delete(
            Project::key_for(name.as_str()),
            Precondition::Revision(project.revision),
        );
        self.store.commit(txn).await.map_err(|e| {
            if lost_race(&e) {
                AuthError::Conflict {
                    what: format!("project `{name}`"),
                }
            } else {
                AuthError::Store(e)
            }
        })?;
        Ok(())
    }

    /// Adds to `txn` a rewrite of `project` as it is now, so the
    /// transaction fails if the project went meanwhile, and a concurrent
    /// [`AuthStore::delete_project`] fails if this one commits first (the
    /// implicit `default` cannot be deleted and needs neither). Errors:
    /// `NotFound`.
    async fn touch_project(&self, txn: Txn, project: &ProjectName) -> Result<Txn, AuthError> {
        match self.store.get(&Project::key_for(project.as_str())).await? {
            Some(kv) => Ok(txn.put(kv.key, kv.value, Precondition::Revision(kv.mod_revision))),
            None if project.is_default() => Ok(txn),
            None => Err(AuthError::NotFound {
                what: format!("project `{project}`"),
            }),
        }
    }
}
