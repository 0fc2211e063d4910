//! Typed change streams of instances and nodes over the store's watch.

use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use super::{Controller, INSTANCES_PREFIX, NODES_PREFIX};
use crate::model::{Instance, Node};
use crate::store::{decode, Revision, StoreError, StoredObject, WatchEvent};
use crate::Result;

/// How an object changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
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
    pub kind: EventKind,
    /// The store revision of the change; resume a watch after it.
    pub revision: Revision,
    /// The instance after the change (before it, for a deletion).
    pub instance: Option<Instance>,
    /// The instance's id.
    pub id: String,
}

/// One change of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeEvent {
    /// How it changed.
    pub kind: EventKind,
    /// The store revision of the change; resume a watch after it.
    pub revision: Revision,
    /// The node after the change (before it, for a deletion).
    pub node: Option<Node>,
    /// The node's id.
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
        Ok(stream.map(|event| {
            let (kind, revision, instance, id) = typed::<Instance>(event?)?;
            Ok(InstanceEvent {
                kind,
                revision,
                instance,
                id,
            })
        }))
    }

    /// Streams node changes after store revision `after`, as
    /// [`Controller::watch_instances`] does for instances.
    pub async fn watch_nodes(
        &self,
        after: Revision,
    ) -> Result<impl Stream<Item = Result<NodeEvent>> + Send + 'static> {
        let stream = self.inner.store.watch(NODES_PREFIX, after).await?;
        Ok(stream.map(|event| {
            let (kind, revision, node, id) = typed::<Node>(event?)?;
            Ok(NodeEvent {
                kind,
                revision,
                node,
                id,
            })
        }))
    }

    /// A revision to start a watch from "now": the newest the cache has
    /// applied (a watch from it may first show a few changes already past).
    pub async fn current_revision(&self) -> Result<Revision> {
        self.caught_up().await?;
        self.cached_revision().await
    }
}

/// A store event of a `T` key as (kind, revision, object, id).
fn typed<T: StoredObject>(
    event: WatchEvent,
) -> Result<(EventKind, Revision, Option<T>, String), StoreError> {
    let id = event
        .key()
        .strip_prefix(T::PREFIX)
        .unwrap_or(event.key())
        .to_owned();
    Ok(match event {
        WatchEvent::Put(kv) => {
            let kind = if kv.create_revision == kv.mod_revision {
                EventKind::Added
            } else {
                EventKind::Modified
            };
            (kind, kv.mod_revision, Some(decode::<T>(&kv)?), id)
        }
        WatchEvent::Delete {
            revision,
            prev,
            key,
        } => {
            let before = prev.and_then(|value| {
                let kv = crate::store::KeyValue {
                    key,
                    value,
                    create_revision: 0,
                    mod_revision: revision,
                    lease: None,
                };
                decode::<T>(&kv).ok()
            });
            (EventKind::Deleted, revision, before, id)
        }
    })
}
