//! [`ClusterState`]: the scheduler's indexed copy of the cluster. It owns
//! the nodes, groups them by (region, zone), and keeps each zone's
//! schedulable nodes in buckets by free cores, each ordered by free
//! memory. A placement visits only nodes with enough cores and memory,
//! tightest (or, spreading, loosest) first, instead of scanning every node;
//! both dimensions are exact because either may be the one that runs out.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use zixiao_core::scheduler::HostAggregate;
use zixiao_core::{Cpus, Instance, Node, NodeStatus, PublishedPort, Resources, SchedulingContext};

use crate::plugin::NodeRef;

/// A (region, zone) pair's position in a [`ClusterState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ZoneId(pub u32);

/// A zone as filters see it before any of its nodes is visited.
#[derive(Debug, Clone, Copy)]
pub struct ZoneView<'a> {
    /// Its position.
    pub id: ZoneId,
    /// The region it belongs to.
    pub region: &'a str,
    /// Its name.
    pub name: &'a str,
}

/// Which nodes the capacity index may leave out or skip, because a filter
/// of the pipeline rejects them anyway (see [`crate::Filter::prunes`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prunes {
    /// Nodes that are not `Ready`.
    pub unready: bool,
    /// Nodes with fewer free cores, less free memory than the instance
    /// needs, or no free instance slot.
    pub short_of_resources: bool,
}

impl Prunes {
    /// Both prunes, if either side has them.
    pub fn union(self, other: Prunes) -> Prunes {
        Prunes {
            unready: self.unready || other.unready,
            short_of_resources: self.short_of_resources || other.short_of_resources,
        }
    }
}

/// A zone's schedulable nodes: buckets by free cores, each holding
/// (free memory MiB, node position) in order. A range over the buckets from
/// the cores needed, and within each bucket from the memory needed, yields
/// exactly the nodes that have room on both.
type CapacityIndex = BTreeMap<Cpus, BTreeSet<(u64, u32)>>;

#[derive(Debug, Clone)]
struct Zone {
    region: String,
    name: String,
    by_free: CapacityIndex,
    /// How many nodes `by_free` holds.
    indexed: usize,
    /// Instances placed on its nodes (the sum of their allocations).
    instances: u64,
}

/// A host port published on a node, and the instance holding it.
#[derive(Debug, Clone)]
struct HeldPort {
    port: PublishedPort,
    instance_id: String,
    instance_name: String,
}

/// How many members of one group are placed where.
#[derive(Debug, Clone, Default)]
struct GroupCounts {
    per_node: HashMap<u32, u32>,
    per_zone: HashMap<u32, u32>,
}

/// The scheduler's indexed copy of the cluster: placements read it, and
/// [`ClusterState::commit`] updates it the way the controller updates the
/// store, so a batch of placements needs no re-read between them.
#[derive(Debug, Clone)]
pub struct ClusterState {
    nodes: Vec<Node>,
    zone_of: Vec<ZoneId>,
    ids: HashMap<String, u32>,
    zones: Vec<Zone>,
    /// Whether each node is in its zone's capacity index.
    indexed: Vec<bool>,
    prunes: Prunes,
    aggregates: Vec<HostAggregate>,
    /// For each node, the positions of the aggregates it is in (empty when
    /// there are no aggregates, so a cluster without them pays nothing).
    node_aggregates: Vec<Vec<u32>>,
    groups: HashMap<String, GroupCounts>,
    /// The host ports published on each node (by position), from the
    /// context's instances: a node's published host port is a resource one
    /// instance holds (see [`crate::filters::HostPorts`]).
    ports: HashMap<u32, Vec<HeldPort>>,
    /// The (table, generation) of the context it was last brought in line
    /// with, when that context said which nodes change
    /// ([`SchedulingContext::changes`]).
    synced: Option<(u64, u64)>,
}

