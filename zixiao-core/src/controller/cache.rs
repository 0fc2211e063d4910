//! The controller's watch-fed cache (the Kubernetes informer pattern): the
//! nodes, the instances (with the indexes placement and the API need) and
//! the raw keys of a few extra prefixes, kept in memory from one listing
//! and the store's watch from that listing's revision.
//!
//! It is what the controller reads instead of listing and decoding the
//! store on every call. Writes never go through it: they stay
//! compare-and-swap on the revisions it holds, so a stale cache can cost a
//! write a retry, never a wrong placement or an over-commit. Each key
//! carries the revision it was last changed at, and a change is applied
//! only over an older one, so replaying a stretch of history twice (a
//! listing and a watch that overlap) changes nothing.
//!
//! One task feeds it: it lists, watches everything under [`ROOT`] from the
//! listing's revision, and applies events in order; each revision is
//! published ([`Cache::wait_for`]) once all its events are applied, so a
//! reader that waits for the revision of its own commit sees the store as
//! of that commit or later. When the watch falls behind the store's history
//! (`Compacted`) or breaks, the task lists again. It holds the store
//! weakly and stops when the cache is dropped, so it never keeps a store
//! (and an embedded store's file lock) open on its own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, Weak};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::{broadcast, watch};

use super::{INSTANCES_PREFIX, NODES_PREFIX};
use crate::model::{Aggregate, Instance, InstanceType, Node, AGGREGATES_PREFIX};
use crate::scheduler::{HostAggregate, NodeChanges};
use crate::store::{decode, KeyValue, Revision, Store, StoreError, WatchEvent};
use crate::{Error, Result};

/// Everything the cache watches lives under this prefix.
pub const ROOT: &str = "/zixiao/";

/// How long a read waits for the cache to catch up with a revision before
/// it answers from what the cache holds (the revision may have come from
/// outside [`ROOT`], say another tenant of a shared etcd).
const CATCH_UP: Duration = Duration::from_secs(5);

/// How many changes the node log keeps for schedulers before it is trimmed.
const NODE_LOG: usize = 16_384;

/// How many changes wait for a slow subscriber before it is told it lagged.
const CHANGES: usize = 65_536;

/// Numbers node tables, so a scheduler never mistakes one for another.
static NEXT_TABLE: AtomicU64 = AtomicU64::new(1);

/// A list of nodes whose positions keep their meaning while its `table`
/// number stays, with a log of which positions changed when: what a
/// scheduler that keeps an index needs ([`NodeChanges`]).
#[derive(Debug, Clone)]
pub(crate) struct NodeTable {
    table: u64,
    nodes: Vec<Node>,
    index: HashMap<String, usize>,
    generation: u64,
    since: u64,
    log: Vec<(u64, u32)>,
}

impl Default for NodeTable {
    fn default() -> Self {
        NodeTable::new(Vec::new())
    }
}

