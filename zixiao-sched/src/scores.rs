//! The built-in [`Score`]s: soft preferences among the nodes that passed
//! every filter, each bounded to `0..=100`.

use zixiao_core::model::held_image_names;
use zixiao_core::scheduler::{GroupPolicy, GroupScope, Strategy, ZoneSpread as ZoneSpreadSpec};
use zixiao_core::{Node, Resources};

use crate::cluster::{ClusterState, ZoneId};
use crate::plugin::{NodeRef, Request, Score, MAX_SCORE};

/// The node's mean utilisation of cpu and memory (and disk, when the
/// instance asks for disk) after taking `need`, in percent. Disk counts
/// only when asked for: otherwise the node's disk use, which this
/// placement does not change, would sway the choice.
fn utilisation_after(node: &Node, need: &Resources) -> u32 {
    let after = node.allocated.saturating_add(need);
    let allocatable = node.allocatable();
    let mut sum = 0u64;
    let mut parts = 0u64;
    let disk = if need.disk_gib > 0 {
        (after.disk_gib, node.capacity.disk_gib)
    } else {
        (0, 0)
    };
    for (used, capacity) in [
        (
            u64::from(after.cpus.millis()),
            u64::from(allocatable.cpus.millis()),
        ),
        (after.memory_mib, allocatable.memory_mib),
        disk,
    ] {
        if let Some(share) = (used.min(capacity) * u64::from(MAX_SCORE)).checked_div(capacity) {
            sum += share;
            parts += 1;
        }
    }
    if parts == 0 {
        return 0;
    }
    (sum / parts) as u32
}

/// Bin-packing (most-allocated): the fuller the node after placement, the
/// higher the score, so load concentrates and whole nodes stay free for
/// large instances. Applies under [`Strategy::BinPack`].
#[derive(Debug, Clone, Copy, Default)]
pub struct BinPack;

impl Score for BinPack {
    fn name(&self) -> &'static str {
        "bin-pack"
    }

    fn applies(&self, request: &Request<'_>, _: &ClusterState) -> bool {
        request.strategy == Strategy::BinPack
    }

    fn follows_capacity_order(&self) -> bool {
        true
    }

    fn score(&self, request: &Request<'_>, node: NodeRef<'_>, _: &ClusterState) -> u32 {
        utilisation_after(node.node, &request.resources)
    }
}

/// Balanced allocation (like Kubernetes' `NodeResourcesBalancedAllocation`):
/// the closer a node's cpu and memory utilisation after placement, the
/// higher the score (100 minus the gap in percentage points). Most-allocated
/// alone fills whichever dimension an instance is heavy in and strands the
/// other; this keeps what is left usable. Applies always.
#[derive(Debug, Clone, Copy, Default)]
pub struct Balanced;

impl Score for Balanced {
    fn name(&self) -> &'static str {
        "balanced"
    }

    /// Not strictly: the index orders by free cores then memory, not by
    /// their balance. The fill benchmark measures the difference a short
    /// sample makes (none beyond noise; see `DESIGN.md`).
    fn follows_capacity_order(&self) -> bool {
        true
    }

    fn score(&self, request: &Request<'_>, node: NodeRef<'_>, _: &ClusterState) -> u32 {
        let node = node.node;
        let after = node.allocated.saturating_add(&request.resources);
        let share = |used: u64, capacity: u64| {
            (used.min(capacity) * u64::from(MAX_SCORE))
                .checked_div(capacity)
                .unwrap_or(0)
        };
        let allocatable = node.allocatable();
        let cpu = share(after.cpus.millis().into(), allocatable.cpus.millis().into());
        let memory = share(after.memory_mib, allocatable.memory_mib);
        MAX_SCORE - cpu.abs_diff(memory) as u32
    }
}

/// Spreading (least-allocated): the emptier the node after placement, the
/// higher the score. Applies under [`Strategy::Spread`].
#[derive(Debug, Clone, Copy, Default)]
pub struct LeastAllocated;

impl Score for LeastAllocated {
    fn name(&self) -> &'static str {
        "least-allocated"
    }

    fn applies(&self, request: &Request<'_>, _: &ClusterState) -> bool {
        request.strategy == Strategy::Spread
    }

    fn follows_capacity_order(&self) -> bool {
        true
    }

    fn score(&self, request: &Request<'_>, node: NodeRef<'_>, _: &ClusterState) -> u32 {
        MAX_SCORE - utilisation_after(node.node, &request.resources)
    }
}

