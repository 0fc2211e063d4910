//! [`InstanceUpdate`]: what a user may change of an existing instance
//! (`zixiao instance update`): its labels, its restart policy, its CPUs
//! and memory (a container's caps too), a VM's disk size (it only grows)
//! and its snapshot schedule. Everything else of the spec is fixed at
//! create.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::validate::{
    check_cpus, check_maximums, check_memory_limit, validate_label_value, validate_labels,
    MAX_DISK_GIB,
};
use super::{
    validate_label_key, ConditionType, Cpus, Instance, InstanceSpec, InstanceType, RestartPolicy,
    SnapshotInterval, SnapshotKeep, SnapshotSchedule, MAX_MEMORY_MIB, MIN_MEMORY_MIB,
};
use crate::Error;

/// A change to an existing instance. Every field is optional; at least one
/// must change something the instance has, or the update is refused as
/// empty. A label both set and removed is refused.
///
/// ```
/// use zixiao_core::InstanceUpdate;
///
/// let grow = InstanceUpdate { memory_mib: Some(512), ..InstanceUpdate::default() };
/// assert!(grow.validate().is_ok());
/// let err = InstanceUpdate::default().validate().unwrap_err();
/// assert!(err.to_string().starts_with("invalid update: nothing to change"));
/// let err = InstanceUpdate { cpus: Some(zixiao_core::Cpus::ZERO), ..InstanceUpdate::default() }.validate().unwrap_err();
/// assert_eq!(err.to_string(), "invalid cpus: must be more than 0 (a container may ask for as little as 1m)");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceUpdate {
    /// Labels to add or replace (`--label k=v`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set_labels: BTreeMap<String, String>,
    /// Label keys to remove (`--label k-`); a key the instance lacks is no error.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub remove_labels: BTreeSet<String>,
    /// The new restart policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartPolicy>,
    /// The new CPU: a container's request, a VM's whole vCPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Cpus>,
    /// The new CPU cap of a container (at least its request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<Cpus>,
    /// The new memory in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// The new memory cap of a container in MiB (at least what it reserves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_mib: Option<u64>,
    /// A VM's new disk size in GiB (`--disk`): disks only grow, a smaller
    /// size is refused. A running VM's disk grows live, a stopped one's
    /// on the node's file; the guest sees the new capacity, and growing
    /// its partitions or filesystem is the guest's business.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_gib: Option<u64>,
    /// Whether a running instance whose runtime cannot change its size
    /// live may be restarted to take a new size. Without it such a change
    /// is refused (`FailedPrecondition`) and nothing is changed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restart_if_needed: bool,
    /// How often the snapshot schedule snapshots (`--snapshot-every`). An
    /// instance without a schedule needs `snapshot_keep` too; one with a
    /// schedule keeps the part not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_every: Option<SnapshotInterval>,
    /// How many scheduled snapshots stay (`--snapshot-keep`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_keep: Option<SnapshotKeep>,
    /// Removes the snapshot schedule (`--no-snapshot-schedule`); the
    /// snapshots it took stay.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear_snapshot_schedule: bool,
}

impl InstanceUpdate {
    /// Whether it asks for nothing (`restart_if_needed` alone changes nothing).
    pub fn is_empty(&self) -> bool {
        self.set_labels.is_empty()
            && self.remove_labels.is_empty()
            && self.restart.is_none()
            && !self.asks_resize()
            && !self.asks_snapshot_schedule()
            && !self.clear_snapshot_schedule
    }

    /// Whether it sets (part of) a snapshot schedule.
    pub fn asks_snapshot_schedule(&self) -> bool {
        self.snapshot_every.is_some() || self.snapshot_keep.is_some()
    }

    /// Whether it asks for a new CPU, memory or disk size or cap.
    pub fn asks_resize(&self) -> bool {
        self.cpus.is_some()
            || self.cpu_limit.is_some()
            || self.memory_mib.is_some()
            || self.memory_limit_mib.is_some()
            || self.disk_gib.is_some()
    }

