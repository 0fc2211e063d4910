//! The objects of access control as the API shows them: users and their
//! [`Role`], tokens (never their secrets, except once when issued),
//! projects with their [`Quota`] and usage, and audit records. The
//! requests that manage them ([`Request::CreateUser`](super::Request::CreateUser)
//! and the rest) are carried out by zixiao-auth's access layer, which
//! keeps them in the store; these types are what crosses the API, so every
//! frontend and the gRPC protocol share them.
//!
//! Names arrive here as strings, as instance names do: the access layer
//! checks them once, at the edge, and names the field it refuses.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};
use crate::model::{Cpus, InvalidAmount, Resources};

/// What a user may do, in increasing power (see zixiao-auth's
/// `authorize` for the rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads instances, snapshots and their logs in the user's projects.
    Viewer,
    /// What a viewer may, and changes instances, snapshots, networks and
    /// images in the user's projects; reads nodes and cluster figures.
    Operator,
    /// Everything, in every project: nodes, users, tokens, projects.
    Admin,
}

impl Role {
    /// The snake_case name (`operator`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;

    /// `viewer`, `operator` or `admin`. Errors: `InvalidArgument` (`role`).
    ///
    /// ```
    /// use zixiao_core::api::Role;
    /// assert_eq!("operator".parse::<Role>().unwrap(), Role::Operator);
    /// assert!("root".parse::<Role>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(Error::invalid(
                "role",
                format!("`{other}` is not one of viewer, operator, admin"),
            )),
        }
    }
}

/// The most of each resource a project's instances may hold together;
/// `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// CPU, in the units instances request it.
    #[serde(default)]
    pub cpus: Option<Cpus>,
    /// Memory in MiB.
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// Number of instances.
    #[serde(default)]
    pub instances: Option<u32>,
    /// Disk in GiB.
    #[serde(default)]
    pub disk_gib: Option<u64>,
}

/// A quota that a request would exceed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("project `{project}` allows {limit} {resource}; {used} are used and {requested} more were asked for")]
pub struct QuotaExceeded {
    /// The project.
    pub project: String,
    /// Which resource (`cpus`, `memory_mib`, `instances`, `disk_gib`).
    pub resource: &'static str,
    /// The quota, in the resource's units (`8`, `0.5`).
    pub limit: String,
    /// What the project's instances hold now.
    pub used: String,
    /// What the request adds.
    pub requested: String,
}

impl QuotaExceeded {
    /// Always [`ErrorKind::ResourceExhausted`].
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::ResourceExhausted
    }
}

impl From<QuotaExceeded> for Error {
    /// [`Error::ResourceExhausted`] with the message naming the project,
    /// the resource, the limit, the usage and the request: what crosses
    /// gRPC and the bindings, which carry a kind and a message.
    fn from(exceeded: QuotaExceeded) -> Self {
        Error::ResourceExhausted(exceeded.to_string())
    }
}

impl Quota {
    /// Whether no resource is limited (every create is admitted).
    ///
    /// ```
    /// use zixiao_core::api::Quota;
    /// assert!(Quota::default().is_unlimited());
    /// assert!(!"instances=3".parse::<Quota>().unwrap().is_unlimited());
    /// ```
    pub fn is_unlimited(&self) -> bool {
        *self == Quota::default()
    }