/// Points per instance a zone is behind (or ahead of) its target share.
const POINTS_PER_INSTANCE: f64 = 25.0;

/// Zone spread towards target shares (like Nomad's `spread`): a zone on
/// its target scores 50, each instance it is behind adds 25 points and
/// each instance ahead takes 25 away (bounded to `0..=100`); a zone without
/// a target when targets are given scores 0. Counts the members of the
/// spread's group, or all instances. Without targets every eligible zone
/// (schedulable nodes, in the instance's region and zone if it names them)
/// has an even share. Applies when the instance asks for a spread.
#[derive(Debug, Clone, Copy, Default)]
pub struct ZoneSpread;

impl ZoneSpread {
    fn count(spread: &ZoneSpreadSpec, zone: ZoneId, cluster: &ClusterState) -> u64 {
        match &spread.group {
            Some(group) => cluster.members_in_zone(group, zone).into(),
            None => cluster.zone_instances(zone),
        }
    }

    /// The score of every zone (indexed by [`ZoneId`]) for `request`.
    fn zone_scores(request: &Request<'_>, cluster: &ClusterState) -> Vec<u32> {
        let placement = &request.instance.spec.placement;
        let Some(spread) = &placement.spread else {
            return vec![0; cluster.zone_count()];
        };
        let in_scope = |zone: ZoneId| {
            let z = cluster.zone(zone);
            placement.region.as_ref().is_none_or(|r| r == z.region)
                && placement.zone.as_ref().is_none_or(|n| n == z.name)
        };
        // Without targets, zones that can take instances share evenly.
        let even = spread.targets.is_empty();
        let counted =
            |zone: ZoneId| in_scope(zone) && (!even || cluster.zone_indexed_nodes(zone) > 0);
        let sharing = cluster.zones().filter(|z| counted(z.id)).count().max(1);
        // Shares are of everything counted in scope, listed zones or not.
        let total: u64 = cluster
            .zones()
            .filter(|z| counted(z.id))
            .map(|z| Self::count(spread, z.id, cluster))
            .sum();
        cluster
            .zones()
            .map(|z| {
                let share = if even {
                    1.0 / sharing as f64
                } else {
                    match spread.targets.get(z.name) {
                        Some(&percent) => f64::from(percent) / 100.0,
                        None => return 0,
                    }
                };
                // Where this zone should be once this instance is placed.
                let desired = (total + 1) as f64 * share;
                let behind = desired - Self::count(spread, z.id, cluster) as f64;
                (50.0 + POINTS_PER_INSTANCE * behind).clamp(0.0, f64::from(MAX_SCORE)) as u32
            })
            .collect()
    }
}

impl Score for ZoneSpread {
    fn name(&self) -> &'static str {
        "zone-spread"
    }

    fn applies(&self, request: &Request<'_>, _: &ClusterState) -> bool {
        request.instance.spec.placement.spread.is_some()
    }

    /// The same for every node of a zone.
    fn follows_capacity_order(&self) -> bool {
        true
    }

    fn score(&self, request: &Request<'_>, node: NodeRef<'_>, cluster: &ClusterState) -> u32 {
        Self::zone_scores(request, cluster)[node.zone.0 as usize]
    }

    fn score_all(
        &self,
        request: &Request<'_>,
        cluster: &ClusterState,
        candidates: &[usize],
        scores: &mut [u32],
    ) {
        let zones = Self::zone_scores(request, cluster);
        for (score, &i) in scores.iter_mut().zip(candidates) {
            *score = zones[cluster.node_ref(i).zone.0 as usize];
        }
    }
}

/// Soft group rules: soft affinity prefers nodes (or zones) holding more
/// members of the group, soft anti-affinity those holding fewer. Each rule
/// scores 0..=100 and the node gets their mean. Applies when the instance
/// has a soft rule.
#[derive(Debug, Clone, Copy, Default)]
pub struct SoftAffinity;

