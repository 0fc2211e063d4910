//! Who may do what: [`authorize`], a pure function from an [`Identity`]
//! and a [`Request`] (with the project of the object it names) to a
//! [`Grant`] or a [`Denial`] naming the missing permission.
//!
//! The rules, by the family of [`Request::operation`] (its prefix):
//!
//! | family | viewer | operator | admin |
//! |---|---|---|---|
//! | `instance.*`, `snapshot.*` | reads, in its projects | everything, in its projects | everything |
//! | `network.*`, `image.*`, `operation.*` | reads | reads; changes as a member of `default` | everything |
//! | `node.*` (labels and traits too), `aggregate.*`, `cluster.*` | no | reads | everything |
//! | anything else (users, tokens, projects, audit, new families) | no | no | everything |
//!
//! Reads and writes are told apart by [`Request::is_mutating`], and an
//! object by [`Request::target`], so a new request is covered the day it
//! is added: a new `instance.*` read is a read in the instance's project, a
//! new family is admin only. Where the project cannot be told (a new
//! request naming an instance in a way this module does not know, an
//! instance whose project label is invalid), only an admin may act: the
//! rules fail closed.
//!
//! Three refinements: requests that read or write files on the server's
//! host (`snapshot.export`, `instance.restore`, `image.import`) are admin
//! only; lists and watches of instances are allowed to every user and
//! filtered to its projects ([`Grant::scope`]); nodes and servers are not
//! users and call no user operation but one, a node draining itself as its
//! agent leaves the cluster (the membership service checks nodes with
//! [`authorize_node_call`], agents check servers with
//! [`authorize_agent_call`]).
//!
//! Networks and images carry no project yet: they count as in project
//! `default`. Instances carry their project in the label
//! [`PROJECT_LABEL`] until the model has a field for it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use zixiao_core::api::Request;
use zixiao_core::model::{Operation, OperationId, TargetKind};
use zixiao_core::Instance;

use crate::accounts::Role;
use crate::identity::Identity;
use crate::names::{InvalidName, NodeName, ProjectName};

/// The label that holds an instance's project (absent: `default`), until
/// instances have a project field.
pub const PROJECT_LABEL: &str = "zixiao.io/project";

/// The project labels name: [`PROJECT_LABEL`]'s value, `default` without
/// it. Errors: the value is not a project name.
///
/// ```
/// use std::collections::BTreeMap;
/// use zixiao_auth::{project_of_labels, PROJECT_LABEL};
///
/// assert_eq!(project_of_labels(&BTreeMap::new()).unwrap().as_str(), "default");
/// let labels = BTreeMap::from([(PROJECT_LABEL.to_owned(), "web".to_owned())]);
/// assert_eq!(project_of_labels(&labels).unwrap().as_str(), "web");
/// ```
pub fn project_of_labels(labels: &BTreeMap<String, String>) -> Result<ProjectName, InvalidName> {
    match labels.get(PROJECT_LABEL) {
        Some(name) => ProjectName::try_from(name.as_str()),
        None => Ok(ProjectName::default_project()),
    }
}

/// The project of an instance (see [`project_of_labels`]). The one place
/// that knows where an instance keeps its project: when instances get a
/// project field, only this changes.
pub fn project_of(instance: &Instance) -> Result<ProjectName, InvalidName> {
    project_of_labels(&instance.labels)
}

/// Whether `instance` is in `project`, as [`project_of`] tells, without
/// building a name: what a quota's count asks of every instance.
///
/// ```
/// use zixiao_auth::{in_project, ProjectName, PROJECT_LABEL};
/// use zixiao_core::{CreateInstance, Instance, InstanceSpec};
///
/// let mut request = CreateInstance::new("web", InstanceSpec::container("busybox"));
/// let plain = Instance::new("id-1", request.clone(), chrono::Utc::now());
/// assert!(in_project(&plain, &ProjectName::default_project()));
/// request.labels.insert(PROJECT_LABEL.to_owned(), "web".to_owned());
/// let web = Instance::new("id-2", request, chrono::Utc::now());
/// assert!(in_project(&web, &ProjectName::try_from("web").unwrap()));
/// assert!(!in_project(&web, &ProjectName::default_project()));
/// ```
pub fn in_project(instance: &Instance, project: &ProjectName) -> bool {
    match instance.labels.get(PROJECT_LABEL) {
        Some(label) => label == project.as_str(),
        None => project.is_default(),
    }
}

