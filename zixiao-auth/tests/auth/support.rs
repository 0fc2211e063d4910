//! The harness of these tests: an embedded store in a temporary directory
//! with a manual clock, users of each role, a hand-written fake `Api`
//! that keeps instances in memory and logs every call that reaches it,
//! and a snapshot of the store to prove what a refused call changed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use zixiao_auth::{
    AuditLog, AuthStore, Credential, Identity, ProjectName, Retention, Role, UserName,
    PROJECT_LABEL,
};
use zixiao_core::api::{Api, InstancePage, Request, Response};
use zixiao_core::controller::DrainReport;
use zixiao_core::{
    CreateInstance, DesiredState, EventKind, Instance, InstanceEvent, InstanceSpec, InstanceStatus,
    Store,
};
use zixiao_store::EmbeddedStore;
use zixiao_testing::clock::ManualClock;

/// A store, a clock and the access-control objects over them.
pub(crate) struct Harness {
    pub(crate) store: Arc<EmbeddedStore>,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) accounts: AuthStore,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock::default());
        let store = Arc::new(
            EmbeddedStore::open_with_clock(&dir.path().join("state.redb"), clock.clone())
                .expect("open store"),
        );
        let accounts = AuthStore::new(store.clone(), clock.clone());
        Harness {
            store,
            clock,
            accounts,
            _dir: dir,
        }
    }

    pub(crate) fn audit_log(&self, retention: Retention) -> Arc<AuditLog> {
        Arc::new(AuditLog::new(
            self.store.clone(),
            self.clock.clone(),
            "replica-1",
            retention,
        ))
    }

    /// Every key and value in the store.
    pub(crate) async fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.store
            .list("/")
            .await
            .expect("list")
            .items
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect()
    }

    /// Creates user `name` with `role` in `projects` (creating those).
    pub(crate) async fn user(&self, name: &str, role: Role, projects: &[&str]) -> Identity {
        let mut set = BTreeSet::new();
        for project in projects {
            let project = ProjectName::try_from(*project).unwrap();
            if !project.is_default() && self.accounts.get_project(&project).await.is_err() {
                self.accounts
                    .create_project(project.clone(), Default::default())
                    .await
                    .expect("create project");
            }
            set.insert(project);
        }
        let user = self
            .accounts
            .create_user(UserName::try_from(name).unwrap(), role, set)
            .await
            .expect("create user");
        Identity::User {
            name: user.name,
            role: user.role,
            projects: user.projects,
            via: Credential::Certificate,
        }
    }
}

/// The keys a change added, removed or rewrote, between two snapshots.
pub(crate) fn changed_keys(
    before: &BTreeMap<String, Vec<u8>>,
    after: &BTreeMap<String, Vec<u8>>,
) -> BTreeSet<String> {
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .cloned()
        .collect()
}

/// Whether every changed key is an audit record or an audit ring's state.
pub(crate) fn only_audit_changed(changed: &BTreeSet<String>) -> bool {
    changed.iter().all(|k| k.starts_with("/zixiao/auth/audit/"))
}

/// An instance named `name` in `project`.
pub(crate) fn instance(name: &str, project: &str) -> Instance {
    let mut request = CreateInstance::new(name, InstanceSpec::container("busybox"));
    request
        .labels
        .insert(PROJECT_LABEL.to_owned(), project.to_owned());
    Instance::new(format!("id-{name}"), request, chrono::DateTime::UNIX_EPOCH)
}

/// A fake `Api`: instances in memory, by name; every call that reaches it
/// logged by operation and target.
#[derive(Debug, Default)]
pub(crate) struct FakeApi {
    instances: Mutex<BTreeMap<String, Instance>>,
    calls: Mutex<Vec<String>>,
}

impl FakeApi {
    pub(crate) fn with(instances: impl IntoIterator<Item = Instance>) -> Arc<Self> {
        let api = FakeApi::default();
        {
            let mut map = api.instances.lock().unwrap();
            for instance in instances {
                map.insert(instance.name.clone(), instance);
            }
        }
        Arc::new(api)
    }