impl NodeTable {
    /// A table of `nodes`, in the order given.
    pub(crate) fn new(nodes: Vec<Node>) -> Self {
        let index = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.clone(), i))
            .collect();
        NodeTable {
            table: NEXT_TABLE.fetch_add(1, Ordering::Relaxed),
            nodes,
            index,
            generation: 0,
            since: 0,
            log: Vec::new(),
        }
    }

    /// The table's number: equal numbers mean the same node at each position.
    pub(crate) fn table(&self) -> u64 {
        self.table
    }

    /// The generation of the last change.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The nodes, in table order.
    pub(crate) fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node `id`, if known.
    pub(crate) fn get(&self, id: &str) -> Option<&Node> {
        self.index.get(id).map(|&i| &self.nodes[i])
    }

    /// The position of node `id`.
    pub(crate) fn position(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// The node at `position`, to change it; call [`NodeTable::changed`] after.
    pub(crate) fn node_mut(&mut self, position: usize) -> &mut Node {
        &mut self.nodes[position]
    }

    /// Logs that the node at `position` changed.
    pub(crate) fn changed(&mut self, position: usize) {
        self.generation += 1;
        self.log.push((self.generation, position as u32));
        if self.log.len() > 2 * NODE_LOG {
            let cut = self.log.len() - NODE_LOG;
            self.since = self.log[cut - 1].0;
            self.log.drain(..cut);
        }
    }

    /// Which positions changed when, for a [`SchedulingContext`](crate::SchedulingContext).
    pub(crate) fn changes(&self) -> NodeChanges<'_> {
        NodeChanges {
            table: self.table,
            generation: self.generation,
            since: self.since,
            log: &self.log,
        }
    }

    /// Puts `node` in, replacing an older version of it (an equal or newer
    /// revision is kept). A new node is appended, which makes a new table.
    /// Returns whether it changed anything, and the version it replaced.
    fn upsert(&mut self, node: Node) -> (bool, Option<Node>) {
        match self.index.get(&node.id) {
            Some(&i) => {
                if self.nodes[i].revision >= node.revision {
                    return (false, None);
                }
                let old = std::mem::replace(&mut self.nodes[i], node);
                self.changed(i);
                (true, Some(old))
            }
            None => {
                self.index.insert(node.id.clone(), self.nodes.len());
                self.nodes.push(node);
                self.renumber();
                (true, None)
            }
        }
    }

    /// Removes node `id` if its version is older than `revision`.
    fn remove(&mut self, id: &str, revision: Revision) -> Option<Node> {
        let &i = self.index.get(id)?;
        if self.nodes[i].revision >= revision {
            return None;
        }
        let removed = self.nodes.remove(i);
        self.index = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.clone(), i))
            .collect();
        self.renumber();
        Some(removed)
    }

    /// Positions changed meaning: a new table, with an empty log.
    fn renumber(&mut self) {
        self.table = NEXT_TABLE.fetch_add(1, Ordering::Relaxed);
        self.generation = 0;
        self.since = 0;
        self.log.clear();
    }
}

/// What changed in the cache, for its subscribers.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// An instance was stored (`Some`) or deleted (`None`).
    Instance(String, Option<Arc<Instance>>),
    /// A node was stored or deleted.
    Node,
    /// A raw key of an extra prefix was stored or deleted.
    Raw,
    /// A host aggregate was stored or deleted.
    Aggregate,
    /// The cache was listed again: look at everything.
    Relisted,
}

/// The cached objects, as of `revision`.
#[derive(Debug, Default)]
pub(crate) struct CacheState {
    revision: Revision,
    pub(crate) nodes: NodeTable,
    instances: HashMap<String, Arc<Instance>>,
    names: HashMap<String, String>,
    on_node: HashMap<String, BTreeSet<String>>,
    groups: HashMap<String, BTreeSet<String>>,
    /// The instances that are being moved live (they name a live
    /// migration target), which the operations tick looks after without
    /// scanning every instance.
    migrating: BTreeSet<String>,
    runtimes: HashMap<InstanceType, usize>,
    raw: BTreeMap<String, KeyValue>,
    /// The host aggregates, decoded from the raw keys under
    /// [`AGGREGATES_PREFIX`], in name order: what placements see.
    aggregates: Arc<Vec<HostAggregate>>,
}

impl CacheState {
    /// Instance `id`.
    pub(crate) fn instance(&self, id: &str) -> Option<&Arc<Instance>> {
        self.instances.get(id)
    }

    /// The id of the instance named `name`.
    pub(crate) fn id_of(&self, name: &str) -> Option<&str> {
        self.names.get(name).map(String::as_str)
    }

