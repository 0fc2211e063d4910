//! The placer: the one task of a controller that places instances and
//! writes nodes' allocations for them, in the shape of Nomad's plan
//! applier. A create is one durable commit: its record, its name, its
//! placement with the node's new allocation, and its admissions'
//! writes, all in one transaction.
//!
//! Creates that arrive while a commit is in flight are placed one after the
//! other on the placer's own copy of the nodes (the cache's, plus its own
//! commits the cache has not shown yet), each seeing the earlier ones'
//! allocations, and gathered into the next transaction, so a burst of
//! creates costs one commit, bin-packing stays exact, and concurrent creates
//! never race each other for a node. Every write still expects the
//! revision it was based on: a stale view (another server placed on the
//! node) fails the transaction, the node is read again and the batch placed
//! again; no node is ever over-committed.
//!
//! A transaction that fails for one create (its name is taken) fails for
//! all of its batch: the others are placed again without it. One that
//! fails for a reason nobody can be singled out for is retried with each
//! create on its own, so each caller gets its own answer.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Mutex, Weak};

use tokio::sync::{mpsc, oneshot};

use super::admission::StoreView;
use super::cache::{Cache, NodeTable};
use super::{Controller, Inner, INSTANCE_NAMES_PREFIX, NODES_PREFIX};
use crate::model::{ConditionType, Instance, InstanceStatus, Node, NodeStatus};
use crate::scheduler::SchedulingContext;
use crate::store::{encode, KeyValue, Precondition, StoreError, StoredObject, Txn, Write};
use crate::telemetry::PlacementOutcome;
use crate::{Error, Result};

/// What the placer is asked to do with an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Store a new instance (absent so far), placed or pending.
    Create,
    /// Place a stored, unplaced instance (at its revision), or record why not.
    Existing,
    /// Store a changed copy of a stored instance (at its revision): its
    /// node's allocation follows what it holds, within the node's free
    /// capacity, and the admissions check the change.
    Update,
}

/// What became of an instance given to the placer.
#[derive(Debug)]
pub(crate) enum Placed {
    /// Stored as returned: placed, or pending with the reason.
    Stored(Box<Instance>),
    /// Nothing to write: still unschedulable for the reason recorded.
    Unchanged,
    /// The stored instance changed or went meanwhile: plan again.
    Changed,
}

struct Job {
    instance: Instance,
    mode: Mode,
    /// The instance as stored, for [`Mode::Update`].
    before: Option<Box<Instance>>,
    reply: oneshot::Sender<Result<Placed>>,
    attempts: u32,
    /// Commit it on its own (after a failure nobody could be singled out for).
    solo: bool,
}

impl Job {
    fn answer(self, result: Result<Placed>) {
        let _ = self.reply.send(result);
    }
}

/// A job placed into the batch being built.
struct Planned {
    job: Job,
    instance: Instance,
    keys: Vec<String>,
}

/// The placer's handle in a controller; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Placer {
    tx: Mutex<Option<mpsc::UnboundedSender<Job>>>,
}

impl Controller {
    /// Hands `instance` to the placer and waits for the outcome.
    pub(super) async fn place(&self, instance: Instance, mode: Mode) -> Result<Placed> {
        self.send_job(instance, mode, None).await
    }

    /// Hands the placer `after`, a changed copy of the stored `before`
    /// ([`Mode::Update`]), and waits for the outcome: `Stored`, `Changed`
    /// (the stored instance changed meanwhile), or the refusal
    /// (`ResourceExhausted` naming the node's shortfall, an admission's).
    pub(super) async fn place_update(&self, before: Instance, after: Instance) -> Result<Placed> {
        self.send_job(after, Mode::Update, Some(Box::new(before)))
            .await
    }