    /// Checks the update on its own, naming the first invalid field
    /// (`cpus`, `memory_mib`, `labels.<key>`; `update` when it is empty).
    /// Errors: `InvalidArgument`.
    pub fn validate(&self) -> Result<(), Error> {
        if self.is_empty() {
            return Err(Error::invalid(
                "update",
                "nothing to change: give at least one of cpus, cpu_limit, memory_mib, \
                 memory_limit_mib, disk_gib, restart, \
                 snapshot_every, snapshot_keep, clear_snapshot_schedule, or a label to set \
                 or remove",
            ));
        }
        if let Some(cpus) = self.cpus {
            // Whether a fraction suits the instance's type is checked
            // against the instance in `apply`.
            check_cpus("", InstanceType::Container, cpus, self.cpu_limit)?;
        } else if let Some(limit) = self.cpu_limit {
            check_cpus(
                "",
                InstanceType::Container,
                Cpus::from_millis(1),
                Some(limit),
            )?;
        }
        if let Some(memory) = self.memory_mib {
            if memory < MIN_MEMORY_MIB {
                return Err(Error::invalid(
                    "memory_mib",
                    format!("{memory} MiB is less than the minimum of {MIN_MEMORY_MIB} MiB"),
                ));
            }
            if memory > MAX_MEMORY_MIB {
                return Err(Error::invalid(
                    "memory_mib",
                    format!(
                        "{memory} MiB is more than the {MAX_MEMORY_MIB} MiB one instance may have"
                    ),
                ));
            }
        }
        if let Some(disk) = self.disk_gib {
            if disk > MAX_DISK_GIB {
                return Err(Error::invalid(
                    "disk_gib",
                    format!("{disk} GiB is more than the {MAX_DISK_GIB} GiB one instance may have"),
                ));
            }
        }
        for (key, value) in &self.set_labels {
            let field = format!("labels.{key}");
            validate_label_key(&field, key)?;
            validate_label_value(&field, value)?;
            if self.remove_labels.contains(key) {
                return Err(Error::invalid(
                    field,
                    "is both set and removed; give it once",
                ));
            }
        }
        for key in &self.remove_labels {
            validate_label_key(&format!("labels.{key}"), key)?;
        }
        if self.clear_snapshot_schedule && self.asks_snapshot_schedule() {
            return Err(Error::invalid(
                "clear_snapshot_schedule",
                "a schedule cannot be both set and cleared; give one of them",
            ));
        }
        Ok(())
    }

    /// The snapshot schedule `current` has after this update.
    /// Errors: `InvalidArgument` when it sets half a schedule on an
    /// instance without one.
    fn snapshot_schedule(
        &self,
        current: Option<SnapshotSchedule>,
    ) -> Result<Option<SnapshotSchedule>, Error> {
        if self.clear_snapshot_schedule {
            return Ok(None);
        }
        match (self.snapshot_every, self.snapshot_keep, current) {
            (None, None, current) => Ok(current),
            (Some(every), Some(keep), _) => Ok(Some(SnapshotSchedule { every, keep })),
            (every, keep, Some(current)) => Ok(Some(SnapshotSchedule {
                every: every.unwrap_or(current.every),
                keep: keep.unwrap_or(current.keep),
            })),
            (None, Some(_), None) => Err(Error::invalid(
                SnapshotInterval::FIELD,
                "the instance has no snapshot schedule yet: give how often too",
            )),
            (Some(_), None, None) => Err(Error::invalid(
                SnapshotKeep::FIELD,
                "the instance has no snapshot schedule yet: give how many to keep too",
            )),
        }
    }

