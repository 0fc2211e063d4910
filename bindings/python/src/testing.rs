//! Test-only assembly (cargo feature `testing`): the embedded controller's
//! parts, with zixiao-testing's fake driver as the runtime of every
//! instance type, so the binding's tests run instances on any machine.
//!
//! Networks get the embedded controller's store-kept address allocator but
//! no network host: they are stored and hand out addresses without creating
//! a bridge or a rule on the machine running the tests.

use std::path::Path;
use std::sync::Arc;

use zixiao_core::{Controller, Result};
use zixiao_embedded::{probe, store_path};
use zixiao_net::StoreIpam;
use zixiao_sched::PluginScheduler;
use zixiao_store::EmbeddedStore;
use zixiao_testing::fake_driver::fake_agent;

/// The id of the fake node.
const NODE: &str = "local";

/// A controller over a store in `state_dir` and one local node whose
/// runtimes are fakes, with addresses allocated in the store and no host
/// networking.
pub(crate) async fn open_with_fake_runtimes(state_dir: &Path) -> Result<Controller> {
    let agent = Arc::new(fake_agent(probe(state_dir)?));
    let store = Arc::new(EmbeddedStore::open(&store_path(state_dir))?);
    let controller = Controller::builder(store.clone(), Arc::new(PluginScheduler::default()))
        .agent(NODE, agent.clone())
        .address_allocator(Arc::new(StoreIpam::new(store)))
        .build();
    controller.register_node(agent.registration(NODE)).await?;
    Ok(controller)
}