    async fn send_job(
        &self,
        instance: Instance,
        mode: Mode,
        before: Option<Box<Instance>>,
    ) -> Result<Placed> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            instance,
            mode,
            before,
            reply,
            attempts: 0,
            solo: false,
        };
        let sender = {
            let mut tx = self
                .inner
                .placer
                .tx
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match tx.as_ref() {
                Some(tx) => tx.clone(),
                None => {
                    let (sender, receiver) = mpsc::unbounded_channel();
                    tokio::spawn(run(std::sync::Arc::downgrade(&self.inner), receiver));
                    *tx = Some(sender.clone());
                    sender
                }
            }
        };
        if sender.send(job).is_err() {
            return Err(Error::Internal("the placer stopped".to_owned()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(Error::Internal("the placer stopped".to_owned())))
    }
}

async fn run(inner: Weak<Inner>, mut receiver: mpsc::UnboundedReceiver<Job>) {
    let mut working = Working::default();
    let mut pending: VecDeque<Job> = VecDeque::new();
    loop {
        if pending.is_empty() {
            match receiver.recv().await {
                Some(job) => pending.push_back(job),
                None => return,
            }
        }
        while let Ok(job) = receiver.try_recv() {
            pending.push_back(job);
        }
        let Some(inner) = inner.upgrade() else {
            for job in pending.drain(..) {
                job.answer(Err(Error::Internal("the controller is gone".to_owned())));
            }
            return;
        };
        let controller = Controller { inner };
        controller.place_batch(&mut working, &mut pending).await;
    }
}

/// The placer's copy of the nodes: the cache's, plus the allocations of its
/// own commits the cache has not shown yet, plus the batch being built.
#[derive(Debug, Default)]
struct Working {
    table: NodeTable,
    cache_table: u64,
    cache_generation: u64,
}

impl Working {
    /// Puts back the node a plan changed (its position and the node as it
    /// was), when the plan is dropped.
    fn undo(&mut self, touched: Option<(usize, Node)>) {
        if let Some((position, before)) = touched {
            self.set(position, before);
        }
    }

    /// Takes in what changed in the cache since the last look, keeping
    /// its own newer versions.
    fn sync(&mut self, cache: &Cache) {
        let state = cache.read();
        let cached = &state.nodes;
        if cached.table() != self.cache_table {
            let mut nodes = cached.nodes().to_vec();
            for node in &mut nodes {
                if let Some(mine) = self.table.get(&node.id) {
                    if mine.revision > node.revision {
                        *node = mine.clone();
                    }
                }
            }
            self.table = NodeTable::new(nodes);
        } else {
            match cached.changes().changed_after(self.cache_generation) {
                Some(positions) => {
                    for position in positions {
                        self.take(&cached.nodes()[position]);
                    }
                }
                None => {
                    for node in cached.nodes() {
                        self.take(node);
                    }
                }
            }
        }
        self.cache_table = cached.table();
        self.cache_generation = cached.generation();
    }

    /// Takes `fresh` unless its own version is as new.
    fn take(&mut self, fresh: &Node) {
        if let Some(position) = self.table.position(&fresh.id) {
            if self.table.nodes()[position].revision < fresh.revision {
                *self.table.node_mut(position) = fresh.clone();
                self.table.changed(position);
            }
        }
    }

    fn set(&mut self, position: usize, node: Node) {
        *self.table.node_mut(position) = node;
        self.table.changed(position);
    }
}