/// Where a request's project comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectRef<'a> {
    /// The request says (a create's label; networks and images: `default`).
    Known(ProjectName),
    /// The project of the instance of this id or name: look it up.
    Instance(&'a str),
    /// It is about no one project (nodes, the cluster, lists).
    None,
}

/// Where `request`'s project comes from. Errors: a create whose project
/// label is not a project name.
pub fn project_ref(request: &Request) -> Result<ProjectRef<'_>, InvalidName> {
    if let Request::CreateInstance { request, .. } = request {
        return project_of_labels(&request.labels).map(ProjectRef::Known);
    }
    if let Some(instance) = instance_ref(request) {
        return Ok(ProjectRef::Instance(instance));
    }
    Ok(match family(request.operation()) {
        Family::ProjectLess => ProjectRef::Known(ProjectName::default_project()),
        _ => ProjectRef::None,
    })
}

/// The instance id or name a request acts on, when this module knows
/// where the request keeps it (a new request it does not know gives
/// `None`, and then only an admin may make it).
pub fn instance_ref(request: &Request) -> Option<&str> {
    match request {
        Request::GetInstance { instance }
        | Request::StartInstance { instance, .. }
        | Request::StopInstance { instance, .. }
        | Request::RestartInstance { instance, .. }
        | Request::UpdateInstance { instance, .. }
        | Request::MigrateInstance { instance, .. }
        | Request::DeleteInstance { instance, .. }
        | Request::PauseInstance { instance }
        | Request::ResumeInstance { instance }
        | Request::InstanceStats { instance }
        | Request::InstanceStatsHistory { instance }
        | Request::ReadLog { instance, .. }
        | Request::FollowLog { instance, .. }
        | Request::AttachConsole { instance }
        | Request::CreateSnapshot { instance, .. }
        | Request::ListSnapshots { instance }
        | Request::RevertSnapshot { instance, .. }
        | Request::DeleteSnapshot { instance, .. }
        | Request::ExportSnapshot { instance, .. } => Some(instance),
        Request::CloneInstance { source, .. } => Some(source),
        _ => None,
    }
}

/// [`instance_ref`], to rewrite: once authorized against an instance found
/// by name, a call names it by its id, so a rename or a re-creation in
/// between cannot redirect it to another project's instance.
pub(crate) fn instance_ref_mut(request: &mut Request) -> Option<&mut String> {
    match request {
        Request::GetInstance { instance }
        | Request::StartInstance { instance, .. }
        | Request::StopInstance { instance, .. }
        | Request::RestartInstance { instance, .. }
        | Request::UpdateInstance { instance, .. }
        | Request::MigrateInstance { instance, .. }
        | Request::DeleteInstance { instance, .. }
        | Request::PauseInstance { instance }
        | Request::ResumeInstance { instance }
        | Request::InstanceStats { instance }
        | Request::InstanceStatsHistory { instance }
        | Request::ReadLog { instance, .. }
        | Request::FollowLog { instance, .. }
        | Request::AttachConsole { instance }
        | Request::CreateSnapshot { instance, .. }
        | Request::ListSnapshots { instance }
        | Request::RevertSnapshot { instance, .. }
        | Request::DeleteSnapshot { instance, .. }
        | Request::ExportSnapshot { instance, .. } => Some(instance),
        Request::CloneInstance { source, .. } => Some(source),
        _ => None,
    }
}

/// The families of operations, by prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// `instance.*`, `snapshot.*`: in the instance's project.
    Instance,
    /// `network.*`, `image.*`, `template.*`: no project of their own yet
    /// (`default`).
    ProjectLess,
    /// `node.*`, and `aggregate.*`: host aggregates group nodes, and are
    /// read and changed as nodes are (a change steers placements of every
    /// project).
    Node,
    /// `cluster.*`.
    Cluster,
    /// Everything else: users, tokens, projects, audit, families to come.
    AdminOnly,
}

