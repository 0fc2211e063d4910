//! Operations as objects: the controller records each long call as an
//! [`Operation`] in the store, follows it to its end, and answers lists,
//! gets, watches and cancels of them.
//!
//! Two sorts of operation, told apart by [`OperationKind::follows_instance`]:
//!
//! - **Intents** (create, start, stop, restart, delete, clone, an update
//!   that restarts): the call stores the intent and answers; the
//!   operation is recorded right after the intent (the create path stores
//!   the intent through the placer's shared commits, which take no extra
//!   writes), and then *followed*: [`Controller::refresh_operation`] reads
//!   the instance and ends the operation `succeeded` once it reached what
//!   was wanted (or is gone, for a delete), `failed` with the instance's
//!   own message once it settled as failed, or `cancelled` once the
//!   instance is no longer wanted that way. A server's reconcilers follow
//!   every unfinished one ([`Controller::follow_operations`]), on each
//!   change of its instance and at every tick, so an operation outlives
//!   the server that started it: the next one picks it up from the store.
//!   Without background workers (the embedded deployment), a call that
//!   waits and a watch converge the instance in the caller and write the
//!   outcome; a get or a list shows the outcome as it would be written,
//!   without writing (reads never write).
//! - **Calls run to completion** (snapshot, revert, drain, image import and
//!   pull, migrate): recorded around the work in the process that does it,
//!   which renews the operation's `alive_at` every [`OPERATION_HEARTBEAT`]
//!   while it runs. A server that stops while one runs cannot finish it:
//!   once it is [`OPERATION_STALE_AFTER`] old, any server's follower marks
//!   it `failed`, "interrupted", and never one whose runner still renews
//!   it (on another live server). Records from before `alive_at` are
//!   ended when a follower starts, as they were.
//!
//! One index key per instance names its last operation; a new intent on
//! the instance ends the previous one as `cancelled` ("superseded") in the
//! same transaction that records it, so at most one operation follows an
//! instance. Finished operations are kept for
//! [`ControllerOptions::operations_keep_for`](super::ControllerOptions) and
//! at most [`ControllerOptions::operations_keep_at_most`](super::ControllerOptions)
//! of them; each tick of the follower prunes the rest.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use super::cache::Change;
use super::{Controller, Convergence};
use crate::error::ErrorKind;
use crate::model::{
    DesiredState, Instance, InstanceStatus, Operation, OperationError, OperationId, OperationKind,
    OperationPhase, OperationProgress, OperationTarget, TargetKind,
};
use crate::store::{
    decode, put_object, Precondition, Revision, StoreError, StoreExt, StoredObject, Txn, WatchEvent,
};
use crate::{Error, Result};

/// Key prefix of operation objects.
pub const OPERATIONS_PREFIX: &str = "/zixiao/operations/";
/// Key prefix of the index from an instance's id to its last operation's id.
pub const OPERATION_INDEX_PREFIX: &str = "/zixiao/operation-index/instances/";

/// What an operation that a stopped server left running ends with.
pub const INTERRUPTED: &str = "interrupted: the server stopped while it ran";

/// How often the process running a call renews its operation.
pub const OPERATION_HEARTBEAT: Duration = Duration::from_secs(10);

/// How long an unrenewed call's operation waits before it is ended as
/// interrupted: three missed renewals.
pub const OPERATION_STALE_AFTER: Duration = Duration::from_secs(30);

impl StoredObject for Operation {
    const PREFIX: &'static str = OPERATIONS_PREFIX;
    const KIND: &'static str = "operation";

    fn id(&self) -> &str {
        self.id.as_str()
    }
    fn set_revision(&mut self, revision: Revision) {
        self.revision = revision;
    }
    fn revision(&self) -> Revision {
        self.revision
    }
}

fn index_key(instance: &str) -> String {
    format!("{OPERATION_INDEX_PREFIX}{instance}")
}