/// The transaction being built, with who wrote which key.
#[derive(Default)]
struct Batch {
    writes: Vec<Write>,
    at: HashMap<String, usize>,
    planned: Vec<Planned>,
    names: HashSet<String>,
    /// Instances placed in this batch that are in a group (for the next
    /// placements' affinity rules).
    grouped: Vec<Instance>,
    /// Instances placed in this batch that publish ports (for the next
    /// placements' host ports).
    publishing: Vec<Instance>,
    /// Each node changed in this batch, as it was before (for an undo).
    before: HashMap<usize, Node>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.planned.is_empty()
    }

    /// `fragment` with `node` (at `position` of the working view, where it
    /// was `current`) written. The precondition is the node's revision
    /// before this batch, the same for every change to it in the batch.
    fn put_node(&self, fragment: Txn, position: usize, current: &Node, node: &Node) -> Txn {
        let base = self
            .before
            .get(&position)
            .map_or(current.revision, |n| n.revision);
        fragment.put(
            Node::key_for_id(&node.id),
            encode(node),
            Precondition::Revision(base),
        )
    }

    /// Whether `write` can join: a key written already must expect the same
    /// precondition, and a put or check joins a put or check.
    fn joins(&self, write: &Write) -> bool {
        match self.at.get(write.key()) {
            None => true,
            Some(&i) => {
                let existing = &self.writes[i];
                existing.precondition() == write.precondition()
                    && !matches!(existing, Write::Delete { .. })
                    && !matches!(write, Write::Delete { .. })
                    && match (existing, write) {
                        (Write::Put { lease: a, .. }, Write::Put { lease: b, .. }) => a == b,
                        _ => true,
                    }
            }
        }
    }

    /// Adds `fragment`'s writes if all join (see [`Batch::joins`]): a
    /// later put replaces the value, the first precondition stays.
    fn merge(&mut self, fragment: Txn) -> std::result::Result<Vec<String>, Txn> {
        if !fragment.writes.iter().all(|w| self.joins(w)) {
            return Err(fragment);
        }
        let mut keys = Vec::with_capacity(fragment.writes.len());
        for write in fragment.writes {
            keys.push(write.key().to_owned());
            match self.at.get(write.key()) {
                None => {
                    self.at.insert(write.key().to_owned(), self.writes.len());
                    self.writes.push(write);
                }
                Some(&i) => {
                    if matches!(write, Write::Put { .. }) {
                        self.writes[i] = write;
                    }
                }
            }
        }
        Ok(keys)
    }
}

/// An [`Admission`](super::Admission)'s view: the batch's writes over the cache.
struct BatchView<'a> {
    /// The instance being admitted: never visited (an update's stored
    /// version is in the cache).
    admitting: &'a str,
    cache: &'a Cache,
    writes: &'a [Write],
    at: &'a HashMap<String, usize>,
    planned: &'a [Planned],
}

impl StoreView for BatchView<'_> {
    fn get(&self, key: &str) -> Option<KeyValue> {
        if let Some(&i) = self.at.get(key) {
            match &self.writes[i] {
                Write::Put {
                    key,
                    value,
                    precondition,
                    lease,
                } => {
                    let revision = match precondition {
                        Precondition::Revision(r) => *r,
                        _ => 0,
                    };
                    return Some(KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision: revision,
                        mod_revision: revision,
                        lease: *lease,
                    });
                }
                Write::Delete { .. } => return None,
                Write::Check { .. } => {}
            }
        }
        self.cache.read().raw(key).cloned()
    }

    fn for_each_instance(&self, visit: &mut dyn FnMut(&Instance)) {
        let batched: HashSet<&str> = self
            .planned
            .iter()
            .map(|p| p.instance.id.as_str())
            .collect();
        {
            let state = self.cache.read();
            for instance in state.instances() {
                if !batched.contains(instance.id.as_str()) && instance.id != self.admitting {
                    visit(instance);
                }
            }
        }
        for planned in self.planned {
            if planned.instance.id != self.admitting {
                visit(&planned.instance);
            }
        }
    }
}

/// The name of the scheduler filter that rejects a node for a host port
/// another instance publishes there (zixiao-sched's `HostPorts`).
const HOST_PORTS_FILTER: &str = "host-ports";

/// How many writes one placement adds at most besides its admissions'.
const WRITES_PER_PLACEMENT: usize = 3;

