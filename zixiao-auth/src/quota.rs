//! [`ProjectQuota`]: the [`Admission`] that charges every create (and
//! every update that grows an instance) to its project's
//! [`Quota`](crate::Quota) inside the one transaction that stores the
//! instance, and the rule of what an instance costs its project
//! ([`charge`]).
//!
//! Usage is not a counter. A project's usage is what its instances' specs
//! add up to ([`charge`] each), computed from the instances that exist:
//! from the controller's cache when a create is admitted, from the
//! instance list when `project get` shows it. A delete releases its share
//! by removing the record, whichever path removes it (the delete's
//! converge, a lost node's release), and a crash between any two steps
//! leaves nothing to repair: there is no second copy of the truth to drift.
//!
//! What makes the count safe under concurrency is a serial: every admitted
//! create rewrites its project's stored record (unchanged) expecting the
//! revision it read, in its own transaction. The admission reads that
//! record first and the instances after, from a cache that only moves
//! forward, so the instances it counts are at least as new as the record;
//! a create of the same project committed since, through this server or
//! another, changed the record and fails this transaction, which is then
//! admitted again over a view that shows it. Creates of one project
//! through one server share a transaction and see each other's
//! instances in the view (see [`StoreView::for_each_instance`]).
//!
//! A refusal is checked against the project's record in the store, so a
//! quota raised a moment ago through another server counts at once. The
//! usage it refuses on is the cache's: a delete finished through another
//! server a moment ago (within the watch's delay, milliseconds) may not
//! have given its share back to this server's view yet. That errs on the
//! side of refusing; an admission never exceeds the quota.
//!
//! Choices, as a user meets them:
//! - An instance counts from its create until its record is deleted, in
//!   every state: pending, failed, stopped (its node gets the compute back
//!   on a stop; its project does not, as with OpenStack's quotas, so a
//!   stopped instance can always start again) and while it is being
//!   deleted.
//! - All four dimensions are charged: cpus, memory (MiB), instances, and
//!   disk (GiB), which the spec declares at create (`spec.disk_gib`).
//! - Lowering a quota below the usage is allowed: nothing running is
//!   touched, and creates are refused until the usage is back under it.
//! - The implicit `default` project has no stored record until its quota
//!   is first set; until then it has no limit and its creates only check
//!   that the record is still absent.
//! - An update (`instance update`) goes through the same check: what it
//!   grows (cpus, memory) is charged with the instance's current share
//!   counted as used, and it rewrites the record like a create; a shrink
//!   or a change of labels is always admitted, and no update moves an
//!   instance to another project ([`Admission::admit_update`]).
//! - The rewrite also means a project deleted meanwhile fails the create
//!   (the record's revision is gone), so no instance is stored in a
//!   project that no longer exists.
//!
//! Cost: a create in a project with a quota passes over the cached
//! instances once; one with no limits only reads and rewrites the record.
//! Creates of one project through several replicas are ordered by that
//! record, as creates on one node are by its allocation: the loser of a
//! race is admitted again, a commit later.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use zixiao_core::api::Quota;
use zixiao_core::controller::{Admission, StoreView};
use zixiao_core::store::{decode, Precondition, StoreError, StoredObject, Txn};
use zixiao_core::{Cpus, Error, Instance, Resources, Result, Store};

use crate::accounts::Project;
use crate::error::AuthError;
use crate::names::ProjectName;
use crate::permission::{in_project, project_of_labels, PROJECT_LABEL};

/// What `instance` counts against its project's quota while its record
/// exists: its spec's cpus, memory and disk, and one instance, whatever
/// its state. The one place that says so: admission and `project get`
/// both count with it.
///
/// ```
/// use zixiao_core::{Cpus, CreateInstance, Instance, InstanceSpec};
///
/// let request = CreateInstance::new("web", InstanceSpec::container("busybox").with_size(2, 256));
/// let instance = Instance::new("id-1", request, chrono::Utc::now());
/// let charged = zixiao_auth::charge(&instance);
/// assert_eq!((charged.cpus, charged.memory_mib, charged.instances), (Cpus::cores(2), 256, 1));
/// ```
pub fn charge(instance: &Instance) -> Resources {
    instance.spec.resources()
}

/// What the instances of each project hold together ([`charge`] each).
/// Instances whose project label is invalid count nowhere (only an admin
/// can reach them).
pub fn usage_by_project<'a>(
    instances: impl IntoIterator<Item = &'a Instance>,
) -> BTreeMap<ProjectName, Resources> {
    let mut usage: BTreeMap<ProjectName, Resources> = BTreeMap::new();
    for instance in instances {
        if let Ok(project) = crate::permission::project_of(instance) {
            let held = usage.entry(project).or_default();
            *held = held.saturating_add(&charge(instance));
        }
    }
    usage
}

/// The project a create's `labels` name, its error naming the label.
pub(crate) fn project_of_create(labels: &BTreeMap<String, String>) -> Result<ProjectName> {
    project_of_labels(labels)
        .map_err(|e| AuthError::invalid_name(format!("labels.{PROJECT_LABEL}"), e).into())
}

/// The refusal of a create in a project that does not exist.
pub(crate) fn no_such_project(project: &ProjectName) -> Error {
    Error::invalid(
        format!("labels.{PROJECT_LABEL}"),
        format!("project `{project}` does not exist; create it first"),
    )
}

/// The [`Admission`] that refuses a create its project's quota has no
/// room for, and serialises a project's creates across servers; see the
/// module documentation. Add it to every controller that serves users
/// (`ControllerBuilder::admission`).
#[derive(Debug, Clone)]
pub struct ProjectQuota {
    store: Arc<dyn Store>,
}