    /// Every instance, in no order.
    pub(crate) fn instances(&self) -> impl Iterator<Item = &Arc<Instance>> + '_ {
        self.instances.values()
    }

    /// The instances placed on node `node`.
    pub(crate) fn instances_on(&self, node: &str) -> Vec<Arc<Instance>> {
        self.on_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|id| self.instances.get(id).cloned())
            .collect()
    }

    /// How many instances are placed on node `node`.
    pub(crate) fn placed_on(&self, node: &str) -> usize {
        self.on_node.get(node).map_or(0, BTreeSet::len)
    }

    /// The placed instances in any of `groups`, but `except`.
    pub(crate) fn placed_members(&self, groups: &BTreeSet<&str>, except: &str) -> Vec<Instance> {
        let mut ids = BTreeSet::new();
        for group in groups {
            ids.extend(self.groups.get(*group).into_iter().flatten());
        }
        ids.into_iter()
            .filter(|id| id.as_str() != except)
            .filter_map(|id| self.instances.get(id))
            .filter(|i| i.node.is_some())
            .map(|i| Instance::clone(i))
            .collect()
    }

    /// The instances being moved live ([`Instance::live_migration_target`]).
    pub(crate) fn live_migrations(&self) -> impl Iterator<Item = &Arc<Instance>> + '_ {
        self.migrating
            .iter()
            .filter_map(|id| self.instances.get(id))
    }

    /// The host aggregates, in name order.
    pub(crate) fn aggregates(&self) -> Arc<Vec<HostAggregate>> {
        Arc::clone(&self.aggregates)
    }

    /// Decodes the aggregates again from their raw keys (an undecodable
    /// one is left out, as undecodable nodes and instances are).
    fn decode_aggregates(&mut self) {
        let aggregates = self
            .raw_under(AGGREGATES_PREFIX)
            .filter_map(|kv| decode::<Aggregate>(kv).ok())
            .map(|a| a.host_aggregate())
            .collect();
        self.aggregates = Arc::new(aggregates);
    }

    /// How many nodes offer `instance_type`.
    pub(crate) fn nodes_offering(&self, instance_type: InstanceType) -> usize {
        self.runtimes.get(&instance_type).copied().unwrap_or(0)
    }

    /// The raw key `key` of an extra prefix.
    pub(crate) fn raw(&self, key: &str) -> Option<&KeyValue> {
        self.raw.get(key)
    }

    /// The raw keys under `prefix` (one of the extra prefixes), in key order.
    pub(crate) fn raw_under<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = &'a KeyValue> + 'a {
        self.raw
            .range(prefix.to_owned()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(_, kv)| kv)
    }

    fn count_runtimes(&mut self, node: &Node, add: bool) {
        for runtime in &node.runtimes {
            let count = self.runtimes.entry(*runtime).or_default();
            *count = if add {
                *count + 1
            } else {
                count.saturating_sub(1)
            };
        }
    }

    fn put_node(&mut self, node: Node) -> bool {
        let (changed, old) = self.nodes.upsert(node.clone());
        if changed {
            if let Some(old) = &old {
                self.count_runtimes(old, false);
            }
            self.count_runtimes(&node, true);
        }
        changed
    }

    fn delete_node(&mut self, id: &str, revision: Revision) -> bool {
        match self.nodes.remove(id, revision) {
            Some(old) => {
                self.count_runtimes(&old, false);
                true
            }
            None => false,
        }
    }

    fn index_instance(&mut self, instance: &Instance, add: bool) {
        let id = &instance.id;
        if add {
            self.names.insert(instance.name.clone(), id.clone());
        } else if self.names.get(&instance.name) == Some(id) {
            self.names.remove(&instance.name);
        }
        if let Some(node) = &instance.node {
            let ids = self.on_node.entry(node.clone()).or_default();
            if add {
                ids.insert(id.clone());
            } else {
                ids.remove(id);
                if ids.is_empty() {
                    self.on_node.remove(node);
                }
            }
        }
        if instance.live_migration_target().is_some() {
            if add {
                self.migrating.insert(id.clone());
            } else {
                self.migrating.remove(id);
            }
        }
        for rule in &instance.spec.placement.groups {
            let ids = self.groups.entry(rule.name.clone()).or_default();
            if add {
                ids.insert(id.clone());
            } else {
                ids.remove(id);
                if ids.is_empty() {
                    self.groups.remove(&rule.name);
                }
            }
        }
    }

    fn put_instance(&mut self, instance: Instance) -> Option<Arc<Instance>> {
        if let Some(old) = self.instances.get(&instance.id) {
            if old.revision >= instance.revision {
                return None;
            }
            let old = old.clone();
            self.index_instance(&old, false);
        }
        self.index_instance(&instance, true);
        let instance = Arc::new(instance);
        self.instances
            .insert(instance.id.clone(), Arc::clone(&instance));
        Some(instance)
    }

    fn delete_instance(&mut self, id: &str, revision: Revision) -> bool {
        match self.instances.get(id) {
            Some(old) if old.revision < revision => {
                let old = old.clone();
                self.index_instance(&old, false);
                self.instances.remove(id);
                true
            }
            _ => false,
        }
    }

    fn put_raw(&mut self, kv: KeyValue) -> bool {
        match self.raw.get(&kv.key) {
            Some(old) if old.mod_revision >= kv.mod_revision => false,
            _ => {
                self.raw.insert(kv.key.clone(), kv);
                true
            }
        }
    }

    /// What a changed raw key means: an aggregate's is decoded again.
    fn raw_changed(&mut self, aggregate: bool) -> Change {
        if aggregate {
            self.decode_aggregates();
            Change::Aggregate
        } else {
            Change::Raw
        }
    }

    fn delete_raw(&mut self, key: &str, revision: Revision) -> bool {
        match self.raw.get(key) {
            Some(old) if old.mod_revision < revision => {
                self.raw.remove(key);
                true
            }
            _ => false,
        }
    }
}