impl Controller {
    /// Places as many `pending` jobs as fit in one transaction, commits it,
    /// and answers them (or puts them back to be placed again).
    async fn place_batch(&self, working: &mut Working, pending: &mut VecDeque<Job>) {
        if let Err(e) = self.inner.cache.ready().await {
            let why = e.chain();
            for job in pending.drain(..) {
                job.answer(Err(Error::Unavailable {
                    what: "the controller's cache of the store".to_owned(),
                    source: Some(why.clone().into()),
                }));
            }
            return;
        }
        working.sync(&self.inner.cache);
        let max_writes = self.options().max_batch_writes.max(WRITES_PER_PLACEMENT);
        let mut batch = Batch::default();
        let mut deferred = VecDeque::new();
        while let Some(job) = pending.pop_front() {
            if !batch.is_empty()
                && (job.solo || batch.writes.len() + WRITES_PER_PLACEMENT > max_writes)
            {
                if job.solo {
                    deferred.push_back(job);
                    continue;
                }
                pending.push_front(job);
                break;
            }
            let solo = job.solo;
            if let Some(job) = self.plan_one(job, working, &mut batch).await {
                deferred.push_back(job);
            }
            if solo && !batch.is_empty() {
                break;
            }
        }
        while let Some(job) = deferred.pop_back() {
            pending.push_front(job);
        }
        if batch.is_empty() {
            return;
        }
        let txn = Txn {
            writes: std::mem::take(&mut batch.writes),
            ..Txn::default()
        };
        match self.inner.store.commit(txn).await {
            Ok(revision) => {
                self.wrote(revision);
                for (&position, _) in batch.before.iter() {
                    let mut node = working.table.nodes()[position].clone();
                    node.revision = revision;
                    working.set(position, node);
                }
                for planned in batch.planned {
                    let mut instance = planned.instance;
                    instance.revision = revision;
                    planned.job.answer(Ok(Placed::Stored(Box::new(instance))));
                }
            }
            Err(error) => {
                for (position, node) in batch.before.drain() {
                    working.set(position, node);
                }
                self.failed(error, batch.planned, working, pending).await;
            }
        }
    }

