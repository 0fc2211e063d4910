//! Test support (feature `testing`), never in a published build: the
//! embedded deployment whose one node, `local`, runs every instance type on
//! zixiao-testing's fake runtime, so the bindings' suites run instances on
//! any machine.
//!
//! Networks get the embedded deployment's store-kept address allocator but
//! no network host: they are stored and hand out addresses without creating
//! a bridge or a rule on the machine running the tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use zixiao_core::{Client, Controller, Result};
use zixiao_embedded::zixiao_drivers::DriverConfig;
use zixiao_embedded::{probe, store_path, Embedded};
use zixiao_net::StoreIpam;
use zixiao_sched::PluginScheduler;
use zixiao_store::EmbeddedStore;
use zixiao_testing::fake_driver::fake_agent;

/// The id of the fake node.
pub const NODE: &str = "local";

/// The embedded deployment's client over a store in `state_dir` and one
/// node, [`NODE`], whose runtimes are fakes. Errors: `Unavailable` (another
/// process holds the directory), the store's errors.
pub async fn open_with_fake_runtimes(state_dir: &Path) -> Result<Client> {
    let agent = Arc::new(fake_agent(probe(state_dir)?));
    let store = Arc::new(EmbeddedStore::open(&store_path(state_dir))?);
    let controller = Controller::builder(store.clone(), Arc::new(PluginScheduler::default()))
        .agent(NODE, agent.clone())
        .address_allocator(Arc::new(StoreIpam::new(store.clone())))
        .admission(Arc::new(zixiao_auth::ProjectQuota::new(store.clone())))
        .build();
    let node = controller.register_node(agent.registration(NODE)).await?;
    let embedded = Embedded {
        controller,
        node,
        agent,
        drivers: DriverConfig::new(state_dir.join("runtime")),
        store,
        allow_host_paths: true,
    };
    Ok(embedded.client())
}

/// zixiao-vmm's test guest, a tiny kernel the vmm backend boots in
/// milliseconds (the suites' snapshot tests), when gcc and ld built it.
pub fn vmm_test_guest() -> Option<PathBuf> {
    zixiao_vmm::test_guest::kernel_path()
}

/// zixiao-vmm's virtio test guest (`guest/blk.c`): it drives the VMM's
/// block, net and vsock devices (it listens on vsock port 1234 and echoes
/// every connection), when gcc and ld built it.
pub fn vmm_virtio_guest() -> Option<PathBuf> {
    zixiao_vmm::test_guest::virtio_kernel_path()
}

#[cfg(test)]
mod tests {
    use super::*;
    use zixiao_core::{CreateInstance, InstanceSpec, InstanceStatus, Wait};

    #[tokio::test(flavor = "multi_thread")]
    async fn a_fake_deployment_runs_instances_and_backs_its_state_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let client = open_with_fake_runtimes(dir.path()).await.expect("open");
        let request = CreateInstance::new("web", InstanceSpec::container("busybox"));
        let web = client
            .create_instance(request, Wait::Settled)
            .await
            .expect("create");
        assert_eq!(web.status, InstanceStatus::Running);
        let summary = client
            .backup_state(dir.path().join("backup.redb"))
            .await
            .expect("backup");
        assert!(summary.keys >= 2, "{summary:?}");
    }
}
