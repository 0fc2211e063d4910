//! The driver under the embedded controller, end to end: create and
//! converge, exit observation, and recovery after a controller restart.

use std::path::Path;
use std::sync::Arc;

use zixiao_core::host::HostFacts;
use zixiao_core::{Controller, CreateInstance, Instance, InstanceStatus, LocalAgent};
use zixiao_drivers::containerd::{ContainerdDriver, ContainerdOptions};
use zixiao_store::EmbeddedStore;
use zixiao_testing::wait::wait_until;

use super::{busybox, fixture, TIMEOUT};

/// A controller over the store at `dir/store.redb` with one local node
/// running the container driver (a fresh connection, as after a restart).
pub(super) async fn controller(dir: &Path, socket: &Path, namespace: &str) -> Controller {
    let options = ContainerdOptions::new(socket, dir).with_namespace(namespace);
    let driver = ContainerdDriver::connect(options).await.expect("connect");
    let agent =
        LocalAgent::new(HostFacts::probe(dir).expect("host facts")).with_driver(Arc::new(driver));
    let mut registration = agent.registration("local");
    // Our CI machines have 2 cores; the scheduler must not be what this tests.
    registration.capacity.cpus = registration.capacity.cpus.max(zixiao_core::Cpus::cores(16));
    let store = EmbeddedStore::open(&dir.join("store.redb")).expect("open store");
    let controller = Controller::builder(
        Arc::new(store),
        Arc::new(zixiao_sched::PluginScheduler::default()),
    )
    .agent("local", Arc::new(agent))
    .build();
    controller
        .register_node(registration)
        .await
        .expect("register node");
    controller
}

pub(super) async fn converged(
    controller: &Controller,
    name: &str,
    what: &str,
    want: impl Fn(&Instance) -> bool,
) -> Instance {
    let last = std::sync::Mutex::new(None);
    let found = tokio::time::timeout(
        TIMEOUT,
        wait_until(what, TIMEOUT * 2, || async {
            let instance = controller
                .converge(name)
                .await
                .expect("converge")
                .expect("instance exists");
            let done = want(&instance);
            *last.lock().expect("lock") = Some(instance.clone());
            done.then_some(instance)
        }),
    )
    .await;
    match found {
        Ok(instance) => instance,
        Err(_) => panic!(
            "timed out waiting for {what}; last seen: {:#?}",
            last.lock().expect("lock")
        ),
    }
}

#[tokio::test]
async fn controller_runs_containers_and_recovers_after_a_restart() {
    let Some(fx) = fixture("controller").await else {
        return;
    };
    let dir = fx.dir.path().join("controller");
    std::fs::create_dir_all(&dir).expect("dir");
    let first = controller(&dir, &fx.socket, &fx.namespace).await;

    // `zixiao instance create --type container --image busybox -- echo hi`
    first
        .create_instance(CreateInstance::new("hello", busybox(&["echo", "hi"])))
        .await
        .expect("create hello");
    let hello = converged(&first, "hello", "hello to complete", |i| {
        i.status == InstanceStatus::Stopped
    })
    .await;
    assert_eq!(hello.exit.as_ref().map(|e| e.code), Some(0));
    let logs = first.logs("hello").await.expect("logs");
    wait_until("hello's output", TIMEOUT, || async {
        let chunk = logs.read(0, 1024).await.expect("read");
        (chunk.data == b"hi\n").then_some(())
    })
    .await;

    first
        .create_instance(CreateInstance::new("server", busybox(&["sleep", "1000"])))
        .await
        .expect("create server");
    converged(&first, "server", "server to run", |i| {
        i.status == InstanceStatus::Running
    })
    .await;
    first
        .create_instance(CreateInstance::new(
            "short",
            busybox(&["sh", "-c", "sleep 1; exit 7"]),
        ))
        .await
        .expect("create short");
    converged(&first, "short", "short to run", |i| {
        i.status == InstanceStatus::Running
    })
    .await;
    let stats = first
        .instance_stats("server")
        .await
        .expect("stats through the controller");
    assert!(stats.pids.is_some_and(|p| p >= 1), "{stats:?}");

    // The controller goes away; `short` exits while nobody watches.
    drop(first);
    let recovered = controller(&dir, &fx.socket, &fx.namespace).await;
    let server = converged(&recovered, "server", "server to be seen running", |i| {
        i.status == InstanceStatus::Running
    })
    .await;
    assert!(server.exit.is_none());
    let short = converged(&recovered, "short", "short's exit to be recorded", |i| {
        i.status == InstanceStatus::Failed
    })
    .await;
    assert_eq!(
        short.exit.as_ref().map(|e| (e.code, e.oom_killed)),
        Some((7, false))
    );

    for name in ["hello", "server", "short"] {
        recovered.delete_instance(name).await.expect("delete");
        wait_until("the instance to be deleted", TIMEOUT, || async {
            recovered
                .converge(name)
                .await
                .ok()
                .and_then(|i| i.is_none().then_some(()))
        })
        .await;
    }
    drop(recovered);
    fx.finish().await;
}