impl ProjectQuota {
    /// The quota admission over `store`, which it reads only when a
    /// project is not in the controller's cache yet (created through
    /// another server a moment ago).
    pub fn new(store: Arc<dyn Store>) -> Self {
        ProjectQuota { store }
    }
}

#[async_trait]
impl Admission for ProjectQuota {
    fn prefixes(&self) -> Vec<String> {
        vec![Project::PREFIX.to_owned()]
    }

    /// Errors: `ResourceExhausted` naming the project, the resource, the
    /// limit, the usage and the request; `InvalidArgument`
    /// (`labels.zixiao.io/project`: not a project name, or no such
    /// project); `Conflict` with the revision to wait for, when the cache
    /// has not shown the project yet; the store's errors.
    async fn admit(&self, instance: &Instance, view: &dyn StoreView, txn: Txn) -> Result<Txn> {
        let project = project_of_create(&instance.labels)?;
        let charged = Charge {
            held: Resources::default(),
            requested: charge(instance),
        };
        self.admit_charge(&project, charged, view, txn).await
    }

    /// An update is charged what it adds: each dimension that grows
    /// (cpus, memory) is checked against the quota with the instance's
    /// current share counted as used, and a shrink or a change of labels
    /// is always admitted (even over a lowered quota). An update that
    /// grows rewrites the project's record like a create, so it is
    /// ordered with the project's creates and other updates.
    ///
    /// Errors: as [`Admission::admit`], and `InvalidArgument` on
    /// `labels.zixiao.io/project` when the update would move the instance
    /// to another project (its quota and its permissions go by it).
    async fn admit_update(
        &self,
        before: &Instance,
        after: &Instance,
        view: &dyn StoreView,
        txn: Txn,
    ) -> Result<Txn> {
        let project = project_of_create(&after.labels)?;
        let field = || format!("labels.{PROJECT_LABEL}");
        match project_of_labels(&before.labels) {
            Ok(was) if was == project => {}
            was => {
                let was = was.map_or_else(|_| "?".to_owned(), |p| p.to_string());
                return Err(Error::invalid(
                    field(),
                    format!(
                        "instance `{}` is in project `{was}` and stays there: an update \
                         cannot move it to `{project}` (create a new instance there instead)",
                        after.name
                    ),
                ));
            }
        }
        let held = charge(before);
        let requested = charge(after).saturating_sub(&held);
        if requested == Resources::default() {
            return Ok(txn);
        }
        let charged = Charge { held, requested };
        self.admit_charge(&project, charged, view, txn).await
    }
}

/// What an admission charges: `requested` more, on top of `held`, which
/// the instance already holds and the view does not show.
struct Charge {
    held: Resources,
    requested: Resources,
}

impl ProjectQuota {
    /// Checks `charged` against `project`'s quota over `view` and adds the
    /// project's serial (its record, unchanged, at the revision read) to
    /// `txn`; see the module documentation. Only the dimensions it
    /// requests more of are checked.
    async fn admit_charge(
        &self,
        project: &ProjectName,
        charged: Charge,
        view: &dyn StoreView,
        txn: Txn,
    ) -> Result<Txn> {
        let key = Project::key_for(project.as_str());
        let Some(record) = view.get(&key) else {
            // The implicit `default` has no limit until it is stored, and
            // cannot be deleted. Stored a moment ago (its first quota), the
            // cache may not show it yet: the commit checks it is still
            // absent, and a create that finds it there is admitted again
            // once the cache shows it.
            if project.is_default() {
                return Ok(txn.check(key, Precondition::Absent));
            }
            // Not cached yet, or gone: the store tells which.
            return Err(match self.store.get(&key).await? {
                Some(stored) => Error::Store(StoreError::Conflict {
                    key,
                    expected: 0,
                    found: stored.mod_revision,
                }),
                None => no_such_project(project),
            });
        };
        let quota = decode::<Project>(&record)?.quota;
        let revision = record.mod_revision;
        if quota.is_unlimited() {
            return Ok(txn.put(key, record.value, Precondition::Revision(revision)));
        }
        let Charge { held, requested } = charged;
        // A dimension not asked for more of is not checked: an update that
        // grows memory passes a cpu quota lowered below the usage.
        let checked = Quota {
            cpus: quota.cpus.filter(|_| requested.cpus > Cpus::ZERO),
            memory_mib: quota.memory_mib.filter(|_| requested.memory_mib > 0),
            instances: quota.instances.filter(|_| requested.instances > 0),
            disk_gib: quota.disk_gib.filter(|_| requested.disk_gib > 0),
        };
        let mut used = held;
        view.for_each_instance(&mut |other| {
            if in_project(other, project) {
                used = used.saturating_add(&charge(other));
            }
        });
        if let Err(exceeded) = checked.admits(project.as_str(), &used, &requested) {
            // A refusal commits nothing that would catch a stale quota (one
            // raised a moment ago, not cached yet): ask the store, and admit
            // again over a view that shows the newer record.
            if let Some(stored) = self.store.get(&key).await? {
                if stored.mod_revision != revision {
                    return Err(Error::Store(StoreError::Conflict {
                        key,
                        expected: revision,
                        found: stored.mod_revision,
                    }));
                }
            }
            return Err(exceeded.into());
        }
        // The serial (module documentation): the record unchanged, at the
        // revision read, so the count above is as new as the commit.
        Ok(txn.put(key, record.value, Precondition::Revision(revision)))
    }
}
