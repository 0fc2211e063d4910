//! Operations: the record of one long call (a create until the instance
//! runs, a stop, a delete, a snapshot, an image pull...) that a caller can
//! list, follow and, for some kinds, cancel after the call answered.
//!
//! An [`Operation`] is plain data kept in the store; the controller
//! (`controller/operations.rs`) writes and follows it. Its id is an
//! [`OperationId`], built only by [`OperationId::new`] or a checking
//! `TryFrom`, since it becomes part of a store key.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};

/// The text every operation id starts with.
const ID_PREFIX: &str = "op-";
/// How many hex digits follow it (a UUID's 128 bits).
const ID_HEX_DIGITS: usize = 32;

/// An operation's id: `op-` and 32 lowercase hex digits (a random UUID),
/// so that it can never name another store key.
///
/// ```
/// use zixiao_core::OperationId;
///
/// let id = OperationId::new();
/// assert_eq!(OperationId::try_from(id.as_str()).unwrap(), id);
/// assert!(OperationId::try_from("op-../instances").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OperationId(String);

impl OperationId {
    /// A new random id.
    #[allow(clippy::new_without_default)] // Each call is a new id: no "default" one.
    pub fn new() -> Self {
        OperationId(format!("{ID_PREFIX}{}", uuid::Uuid::new_v4().simple()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for OperationId {
    type Error = Error;

    /// Errors: `InvalidArgument` naming `operation` for anything but `op-`
    /// and 32 lowercase hex digits.
    fn try_from(text: &str) -> Result<Self, Error> {
        let valid = text.strip_prefix(ID_PREFIX).is_some_and(|hex| {
            hex.len() == ID_HEX_DIGITS
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if !valid {
            return Err(Error::invalid(
                "operation",
                format!(
                    "`{}` is not an operation id (`{ID_PREFIX}` and {ID_HEX_DIGITS} lowercase \
                     hex digits, as `zixiao operation list` shows)",
                    text.escape_debug()
                ),
            ));
        }
        Ok(OperationId(text.to_owned()))
    }
}

impl TryFrom<String> for OperationId {
    type Error = Error;

    fn try_from(text: String) -> Result<Self, Error> {
        OperationId::try_from(text.as_str())
    }
}

impl From<OperationId> for String {
    fn from(id: OperationId) -> Self {
        id.0
    }
}

impl fmt::Display for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OperationKind {
    /// An instance created, until it runs.
    Create,
    /// An instance started, until it runs.
    Start,
    /// An instance stopped, until it is stopped.
    Stop,
    /// An instance restarted, until it runs again.
    Restart,
    /// An instance deleted, until it is gone.
    Delete,
    /// An update that restarts the instance, until it runs again.
    Update,
    /// A snapshot taken.
    Snapshot,
    /// An instance put back to a snapshot.
    Revert,
    /// A clone created, until it runs.
    Clone,
    /// A node drained.
    Drain,
    /// An image archive or node image imported.
    ImageImport,
    /// An image pulled from its registry.
    ImagePull,
    /// An instance moved to another node.
    Migrate,
}

impl OperationKind {
    /// Every kind.
    pub const ALL: [OperationKind; 13] = [
        OperationKind::Create,
        OperationKind::Start,
        OperationKind::Stop,
        OperationKind::Restart,
        OperationKind::Delete,
        OperationKind::Update,
        OperationKind::Snapshot,
        OperationKind::Revert,
        OperationKind::Clone,
        OperationKind::Drain,
        OperationKind::ImageImport,
        OperationKind::ImagePull,
        OperationKind::Migrate,
    ];

    /// The kebab-case name used in output and filters.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Create => "create",
            OperationKind::Start => "start",
            OperationKind::Stop => "stop",
            OperationKind::Restart => "restart",
            OperationKind::Delete => "delete",
            OperationKind::Update => "update",
            OperationKind::Snapshot => "snapshot",
            OperationKind::Revert => "revert",
            OperationKind::Clone => "clone",
            OperationKind::Drain => "drain",
            OperationKind::ImageImport => "image-import",
            OperationKind::ImagePull => "image-pull",
            OperationKind::Migrate => "migrate",
        }
    }

    /// Whether the operation is an intent stored on an instance that the
    /// reconcilers carry out after the call answered, so the controller
    /// follows the instance to tell how it ended (and picks it up again
    /// after a restart). The other kinds run inside the call that started
    /// them: a server that stops while one runs leaves it interrupted.
    pub fn follows_instance(self) -> bool {
        matches!(
            self,
            OperationKind::Create
                | OperationKind::Start
                | OperationKind::Stop
                | OperationKind::Restart
                | OperationKind::Delete
                | OperationKind::Update
                | OperationKind::Clone
        )
    }

    /// Whether a running operation of this kind can be cancelled: only
    /// the ones that ask for an instance to run (create, start, clone),
    /// whose cancel means "stop wanting it". The others either undo
    /// nothing by stopping halfway (stop, delete, restart, update), or run
    /// inside one server's call, which no other call can reach (snapshot,
    /// revert, drain, image import and pull, migrate).
    pub fn cancellable(self) -> bool {
        matches!(
            self,
            OperationKind::Create | OperationKind::Start | OperationKind::Clone
        )
    }
}

impl fmt::Display for OperationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OperationKind {
    type Err = Error;

    /// Errors: `InvalidArgument` naming `kind`, with the kinds there are.
    fn from_str(text: &str) -> Result<Self, Error> {
        OperationKind::ALL
            .into_iter()
            .find(|k| k.as_str() == text)
            .ok_or_else(|| {
                let all: Vec<&str> = OperationKind::ALL.iter().map(|k| k.as_str()).collect();
                Error::invalid(
                    "kind",
                    format!("`{}` is not one of {}", text.escape_debug(), all.join(", ")),
                )
            })
    }
}

/// Where an operation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationPhase {
    /// Recorded, nothing done yet.
    Queued,
    /// Under way (its `step` says where).
    Running,
    /// Done as asked.
    Succeeded,
    /// Ended without doing what was asked (its `error` says why).
    Failed,
    /// Ended by a cancel, or by a later operation on the same instance.
    Cancelled,
}

impl OperationPhase {
    /// Every phase, in life order.
    pub const ALL: [OperationPhase; 5] = [
        OperationPhase::Queued,
        OperationPhase::Running,
        OperationPhase::Succeeded,
        OperationPhase::Failed,
        OperationPhase::Cancelled,
    ];

    /// The snake_case name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationPhase::Queued => "queued",
            OperationPhase::Running => "running",
            OperationPhase::Succeeded => "succeeded",
            OperationPhase::Failed => "failed",
            OperationPhase::Cancelled => "cancelled",
        }
    }

    /// Whether it has ended (and will never change again).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            OperationPhase::Succeeded | OperationPhase::Failed | OperationPhase::Cancelled
        )
    }
}

