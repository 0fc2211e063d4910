//! Typed change streams over the store's watch.

use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use super::{Controller, INSTANCES_PREFIX};
use crate::model::Instance;
use crate::store::{decode, Revision, StoreError, WatchEvent};
use crate::Result;

/// How an instance changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceEventKind {
    /// It was created.
    Added,
    /// It changed.
    Modified,
    /// It was deleted.
    Deleted,
}

/// One change of one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceEvent {
    /// How it changed.
    pub kind: InstanceEventKind,
    /// The store revision of the change; resume a watch after it.
    pub revision: Revision,
    /// The instance after the change (before it, for a deletion).
    pub instance: Option<Instance>,
    /// The instance's id.
    pub id: String,
}

impl Controller {
    /// Streams instance changes after store revision `after` (0: from the
    /// oldest kept history), in order, then live. Errors: `FailedPrecondition`
    /// when that history was compacted, the store's errors.
    pub async fn watch_instances(
        &self,
        after: Revision,
    ) -> Result<impl Stream<Item = Result<InstanceEvent>> + Send + 'static> {
        let stream = self.inner.store.watch(INSTANCES_PREFIX, after).await?;
        Ok(stream.map(|event| to_instance_event(event?).map_err(Into::into)))
    }

    /// The store's current revision, to start a watch from "now".
    pub async fn current_revision(&self) -> Result<Revision> {
        Ok(self.inner.store.list(INSTANCES_PREFIX).await?.revision)
    }
}

fn to_instance_event(event: WatchEvent) -> Result<InstanceEvent, StoreError> {
    let id = event
        .key()
        .strip_prefix(INSTANCES_PREFIX)
        .unwrap_or(event.key())
        .to_owned();
    Ok(match event {
        WatchEvent::Put(kv) => InstanceEvent {
            kind: if kv.create_revision == kv.mod_revision {
                InstanceEventKind::Added
            } else {
                InstanceEventKind::Modified
            },
            revision: kv.mod_revision,
            instance: Some(decode::<Instance>(&kv)?),
            id,
        },
        WatchEvent::Delete {
            revision,
            prev,
            key,
        } => InstanceEvent {
            kind: InstanceEventKind::Deleted,
            revision,
            instance: prev.and_then(|value| {
                let kv = crate::store::KeyValue {
                    key,
                    value,
                    create_revision: 0,
                    mod_revision: revision,
                    lease: None,
                };
                decode::<Instance>(&kv).ok()
            }),
            id,
        },
    })
}