    /// Applies the update to `instance`'s labels and spec (nothing else of
    /// it) and says whether anything changed. Errors: `InvalidArgument`
    /// when the labels it leaves are too many.
    pub fn apply(&self, instance: &mut Instance) -> Result<bool, Error> {
        let before = (instance.labels.clone(), instance.spec.clone());
        for key in &self.remove_labels {
            instance.labels.remove(key);
        }
        for (key, value) in &self.set_labels {
            instance.labels.insert(key.clone(), value.clone());
        }
        validate_labels("labels", &instance.labels)?;
        instance.spec.snapshot_schedule =
            self.snapshot_schedule(instance.spec.snapshot_schedule)?;
        if instance.spec.snapshot_schedule.is_none() {
            // What a cleared schedule last did is no longer news.
            instance
                .conditions
                .retain(|c| c.condition_type != ConditionType::SnapshotSchedule);
        }
        if let Some(restart) = self.restart {
            instance.spec.restart = restart;
        }
        let spec = &mut instance.spec;
        if let Some(cpus) = self.cpus {
            spec.cpus = cpus;
        }
        if let Some(limit) = self.cpu_limit {
            spec.cpu_limit = Some(limit);
        }
        if let Some(memory) = self.memory_mib {
            spec.memory_mib = memory;
        }
        if let Some(limit) = self.memory_limit_mib {
            spec.memory_limit_mib = Some(limit);
        }
        // A size beyond a VM's maximum is taken by a restart, which
        // defines the domain anew: the maximum grows with it.
        if spec.max_cpus.is_some_and(|max| max < spec.cpus) {
            spec.max_cpus = Some(spec.cpus);
        }
        if spec.max_memory_mib.is_some_and(|max| max < spec.memory_mib) {
            spec.max_memory_mib = Some(spec.memory_mib);
        }
        if let Some(disk) = self.disk_gib {
            spec.disk_gib = grown_disk(spec, disk)?;
        }
        // The new sizes against each other and the instance's type: a
        // request above the cap it keeps, a fraction of a vCPU.
        check_cpus("", spec.instance_type, spec.cpus, spec.cpu_limit)?;
        check_memory_limit(
            "",
            spec.instance_type,
            spec.memory_mib,
            spec.memory_limit_mib,
        )?;
        check_maximums("", spec)?;
        Ok(before != (instance.labels.clone(), instance.spec.clone()))
    }
}