fn family(operation: &str) -> Family {
    match operation
        .split_once('.')
        .map_or(operation, |(family, _)| family)
    {
        "instance" | "snapshot" => Family::Instance,
        // An operation on an instance or a node is judged as a call on
        // its target (`judged_as`, by `Authorized`); one on an image is
        // read as images are, cancelled by an operator of `default`.
        "network" | "image" | "template" | "operation" => Family::ProjectLess,
        "node" | "aggregate" => Family::Node,
        "cluster" => Family::Cluster,
        _ => Family::AdminOnly,
    }
}

/// The instance reads without a target that every user may make, their
/// answers filtered to the user's projects. Any other untargeted instance
/// operation is admin only: its answer could not be filtered.
const FILTERED_READS: &[&str] = &["instance.list", "instance.watch"];

/// Whether the request reads or writes files on the server's host (a
/// path from the caller): only an admin may, who holds the host anyway.
fn touches_host_paths(request: &Request) -> bool {
    matches!(
        request,
        Request::ExportSnapshot { .. }
            | Request::CreateSnapshot { to: Some(_), .. }
            | Request::RestoreInstance { .. }
            | Request::ImportImages { .. }
            | Request::BackupState { .. }
    )
}

/// Which instances an allowed call may show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Whatever it answers.
    All,
    /// Only instances of these projects: a list or a watch is filtered.
    Projects(BTreeSet<ProjectName>),
    /// Only the operations the caller may read the targets of: those on
    /// instances of these projects, on images, and with `nodes` (an
    /// operator) on nodes. An operation list is filtered.
    Operations {
        /// The caller's projects.
        projects: BTreeSet<ProjectName>,
        /// Whether node operations (drains) are shown.
        nodes: bool,
    },
}

/// The operation id a request reads or cancels, if it is one of those.
pub fn operation_ref(request: &Request) -> Option<&OperationId> {
    match request {
        Request::GetOperation { id }
        | Request::WatchOperation { id }
        | Request::CancelOperation { id } => Some(id),
        _ => None,
    }
}

/// The request an operation call is judged as: an operation is read as
/// its target is read, and cancelled as its target is changed (cancelling
/// stops or deletes an instance, ends a drain). `None` for an image's
/// operation, judged as an `operation.*` call without a project of its own
/// (`default`), as images are.
pub fn judged_as(operation: &Operation, mutating: bool) -> Option<Request> {
    let id = operation.target.id.clone();
    match (operation.target.kind, mutating) {
        (TargetKind::Instance, false) => Some(Request::GetInstance { instance: id }),
        (TargetKind::Instance, true) => Some(Request::PauseInstance { instance: id }),
        (TargetKind::Node, false) => Some(Request::GetNode { node: id }),
        (TargetKind::Node, true) => Some(Request::CordonNode { node: id }),
        (TargetKind::Image, _) => None,
    }
}

/// The project of an instance's operation, from the labels it recorded;
/// `None` when it recorded none (a record from before they were kept) or
/// they name no valid project: then only an admin may reach it.
pub fn operation_project(operation: &Operation) -> Option<ProjectName> {
    project_of_labels(operation.target.labels.as_ref()?).ok()
}

/// Whether a caller with `scope` may see `operation` in a list.
pub fn operation_visible(operation: &Operation, scope: &Scope) -> bool {
    match scope {
        Scope::All => true,
        Scope::Projects(projects) | Scope::Operations { projects, .. }
            if operation.target.kind == TargetKind::Instance =>
        {
            operation_project(operation).is_some_and(|p| projects.contains(&p))
        }
        Scope::Operations { nodes, .. } if operation.target.kind == TargetKind::Node => *nodes,
        Scope::Projects(_) => false,
        Scope::Operations { .. } => true,
    }
}

/// Why a call is allowed, and what it may show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The rule that allowed it (`admin`, `operator in project web`).
    pub rule: String,
    /// What its answer may show.
    pub scope: Scope,
}

impl Grant {
    fn all(rule: impl Into<String>) -> Self {
        Grant {
            rule: rule.into(),
            scope: Scope::All,
        }
    }
}

