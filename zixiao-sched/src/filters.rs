//! The built-in [`Filter`]s: hard constraints, each rejecting a node with a
//! reason that names the requirement, so `explain` can count nodes per reason.

use std::borrow::Cow;

use zixiao_core::scheduler::{GroupPolicy, GroupScope};
use zixiao_core::NodeStatus;

use crate::cluster::{ClusterState, Prunes, ZoneId, ZoneView};
use crate::plugin::{Filter, NodeRef, Reject, Request, Unit, Verdict};

/// Only nodes whose status is `Ready`: never cordoned, in maintenance,
/// draining, decommissioned, not ready, nor onboarding (its smoke test has
/// not passed yet, or failed).
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeReady;

impl Filter for NodeReady {
    fn name(&self) -> &'static str {
        "node-status"
    }

    fn filter(&self, _: &Request<'_>, node: NodeRef<'_>, _: &ClusterState) -> Verdict {
        let reason = match node.node.status {
            NodeStatus::Ready => return Ok(()),
            NodeStatus::NotReady => "not ready",
            NodeStatus::Cordoned => "cordoned",
            NodeStatus::Maintenance => "in maintenance",
            NodeStatus::Draining => "draining",
            NodeStatus::Decommissioned => "decommissioned",
            NodeStatus::Onboarding => "onboarding",
            NodeStatus::OnboardingFailed => "onboarding failed",
        };
        Err(Reject::new(reason))
    }

    fn prunes(&self) -> Prunes {
        Prunes {
            unready: true,
            short_of_resources: false,
        }
    }
}

/// Only nodes whose agent offers a runtime for the instance's type.
#[derive(Debug, Clone, Copy, Default)]
pub struct RuntimeSupport;

impl Filter for RuntimeSupport {
    fn name(&self) -> &'static str {
        "runtime"
    }

    fn admits(&self, request: &Request<'_>, node: NodeRef<'_>, _: &ClusterState) -> bool {
        node.node
            .runtimes
            .contains(&request.instance.spec.instance_type)
    }

    fn filter(&self, request: &Request<'_>, node: NodeRef<'_>, _: &ClusterState) -> Verdict {
        let ty = request.instance.spec.instance_type;
        if node.node.runtimes.contains(&ty) {
            return Ok(());
        }
        Err(match node.node.missing_runtimes.get(&ty) {
            Some(why) => Reject::new(format!("no {ty} runtime ({why})")),
            None => Reject::new(format!("no {ty} runtime")),
        })
    }
}

/// For a clone (`clone_of`), only its source's node: the source's disk,
/// base or snapshot the clone is made from is there. A clone whose source
/// node is full waits, every other node counted under this reason.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneSource;

impl Filter for CloneSource {
    fn name(&self) -> &'static str {
        "clone-source"
    }

    fn admits(&self, request: &Request<'_>, node: NodeRef<'_>, _: &ClusterState) -> bool {
        request
            .instance
            .clone_of
            .as_ref()
            .is_none_or(|origin| origin.node == node.node.id)
    }

    fn filter(&self, request: &Request<'_>, node: NodeRef<'_>, cluster: &ClusterState) -> Verdict {
        if self.admits(request, node, cluster) {
            return Ok(());
        }
        Err(Reject::new(
            "not the node of the clone's source (a clone runs where its source's disk or snapshot is)",
        ))
    }
}

/// Only nodes in the region the instance asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Region;

impl Region {
    fn check(request: &Request<'_>, region: &str) -> Verdict {
        match &request.instance.spec.placement.region {
            Some(want) if want != region => Err(Reject::new(format!("not in region `{want}`"))),
            _ => Ok(()),
        }
    }
}

// Region and zone need no allocation-free `admits`: the zone-level check
// skips every other zone before its nodes are visited.

impl Filter for Region {
    fn name(&self) -> &'static str {
        "region"
    }

    fn filter(&self, request: &Request<'_>, node: NodeRef<'_>, _: &ClusterState) -> Verdict {
        Self::check(request, &node.node.region)
    }

    fn filter_zone(&self, request: &Request<'_>, zone: &ZoneView<'_>, _: &ClusterState) -> Verdict {
        Self::check(request, zone.region)
    }
}

/// Only nodes in the zone the instance asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Zone;

impl Zone {
    fn check(request: &Request<'_>, zone: &str) -> Verdict {
        match &request.instance.spec.placement.zone {
            Some(want) if want != zone => Err(Reject::new(format!("not in zone `{want}`"))),
            _ => Ok(()),
        }
    }
}

impl Filter for Zone {
    fn name(&self) -> &'static str {
        "zone"
    }

    fn filter(&self, request: &Request<'_>, node: NodeRef<'_>, _: &ClusterState) -> Verdict {
        Self::check(request, &node.node.zone)
    }

    fn filter_zone(&self, request: &Request<'_>, zone: &ZoneView<'_>, _: &ClusterState) -> Verdict {
        Self::check(request, zone.name)
    }
}

