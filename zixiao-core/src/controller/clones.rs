//! Clones on the controller: [`Controller::clone_instance`] checks a clone
//! against its source and stores it through the normal create path (new
//! id, MACs and addresses, placement by the scheduler, which keeps it on
//! the source's node), and the rule that a source with linked clones is
//! not deleted while they use its disk.

use super::Controller;
use crate::model::{
    check_clone, CloneOrigin, CreateInstance, DesiredState, Instance, InstanceType, SnapshotName,
};
use crate::{Error, InstanceFilter, Result};

impl Controller {
    /// Creates instance `name` as a clone of `source` (see
    /// [`Request::CloneInstance`](crate::api::Request::CloneInstance)).
    /// A microVM cloned without `snapshot` gets one taken for it first
    /// (`clone-…`, kept with the source's snapshots; the clone's node
    /// copies it, so deleting it later does not harm the clone).
    ///
    /// Errors: `InvalidArgument` (the name, `linked`), `AlreadyExists`,
    /// `NotFound` (source, snapshot), `FailedPrecondition` (the source is
    /// not on a node, or is being deleted), `Unsupported` (its runtime
    /// cannot clone or take snapshots), and those of
    /// [`Controller::create_instance`]. Nothing is stored on error.
    pub async fn clone_instance(
        &self,
        source: &str,
        name: &str,
        linked: bool,
        snapshot: Option<SnapshotName>,
    ) -> Result<Instance> {
        let source = self.get_instance(source).await?;
        let request = CreateInstance {
            name: name.to_owned(),
            labels: source.labels.clone(),
            spec: clone_spec(&source),
        };
        // Everything a user can get wrong, before a snapshot is taken.
        request.validate()?;
        if self.get_instance(name).await.is_ok() {
            return Err(Error::AlreadyExists {
                what: format!("instance `{name}`"),
            });
        }
        if source.desired == DesiredState::Deleted {
            return Err(Error::FailedPrecondition(format!(
                "instance `{}` is being deleted: it cannot be cloned",
                source.name
            )));
        }
        check_clone(&source, linked)?;
        let node = source.node.clone().unwrap_or_default();
        let driver = self.driver_for(&source)?;
        if source.spec.instance_type != InstanceType::Container {
            driver.require_clones()?;
        }
        let snapshot = match (snapshot, source.spec.instance_type) {
            (Some(wanted), _) => {
                let taken = driver.require_snapshots()?.list(&source).await?;
                if !taken.iter().any(|s| s.name == wanted.as_str()) {
                    return Err(Error::not_found(format!(
                        "snapshot `{wanted}` of instance `{}`",
                        source.name
                    )));
                }
                Some(wanted)
            }
            // A microVM clone resumes from memory: take it now.
            (None, InstanceType::Microvm) => {
                let id = uuid::Uuid::new_v4().simple().to_string();
                let wanted = SnapshotName::try_from(format!("clone-{}", &id[..12]))?;
                self.take_snapshot(&source, &wanted).await?;
                Some(wanted)
            }
            (None, _) => None,
        };
        let origin = CloneOrigin {
            source: source.id.clone(),
            node,
            linked,
            snapshot,
        };
        self.create_instance_from(request, None, Some(origin)).await
    }

    /// Refuses to delete instance `id` while linked clones use its disk,
    /// naming them. Errors: `FailedPrecondition`.
    // A linked clone stored between this check and the delete's write is
    // not seen; its create then fails on its node, the source being gone.
    pub(super) async fn refuse_if_linked_clones(&self, id: &str) -> Result<()> {
        let clones: Vec<String> = self
            .list_instances(&InstanceFilter::default())
            .await?
            .into_iter()
            .filter(|i| {
                i.clone_of
                    .as_ref()
                    .is_some_and(|o| o.linked && o.source == id)
            })
            .map(|i| i.name)
            .collect();
        if clones.is_empty() {
            return Ok(());
        }
        let name = self.get_instance(id).await?.name;
        Err(Error::FailedPrecondition(format!(
            "instance `{name}` backs the disks of its linked clones {}: delete them first",
            clones.join(", ")
        )))
    }
}

/// What a clone of `source` runs: the source's spec, less what only one
/// instance can hold or what the clone gets from its origin instead: the
/// node's host ports, and a snapshot directory the source was restored
/// from (the clone resumes from its own snapshot).
fn clone_spec(source: &Instance) -> crate::InstanceSpec {
    let mut spec = source.spec.clone();
    spec.publish.clear();
    spec.restore_from = None;
    spec
}