impl fmt::Display for OperationPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of object an operation acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// An instance: `id` is its id, `name` its name.
    Instance,
    /// A node: `id` and `name` are its id.
    Node,
    /// An image: `id` is the node whose runtime holds it, `name` the image.
    Image,
}

impl TargetKind {
    /// Every kind of target.
    pub const ALL: [TargetKind; 3] = [TargetKind::Instance, TargetKind::Node, TargetKind::Image];

    /// The snake_case name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Instance => "instance",
            TargetKind::Node => "node",
            TargetKind::Image => "image",
        }
    }
}

/// What an operation acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationTarget {
    /// The kind of object.
    pub kind: TargetKind,
    /// Its id (for an image: its node's).
    pub id: String,
    /// Its name, for people.
    pub name: String,
    /// An instance's labels when the operation started: an access layer
    /// tells whose operation it is by them (its project), without a lookup
    /// and after the instance is gone. Empty for other targets, in
    /// records from before they were kept, and over gRPC (the access
    /// layer reads them on the server): `None`, which tells "not known"
    /// from an instance that had no labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
}

impl OperationTarget {
    /// Instance `id` named `name`.
    pub fn instance(id: impl Into<String>, name: impl Into<String>) -> Self {
        OperationTarget {
            kind: TargetKind::Instance,
            id: id.into(),
            name: name.into(),
            labels: Default::default(),
        }
    }

    /// `instance`, with its labels.
    pub fn of_instance(instance: &crate::model::Instance) -> Self {
        OperationTarget {
            labels: Some(instance.labels.clone()),
            ..OperationTarget::instance(&instance.id, &instance.name)
        }
    }

    /// Node `id`.
    pub fn node(id: impl Into<String>) -> Self {
        let id = id.into();
        OperationTarget {
            kind: TargetKind::Node,
            name: id.clone(),
            id,
            labels: Default::default(),
        }
    }