/// Only nodes whose labels meet every requirement of the instance's node
/// selector (equals, in, not-in, exists, does-not-exist).
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeSelector;

impl Filter for NodeSelector {
    fn name(&self) -> &'static str {
        "node-selector"
    }

    fn admits(&self, request: &Request<'_>, node: NodeRef<'_>, _: &ClusterState) -> bool {
        request
            .instance
            .spec
            .placement
            .node_selector
            .matches(&node.node.labels)
    }

    fn filter(&self, request: &Request<'_>, node: NodeRef<'_>, _: &ClusterState) -> Verdict {
        match request
            .instance
            .spec
            .placement
            .node_selector
            .first_unmatched(&node.node.labels)
        {
            Some(unmet) => Err(Reject::new(format!("labels do not match `{unmet}`"))),
            None => Ok(()),
        }
    }
}

/// Only nodes declaring every required trait and none of the forbidden ones.
#[derive(Debug, Clone, Copy, Default)]
pub struct Traits;

impl Filter for Traits {
    fn name(&self) -> &'static str {
        "traits"
    }

    fn admits(&self, request: &Request<'_>, node: NodeRef<'_>, _: &ClusterState) -> bool {
        let placement = &request.instance.spec.placement;
        let traits = &node.node.traits;
        placement.required_traits.is_subset(traits)
            && placement.forbidden_traits.is_disjoint(traits)
    }

    fn filter(&self, request: &Request<'_>, node: NodeRef<'_>, _: &ClusterState) -> Verdict {
        let placement = &request.instance.spec.placement;
        let traits = &node.node.traits;
        if let Some(missing) = placement
            .required_traits
            .iter()
            .find(|t| !traits.contains(*t))
        {
            return Err(Reject::new(format!("missing trait `{missing}`")));
        }
        if let Some(forbidden) = placement
            .forbidden_traits
            .iter()
            .find(|t| traits.contains(*t))
        {
            return Err(Reject::new(format!("has forbidden trait `{forbidden}`")));
        }
        Ok(())
    }
}

/// Only nodes in every host aggregate the instance names, and in at least
/// one aggregate whose metadata meets its aggregate selector.
#[derive(Debug, Clone, Copy, Default)]
pub struct Aggregates;

impl Filter for Aggregates {
    fn name(&self) -> &'static str {
        "aggregates"
    }

    fn admits(&self, request: &Request<'_>, node: NodeRef<'_>, cluster: &ClusterState) -> bool {
        let placement = &request.instance.spec.placement;
        if placement.aggregates.is_empty() && placement.aggregate_selector.is_empty() {
            return true;
        }
        self.filter(request, node, cluster).is_ok()
    }

    fn filter(&self, request: &Request<'_>, node: NodeRef<'_>, cluster: &ClusterState) -> Verdict {
        let placement = &request.instance.spec.placement;
        for name in &placement.aggregates {
            if !cluster.aggregates_of(node.index).any(|a| &a.name == name) {
                // The same reason for every node, so it is counted once
                // and says what to do.
                if !cluster.has_aggregate(name) {
                    return Err(Reject::new(format!("aggregate `{name}` does not exist")));
                }
                return Err(Reject::new(format!("not in aggregate `{name}`")));
            }
        }
        let selector = &placement.aggregate_selector;
        if !selector.is_empty()
            && !cluster
                .aggregates_of(node.index)
                .any(|a| selector.matches(&a.metadata))
        {
            return Err(Reject::new(format!(
                "in no aggregate matching `{selector}`"
            )));
        }
        Ok(())
    }
}

/// Hard group rules: affinity (only where members of the group already
/// are, once any is placed) and anti-affinity (never where a member is),
/// per node or per zone.
#[derive(Debug, Clone, Copy, Default)]
pub struct GroupAffinity;