/// Which operations [`Controller::list_operations`] returns. Empty fields
/// match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationFilter {
    /// Only operations on this target (an instance's id or name, a node's
    /// id, an image's name).
    #[serde(default)]
    pub target: Option<String>,
    /// Only this kind.
    #[serde(default)]
    pub kind: Option<OperationKind>,
    /// Only operations that have not finished.
    #[serde(default)]
    pub unfinished: bool,
}

impl OperationFilter {
    /// Whether `operation` passes.
    pub fn matches(&self, operation: &Operation) -> bool {
        self.target
            .as_deref()
            .is_none_or(|t| operation.target.is(t))
            && self.kind.is_none_or(|k| operation.kind == k)
            && (!self.unfinished || !operation.phase.is_finished())
    }
}

tokio::task_local! {
    /// Who makes the call the current task serves, as the access layer
    /// identified it.
    static REQUESTED_BY: String;
}

/// Runs `call` as `caller`'s: operations it records name `caller` as who
/// asked. The access layer (zixiao-auth's audit wrapper) wraps each call
/// it passes on, so the controller learns the caller without a field in
/// every request; a call made outside it records nobody.
pub async fn as_requested_by<F: Future>(caller: String, call: F) -> F::Output {
    REQUESTED_BY.scope(caller, call).await
}

fn requested_by() -> Option<String> {
    REQUESTED_BY.try_with(Clone::clone).ok()
}

/// How an intent's operation stands, judged from its instance.
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    Running(String),
    Succeeded(Option<String>),
    Failed(OperationError),
    Cancelled(OperationError),
}

/// What the instance of an operation of `kind` must be wanted as.
fn wanted(kind: OperationKind) -> DesiredState {
    match kind {
        OperationKind::Stop => DesiredState::Stopped,
        OperationKind::Delete => DesiredState::Deleted,
        _ => DesiredState::Running,
    }
}

/// The step an instance on its way is at, for people.
fn step_of(instance: &Instance) -> String {
    match instance.status {
        InstanceStatus::Pending => match instance.problem() {
            Some(why) => format!("waiting for a node: {why}"),
            None => "placing".to_owned(),
        },
        InstanceStatus::Running if instance.restarts_done < instance.restarts_requested => {
            "restarting".to_owned()
        }
        InstanceStatus::Stopped | InstanceStatus::Scheduled
            if instance.desired == DesiredState::Running =>
        {
            "starting".to_owned()
        }
        InstanceStatus::Failed => match instance.problem() {
            Some(why) => format!("retrying after a failure: {why}"),
            None => "retrying after a failure".to_owned(),
        },
        status => status.as_str().to_owned(),
    }
}

/// Judges intent `operation` by its instance as it is (`None`: gone) and
/// whether the instance has settled.
fn judge(operation: &Operation, instance: Option<&Instance>, settled: bool) -> Verdict {
    let name = &operation.target.name;
    let Some(instance) = instance else {
        return match operation.kind {
            OperationKind::Delete => Verdict::Succeeded(None),
            _ => Verdict::Failed(OperationError {
                kind: ErrorKind::NotFound,
                message: format!(
                    "instance `{name}` was deleted before the {} ended",
                    operation.kind
                ),
            }),
        };
    };
    let wanted = wanted(operation.kind);
    if instance.desired != wanted {
        return Verdict::Cancelled(OperationError {
            kind: ErrorKind::FailedPrecondition,
            message: format!(
                "instance `{name}` is no longer wanted {}: it is now wanted {}",
                desired_str(wanted),
                desired_str(instance.desired)
            ),
        });
    }
    if instance.has_converged() {
        return Verdict::Succeeded(Some(instance.id.clone()));
    }
    if settled && instance.status == InstanceStatus::Failed {
        let why = instance
            .problem()
            .map_or_else(|| "it failed".to_owned(), str::to_owned);
        return Verdict::Failed(OperationError {
            kind: ErrorKind::FailedPrecondition,
            message: format!("instance `{name}`: {why}"),
        });
    }
    Verdict::Running(step_of(instance))
}

fn desired_str(desired: DesiredState) -> &'static str {
    match desired {
        DesiredState::Running => "running",
        DesiredState::Stopped => "stopped",
        DesiredState::Deleted => "deleted",
    }
}