impl Score for SoftAffinity {
    fn name(&self) -> &'static str {
        "soft-affinity"
    }

    fn applies(&self, request: &Request<'_>, _: &ClusterState) -> bool {
        request
            .instance
            .spec
            .placement
            .groups
            .iter()
            .any(|g| !g.policy.is_hard())
    }

    fn score(&self, request: &Request<'_>, node: NodeRef<'_>, cluster: &ClusterState) -> u32 {
        let mut sum = 0u32;
        let mut rules = 0u32;
        for rule in &request.instance.spec.placement.groups {
            let members = match rule.scope {
                GroupScope::Node => cluster.members_on_node(&rule.name, node.index),
                GroupScope::Zone => cluster.members_in_zone(&rule.name, node.zone),
            };
            let score = match rule.policy {
                // Each member already there is worth a quarter, up to all.
                GroupPolicy::SoftAffinity => (members.saturating_mul(25)).min(MAX_SCORE),
                GroupPolicy::SoftAntiAffinity => MAX_SCORE / (1 + members),
                GroupPolicy::Affinity | GroupPolicy::AntiAffinity => continue,
            };
            sum += score;
            rules += 1;
        }
        sum.checked_div(rules).unwrap_or(0)
    }
}

/// Carbon-aware: the lower a node's carbon intensity, the higher its score,
/// relative to the other candidates (the lowest 100, the highest 0; unknown
/// 0). Applies when the instance has a carbon policy.
#[derive(Debug, Clone, Copy, Default)]
pub struct CarbonAware;

impl Score for CarbonAware {
    fn name(&self) -> &'static str {
        "carbon-aware"
    }

    fn applies(&self, request: &Request<'_>, _: &ClusterState) -> bool {
        request.instance.spec.placement.carbon.is_some()
    }

    /// The raw intensity (`u32::MAX` when unknown); [`CarbonAware::normalize`] inverts it.
    fn score(&self, _: &Request<'_>, node: NodeRef<'_>, _: &ClusterState) -> u32 {
        node.node.carbon_intensity.unwrap_or(u32::MAX)
    }

    fn normalize(&self, _: &Request<'_>, scores: &mut [u32]) {
        let known = scores.iter().copied().filter(|&s| s != u32::MAX);
        let (Some(min), Some(max)) = (known.clone().min(), known.max()) else {
            scores.fill(0);
            return;
        };
        for s in scores.iter_mut() {
            *s = if *s == u32::MAX {
                0
            } else if max == min {
                MAX_SCORE
            } else {
                (u64::from(max - *s) * u64::from(MAX_SCORE) / u64::from(max - min)) as u32
            };
        }
    }
}

/// Image locality (like Kubernetes' `ImageLocality`): the share of the
/// instance's images (a container's image; a VM's or microVM's disk,
/// kernel and initrd from the node's store) that the node holds already
/// ([`Node::images`]), so its create starts without a pull and a cluster
/// does not copy one image to every node. Applies when the instance names
/// an image a node can hold (host paths are none) and some node holds
/// one of them: otherwise every node scores 0, and leaving it out keeps
/// the short per-zone sample of capacity-ordered scores.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImageLocality;

impl ImageLocality {
    fn held(wanted: &[Vec<String>], node: &Node) -> u32 {
        let held = wanted
            .iter()
            .filter(|names| names.iter().any(|n| node.images.contains(n)))
            .count();
        (held * MAX_SCORE as usize)
            .checked_div(wanted.len())
            .map_or(0, |s| s as u32)
    }
}

impl Score for ImageLocality {
    fn name(&self) -> &'static str {
        "image-locality"
    }

    fn applies(&self, request: &Request<'_>, cluster: &ClusterState) -> bool {
        let wanted = held_image_names(&request.instance.spec);
        !wanted.is_empty()
            && cluster
                .nodes()
                .iter()
                .any(|node| !node.images.is_empty() && Self::held(&wanted, node) > 0)
    }

    fn score_all(
        &self,
        request: &Request<'_>,
        cluster: &ClusterState,
        candidates: &[usize],
        scores: &mut [u32],
    ) {
        let wanted = held_image_names(&request.instance.spec);
        for (score, &i) in scores.iter_mut().zip(candidates) {
            *score = Self::held(&wanted, cluster.node_ref(i).node);
        }
    }

    fn score(&self, request: &Request<'_>, node: NodeRef<'_>, _: &ClusterState) -> u32 {
        Self::held(&held_image_names(&request.instance.spec), node.node)
    }
}