    /// Image `name` of node `node`.
    pub fn image(node: impl Into<String>, name: impl Into<String>) -> Self {
        OperationTarget {
            kind: TargetKind::Image,
            id: node.into(),
            name: name.into(),
            labels: Default::default(),
        }
    }

    /// Whether `text` names it (its id or its name).
    pub fn is(&self, text: &str) -> bool {
        self.id == text || self.name == text
    }
}

impl fmt::Display for OperationTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            TargetKind::Image => write!(f, "image {} on node {}", self.name, self.id),
            kind => write!(f, "{} {}", kind.as_str(), self.name),
        }
    }
}

/// How far an operation got, where that is measurable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationProgress {
    /// How much is done.
    pub done: u64,
    /// How much there is, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// What is counted (`bytes`, `instances`).
    pub unit: String,
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationError {
    /// The class of the error.
    pub kind: ErrorKind,
    /// What failed, for people.
    pub message: String,
}

impl From<&Error> for OperationError {
    fn from(error: &Error) -> Self {
        OperationError {
            kind: error.kind(),
            message: error.chain(),
        }
    }
}

/// How many steps an operation remembers ([`Operation::steps`]).
pub const MAX_OPERATION_STEPS: usize = 32;

/// One long call, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    /// Its id.
    pub id: OperationId,
    /// What it does.
    pub kind: OperationKind,
    /// What it acts on.
    pub target: OperationTarget,
    /// Who asked, when the access layer knew the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// Where it is.
    pub phase: OperationPhase,
    /// The kind's own step while it runs (`placing`, `creating`,
    /// `stopping`, `pulling`...), taken from the instance's status or the
    /// work as it goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// How far it got, where measurable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<OperationProgress>,
    /// The steps it went through, in order (each new `step` recorded, the
    /// last [`MAX_OPERATION_STEPS`] kept), so that a finished operation still tells
    /// what it did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<String>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed (or what cancelled it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<OperationError>,
    /// What it made, once it succeeded (an instance id, a snapshot name,
    /// an image name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// A call run to completion: when the process running it last said it
    /// still did (it renews this while it runs). One not renewed for a
    /// while is ended as interrupted by any server; `None` in intents and
    /// in records from before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alive_at: Option<DateTime<Utc>>,
    /// Store revision of this record; updates are compare-and-swap on it.
    #[serde(default)]
    pub revision: u64,
}

impl Operation {
    /// A new operation of `kind` on `target`, running since `now`, not stored yet.
    pub fn new(
        kind: OperationKind,
        target: OperationTarget,
        requested_by: Option<String>,
        now: DateTime<Utc>,
    ) -> Self {
        Operation {
            id: OperationId::new(),
            kind,
            target,
            requested_by,
            phase: OperationPhase::Running,
            step: None,
            progress: None,
            steps: Vec::new(),
            started_at: now,
            finished_at: None,
            error: None,
            result: None,
            alive_at: None,
            revision: 0,
        }
    }

    /// Moves it to `step` (`None`: no step), remembering each new step in
    /// [`Operation::steps`].
    ///
    /// ```
    /// use zixiao_core::model::{Operation, OperationKind, OperationTarget};
    ///
    /// let target = OperationTarget::instance("id", "web");
    /// let mut op = Operation::new(OperationKind::Migrate, target, None, chrono::Utc::now());
    /// for step in ["placing", "stopping", "stopping", "starting"] {
    ///     op.enter_step(Some(step.to_owned()));
    /// }
    /// assert_eq!(op.steps, ["placing", "stopping", "starting"]);
    /// assert_eq!(op.step.as_deref(), Some("starting"));
    /// ```
    pub fn enter_step(&mut self, step: Option<String>) {
        if let Some(step) = &step {
            if self.steps.last() != Some(step) {
                if self.steps.len() >= MAX_OPERATION_STEPS {
                    self.steps.remove(0);
                }
                self.steps.push(step.clone());
            }
        }
        self.step = step;
    }

    /// Ends it in `phase` at `now`, with `error` when it did not succeed.
    pub fn finish(
        &mut self,
        phase: OperationPhase,
        error: Option<OperationError>,
        now: DateTime<Utc>,
    ) {
        self.phase = phase;
        self.error = error;
        self.step = None;
        self.finished_at = Some(now);
    }
}