    /// Places one job into `batch`; answers it when it needs no commit or
    /// cannot be placed; returns it when it must wait for the next batch.
    async fn plan_one(&self, job: Job, working: &mut Working, batch: &mut Batch) -> Option<Job> {
        let now = self.now();
        let name = job.instance.name.clone();
        if batch.at.contains_key(&Instance::key_for(&job.instance.id)) {
            // The same instance twice (a converge abandoned while its
            // placement waited, and its successor): only node and admission
            // keys merge; this one learns from the next batch that the
            // instance changed.
            return Some(job);
        }
        if job.mode == Mode::Update {
            return self.plan_update(job, working, batch).await;
        }
        if job.mode == Mode::Create {
            if batch.names.contains(&name) {
                // Another create of the same name is in this batch: this
                // one learns whether it won from the next.
                return Some(job);
            }
            if self.inner.cache.read().id_of(&name).is_some() {
                job.answer(Err(Error::AlreadyExists {
                    what: format!("instance `{name}`"),
                }));
                return None;
            }
        }
        let mut instance = job.instance.clone();
        let members = self.members_for(&instance, batch);
        let aggregates = self.inner.cache.read().aggregates();
        let started = std::time::Instant::now();
        let chosen = {
            let cx = SchedulingContext::new(working.table.nodes())
                .with_changes(working.table.changes())
                .with_instances(&members)
                .with_aggregates(&aggregates);
            self.inner.scheduler.place(&instance, &cx)
        };
        let outcome = match &chosen {
            Ok(_) => PlacementOutcome::Placed,
            Err(unschedulable) => PlacementOutcome::Unschedulable(&unschedulable.rejections),
        };
        self.inner
            .telemetry
            .get()
            .placement(outcome, started.elapsed());
        let mut touched: Option<(usize, Node)> = None;
        let mut fragment = Txn::new();
        match chosen {
            Ok(node_id) => {
                let Some(position) = working.table.position(&node_id) else {
                    job.answer(Err(Error::Internal(format!(
                        "the scheduler chose node `{node_id}`, which it was not given"
                    ))));
                    return None;
                };
                let before = working.table.nodes()[position].clone();
                let wanted = instance.spec.resources();
                if !before.allocatable().fits(&before.allocated, &wanted) {
                    job.answer(Err(Error::Internal(format!(
                        "the scheduler chose node `{node_id}`, which has no room for `{name}`"
                    ))));
                    return None;
                }
                let mut node = before.clone();
                node.allocated = node.allocated.saturating_add(&wanted);
                node.updated_at = now;
                instance.compute_reserved = true;
                instance.node = Some(node.id.clone());
                instance.status = InstanceStatus::Scheduled;
                instance.updated_at = now;
                let message = format!("placed on node `{}`", node.id);
                instance.set_condition(ConditionType::Scheduled, true, "Scheduled", message, now);
                fragment = batch.put_node(fragment, position, &before, &node);
                working.set(position, node);
                touched = Some((position, before));
            }
            // A new instance whose host port another instance holds is
            // refused, not left pending: a port is named by the user, and
            // a clash is a mistake to correct (as a taken name is), not a
            // shortage that waiting mends. Nothing is stored. An existing
            // instance (being placed again after its node failed) waits
            // as for any other reason.
            Err(unschedulable)
                if job.mode == Mode::Create
                    && unschedulable
                        .rejections
                        .iter()
                        .any(|r| r.filter == HOST_PORTS_FILTER) =>
            {
                job.answer(Err(Error::FailedPrecondition(format!(
                    "instance `{name}` cannot publish its ports: {unschedulable}"
                ))));
                return None;
            }
            Err(unschedulable) => {
                let message = unschedulable.to_string();
                let recorded = instance
                    .condition(ConditionType::Scheduled)
                    .is_some_and(|c| !c.status && c.message == message);
                if job.mode == Mode::Existing
                    && recorded
                    && instance.status == InstanceStatus::Pending
                {
                    job.answer(Ok(Placed::Unchanged));
                    return None;
                }
                instance.status = InstanceStatus::Pending;
                instance.updated_at = now;
                instance.set_condition(
                    ConditionType::Scheduled,
                    false,
                    "Unschedulable",
                    message,
                    now,
                );
            }
        }
        let precondition = match job.mode {
            Mode::Create => Precondition::Absent,
            Mode::Existing | Mode::Update => Precondition::Revision(job.instance.revision),
        };
        fragment = fragment.put(
            Instance::key_for(&instance.id),
            encode(&instance),
            precondition,
        );
        if job.mode == Mode::Create {
            fragment = fragment.put(
                Self::name_key(&instance.name),
                instance.id.clone().into_bytes(),
                Precondition::Absent,
            );
        }
        if job.mode == Mode::Create {
            let admitted = self.admit(&instance, fragment, batch).await;
            fragment = match admitted {
                Ok(fragment) => fragment,
                Err(e) => {
                    working.undo(touched);
                    job.answer(Err(e));
                    return None;
                }
            };
        }
        match batch.merge(fragment) {
            Ok(keys) => {
                if let Some((position, before)) = touched {
                    batch.before.entry(position).or_insert(before);
                }
                if job.mode == Mode::Create {
                    batch.names.insert(name);
                }
                if instance.node.is_some() && !instance.spec.placement.groups.is_empty() {
                    batch.grouped.push(instance.clone());
                }
                if instance.node.is_some() && !instance.spec.publish.is_empty() {
                    batch.publishing.push(instance.clone());
                }
                batch.planned.push(Planned {
                    job,
                    instance,
                    keys,
                });
                None
            }
            Err(_) => {
                working.undo(touched);
                Some(job)
            }
        }
    }

    /// The network guards and the admissions of a create, in order.
    async fn admit(&self, instance: &Instance, fragment: Txn, batch: &Batch) -> Result<Txn> {
        let mut fragment = self.guard_networks(fragment, instance).await?;
        for admission in &self.inner.admissions {
            let view = BatchView {
                admitting: &instance.id,
                cache: &self.inner.cache,
                writes: &batch.writes,
                at: &batch.at,
                planned: &batch.planned,
            };
            fragment = admission.admit(instance, &view, fragment).await?;
        }
        fragment.validate()?;
        Ok(fragment)
    }