/// `operation` with `verdict` applied at `now`; `None` when that changes nothing.
fn applied(
    operation: &Operation,
    verdict: Verdict,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<Operation> {
    let mut next = operation.clone();
    match verdict {
        Verdict::Running(step) => {
            next.phase = OperationPhase::Running;
            next.enter_step(Some(step));
        }
        Verdict::Succeeded(result) => {
            next.finish(OperationPhase::Succeeded, None, now);
            next.result = result;
        }
        Verdict::Failed(error) => next.finish(OperationPhase::Failed, Some(error), now),
        Verdict::Cancelled(error) => next.finish(OperationPhase::Cancelled, Some(error), now),
    }
    (next != *operation).then_some(next)
}

impl Controller {
    /// Records a new operation of `kind` on `target`, running, naming the
    /// caller when the access layer set it ([`as_requested_by`]). An
    /// intent's operation becomes its instance's last one, ending the one
    /// before as superseded, in the same transaction; this controller's
    /// follower then follows it.
    ///
    /// Errors: `Conflict` (the instance's operations kept changing), the
    /// store's errors.
    pub async fn start_operation(
        &self,
        kind: OperationKind,
        target: OperationTarget,
    ) -> Result<Operation> {
        let mut operation = Operation::new(kind, target, requested_by(), self.now());
        if !kind.follows_instance() {
            operation.alive_at = Some(operation.started_at);
        }
        let indexed = kind.follows_instance() && operation.target.kind == TargetKind::Instance;
        if !indexed {
            operation.revision = self
                .inner
                .store
                .commit(put_object(Txn::new(), &operation))
                .await?;
            return Ok(operation);
        }
        let store = &self.inner.store;
        let key = index_key(&operation.target.id);
        for _ in 0..self.options().max_conflict_retries {
            let mut txn = put_object(Txn::new(), &operation);
            let index = store.get(&key).await?;
            let previous = match &index {
                Some(kv) => {
                    match OperationId::try_from(String::from_utf8_lossy(&kv.value).as_ref()) {
                        Ok(id) => store.get_object::<Operation>(id.as_str()).await?,
                        Err(_) => None,
                    }
                }
                None => None,
            };
            if let Some(mut previous) = previous.filter(|p| !p.phase.is_finished()) {
                let error = OperationError {
                    kind: ErrorKind::FailedPrecondition,
                    message: format!("superseded by {} ({})", operation.id, operation.kind),
                };
                previous.finish(OperationPhase::Cancelled, Some(error), self.now());
                txn = put_object(txn, &previous);
            }
            let precondition = index.as_ref().map_or(Precondition::Absent, |kv| {
                Precondition::Revision(kv.mod_revision)
            });
            txn = txn.put(key.clone(), operation.id.as_str().into(), precondition);
            match store.commit(txn).await {
                Ok(revision) => {
                    operation.revision = revision;
                    self.inner
                        .followed
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .insert(operation.target.id.clone(), operation.id.clone());
                    return Ok(operation);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(self.too_many_conflicts("operation index of instance", &operation.target.id))
    }

    /// Ends operation `id` (a call run to completion) with the call's
    /// `outcome`: `Ok` with what it made, or its error. Errors: the
    /// store's; `NotFound` if the record was pruned meanwhile.
    pub async fn end_operation(
        &self,
        id: &OperationId,
        outcome: std::result::Result<Option<String>, &Error>,
    ) -> Result<Operation> {
        let now = self.now();
        let (phase, error, result) = match outcome {
            Ok(result) => (OperationPhase::Succeeded, None, result),
            Err(e) => (OperationPhase::Failed, Some(OperationError::from(e)), None),
        };
        self.update_object::<Operation, _>(id.as_str(), |op| {
            op.finish(phase, error.clone(), now);
            op.result = result.clone();
            Ok(true)
        })
        .await
    }

    /// Records how far operation `id` got (step and progress), unless it
    /// has finished. Errors: the store's.
    pub async fn report_operation(
        &self,
        id: &OperationId,
        step: Option<String>,
        progress: Option<crate::model::OperationProgress>,
    ) -> Result<()> {
        self.update_object::<Operation, _>(id.as_str(), |op| {
            if op.phase.is_finished() || (op.step == step && op.progress == progress) {
                return Ok(false);
            }
            op.enter_step(step.clone());
            op.progress = progress.clone();
            Ok(true)
        })
        .await
        .map(drop)
    }

    /// A recorder of operation `op`'s progress in bytes, at `step`, for a
    /// synchronous progress callback: a task writes the latest value each
    /// time its last write is done (a slow store skips values rather than
    /// queueing them), and ends once the recorder is dropped.
    pub(crate) fn progress_recorder(&self, op: OperationId, step: &str) -> ProgressRecorder {
        let (tx, mut rx) = tokio::sync::watch::channel((Some(step.to_owned()), None));
        let controller = self.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let (step, progress) = rx.borrow_and_update().clone();
                if let Err(e) = controller.report_operation(&op, step, progress).await {
                    tracing::debug!(op = %op, "recording progress: {}", e.chain());
                }
            }
        });
        ProgressRecorder(tx)
    }

    /// Runs `work` as operation `kind` on `target`: recorded running
    /// before, ended with its outcome after (`result` tells what it made).
    /// The work's own error is returned as it was; a failure to record the
    /// end is only logged, since the work itself is done.
    pub(crate) async fn run_operation<T, W>(
        &self,
        kind: OperationKind,
        target: OperationTarget,
        work: impl FnOnce(OperationId) -> W,
        result: impl FnOnce(&T) -> Option<String>,
    ) -> Result<T>
    where
        W: Future<Output = Result<T>>,
    {
        let operation = self.start_operation(kind, target).await?;
        let work = work(operation.id.clone());
        tokio::pin!(work);
        // Renewed while it runs, so no other server takes it for dead.
        let mut beats = tokio::time::interval_at(
            tokio::time::Instant::now() + OPERATION_HEARTBEAT,
            OPERATION_HEARTBEAT,
        );
        let outcome = loop {
            tokio::select! {
                outcome = &mut work => break outcome,
                _ = beats.tick() => {
                    if let Err(e) = self.renew_operation(&operation.id).await {
                        tracing::warn!(op = %operation.id, "renewing an operation: {}", e.chain());
                    }
                }
            }
        };
        let ended = match &outcome {
            Ok(done) => self.end_operation(&operation.id, Ok(result(done))).await,
            Err(e) => self.end_operation(&operation.id, Err(e)).await,
        };
        if let Err(e) = ended {
            tracing::warn!(op = %operation.id, "recording the end of an operation: {}", e.chain());
        }
        outcome
    }

    /// Says the call of operation `id` still runs here ([`OPERATION_HEARTBEAT`]).
    async fn renew_operation(&self, id: &OperationId) -> Result<()> {
        let now = self.now();
        self.update_object::<Operation, _>(id.as_str(), |op| {
            if op.phase.is_finished() {
                return Ok(false);
            }
            op.alive_at = Some(now);
            Ok(true)
        })
        .await?;
        Ok(())
    }

    /// Operation `id`. In a controller without background workers, an
    /// unfinished intent shows as it would be written once followed (a
    /// read writes nothing). Errors: `NotFound`, the store's.
    pub async fn get_operation(&self, id: &OperationId) -> Result<Operation> {
        let stored = self
            .inner
            .store
            .get_object::<Operation>(id.as_str())
            .await?
            .ok_or_else(|| Error::not_found(format!("operation `{id}`")))?;
        self.as_judged(stored).await
    }

    /// `operation` as a read shows it (see [`Controller::get_operation`]).
    async fn as_judged(&self, operation: Operation) -> Result<Operation> {
        if self.convergence() == Convergence::Background
            || operation.phase.is_finished()
            || !operation.kind.follows_instance()
        {
            return Ok(operation);
        }
        let instance = self.fresh_instance(&operation.target.id).await?;
        let settled = instance.as_ref().is_none_or(|i| self.is_settled(i));
        let verdict = judge(&operation, instance.as_ref(), settled);
        Ok(applied(&operation, verdict, self.now()).unwrap_or(operation))
    }

    async fn fresh_instance(&self, id: &str) -> Result<Option<Instance>> {
        Ok(self.inner.store.get_object::<Instance>(id).await?)
    }

    /// The operations `filter` accepts, in id order (ids are random: sort
    /// by `started_at` to show them). Errors: the store's.
    pub async fn list_operations(&self, filter: &OperationFilter) -> Result<Vec<Operation>> {
        let (all, _) = self
            .inner
            .store
            .list_objects::<Operation, _>(|_| true)
            .await?;
        let mut out = Vec::with_capacity(all.len());
        for operation in all {
            // Judged first: an embedded intent that ended shows as ended.
            let operation = self.as_judged(operation).await?;
            if filter.matches(&operation) {
                out.push(operation);
            }
        }
        Ok(out)
    }

    /// Reads intent `id`'s instance and writes how the operation stands,
    /// if that changed. Finished operations and calls run to completion
    /// are returned as they are. Idempotent. Errors: `NotFound`, the
    /// store's.
    pub async fn refresh_operation(&self, id: &OperationId) -> Result<Operation> {
        for _ in 0..self.options().max_conflict_retries {
            let operation = self
                .inner
                .store
                .get_object::<Operation>(id.as_str())
                .await?
                .ok_or_else(|| Error::not_found(format!("operation `{id}`")))?;
            if operation.phase.is_finished() || !operation.kind.follows_instance() {
                return Ok(operation);
            }
            let instance = self.fresh_instance(&operation.target.id).await?;
            let settled = instance.as_ref().is_none_or(|i| self.is_settled(i));
            let verdict = judge(&operation, instance.as_ref(), settled);
            let Some(mut next) = applied(&operation, verdict, self.now()) else {
                return Ok(operation);
            };
            let mut txn = put_object(Txn::new(), &next);
            // A delete that ended leaves no instance to index. Another
            // follower of the same operation (a second server, or the
            // caller that waited) may have removed it already.
            if instance.is_none() {
                let key = index_key(&operation.target.id);
                if let Some(kv) = self.inner.store.get(&key).await? {
                    txn = txn.delete(key, Precondition::Revision(kv.mod_revision));
                }
            }
            match self.inner.store.commit(txn).await {
                Ok(revision) => {
                    next.revision = revision;
                    if next.phase.is_finished() {
                        self.unfollow(&next);
                    }
                    return Ok(next);
                }
                // The index changed or went under us: read both again.
                Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(self.too_many_conflicts("operation", id.as_str()))
    }

    fn unfollow(&self, operation: &Operation) {
        let mut followed = self
            .inner
            .followed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if followed.get(&operation.target.id) == Some(&operation.id) {
            followed.remove(&operation.target.id);
        }
    }

    /// Operation `id` now and at each change, until it has finished (the
    /// last item). In a controller without background workers, an
    /// intent's instance is converged here first (as a call that waits
    /// would). Errors: `NotFound`; the stream's items, the store's errors.
    pub async fn watch_operation(
        &self,
        id: &OperationId,
    ) -> Result<BoxStream<'static, Result<Operation>>> {
        let first = self.get_operation(id).await?;
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let controller = self.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let _ = controller.send_updates(&id, first, &tx).await.map_err(|e| {
                let _ = tx.unbounded_send(Err(e));
            });
        });
        Ok(rx.boxed())
    }

    async fn send_updates(
        &self,
        id: &OperationId,
        first: Operation,
        tx: &futures::channel::mpsc::UnboundedSender<Result<Operation>>,
    ) -> Result<()> {
        let mut last = first.clone();
        let send = |op: Operation| tx.unbounded_send(Ok(op)).is_ok();
        if !send(first) || last.phase.is_finished() {
            return Ok(());
        }
        if self.convergence() == Convergence::InCaller && last.kind.follows_instance() {
            self.settle(&last.target.id).await?;
            let now = self.refresh_operation(id).await?;
            if now != last {
                last = now.clone();
                if !send(now) || last.phase.is_finished() {
                    return Ok(());
                }
            }
        }
        let mut events = self
            .inner
            .store
            .watch(&Operation::key_for(id.as_str()), last.revision)
            .await?;
        while let Some(event) = events.next().await {
            match event? {
                WatchEvent::Put(kv) => {
                    let op = decode::<Operation>(&kv)?;
                    let shown = (op.phase, &op.step, &op.progress);
                    if shown == (last.phase, &last.step, &last.progress) {
                        continue;
                    }
                    last = op.clone();
                    if !send(op) || last.phase.is_finished() {
                        return Ok(());
                    }
                }
                WatchEvent::Delete { .. } => {
                    return Err(Error::not_found(format!("operation `{id}` (pruned)")))
                }
            }
        }
        Ok(())
    }

    /// Cancels running operation `id`: a create's instance is deleted
    /// (nothing was asked of it yet), a start's or a clone's is stopped,
    /// and the operation ends `cancelled`. Only create, start and clone
    /// can be cancelled ([`OperationKind::cancellable`]).
    ///
    /// Errors: `NotFound`, `FailedPrecondition` (finished, naming its
    /// phase; a kind that cannot be cancelled, naming it); nothing is
    /// changed on error.
    pub async fn cancel_operation(&self, id: &OperationId) -> Result<Operation> {
        let operation = self.get_operation(id).await?;
        if operation.phase.is_finished() {
            return Err(Error::FailedPrecondition(format!(
                "operation `{id}` has already {}: only a running operation can be cancelled",
                operation.phase
            )));
        }
        if !operation.kind.cancellable() {
            return Err(Error::FailedPrecondition(format!(
                "operation `{id}` is a {} operation, which cannot be cancelled once running \
                 (only create, start and clone operations can)",
                operation.kind
            )));
        }
        let instance = &operation.target.id;
        let (done, what) = if operation.kind == OperationKind::Create {
            (self.delete_instance(instance).await, "deleted")
        } else {
            (self.stop_instance(instance).await, "stopped")
        };
        match done {
            Ok(_) => {}
            // Gone already: nothing is left to stop wanting.
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let now = self.now();
        let message = format!("cancelled: instance `{}` is {what}", operation.target.name);
        let cancelled = self
            .update_object::<Operation, _>(id.as_str(), |op| {
                if op.phase.is_finished() {
                    return Ok(false);
                }
                let error = OperationError {
                    kind: ErrorKind::FailedPrecondition,
                    message: message.clone(),
                };
                op.finish(OperationPhase::Cancelled, Some(error), now);
                Ok(true)
            })
            .await?;
        self.unfollow(&cancelled);
        Ok(cancelled)
    }

    /// The id of instance `id`'s last operation, if one is indexed.
    pub(crate) async fn last_operation(&self, instance: &str) -> Result<Option<OperationId>> {
        let index = self.inner.store.get(&index_key(instance)).await?;
        Ok(index
            .and_then(|kv| OperationId::try_from(String::from_utf8_lossy(&kv.value).as_ref()).ok()))
    }

    /// Follows the unfinished operations in the background, for a
    /// controller's reconcilers: first ends those of calls a stopped server
    /// ran as interrupted, then refreshes an intent's operation at each
    /// change of its instance, and every `tick` lists the unfinished ones
    /// anew (those other servers started), refreshes them, and prunes the
    /// finished ones beyond what is kept.
    pub(crate) async fn follow_operations(self, tick: Duration) {
        let mut changes = self.inner.cache.subscribe();
        let listed = self
            .inner
            .store
            .list_objects::<Operation, _>(|_| true)
            .await;
        let ended = match listed {
            Ok((all, _)) => self.end_interrupted(&all, true).await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = ended {
            tracing::warn!("ending interrupted operations: {}", e.chain());
        }
        let mut ticks = tokio::time::interval(tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Ok(Change::Instance(instance, _)) => {
                        let followed = self
                            .inner
                            .followed
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .get(&instance)
                            .cloned();
                        if let Some(id) = followed {
                            if let Err(e) = self.refresh_operation(&id).await {
                                tracing::warn!(op = %id, "following an operation: {}", e.chain());
                            }
                        }
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
                _ = ticks.tick() => {
                    if let Err(e) = self.operations_tick().await {
                        tracing::warn!("following operations: {}", e.chain());
                    }
                }
            }
        }
    }

    /// Ends, among `listed` (every operation, as the caller just listed
    /// them), the unfinished operations of calls run to completion whose
    /// runner stopped: not renewed for [`OPERATION_STALE_AFTER`], and, when
    /// this controller's reconcilers start (`at_start`), those recorded
    /// before renewals were kept. Each is read again before it is ended,
    /// so a listing a little old is safe.
    pub(crate) async fn end_interrupted(
        &self,
        listed: &[Operation],
        at_start: bool,
    ) -> Result<usize> {
        let now = self.now();
        let stale = |op: &Operation| match op.alive_at {
            Some(alive) => (now - alive).to_std().unwrap_or_default() >= OPERATION_STALE_AFTER,
            None => at_start,
        };
        let left: Vec<&Operation> = listed
            .iter()
            .filter(|op| !op.phase.is_finished() && !op.kind.follows_instance() && stale(op))
            .collect();
        for op in &left {
            self.update_object::<Operation, _>(op.id.as_str(), |op| {
                // Renewed or ended meanwhile: its runner lives.
                if op.phase.is_finished() || !stale(op) {
                    return Ok(false);
                }
                let error = OperationError {
                    kind: ErrorKind::Unavailable,
                    message: INTERRUPTED.to_owned(),
                };
                op.finish(OperationPhase::Failed, Some(error), now);
                Ok(true)
            })
            .await?;
        }
        Ok(left.len())
    }

    /// One tick of the follower: end the calls whose runner stopped (and
    /// the live migrations they left), refresh every unfinished intent,
    /// then prune.
    pub async fn operations_tick(&self) -> Result<()> {
        // Before the listing: a migration seen here whose operation the
        // listing lacks cannot have begun in between.
        let migrating = self.live_migrations_in_cache();
        let (all, _) = self
            .inner
            .store
            .list_objects::<Operation, _>(|_| true)
            .await?;
        // The calls ended here are pruned from the next tick's listing.
        self.end_interrupted(&all, false).await?;
        if !migrating.is_empty() {
            self.recover_live_migrations(migrating, &all).await;
        }
        let mut followed = HashMap::new();
        for op in all
            .iter()
            .filter(|op| !op.phase.is_finished() && op.kind.follows_instance())
        {
            let now = self.refresh_operation(&op.id).await?;
            if !now.phase.is_finished() {
                followed.insert(now.target.id.clone(), now.id.clone());
            }
        }
        *self
            .inner
            .followed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = followed;
        self.prune_operations(all).await
    }

    /// Deletes the finished operations older than the retention, and the
    /// oldest finished ones beyond the most kept, with the index keys that
    /// name no operation any more.
    async fn prune_operations(&self, all: Vec<Operation>) -> Result<()> {
        let opts = self.options();
        let keep_for =
            chrono::Duration::from_std(opts.operations_keep_for).unwrap_or(chrono::Duration::MAX);
        let oldest_kept = self.now() - keep_for;
        let mut finished: Vec<&Operation> =
            all.iter().filter(|op| op.phase.is_finished()).collect();
        finished.sort_by_key(|op| (op.finished_at, op.id.clone()));
        let excess = all.len().saturating_sub(opts.operations_keep_at_most);
        let mut doomed: HashSet<&OperationId> = HashSet::new();
        for (i, op) in finished.iter().enumerate() {
            if i < excess || op.finished_at.is_some_and(|at| at < oldest_kept) {
                doomed.insert(&op.id);
            }
        }
        let index = self.inner.store.list(OPERATION_INDEX_PREFIX).await?;
        let known: HashSet<&str> = all.iter().map(|op| op.id.as_str()).collect();
        let mut txn = Txn::new();
        let mut writes = 0;
        for kv in &index.items {
            let named = String::from_utf8_lossy(&kv.value);
            let dangling = !known.contains(named.as_ref())
                || OperationId::try_from(named.as_ref()).is_ok_and(|id| doomed.contains(&id));
            if dangling {
                txn = txn.delete(kv.key.clone(), Precondition::Revision(kv.mod_revision));
                writes += 1;
            }
        }
        for id in doomed {
            txn = txn.delete(Operation::key_for(id.as_str()), Precondition::None);
            writes += 1;
            if writes >= opts.max_batch_writes {
                self.commit_prune(std::mem::take(&mut txn)).await?;
                writes = 0;
            }
        }
        if writes > 0 {
            self.commit_prune(txn).await?;
        }
        Ok(())
    }

    async fn commit_prune(&self, txn: Txn) -> Result<()> {
        match self.inner.store.commit(txn).await {
            // An index key moved on: the next tick looks again.
            Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }
}

/// See [`Controller::progress_recorder`].
pub(crate) struct ProgressRecorder(
    tokio::sync::watch::Sender<(Option<String>, Option<OperationProgress>)>,
);

impl ProgressRecorder {
    /// `done` of `total` bytes.
    pub(crate) fn set(&self, done: u64, total: u64) {
        self.0.send_modify(|(_, progress)| {
            *progress = Some(OperationProgress {
                done,
                total: Some(total),
                unit: "bytes".to_owned(),
            })
        });
    }

    /// `more` bytes done.
    pub(crate) fn add(&self, more: u64) {
        self.0.send_modify(|(_, progress)| {
            let progress = progress.get_or_insert_with(|| OperationProgress {
                done: 0,
                total: None,
                unit: "bytes".to_owned(),
            });
            progress.done = progress.done.saturating_add(more);
        });
    }

    /// At `step` now.
    pub(crate) fn step(&self, step: &str) {
        self.0
            .send_modify(|(current, _)| *current = Some(step.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CreateInstance, InstanceSpec};

    fn instance() -> Instance {
        let request = CreateInstance::new("web", InstanceSpec::container("busybox"));
        Instance::new("i-1", request, chrono::Utc::now())
    }

    fn op(kind: OperationKind) -> Operation {
        let target = OperationTarget::instance("i-1", "web");
        Operation::new(kind, target, None, chrono::Utc::now())
    }

    #[test]
    fn a_create_runs_until_the_instance_runs() {
        let mut web = instance();
        let create = op(OperationKind::Create);
        assert_eq!(
            judge(&create, Some(&web), false),
            Verdict::Running("placing".to_owned())
        );
        web.status = InstanceStatus::Running;
        assert_eq!(
            judge(&create, Some(&web), true),
            Verdict::Succeeded(Some("i-1".to_owned()))
        );
    }

    #[test]
    fn a_failure_ends_it_with_the_instances_message() {
        let mut web = instance();
        web.status = InstanceStatus::Failed;
        web.set_condition(
            crate::ConditionType::RuntimeReady,
            false,
            "CreateFailed",
            "image not found",
            chrono::Utc::now(),
        );
        let Verdict::Failed(error) = judge(&op(OperationKind::Start), Some(&web), true) else {
            panic!("not failed");
        };
        assert!(error.message.contains("image not found"), "{error:?}");
        // Not settled yet (a retry is due): still running.
        assert!(matches!(
            judge(&op(OperationKind::Start), Some(&web), false),
            Verdict::Running(_)
        ));
    }

    #[test]
    fn a_delete_succeeds_once_gone_and_others_fail_then() {
        assert_eq!(
            judge(&op(OperationKind::Delete), None, true),
            Verdict::Succeeded(None)
        );
        assert!(matches!(
            judge(&op(OperationKind::Create), None, true),
            Verdict::Failed(OperationError {
                kind: ErrorKind::NotFound,
                ..
            })
        ));
    }

    #[test]
    fn an_instance_wanted_otherwise_cancels_it() {
        let mut web = instance();
        web.desired = DesiredState::Stopped;
        assert!(matches!(
            judge(&op(OperationKind::Start), Some(&web), true),
            Verdict::Cancelled(_)
        ));
    }
}