    /// Whether `project`, holding `used`, may take `requested` more.
    /// The quota step calls this inside the create transaction, with the
    /// usage read in that transaction.
    ///
    /// ```
    /// use zixiao_core::api::Quota;
    /// use zixiao_core::Resources;
    ///
    /// use zixiao_core::Cpus;
    ///
    /// let quota = Quota { cpus: Some(Cpus::cores(8)), ..Quota::default() };
    /// let used = Resources { cpus: Cpus::cores(6), memory_mib: 0, disk_gib: 0, instances: 3 };
    /// let two = Resources { cpus: Cpus::cores(2), memory_mib: 512, disk_gib: 1, instances: 1 };
    /// assert!(quota.admits("web", &used, &two).is_ok());
    /// let four = Resources { cpus: "2.5".parse().unwrap(), ..two };
    /// assert_eq!(quota.admits("web", &used, &four).unwrap_err().resource, "cpus");
    /// ```
    pub fn admits(
        &self,
        project: impl AsRef<str>,
        used: &Resources,
        requested: &Resources,
    ) -> Result<(), QuotaExceeded> {
        let millis = |c: Cpus| u64::from(c.millis());
        let checks = [
            (
                "cpus",
                self.cpus.map(millis),
                millis(used.cpus),
                millis(requested.cpus),
            ),
            (
                "memory_mib",
                self.memory_mib,
                used.memory_mib,
                requested.memory_mib,
            ),
            (
                "instances",
                self.instances.map(u64::from),
                u64::from(used.instances),
                u64::from(requested.instances),
            ),
            ("disk_gib", self.disk_gib, used.disk_gib, requested.disk_gib),
        ];
        for (resource, limit, used, requested) in checks {
            if let Some(limit) = limit {
                if used.saturating_add(requested) > limit {
                    // CPU is counted in millicores and shown in cores.
                    let show = |n: u64| match resource {
                        "cpus" => {
                            Cpus::from_millis(u32::try_from(n).unwrap_or(u32::MAX)).to_string()
                        }
                        _ => n.to_string(),
                    };
                    return Err(QuotaExceeded {
                        project: project.as_ref().to_owned(),
                        resource,
                        limit: show(limit),
                        used: show(used),
                        requested: show(requested),
                    });
                }
            }
        }
        Ok(())
    }
}

impl FromStr for Quota {
    type Err = Error;

    /// `cpus=N,memory=MiB,instances=N,disk=GiB`, any subset, in any order
    /// (`none` for no limits). Errors: `InvalidArgument` naming the key
    /// (`quota.memory`).
    ///
    /// ```
    /// use zixiao_core::api::Quota;
    /// let quota: Quota = "cpus=8,memory=16384".parse().unwrap();
    /// assert_eq!(quota.cpus, Some(zixiao_core::Cpus::cores(8)));
    /// assert_eq!(quota.memory_mib, Some(16384));
    /// assert_eq!(quota.instances, None);
    /// assert!("cpus=eight".parse::<Quota>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Error> {
        let mut quota = Quota::default();
        if s.trim() == "none" {
            return Ok(quota);
        }
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(Error::invalid(
                    "quota",
                    format!("`{pair}` is not KEY=VALUE (cpus, memory, instances, disk)"),
                ));
            };
            let number = |field: &str| {
                value.trim().parse::<u64>().map_err(|_| {
                    Error::invalid(
                        format!("quota.{field}"),
                        format!("`{value}` is not a whole number"),
                    )
                })
            };
            let small = |field: &str| {
                u32::try_from(number(field)?)
                    .map_err(|_| Error::invalid(format!("quota.{field}"), "too large"))
            };
            match key.trim() {
                "cpus" => {
                    quota.cpus =
                        Some(value.trim().parse().map_err(|e: InvalidAmount| {
                            Error::invalid("quota.cpus", e.to_string())
                        })?)
                }
                "memory" | "memory_mib" => quota.memory_mib = Some(number("memory")?),
                "instances" => quota.instances = Some(small("instances")?),
                "disk" | "disk_gib" => quota.disk_gib = Some(number("disk")?),
                other => {
                    return Err(Error::invalid(
                        format!("quota.{other}"),
                        "unknown; the keys are cpus, memory (MiB), instances, disk (GiB)",
                    ))
                }
            }
        }
        Ok(quota)
    }
}

/// A user as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// Unique name.
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// Where the user may do it (ignored for admins).
    pub projects: BTreeSet<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// What a token is for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenPurpose {
    /// A user's bearer token for the API.
    #[default]
    User,
    /// An agent's token to join the cluster.
    Join,
}