    /// The node the scheduler picks for `instance` among the nodes
    /// `eligible` accepts (a migration's candidates), or why none fits.
    /// Reserves nothing: the migration assigns the node once the instance
    /// left its own ([`Controller::migration_target`] checks the room again
    /// then).
    pub(super) async fn choose_node(
        &self,
        instance: &Instance,
        eligible: impl Fn(&Node) -> bool,
    ) -> Result<std::result::Result<String, crate::scheduler::Unschedulable>> {
        self.caught_up().await?;
        let (nodes, aggregates) = {
            let state = self.inner.cache.read();
            let nodes: Vec<Node> = state
                .nodes
                .nodes()
                .iter()
                .filter(|n| eligible(n))
                .cloned()
                .collect();
            (nodes, state.aggregates())
        };
        let members = self.members_for(instance, &Batch::default());
        let cx = SchedulingContext::new(&nodes)
            .with_instances(&members)
            .with_aggregates(&aggregates);
        Ok(self.inner.scheduler.place(instance, &cx))
    }

    /// The placed instances the scheduler needs to see for `instance`: its
    /// group members and the holders of the host ports it publishes.
    fn members_for(&self, instance: &Instance, batch: &Batch) -> Vec<Instance> {
        let mut members = self.group_members_for(instance, batch);
        let holders = self.port_holders_for(instance, batch);
        if !holders.is_empty() {
            // Each once: a group member may hold a port too.
            let known: HashSet<String> = members.iter().map(|m| m.id.clone()).collect();
            members.extend(holders.into_iter().filter(|h| !known.contains(&h.id)));
        }
        members
    }

    /// The placed instances (cached, or placed in this batch) other than
    /// `instance` that publish a host port conflicting with one of its own.
    fn port_holders_for(&self, instance: &Instance, batch: &Batch) -> Vec<Instance> {
        let wanted = &instance.spec.publish;
        if wanted.is_empty() {
            return Vec::new();
        }
        let clashes = |other: &Instance| {
            other.id != instance.id
                && other.node.is_some()
                && other
                    .spec
                    .publish
                    .iter()
                    .any(|p| wanted.iter().any(|w| w.conflicts_with(p)))
        };
        let batched: HashSet<&str> = batch.publishing.iter().map(|i| i.id.as_str()).collect();
        let mut holders: Vec<Instance> = self
            .inner
            .cache
            .read()
            .instances()
            .filter(|i| !batched.contains(i.id.as_str()) && clashes(i))
            .map(|i| Instance::clone(i))
            .collect();
        holders.extend(batch.publishing.iter().filter(|i| clashes(i)).cloned());
        holders
    }

    /// The admissions of an update from `before` to `after`, in order.
    async fn admit_update(
        &self,
        before: &Instance,
        after: &Instance,
        mut fragment: Txn,
        batch: &Batch,
    ) -> Result<Txn> {
        for admission in &self.inner.admissions {
            let view = BatchView {
                admitting: &after.id,
                cache: &self.inner.cache,
                writes: &batch.writes,
                at: &batch.at,
                planned: &batch.planned,
            };
            fragment = admission
                .admit_update(before, after, &view, fragment)
                .await?;
        }
        fragment.validate()?;
        Ok(fragment)
    }