impl ClusterState {
    /// Indexes the nodes of `cx`, leaving out of the capacity index what
    /// `prunes` allows. Takes O(n log n) for n nodes.
    pub fn new(cx: &SchedulingContext<'_>, prunes: Prunes) -> Self {
        let nodes = cx.nodes.to_vec();
        let mut zone_ids: BTreeMap<(&str, &str), ZoneId> = BTreeMap::new();
        for node in &nodes {
            zone_ids.insert((node.region.as_str(), node.zone.as_str()), ZoneId(0));
        }
        let mut zones = Vec::with_capacity(zone_ids.len());
        for (i, ((region, name), id)) in zone_ids.iter_mut().enumerate() {
            *id = ZoneId(i as u32);
            zones.push(Zone {
                region: (*region).to_owned(),
                name: (*name).to_owned(),
                by_free: BTreeMap::new(),
                indexed: 0,
                instances: 0,
            });
        }
        let zone_of: Vec<ZoneId> = nodes
            .iter()
            .map(|n| zone_ids[&(n.region.as_str(), n.zone.as_str())])
            .collect();
        let ids = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.clone(), i as u32))
            .collect();
        let mut state = ClusterState {
            indexed: vec![false; nodes.len()],
            nodes,
            zone_of,
            ids,
            zones,
            prunes,
            aggregates: Vec::new(),
            node_aggregates: Vec::new(),
            groups: HashMap::new(),
            ports: HashMap::new(),
            synced: cx.changes.map(|c| (c.table, c.generation)),
        };
        for i in 0..state.nodes.len() {
            let zone = state.zone_of[i].0 as usize;
            state.zones[zone].instances += u64::from(state.nodes[i].allocated.instances);
            state.index(i);
        }
        state.set_aggregates(cx.aggregates);
        state.count_instances(cx.instances);
        state
    }

    /// Brings the state in line with `cx` (a fresh snapshot of the same
    /// cluster) and returns whether it could do so in place. Only the nodes
    /// that changed are copied and re-indexed: O(n) cheap comparisons plus
    /// O(k log n) for k changed nodes, instead of O(n log n) and a copy of
    /// every node. A node is unchanged when its store revision (non-zero),
    /// allocation, status and capacity are the same, or, for nodes never
    /// stored (revision 0), when it is equal: so anything that edits a stored
    /// node's labels or traits must bump its revision, as the store does.
    /// When `cx` logs its changes ([`SchedulingContext::changes`]) since the
    /// context this state last saw, only the logged nodes are compared:
    /// O(k log n) in all. When nodes were added, removed or moved zone it
    /// returns false: build a new one.
    pub fn sync(&mut self, cx: &SchedulingContext<'_>) -> bool {
        if self.nodes.len() != cx.nodes.len() {
            return false;
        }
        // When the context logs its changes since the table this state last
        // saw, only the logged positions are compared: O(k) for k changes.
        let logged = match (cx.changes, self.synced) {
            (Some(changes), Some((table, generation))) if changes.table == table => changes
                .changed_after(generation)
                .map(|positions| positions.collect::<Vec<_>>()),
            _ => None,
        };
        let positions: Box<dyn Iterator<Item = usize>> = match logged {
            Some(positions) => Box::new(positions.into_iter()),
            None => Box::new(0..cx.nodes.len()),
        };
        for i in positions {
            let Some(fresh) = cx.nodes.get(i) else {
                self.synced = None;
                return false;
            };
            if !self.sync_node(i, fresh) {
                self.synced = None;
                return false;
            }
        }
        self.synced = cx.changes.map(|c| (c.table, c.generation));
        if self.aggregates.as_slice() != cx.aggregates {
            self.set_aggregates(cx.aggregates);
        }
        self.groups.clear();
        self.ports.clear();
        self.count_instances(cx.instances);
        true
    }

    /// Brings node `i` in line with `fresh`; false when it is another node
    /// or moved zone (the caller rebuilds).
    fn sync_node(&mut self, i: usize, fresh: &Node) -> bool {
        let Some(old) = self.nodes.get(i) else {
            return false;
        };
        // Store revisions are global, so an equal non-zero revision is
        // the same version of the same node: no string to compare. The
        // allocation and status are compared too: they are cheap, and
        // they are what callers simulating commits most often change
        // without bumping the revision.
        let unchanged = if fresh.revision != 0 {
            old.revision == fresh.revision
                && old.allocated == fresh.allocated
                && old.status == fresh.status
                && old.capacity == fresh.capacity
                && old.allocation_ratios == fresh.allocation_ratios
        } else {
            old == fresh
        };
        if unchanged {
            return true;
        }
        if old.id != fresh.id || old.region != fresh.region || old.zone != fresh.zone {
            // Another node set, or a node moved zone: the caller rebuilds.
            return false;
        }
        let old_instances = u64::from(old.allocated.instances);
        self.unindex(i);
        let zone = self.zone_of[i].0 as usize;
        let counted = &mut self.zones[zone].instances;
        *counted = counted.saturating_sub(old_instances) + u64::from(fresh.allocated.instances);
        self.nodes[i] = fresh.clone();
        self.index(i);
        true
    }

    fn set_aggregates(&mut self, aggregates: &[HostAggregate]) {
        self.aggregates = aggregates.to_vec();
        self.node_aggregates.clear();
        if self.aggregates.is_empty() {
            return;
        }
        self.node_aggregates = vec![Vec::new(); self.nodes.len()];
        for (a, aggregate) in self.aggregates.iter().enumerate() {
            for id in &aggregate.nodes {
                if let Some(&i) = self.ids.get(id) {
                    self.node_aggregates[i as usize].push(a as u32);
                }
            }
        }
    }

    fn count_instances(&mut self, instances: &[Instance]) {
        for instance in instances {
            if instance.spec.placement.groups.is_empty() && instance.spec.publish.is_empty() {
                continue;
            }
            if let Some(i) = instance.node.as_deref().and_then(|id| self.index_of(id)) {
                self.count_groups(i, instance, true);
                self.hold_ports(i, instance, true);
            }
        }
    }

    /// Records (or forgets) the host ports `instance` publishes on node `i`.
    fn hold_ports(&mut self, i: usize, instance: &Instance, hold: bool) {
        if instance.spec.publish.is_empty() {
            return;
        }
        let held = self.ports.entry(i as u32).or_default();
        held.retain(|h| h.instance_id != instance.id);
        if hold {
            held.extend(instance.spec.publish.iter().map(|port| HeldPort {
                port: *port,
                instance_id: instance.id.clone(),
                instance_name: instance.name.clone(),
            }));
        }
    }

    /// The name of an instance other than `instance_id` that publishes a
    /// host port on the node at `index` that `port` conflicts with.
    pub fn port_holder(
        &self,
        index: usize,
        port: &PublishedPort,
        instance_id: &str,
    ) -> Option<&str> {
        self.ports
            .get(&(index as u32))?
            .iter()
            .find(|h| h.instance_id != instance_id && h.port.conflicts_with(port))
            .map(|h| h.instance_name.as_str())
    }

    /// Adds (or removes) `instance` to the member counts of its groups on node `i`.
    fn count_groups(&mut self, i: usize, instance: &Instance, add: bool) {
        let zone = self.zone_of[i].0;
        for rule in &instance.spec.placement.groups {
            let counts = self.groups.entry(rule.name.clone()).or_default();
            for count in [
                counts.per_node.entry(i as u32).or_insert(0),
                counts.per_zone.entry(zone).or_insert(0),
            ] {
                *count = if add {
                    count.saturating_add(1)
                } else {
                    count.saturating_sub(1)
                };
            }
        }
    }

    /// How many members of `group` are placed on the node at `index`.
    pub fn members_on_node(&self, group: &str, index: usize) -> u32 {
        self.groups
            .get(group)
            .and_then(|g| g.per_node.get(&(index as u32)))
            .copied()
            .unwrap_or(0)
    }

    /// How many members of `group` are placed in zone `zone`.
    pub fn members_in_zone(&self, group: &str, zone: ZoneId) -> u32 {
        self.groups
            .get(group)
            .and_then(|g| g.per_zone.get(&zone.0))
            .copied()
            .unwrap_or(0)
    }

    /// Whether any member of `group` is placed.
    pub fn has_members(&self, group: &str) -> bool {
        self.groups
            .get(group)
            .is_some_and(|g| g.per_zone.values().any(|&c| c > 0))
    }

    /// Whether a host aggregate named `name` exists.
    pub fn has_aggregate(&self, name: &str) -> bool {
        self.aggregates.iter().any(|a| a.name == name)
    }

    /// The host aggregates the node at `index` is in.
    pub fn aggregates_of(&self, index: usize) -> impl Iterator<Item = &HostAggregate> + '_ {
        self.node_aggregates
            .get(index)
            .into_iter()
            .flatten()
            .map(|&a| &self.aggregates[a as usize])
    }

    fn index(&mut self, i: usize) {
        let node = &self.nodes[i];
        if self.prunes.unready && node.status != NodeStatus::Ready {
            return;
        }
        let free = node.free();
        // Every instance takes a slot: a node without one can take nothing.
        if self.prunes.short_of_resources && free.instances == 0 {
            return;
        }
        let zone = &mut self.zones[self.zone_of[i].0 as usize];
        zone.by_free
            .entry(free.cpus)
            .or_default()
            .insert((free.memory_mib, i as u32));
        zone.indexed += 1;
        self.indexed[i] = true;
    }

    fn unindex(&mut self, i: usize) {
        if !self.indexed[i] {
            return;
        }
        let free = self.nodes[i].free();
        let zone = &mut self.zones[self.zone_of[i].0 as usize];
        if let Some(bucket) = zone.by_free.get_mut(&free.cpus) {
            bucket.remove(&(free.memory_mib, i as u32));
            if bucket.is_empty() {
                zone.by_free.remove(&free.cpus);
            }
        }
        zone.indexed -= 1;
        self.indexed[i] = false;
    }

    /// What the index leaves out.
    pub fn prunes(&self) -> Prunes {
        self.prunes
    }

    /// Every node, in the order of the context it was built from.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node at `index` as plugins see it.
    ///
    /// # Panics
    /// When `index` is not below `self.nodes().len()`.
    pub fn node_ref(&self, index: usize) -> NodeRef<'_> {
        NodeRef {
            index,
            node: &self.nodes[index],
            zone: self.zone_of[index],
        }
    }

    /// The position of node `id`.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.ids.get(id).map(|&i| i as usize)
    }

    /// Every zone, ordered by (region, zone).
    pub fn zones(&self) -> impl Iterator<Item = ZoneView<'_>> + '_ {
        self.zones.iter().enumerate().map(|(i, z)| ZoneView {
            id: ZoneId(i as u32),
            region: &z.region,
            name: &z.name,
        })
    }

    /// How many zones there are.
    pub fn zone_count(&self) -> usize {
        self.zones.len()
    }

    /// The zone `id`.
    ///
    /// # Panics
    /// When `id` is not a zone of this state.
    pub fn zone(&self, id: ZoneId) -> ZoneView<'_> {
        let z = &self.zones[id.0 as usize];
        ZoneView {
            id,
            region: &z.region,
            name: &z.name,
        }
    }

    /// How many instances are placed in zone `id`.
    pub fn zone_instances(&self, id: ZoneId) -> u64 {
        self.zones[id.0 as usize].instances
    }

    /// How many nodes of zone `id` are in the capacity index.
    pub fn zone_indexed_nodes(&self, id: ZoneId) -> usize {
        self.zones[id.0 as usize].indexed
    }

    /// Calls `visit` with the indexed nodes of zone `id` that have at least
    /// `min_free.cpus` cores and `min_free.memory_mib` MiB free, by
    /// ascending free cores then ascending free memory (both descending
    /// when `descending`), until `visit` returns false.
    pub fn walk_zone(
        &self,
        id: ZoneId,
        min_free: &Resources,
        descending: bool,
        mut visit: impl FnMut(usize) -> bool,
    ) {
        let buckets = self.zones[id.0 as usize].by_free.range(min_free.cpus..);
        let from = (min_free.memory_mib, 0);
        if descending {
            for (_, bucket) in buckets.rev() {
                for &(_, i) in bucket.range(from..).rev() {
                    if !visit(i as usize) {
                        return;
                    }
                }
            }
        } else {
            for (_, bucket) in buckets {
                for &(_, i) in bucket.range(from..) {
                    if !visit(i as usize) {
                        return;
                    }
                }
            }
        }
    }

    /// Records `instance` as placed on the node at `index`: adds its
    /// resources to the node's allocation, as the controller does in the
    /// store, and counts it in its groups. O(log n).
    ///
    /// # Panics
    /// When `index` is not below `self.nodes().len()`.
    pub fn commit(&mut self, index: usize, instance: &Instance) {
        self.unindex(index);
        let node = &mut self.nodes[index];
        node.allocated = node.allocated.saturating_add(&instance.spec.resources());
        let zone = self.zone_of[index].0 as usize;
        self.zones[zone].instances += 1;
        self.index(index);
        self.count_groups(index, instance, true);
        self.hold_ports(index, instance, true);
    }

    /// Undoes [`ClusterState::commit`]: `instance` left the node at `index`.
    ///
    /// # Panics
    /// When `index` is not below `self.nodes().len()`.
    pub fn release(&mut self, index: usize, instance: &Instance) {
        self.unindex(index);
        let node = &mut self.nodes[index];
        node.allocated = node.allocated.saturating_sub(&instance.spec.resources());
        let zone = self.zone_of[index].0 as usize;
        self.zones[zone].instances = self.zones[zone].instances.saturating_sub(1);
        self.index(index);
        self.count_groups(index, instance, false);
        self.hold_ports(index, instance, false);
    }

    /// Changes the status of the node at `index` (a cordon, a drain), keeping
    /// the index in step.
    ///
    /// # Panics
    /// When `index` is not below `self.nodes().len()`.
    pub fn set_status(&mut self, index: usize, status: NodeStatus) {
        self.unindex(index);
        self.nodes[index].status = status;
        self.index(index);
    }
}