/// A token as the API shows it: everything but its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Its id, the public half of the printed token.
    pub id: String,
    /// What it is for.
    pub purpose: TokenPurpose,
    /// The user it belongs to.
    pub owner: String,
    /// The role it grants (user tokens), capped by its owner's at each use.
    pub role: Option<Role>,
    /// The projects it is limited to (`None`: all of its owner's).
    pub projects: Option<BTreeSet<String>>,
    /// When it stops working (`None`: never).
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether it was revoked.
    pub revoked: bool,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
}

/// A token's text (`zx_<id>_<secret>`), handed out once when issued. Its
/// `Debug` hides it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenText(String);

impl TokenText {
    /// Wraps a token's text.
    pub fn new(text: impl Into<String>) -> Self {
        TokenText(text.into())
    }

    /// The whole token, to print once or send as a bearer token.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenText(<redacted>)")
    }
}

/// A token just issued: what is stored, and its text, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedToken {
    /// The token.
    pub token: TokenInfo,
    /// Its text.
    pub secret: TokenText,
}

/// A new token's terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenTerms {
    /// The role it grants (`None`: its owner's).
    pub role: Option<Role>,
    /// The projects it is limited to, within its owner's (`None`: all of
    /// its owner's, as they change).
    pub projects: Option<Vec<String>>,
    /// How long it works (`None`: until revoked).
    pub ttl: Option<Duration>,
    /// A user's bearer token, or an agent's join token (no role, no
    /// projects; single-use unless `reusable`).
    pub purpose: TokenPurpose,
    /// For a join token: whether it may be used more than once.
    pub reusable: bool,
}

/// A project as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectInfo {
    /// Unique name.
    pub name: String,
    /// Limits on what its instances hold together.
    pub quota: Quota,
    /// What its instances hold now.
    pub usage: Resources,
    /// When it was created (`None` for the implicit `default`).
    pub created_at: Option<DateTime<Utc>>,
}

/// How a call ended, as an audit record says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// It was asked for and its outcome is not recorded yet: the record is
    /// written before the call runs and updated when it ends. A record left
    /// in this state by a crash says the call may or may not have happened.
    Started,
    /// It was carried out.
    Done,
    /// It failed with an error of this kind.
    Failed {
        /// The error's kind (not its message, which may quote input).
        kind: ErrorKind,
    },
    /// It was refused by authorization.
    Denied {
        /// The missing permission (`instance.create in project web`).
        permission: String,
        /// Why (`alice is a viewer there, and viewers only read`).
        reason: String,
    },
    /// The caller was not identified.
    Unauthenticated {
        /// What was wrong with its credentials (never the credentials).
        reason: String,
    },
}

impl Outcome {
    /// The outcome of a call's result.
    pub fn of<T>(result: &crate::Result<T>) -> Self {
        match result {
            Ok(_) => Outcome::Done,
            Err(e) => Outcome::Failed { kind: e.kind() },
        }
    }

    /// `started`, `done`, `failed`, `denied` or `unauthenticated`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Started => "started",
            Outcome::Done => "done",
            Outcome::Failed { .. } => "failed",
            Outcome::Denied { .. } => "denied",
            Outcome::Unauthenticated { .. } => "unauthenticated",
        }
    }
}

/// One audit record: when, who, which operation on what, and how it
/// ended. Never a request's body, a token or an error message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Its number in its ring.
    pub seq: u64,
    /// When it was written.
    pub time: DateTime<Utc>,
    /// The server replica that wrote it.
    pub replica: String,
    /// Who: `user alice`, `node worker-1`, `server`, `anonymous`.
    pub identity: String,
    /// The user, for users.
    #[serde(default)]
    pub user: Option<String>,
    /// The token the user came with (its id, never its secret).
    #[serde(default)]
    pub token: Option<String>,
    /// The project of the object, when it has one.
    #[serde(default)]
    pub project: Option<String>,
    /// The operation.
    pub operation: String,
    /// What it acted on.
    #[serde(default)]
    pub target: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
}

/// Which audit records to list; every filter is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Written at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// By this user.
    pub user: Option<String>,
    /// In this project.
    pub project: Option<String>,
}