/// What a refused call would have needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// The right role in that project.
    InProject(ProjectName),
    /// An admin.
    AdminOnly,
    /// An operator or an admin.
    OperatorOrAdmin,
    /// A user (nodes and servers call no user operation).
    User,
    /// That node's own certificate.
    Node(NodeName),
    /// A server's certificate.
    Server,
}

/// A refused call: the permission it lacked and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", self.permission())]
pub struct Denial {
    /// The operation (`instance.create`).
    pub operation: String,
    /// What it would have needed.
    pub requirement: Requirement,
    /// Why the caller does not have it (`alice is a viewer`).
    pub reason: String,
}

impl Denial {
    fn new(operation: &str, requirement: Requirement, reason: impl Into<String>) -> Self {
        Denial {
            operation: operation.to_owned(),
            requirement,
            reason: reason.into(),
        }
    }

    /// The missing permission: `instance.create in project web`,
    /// `node.drain (admin only)`.
    pub fn permission(&self) -> String {
        let op = &self.operation;
        match &self.requirement {
            Requirement::InProject(project) => format!("{op} in project {project}"),
            Requirement::AdminOnly => format!("{op} (admin only)"),
            Requirement::OperatorOrAdmin => format!("{op} (operator or admin)"),
            Requirement::User => format!("{op} (users only)"),
            Requirement::Node(node) => format!("{op} as node {node}"),
            Requirement::Server => format!("{op} (servers only)"),
        }
    }
}

/// Whether `identity` may make `request`, whose object is in `project`
/// (as [`project_ref`] says, looked up when it names an instance; `None`
/// when it names none or could not be told). Pure: no I/O, no clock.
///
/// ```
/// use std::collections::BTreeSet;
/// use zixiao_auth::{authorize, Credential, Identity, ProjectName, Role, UserName};
/// use zixiao_core::api::Request;
///
/// let web = ProjectName::try_from("web").unwrap();
/// let bob = Identity::User {
///     name: UserName::try_from("bob").unwrap(),
///     role: Role::Operator,
///     projects: BTreeSet::from([web.clone()]),
///     via: Credential::Certificate,
/// };
/// let stop = Request::StopInstance { instance: "api".into(), wait: Default::default() };
/// assert!(authorize(&bob, &stop, Some(&web)).is_ok());
/// let db = ProjectName::try_from("db").unwrap();
/// let denial = authorize(&bob, &stop, Some(&db)).unwrap_err();
/// assert_eq!(denial.permission(), "instance.stop in project db");
/// let drain = Request::DrainNode { node: "worker-1".into() };
/// assert_eq!(authorize(&bob, &drain, None).unwrap_err().permission(), "node.drain (admin only)");
/// ```
pub fn authorize(
    identity: &Identity,
    request: &Request,
    project: Option<&ProjectName>,
) -> Result<Grant, Denial> {
    let op = request.operation();
    let (name, role, projects) = match identity {
        Identity::User {
            name,
            role,
            projects,
            ..
        } => (name, *role, projects),
        // An agent leaving the cluster drains its own node first.
        Identity::Node(node) if matches!(request, Request::DrainNode { node: drained } if drained == node.as_str()) =>
        {
            return Ok(Grant::all(format!(
                "node {node} drains itself as it leaves"
            )));
        }
        Identity::Node(node) => {
            return Err(Denial::new(
                op,
                Requirement::User,
                format!("node {node} may call only the membership service"),
            ))
        }
        Identity::Server => {
            return Err(Denial::new(
                op,
                Requirement::User,
                "a server calls only agents",
            ))
        }
    };
    if role == Role::Admin {
        return Ok(Grant::all("admin"));
    }
    if touches_host_paths(request) {
        return Err(Denial::new(
            op,
            Requirement::AdminOnly,
            format!(
                "it reaches files on the server's host, and {name} is {}",
                a(role)
            ),
        ));
    }
    let mutating = request.is_mutating();
    if op == "operation.list" {
        return Ok(Grant {
            rule: format!("{role}, filtered to what it may read"),
            scope: Scope::Operations {
                projects: projects.clone(),
                nodes: role == Role::Operator,
            },
        });
    }
    let in_project = |project: &ProjectName| -> Result<Grant, Denial> {
        if !projects.contains(project) {
            return Err(Denial::new(
                op,
                Requirement::InProject(project.clone()),
                format!("{name} is not a member of project {project}"),
            ));
        }
        if mutating && role == Role::Viewer {
            return Err(Denial::new(
                op,
                Requirement::InProject(project.clone()),
                format!("{name} is a viewer there, and viewers only read"),
            ));
        }
        Ok(Grant::all(format!("{role} in project {project}")))
    };
    match family(op) {
        Family::Instance => {
            if request.target().is_none() {
                if !mutating && FILTERED_READS.contains(&op) {
                    return Ok(Grant {
                        rule: format!("{role}, filtered to its projects"),
                        scope: Scope::Projects(projects.clone()),
                    });
                }
                return Err(Denial::new(
                    op,
                    Requirement::AdminOnly,
                    "it spans every project",
                ));
            }
            match project {
                Some(project) => in_project(project),
                None => Err(Denial::new(
                    op,
                    Requirement::AdminOnly,
                    "the instance's project cannot be told",
                )),
            }
        }
        Family::ProjectLess if !mutating => Ok(Grant::all("every user reads networks and images")),
        Family::ProjectLess => in_project(&ProjectName::default_project()),
        Family::Node | Family::Cluster if mutating => Err(Denial::new(
            op,
            Requirement::AdminOnly,
            format!("{name} is {}", a(role)),
        )),
        Family::Node | Family::Cluster if role == Role::Operator => {
            Ok(Grant::all("operators read nodes and the cluster"))
        }
        Family::Node | Family::Cluster => Err(Denial::new(
            op,
            Requirement::OperatorOrAdmin,
            format!("{name} is {}", a(role)),
        )),
        Family::AdminOnly => Err(Denial::new(
            op,
            Requirement::AdminOnly,
            format!("{name} is {}", a(role)),
        )),
    }
}