    /// Plans an update ([`Mode::Update`]) into `batch`, as
    /// [`Controller::plan_one`] does a placement.
    async fn plan_update(&self, job: Job, working: &mut Working, batch: &mut Batch) -> Option<Job> {
        let Some(before) = job.before.clone() else {
            job.answer(Err(Error::Internal(
                "an update reached the placer without the stored instance".to_owned(),
            )));
            return None;
        };
        let now = self.now();
        let instance = job.instance.clone();
        let mut fragment = Txn::new();
        let mut touched: Option<(usize, Node)> = None;
        let (held, holds) = (before.held(), instance.held());
        let position = instance
            .node
            .as_deref()
            .and_then(|id| working.table.position(id));
        // A node the view no longer has (gone from the store) holds no
        // allocation to follow.
        if let (true, Some(position)) = (held != holds, position) {
            let current = working.table.nodes()[position].clone();
            let grows = holds.saturating_sub(&held);
            if !current.allocatable().fits(&current.allocated, &grows) {
                job.answer(Err(Error::ResourceExhausted(shortfall(
                    &current,
                    &instance.name,
                    &grows,
                ))));
                return None;
            }
            let mut node = current.clone();
            node.allocated = node.allocated.saturating_sub(&held).saturating_add(&holds);
            node.updated_at = now;
            fragment = batch.put_node(fragment, position, &current, &node);
            working.set(position, node);
            touched = Some((position, current));
        }
        fragment = fragment.put(
            Instance::key_for(&instance.id),
            encode(&instance),
            Precondition::Revision(before.revision),
        );
        fragment = match self.admit_update(&before, &instance, fragment, batch).await {
            Ok(fragment) => fragment,
            Err(e) => {
                working.undo(touched);
                job.answer(Err(e));
                return None;
            }
        };
        match batch.merge(fragment) {
            Ok(keys) => {
                if let Some((position, before)) = touched {
                    batch.before.entry(position).or_insert(before);
                }
                batch.planned.push(Planned {
                    job,
                    instance,
                    keys,
                });
                None
            }
            Err(_) => {
                working.undo(touched);
                Some(job)
            }
        }
    }

    /// The placed instances sharing a group with `instance`: the cached
    /// ones and the ones placed in this batch.
    fn group_members_for(&self, instance: &Instance, batch: &Batch) -> Vec<Instance> {
        let placement = &instance.spec.placement;
        let groups: BTreeSet<&str> = placement
            .groups
            .iter()
            .map(|g| g.name.as_str())
            .chain(placement.spread.as_ref().and_then(|s| s.group.as_deref()))
            .collect();
        if groups.is_empty() {
            return Vec::new();
        }
        let mut members = self
            .inner
            .cache
            .read()
            .placed_members(&groups, &instance.id);
        members.extend(
            batch
                .grouped
                .iter()
                .filter(|i| {
                    i.spec
                        .placement
                        .groups
                        .iter()
                        .any(|g| groups.contains(g.name.as_str()))
                })
                .cloned(),
        );
        members
    }