/// Where the feeding task is: the revision applied, whether the first
/// listing is in, and the last error while it is not.
#[derive(Debug, Clone, Default)]
struct Progress {
    applied: Revision,
    ready: bool,
    error: Option<String>,
}

#[derive(Debug)]
struct Shared {
    state: RwLock<CacheState>,
    progress: watch::Sender<Progress>,
    changes: broadcast::Sender<Change>,
    raw_prefixes: Vec<String>,
}

/// The controller's cache; see the module documentation.
#[derive(Debug)]
pub(crate) struct Cache {
    shared: Arc<Shared>,
    store: Weak<dyn Store>,
    /// Held while the cache lives; the feeding task stops when it drops.
    stop: watch::Sender<()>,
    started: Mutex<bool>,
}

impl Cache {
    /// A cache of `store`, keeping the raw keys under `raw_prefixes` too.
    /// Nothing is read until the first use.
    pub(crate) fn new(store: &Arc<dyn Store>, raw_prefixes: Vec<String>) -> Self {
        let (progress, _) = watch::channel(Progress::default());
        let (changes, _) = broadcast::channel(CHANGES);
        let (stop, _) = watch::channel(());
        Cache {
            shared: Arc::new(Shared {
                state: RwLock::new(CacheState::default()),
                progress,
                changes,
                raw_prefixes,
            }),
            store: Arc::downgrade(store),
            stop,
            started: Mutex::new(false),
        }
    }

    fn start(&self) {
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        if *started {
            return;
        }
        *started = true;
        let feeder = Feeder {
            shared: Arc::downgrade(&self.shared),
            store: self.store.clone(),
            prefixes: self.shared.raw_prefixes.clone(),
        };
        tokio::spawn(feeder.run(self.stop.subscribe()));
    }

    /// Whether it keeps the raw keys under `prefix`.
    pub(crate) fn keeps(&self, prefix: &str) -> bool {
        self.shared
            .raw_prefixes
            .iter()
            .any(|p| prefix.starts_with(p.as_str()))
    }