impl GroupAffinity {
    fn check_zone(request: &Request<'_>, zone: ZoneId, cluster: &ClusterState) -> Verdict {
        for rule in &request.instance.spec.placement.groups {
            let name = &rule.name;
            match (rule.policy, rule.scope) {
                (GroupPolicy::AntiAffinity, GroupScope::Zone)
                    if cluster.members_in_zone(name, zone) > 0 =>
                {
                    return Err(Reject::new(format!(
                        "zone holds a member of group `{name}` (anti-affinity)"
                    )));
                }
                // Affinity by node needs a member on the node, so in its zone too.
                (GroupPolicy::Affinity, _)
                    if cluster.members_in_zone(name, zone) == 0 && cluster.has_members(name) =>
                {
                    return Err(Reject::new(match rule.scope {
                        GroupScope::Zone => {
                            format!("zone holds no member of group `{name}` (affinity)")
                        }
                        GroupScope::Node => format!("hosts no member of group `{name}` (affinity)"),
                    }));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl Filter for GroupAffinity {
    fn name(&self) -> &'static str {
        "group-affinity"
    }

    fn admits(&self, request: &Request<'_>, node: NodeRef<'_>, cluster: &ClusterState) -> bool {
        request.instance.spec.placement.groups.is_empty()
            || self.filter(request, node, cluster).is_ok()
    }

    fn filter(&self, request: &Request<'_>, node: NodeRef<'_>, cluster: &ClusterState) -> Verdict {
        Self::check_zone(request, node.zone, cluster)?;
        for rule in &request.instance.spec.placement.groups {
            if rule.scope != GroupScope::Node {
                continue;
            }
            let name = &rule.name;
            let here = cluster.members_on_node(name, node.index);
            match rule.policy {
                GroupPolicy::AntiAffinity if here > 0 => {
                    return Err(Reject::new(format!(
                        "hosts a member of group `{name}` (anti-affinity)"
                    )));
                }
                GroupPolicy::Affinity if here == 0 && cluster.has_members(name) => {
                    return Err(Reject::new(format!(
                        "hosts no member of group `{name}` (affinity)"
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn filter_zone(
        &self,
        request: &Request<'_>,
        zone: &ZoneView<'_>,
        cluster: &ClusterState,
    ) -> Verdict {
        Self::check_zone(request, zone.id, cluster)
    }
}

/// Only nodes where no other instance publishes a host port the instance
/// publishes (the same port and protocol, on the same address or on every
/// address): a published host port is a node resource, held by one
/// instance for as long as it is placed there (stopped too, so it can
/// start again), like its CPU. The reason names the holder. Processes of
/// the node that bind a port are not known here: the node checks those
/// itself when it creates and starts the instance.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostPorts;

impl Filter for HostPorts {
    fn name(&self) -> &'static str {
        "host-ports"
    }

    fn admits(&self, request: &Request<'_>, node: NodeRef<'_>, cluster: &ClusterState) -> bool {
        let instance = request.instance;
        instance.spec.publish.iter().all(|port| {
            cluster
                .port_holder(node.index, port, &instance.id)
                .is_none()
        })
    }

    fn filter(&self, request: &Request<'_>, node: NodeRef<'_>, cluster: &ClusterState) -> Verdict {
        let instance = request.instance;
        for port in &instance.spec.publish {
            if let Some(holder) = cluster.port_holder(node.index, port, &instance.id) {
                return Err(Reject::new(format!(
                    "host port {} is published by instance `{holder}`",
                    port.host_side()
                )));
            }
        }
        Ok(())
    }
}

/// With a carbon policy's hard maximum, only nodes whose carbon intensity
/// is known and at most that maximum.
#[derive(Debug, Clone, Copy, Default)]
pub struct CarbonCap;

impl Filter for CarbonCap {
    fn name(&self) -> &'static str {
        "carbon"
    }

    fn admits(&self, request: &Request<'_>, node: NodeRef<'_>, _: &ClusterState) -> bool {
        match request
            .instance
            .spec
            .placement
            .carbon
            .and_then(|c| c.max_intensity)
        {
            None => true,
            Some(max) => node.node.carbon_intensity.is_some_and(|c| c <= max),
        }
    }

    fn filter(&self, request: &Request<'_>, node: NodeRef<'_>, _: &ClusterState) -> Verdict {
        let Some(max) = request
            .instance
            .spec
            .placement
            .carbon
            .and_then(|c| c.max_intensity)
        else {
            return Ok(());
        };
        match node.node.carbon_intensity {
            None => Err(Reject::new("carbon intensity unknown")),
            Some(intensity) if intensity > max => Err(Reject::new(format!(
                "carbon intensity above {max} gCO2e/kWh"
            ))),
            Some(_) => Ok(()),
        }
    }
}

/// Only nodes with enough free cpu, memory, disk and instance slots.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResourcesFit;

impl Filter for ResourcesFit {
    fn name(&self) -> &'static str {
        "resources"
    }

    fn filter(&self, request: &Request<'_>, node: NodeRef<'_>, _: &ClusterState) -> Verdict {
        let need = request.resources;
        let free = node.node.free();
        if need.cpus > free.cpus {
            return Err(Reject::shortfall(
                "insufficient cpu",
                need.cpus.millis().into(),
                free.cpus.millis().into(),
                Unit::Millicores,
            ));
        }
        if need.memory_mib > free.memory_mib {
            return Err(Reject::shortfall(
                "insufficient memory",
                need.memory_mib,
                free.memory_mib,
                Unit::Mib,
            ));
        }
        if need.disk_gib > free.disk_gib {
            return Err(Reject::shortfall(
                "insufficient disk",
                need.disk_gib,
                free.disk_gib,
                Unit::Gib,
            ));
        }
        if need.instances > free.instances {
            return Err(Reject {
                reason: Cow::Borrowed("instance limit reached"),
                shortfall: None,
            });
        }
        Ok(())
    }

    fn prunes(&self) -> Prunes {
        Prunes {
            unready: false,
            short_of_resources: true,
        }
    }
}