fn a(role: Role) -> String {
    match role {
        Role::Admin | Role::Operator => format!("an {role}"),
        Role::Viewer => format!("a {role}"),
    }
}

/// Whether `identity` may act as node `node` on the membership service
/// (register, heartbeat, report what it runs): only that node's own
/// certificate may. Called by the membership service on every call.
///
/// ```
/// use zixiao_auth::{authorize_node_call, Identity, NodeName};
/// let a = NodeName::try_from("a").unwrap();
/// let b = NodeName::try_from("b").unwrap();
/// assert!(authorize_node_call(&Identity::Node(a.clone()), &a).is_ok());
/// assert!(authorize_node_call(&Identity::Node(a), &b).is_err());
/// ```
pub fn authorize_node_call(identity: &Identity, node: &NodeName) -> Result<(), Denial> {
    let op = "node.membership";
    match identity {
        Identity::Node(caller) if caller == node => Ok(()),
        Identity::Node(caller) => Err(Denial::new(
            op,
            Requirement::Node(node.clone()),
            format!("the caller is node {caller}"),
        )),
        other => Err(Denial::new(
            op,
            Requirement::Node(node.clone()),
            format!("the caller is {other}, not a node"),
        )),
    }
}

/// Whether `identity` may call an agent (create, start, stop what the
/// node runs): only a server may. Called by the agent on every call.
pub fn authorize_agent_call(identity: &Identity) -> Result<(), Denial> {
    match identity {
        Identity::Server => Ok(()),
        other => Err(Denial::new(
            "agent",
            Requirement::Server,
            format!("the caller is {other}"),
        )),
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::All => f.write_str("all"),
            Scope::Projects(projects) => {
                let names: Vec<&str> = projects.iter().map(ProjectName::as_str).collect();
                write!(f, "projects {}", names.join(", "))
            }
            Scope::Operations { projects, nodes } => {
                let names: Vec<&str> = projects.iter().map(ProjectName::as_str).collect();
                let nodes = if *nodes { ", nodes" } else { "" };
                write!(
                    f,
                    "operations of projects {}, images{nodes}",
                    names.join(", ")
                )
            }
        }
    }
}