    /// Reads the state as it is now, without waiting (it may be empty
    /// before the first listing is in).
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, CacheState> {
        self.shared
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until the first listing is in. Errors: `Unavailable` while the
    /// store cannot be listed.
    pub(crate) async fn ready(&self) -> Result<()> {
        self.start();
        let mut progress = self.shared.progress.subscribe();
        loop {
            {
                let now = progress.borrow_and_update();
                if now.ready {
                    return Ok(());
                }
                if let Some(error) = &now.error {
                    return Err(Error::Unavailable {
                        what: "the controller's cache of the store".to_owned(),
                        source: Some(error.clone().into()),
                    });
                }
            }
            if progress.changed().await.is_err() {
                return Err(Error::Internal("the cache's feeding task ended".to_owned()));
            }
        }
    }

    /// Waits until every change up to `revision` is applied (at most
    /// [`CATCH_UP`]; a revision the watch never shows, such as another
    /// tenant's in a shared etcd, then answers with what is there).
    /// Errors: those of [`Cache::ready`].
    pub(crate) async fn wait_for(&self, revision: Revision) -> Result<()> {
        self.ready().await?;
        let mut progress = self.shared.progress.subscribe();
        let caught_up = progress.wait_for(|p| p.ready && p.applied >= revision);
        let _ = tokio::time::timeout(CATCH_UP, caught_up).await;
        Ok(())
    }

    /// The revision applied so far.
    pub(crate) fn applied(&self) -> Revision {
        self.shared.progress.borrow().applied
    }

    /// The changes from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.start();
        self.shared.changes.subscribe()
    }
}

/// The task that feeds the cache.
struct Feeder {
    shared: Weak<Shared>,
    store: Weak<dyn Store>,
    prefixes: Vec<String>,
}

/// Why the feeding of one listing ended.
enum Ended {
    /// The cache or the store is gone.
    Gone,
    /// List again (the watch fell behind or broke).
    Relist,
}