    /// Sorts out a failed batch: answers the jobs the failure is about, and
    /// puts the others back to be placed again on a fresher view.
    async fn failed(
        &self,
        error: StoreError,
        planned: Vec<Planned>,
        working: &mut Working,
        pending: &mut VecDeque<Job>,
    ) {
        let single = planned.len() == 1;
        let owner = |key: &str| planned.iter().position(|p| p.keys.iter().any(|k| k == key));
        let mut again: Vec<Job> = Vec::new();
        match &error {
            StoreError::AlreadyExists(key) if key.starts_with(INSTANCE_NAMES_PREFIX) => {
                let culprit = owner(key);
                for (i, planned) in planned.into_iter().enumerate() {
                    if Some(i) == culprit {
                        planned.job.answer(Err(Error::AlreadyExists {
                            what: format!("instance `{}`", planned.instance.name),
                        }));
                    } else {
                        again.push(planned.job);
                    }
                }
            }
            StoreError::AlreadyExists(key) => {
                // An admission expected a key absent that someone created
                // meanwhile: a lost race, like a conflict. Each create that
                // expected it waits for the cache to show the key and is
                // admitted again (see `create_instance`).
                let found = match self.inner.store.get(key).await {
                    Ok(Some(kv)) => kv.mod_revision,
                    _ => 0,
                };
                for planned in planned {
                    if planned.keys.iter().any(|k| k == key) {
                        planned.job.answer(Err(Error::Store(StoreError::Conflict {
                            key: key.clone(),
                            expected: 0,
                            found,
                        })));
                    } else {
                        again.push(planned.job);
                    }
                }
            }
            StoreError::Conflict { key, .. } | StoreError::NotFound(key) => {
                let found = match &error {
                    StoreError::Conflict { found, .. } => *found,
                    _ => 0,
                };
                if let Some(id) = key.strip_prefix(NODES_PREFIX) {
                    // Someone else changed the node: read it again.
                    let fresh = self
                        .inner
                        .store
                        .get(key)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|kv| crate::store::decode::<Node>(&kv).ok());
                    match (fresh, working.table.position(id)) {
                        (Some(fresh), _) => working.take(&fresh),
                        // Gone from the store: out of the view until the
                        // cache drops it too.
                        (None, Some(position)) => {
                            let mut gone = working.table.nodes()[position].clone();
                            gone.status = NodeStatus::Decommissioned;
                            working.set(position, gone);
                        }
                        (None, None) => {}
                    }
                    again.extend(planned.into_iter().map(|p| p.job));
                } else {
                    let existing = planned.iter().position(|p| {
                        matches!(p.job.mode, Mode::Existing | Mode::Update)
                            && *key == Instance::key_for(&p.instance.id)
                    });
                    let culprits: Vec<usize> = match existing {
                        Some(i) => vec![i],
                        None => planned
                            .iter()
                            .enumerate()
                            .filter(|(_, p)| p.keys.iter().any(|k| k == key))
                            .map(|(i, _)| i)
                            .collect(),
                    };
                    if found > 0 {
                        let _ = self.inner.cache.wait_for(found).await;
                    }
                    for (i, planned) in planned.into_iter().enumerate() {
                        if !culprits.contains(&i) {
                            again.push(planned.job);
                        } else if Some(i) == existing {
                            planned.job.answer(Ok(Placed::Changed));
                        } else {
                            planned.job.answer(Err(Error::Store(error_copy(&error))));
                        }
                    }
                }
            }
            _ if single => {
                if let Some(planned) = planned.into_iter().next() {
                    planned.job.answer(Err(Error::Store(error)));
                }
                return;
            }
            _ => {
                // Nobody can be singled out: each on its own.
                for planned in planned {
                    let mut job = planned.job;
                    job.solo = true;
                    again.push(job);
                }
            }
        }
        let limit = self.options().max_conflict_retries;
        for mut job in again.into_iter().rev() {
            job.attempts += 1;
            if job.attempts > limit {
                let what = job.instance.name.clone();
                job.answer(Err(self.too_many_conflicts("instance", &what)));
                continue;
            }
            pending.push_front(job);
        }
        tokio::task::yield_now().await;
    }
}

/// Why `node` cannot give `name` the `grows` more an update asks for:
/// each dimension short, what is free and what more is needed.
fn shortfall(node: &Node, name: &str, grows: &crate::Resources) -> String {
    let free = node.free();
    let mut short = Vec::new();
    if grows.cpus > free.cpus {
        short.push(format!(
            "{} cores free, the update of `{name}` needs {} more",
            free.cpus, grows.cpus
        ));
    }
    if grows.memory_mib > free.memory_mib {
        short.push(format!(
            "{} MiB free, the update of `{name}` needs {} MiB more",
            free.memory_mib, grows.memory_mib
        ));
    }
    if grows.disk_gib > free.disk_gib {
        short.push(format!(
            "{} GiB of disk free, the update of `{name}` needs {} GiB more",
            free.disk_gib, grows.disk_gib
        ));
    }
    format!(
        "node `{}` has {}; nothing was changed (an update does not move an instance to \
         another node)",
        node.id,
        short.join(", and ")
    )
}

/// A copy of a precondition failure, for each create it fails.
fn error_copy(error: &StoreError) -> StoreError {
    match error {
        StoreError::Conflict {
            key,
            expected,
            found,
        } => StoreError::Conflict {
            key: key.clone(),
            expected: *expected,
            found: *found,
        },
        StoreError::NotFound(key) => StoreError::NotFound(key.clone()),
        StoreError::AlreadyExists(key) => StoreError::AlreadyExists(key.clone()),
        // Every create of the group shares the unknown outcome of its commit.
        StoreError::OutcomeUnknown { what } => StoreError::OutcomeUnknown { what: what.clone() },
        other => StoreError::Unavailable {
            what: other.to_string(),
            source: None,
        },
    }
}