/// The disk size `spec` has once grown to `asked` GiB. Errors:
/// `InvalidArgument` on `disk_gib` (a container, a VM without a disk, a
/// smaller size), `Unsupported` (a microVM's disk).
fn grown_disk(spec: &InstanceSpec, asked: u64) -> Result<u64, Error> {
    let current = spec.disk_gib;
    match spec.instance_type {
        InstanceType::Container => Err(Error::invalid(
            "disk_gib",
            "a container has no disk of its own to grow: its image's layers are its filesystem",
        )),
        InstanceType::Microvm => Err(Error::Unsupported(
            "disk_gib: a microvm's disk cannot grow; only a vm's (its qcow2 overlay) can".into(),
        )),
        InstanceType::Vm if spec.image.is_none() && current == 0 => Err(Error::invalid(
            "disk_gib",
            "the vm has no disk to grow (it boots a kernel without one)",
        )),
        InstanceType::Vm if asked < current => Err(Error::invalid(
            "disk_gib",
            format!("disks only grow: {asked} GiB is below the current {current} GiB"),
        )),
        InstanceType::Vm => Ok(asked),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CreateInstance, InstanceSpec};

    fn instance() -> Instance {
        let mut request = CreateInstance::new("web", InstanceSpec::container("busybox"));
        request.labels.insert("app".into(), "web".into());
        Instance::new("id-1", request, chrono::Utc::now())
    }

    #[test]
    fn invalid_updates_name_the_field() {
        let cases: Vec<(&str, InstanceUpdate)> = vec![
            ("update", InstanceUpdate::default()),
            (
                "update",
                InstanceUpdate {
                    restart_if_needed: true,
                    ..InstanceUpdate::default()
                },
            ),
            (
                "cpus",
                InstanceUpdate {
                    cpus: Some(crate::Cpus::cores(0)),
                    ..InstanceUpdate::default()
                },
            ),
            (
                "cpus",
                InstanceUpdate {
                    cpus: Some(Cpus::cores(crate::model::MAX_CPUS + 1)),
                    ..InstanceUpdate::default()
                },
            ),
            (
                "memory_mib",
                InstanceUpdate {
                    memory_mib: Some(1),
                    ..InstanceUpdate::default()
                },
            ),
            (
                "memory_mib",
                InstanceUpdate {
                    memory_mib: Some(u64::MAX),
                    ..InstanceUpdate::default()
                },
            ),
            (
                "labels.bad key",
                InstanceUpdate {
                    set_labels: [("bad key".to_owned(), "v".to_owned())].into(),
                    ..InstanceUpdate::default()
                },
            ),
            (
                "labels.k",
                InstanceUpdate {
                    set_labels: [("k".to_owned(), "a\nb".to_owned())].into(),
                    ..InstanceUpdate::default()
                },
            ),
            (
                "labels.k",
                InstanceUpdate {
                    set_labels: [("k".to_owned(), "v".to_owned())].into(),
                    remove_labels: ["k".to_owned()].into(),
                    ..InstanceUpdate::default()
                },
            ),
        ];
        for (field, update) in cases {
            match update.validate() {
                Err(Error::InvalidArgument { field: got, .. }) => {
                    assert_eq!(got, field, "{update:?}")
                }
                other => panic!("{update:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn apply_sets_and_removes_labels_and_resizes() {
        let mut i = instance();
        let update = InstanceUpdate {
            set_labels: [("tier".to_owned(), "front".to_owned())].into(),
            remove_labels: ["app".to_owned(), "absent".to_owned()].into(),
            restart: Some(RestartPolicy::Always),
            cpus: Some(crate::Cpus::cores(2)),
            memory_mib: Some(256),
            ..InstanceUpdate::default()
        };
        update.validate().expect("valid");
        assert!(update.apply(&mut i).expect("apply"));
        assert_eq!(
            i.labels,
            BTreeMap::from([("tier".to_owned(), "front".to_owned())])
        );
        assert_eq!(i.spec.restart, RestartPolicy::Always);
        assert_eq!(
            (i.spec.cpus, i.spec.memory_mib),
            (crate::Cpus::cores(2), 256)
        );
        // The same again changes nothing.
        assert!(!update.apply(&mut i).expect("apply"));
    }

    fn vm(cpus: u32, memory_mib: u64) -> Instance {
        let mut spec = InstanceSpec::vm("base").with_size(cpus, memory_mib);
        spec.max_cpus = Some(Cpus::cores(2));
        spec.max_memory_mib = Some(512);
        spec.disk_gib = 2;
        Instance::new("id-2", CreateInstance::new("vm", spec), chrono::Utc::now())
    }

    #[test]
    fn a_size_beyond_a_maximum_raises_it_and_disks_only_grow() {
        let mut i = vm(1, 256);
        let beyond = InstanceUpdate {
            cpus: Some(Cpus::cores(4)),
            memory_mib: Some(1024),
            disk_gib: Some(3),
            ..InstanceUpdate::default()
        };
        assert!(beyond.apply(&mut i).expect("apply"));
        assert_eq!(
            (i.spec.max_cpus, i.spec.max_memory_mib, i.spec.disk_gib),
            (Some(Cpus::cores(4)), Some(1024), 3)
        );
        let before = i.spec.clone();
        let shrink = InstanceUpdate {
            disk_gib: Some(2),
            ..InstanceUpdate::default()
        };
        match shrink.apply(&mut i) {
            Err(Error::InvalidArgument { field, reason }) => {
                assert_eq!(field, "disk_gib");
                assert_eq!(reason, "disks only grow: 2 GiB is below the current 3 GiB");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(i.spec, before, "a refused update changed the spec");
        let mut container = instance();
        let err = shrink.apply(&mut container).unwrap_err();
        assert!(
            err.to_string().starts_with("invalid disk_gib: a container"),
            "{err}"
        );
    }

    #[test]
    fn maximums_are_for_vms_and_at_least_the_size() {
        let mut spec = InstanceSpec::container("busybox");
        spec.max_cpus = Some(Cpus::cores(2));
        let err = spec.validate().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid spec.max_cpus: only a vm"),
            "{err}"
        );
        let mut spec = InstanceSpec::vm("base").with_size(2, 256);
        spec.max_cpus = Some(Cpus::cores(1));
        let err = spec.validate().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid spec.max_cpus: 1 is less"),
            "{err}"
        );
        spec.max_cpus = Some(Cpus::cores(4));
        spec.max_memory_mib = Some(128);
        let err = spec.validate().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid spec.max_memory_mib: 128 MiB is less"),
            "{err}"
        );
        spec.max_memory_mib = Some(512);
        spec.validate().expect("valid");
    }

    #[test]
    fn schedules_are_set_changed_in_part_and_cleared() {
        let mut i = instance();
        let every = |text: &str| Some(text.parse::<SnapshotInterval>().expect("valid"));
        let keep = |n: u32| Some(SnapshotKeep::try_from(n).expect("valid"));
        // Half a schedule on an instance without one names the half missing.
        for (update, missing) in [
            (
                InstanceUpdate {
                    snapshot_every: every("1h"),
                    ..InstanceUpdate::default()
                },
                "snapshot_keep",
            ),
            (
                InstanceUpdate {
                    snapshot_keep: keep(2),
                    ..InstanceUpdate::default()
                },
                "snapshot_every",
            ),
        ] {
            update.validate().expect("valid on its own");
            match update.apply(&mut i) {
                Err(Error::InvalidArgument { field, .. }) => assert_eq!(field, missing),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            i.spec.snapshot_schedule, None,
            "a refused update changed it"
        );
        let set = InstanceUpdate {
            snapshot_every: every("1h"),
            snapshot_keep: keep(24),
            ..InstanceUpdate::default()
        };
        assert!(set.apply(&mut i).expect("set"));
        let keep_3 = InstanceUpdate {
            snapshot_keep: keep(3),
            ..InstanceUpdate::default()
        };
        assert!(keep_3.apply(&mut i).expect("change keep"));
        let schedule = i.spec.snapshot_schedule.expect("a schedule");
        assert_eq!(
            (schedule.every.to_string(), schedule.keep.get()),
            ("1h".to_owned(), 3)
        );
        let clear = InstanceUpdate {
            clear_snapshot_schedule: true,
            ..InstanceUpdate::default()
        };
        assert!(clear.apply(&mut i).expect("clear"));
        assert_eq!(i.spec.snapshot_schedule, None);
        assert!(!clear.apply(&mut i).expect("clear again"));
        let both = InstanceUpdate {
            clear_snapshot_schedule: true,
            ..set
        };
        match both.validate() {
            Err(Error::InvalidArgument { field, .. }) => {
                assert_eq!(field, "clear_snapshot_schedule")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn too_many_labels_after_the_update_are_refused() {
        let mut i = instance();
        let update = InstanceUpdate {
            set_labels: (0..64).map(|n| (format!("k{n}"), String::new())).collect(),
            ..InstanceUpdate::default()
        };
        update.validate().expect("each label is valid");
        let err = update.apply(&mut i).unwrap_err();
        assert!(err.to_string().starts_with("invalid labels:"), "{err}");
    }

    #[test]
    fn yaml_and_json_round_trip() {
        let update: InstanceUpdate =
            serde_yaml::from_str("cpus: 2\nset_labels: {a: b}\nrestart: on_failure\n")
                .expect("yaml");
        assert_eq!(update.cpus, Some(crate::Cpus::cores(2)));
        assert_eq!(update.restart, Some(RestartPolicy::OnFailure));
        let json = serde_json::to_string(&update).expect("json");
        assert_eq!(
            serde_json::from_str::<InstanceUpdate>(&json).expect("back"),
            update
        );
        assert!(serde_yaml::from_str::<InstanceUpdate>("cpu: 2\n").is_err());
    }
}