impl Feeder {
    async fn run(self, mut stop: watch::Receiver<()>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let ended = tokio::select! {
                ended = self.feed_once() => ended,
                _ = stop.changed() => return,
            };
            match ended {
                Ok(Ended::Gone) => return,
                Ok(Ended::Relist) => backoff = Duration::from_millis(50),
                Err(error) => {
                    let Some(shared) = self.shared.upgrade() else {
                        return;
                    };
                    shared.progress.send_modify(|p| {
                        if !p.ready {
                            p.error = Some(error.to_string());
                        }
                    });
                    drop(shared);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Lists, then applies the watch from the listing until it must list again.
    async fn feed_once(&self) -> std::result::Result<Ended, StoreError> {
        let Some(store) = self.store.upgrade() else {
            return Ok(Ended::Gone);
        };
        let nodes = store.list(NODES_PREFIX).await?;
        let instances = store.list(INSTANCES_PREFIX).await?;
        let mut raws = Vec::new();
        for prefix in &self.prefixes {
            raws.push(store.list(prefix).await?);
        }
        let from = std::iter::once(nodes.revision)
            .chain(std::iter::once(instances.revision))
            .chain(raws.iter().map(|l| l.revision))
            .min()
            .unwrap_or(0);
        let mut state = CacheState {
            revision: from,
            ..CacheState::default()
        };
        let mut listed_nodes = Vec::with_capacity(nodes.items.len());
        for kv in &nodes.items {
            if let Ok(node) = decode::<Node>(kv) {
                listed_nodes.push(node);
            }
        }
        for node in &listed_nodes {
            state.count_runtimes(node, true);
        }
        state.nodes = NodeTable::new(listed_nodes);
        for kv in &instances.items {
            if let Ok(instance) = decode::<Instance>(kv) {
                state.put_instance(instance);
            }
        }
        for listing in raws {
            for kv in listing.items {
                state.put_raw(kv);
            }
        }
        state.decode_aggregates();
        let mut events = store.watch(ROOT, from).await?;
        drop(store);
        let Some(shared) = self.shared.upgrade() else {
            return Ok(Ended::Gone);
        };
        // Every key is now at least as new as `from`: the watch replays
        // what the later listings already hold, which changes nothing.
        *shared.state.write().unwrap_or_else(|p| p.into_inner()) = state;
        shared.progress.send_modify(|p| {
            p.applied = p.applied.max(from);
            p.ready = true;
            p.error = None;
        });
        let _ = shared.changes.send(Change::Relisted);
        drop(shared);
        loop {
            let Some(first) = events.next().await else {
                return Ok(Ended::Relist);
            };
            let Some(shared) = self.shared.upgrade() else {
                return Ok(Ended::Gone);
            };
            // Everything already waiting is applied together, and the last
            // revision published once the stream has nothing more at once:
            // a revision's events arrive together, so it is then complete.
            let mut batch = vec![first];
            let mut ended = false;
            while batch.len() < 4096 {
                match events.next().now_or_never() {
                    Some(Some(next)) => batch.push(next),
                    Some(None) => {
                        ended = true;
                        break;
                    }
                    None => break,
                }
            }
            let mut applied = None;
            let mut changes = Vec::new();
            let mut failed = None;
            {
                let decoded: Vec<_> = batch
                    .into_iter()
                    .map_while(|event| match event {
                        Ok(event) => Some(self.decode(event)),
                        Err(e) => {
                            failed = Some(e);
                            None
                        }
                    })
                    .collect();
                let mut state = shared.state.write().unwrap_or_else(|p| p.into_inner());
                for (revision, change) in decoded {
                    if let Some(change) = change.and_then(|c| c.apply(&mut state)) {
                        changes.push(change);
                    }
                    state.revision = state.revision.max(revision);
                    applied = Some(state.revision);
                }
            }
            if let Some(applied) = applied {
                shared
                    .progress
                    .send_modify(|p| p.applied = p.applied.max(applied));
            }
            for change in changes {
                let _ = shared.changes.send(change);
            }
            match failed {
                None if ended => return Ok(Ended::Relist),
                None => {}
                Some(StoreError::Compacted { .. }) => return Ok(Ended::Relist),
                Some(other) => return Err(other),
            }
        }
    }

    /// What an event means for the cache, decoded outside its lock.
    fn decode(&self, event: WatchEvent) -> (Revision, Option<Pending>) {
        let revision = event.revision();
        let pending = match event {
            WatchEvent::Put(kv) => {
                if kv.key.starts_with(NODES_PREFIX) {
                    decode::<Node>(&kv).ok().map(|n| Pending::Node(Box::new(n)))
                } else if kv.key.starts_with(INSTANCES_PREFIX) {
                    decode::<Instance>(&kv)
                        .ok()
                        .map(|i| Pending::Instance(Box::new(i)))
                } else if self.prefixes.iter().any(|p| kv.key.starts_with(p.as_str())) {
                    Some(Pending::Raw(kv))
                } else {
                    None
                }
            }
            WatchEvent::Delete { key, revision, .. } => {
                if let Some(id) = key.strip_prefix(NODES_PREFIX) {
                    Some(Pending::NodeGone(id.to_owned(), revision))
                } else if let Some(id) = key.strip_prefix(INSTANCES_PREFIX) {
                    Some(Pending::InstanceGone(id.to_owned(), revision))
                } else if self.prefixes.iter().any(|p| key.starts_with(p.as_str())) {
                    Some(Pending::RawGone(key, revision))
                } else {
                    None
                }
            }
        };
        (revision, pending)
    }
}

/// A decoded change waiting to be applied.
enum Pending {
    Node(Box<Node>),
    NodeGone(String, Revision),
    Instance(Box<Instance>),
    InstanceGone(String, Revision),
    Raw(KeyValue),
    RawGone(String, Revision),
}

impl Pending {
    fn apply(self, state: &mut CacheState) -> Option<Change> {
        match self {
            Pending::Node(node) => state.put_node(*node).then_some(Change::Node),
            Pending::NodeGone(id, revision) => {
                state.delete_node(&id, revision).then_some(Change::Node)
            }
            Pending::Instance(instance) => {
                let id = instance.id.clone();
                state
                    .put_instance(*instance)
                    .map(|i| Change::Instance(id, Some(i)))
            }
            Pending::InstanceGone(id, revision) => state
                .delete_instance(&id, revision)
                .then_some(Change::Instance(id, None)),
            Pending::Raw(kv) => {
                let aggregate = kv.key.starts_with(AGGREGATES_PREFIX);
                state.put_raw(kv).then(|| state.raw_changed(aggregate))
            }
            Pending::RawGone(key, revision) => {
                let aggregate = key.starts_with(AGGREGATES_PREFIX);
                state
                    .delete_raw(&key, revision)
                    .then(|| state.raw_changed(aggregate))
            }
        }
    }
}
