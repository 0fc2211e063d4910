//! Test-only assembly (cargo feature `testing`): the embedded controller's
//! parts, with zixiao-testing's fake driver as the runtime of every
//! instance type, so the binding's tests run instances on any machine.

use std::path::Path;

use zixiao_core::{Controller, Result};
use zixiao_embedded::{open_with_agent, probe, EmbeddedConfig};
use zixiao_testing::fake_driver::fake_agent;

/// The id of the fake node.
const NODE: &str = "local";

/// A controller over a store in `state_dir` and one local node whose runtimes are fakes.
pub(crate) async fn open_with_fake_runtimes(state_dir: &Path) -> Result<Controller> {
    let agent = fake_agent(probe(state_dir)?);
    let config = EmbeddedConfig {
        node_id: Some(NODE.to_owned()),
        ..EmbeddedConfig::new(state_dir)
    };
    Ok(open_with_agent(config, agent).await?.controller)
}