    /// The calls that reached it: `operation target`.
    pub(crate) fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// The calls that reached it, but for instance lookups.
    pub(crate) fn calls_but_lookups(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| !c.starts_with("instance.get "))
            .collect()
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.instances.lock().unwrap().keys().cloned().collect()
    }

    fn find(&self, reference: &str) -> zixiao_core::Result<Instance> {
        let map = self.instances.lock().unwrap();
        map.get(reference)
            .or_else(|| map.values().find(|i| i.id == reference))
            .cloned()
            .ok_or_else(|| zixiao_core::Error::not_found(format!("instance `{reference}`")))
    }

    fn set_desired(&self, reference: &str, desired: DesiredState) -> zixiao_core::Result<Instance> {
        let found = self.find(reference)?;
        let mut map = self.instances.lock().unwrap();
        let instance = map.get_mut(&found.name).expect("found");
        instance.desired = desired;
        Ok(instance.clone())
    }
}

#[async_trait]
impl Api for FakeApi {
    async fn call(&self, request: Request) -> zixiao_core::Result<Response> {
        self.calls.lock().unwrap().push(format!(
            "{} {}",
            request.operation(),
            request.target().unwrap_or_default()
        ));
        Ok(match request {
            Request::CreateInstance { request, .. } => {
                request.validate()?;
                let mut map = self.instances.lock().unwrap();
                if map.contains_key(&request.name) {
                    return Err(zixiao_core::Error::AlreadyExists {
                        what: format!("instance `{}`", request.name),
                    });
                }
                let id = format!("id-{}", request.name);
                let instance = Instance::new(id, request, chrono::DateTime::UNIX_EPOCH);
                map.insert(instance.name.clone(), instance.clone());
                Response::Instance(instance)
            }
            Request::GetInstance { instance } => Response::Instance(self.find(&instance)?),
            Request::ListInstances { filter, .. } => Response::Instances(InstancePage {
                instances: self
                    .instances
                    .lock()
                    .unwrap()
                    .values()
                    .filter(|i| filter.matches(i))
                    .cloned()
                    .collect(),
                next_page: None,
            }),
            Request::StartInstance { instance, .. } => {
                Response::Instance(self.set_desired(&instance, DesiredState::Running)?)
            }
            Request::StopInstance { instance, .. } => {
                let mut stopped = self.set_desired(&instance, DesiredState::Stopped)?;
                stopped.status = InstanceStatus::Stopped;
                Response::Instance(stopped)
            }
            Request::DeleteInstance { instance, .. } => {
                let found = self.find(&instance)?;
                self.instances.lock().unwrap().remove(&found.name);
                Response::MaybeInstance(None)
            }
            Request::WatchInstances { .. } => {
                let events: Vec<zixiao_core::Result<InstanceEvent>> = self
                    .instances
                    .lock()
                    .unwrap()
                    .values()
                    .enumerate()
                    .map(|(i, instance)| {
                        Ok(InstanceEvent {
                            kind: EventKind::Added,
                            revision: i as u64 + 1,
                            instance: Some(instance.clone()),
                            id: instance.id.clone(),
                        })
                    })
                    .collect();
                Response::InstanceEvents(Box::pin(futures::stream::iter(events)))
            }
            Request::DrainNode { node } => Response::Drain(DrainReport {
                node,
                ..DrainReport::default()
            }),
            Request::ListNodes => Response::Nodes(Vec::new()),
            // Every operation is an image pull on node `worker-1`.
            Request::GetOperation { id } => {
                let target = zixiao_core::model::OperationTarget::image("worker-1", "busybox");
                let kind = zixiao_core::model::OperationKind::ImagePull;
                let mut operation = zixiao_core::model::Operation::new(
                    kind,
                    target,
                    None,
                    chrono::DateTime::UNIX_EPOCH,
                );
                operation.id = id;
                Response::Operation(operation)
            }
            _ => Response::Done,
        })
    }
}

/// Advances the clock by whole days.
pub(crate) fn days(n: u64) -> Duration {
    Duration::from_secs(n * 24 * 3600)
}
