//! `Controller`: every Controller call as a Promise-returning method, and
//! `connect`, which rejects until the server API exists.

use std::path::PathBuf;

use napi::bindgen_prelude::{PromiseRaw, Unknown};
use napi::Env;
use napi_derive::napi;
use zixiao_core::model::CreateNetwork;
use zixiao_core::{Controller as CoreController, CreateInstance, Error, InstanceFilter};
use zixiao_embedded::EmbeddedConfig;

use crate::convert::{from_js, promise, promise_with};
use crate::logs::LogReader;
use crate::watch::InstanceWatch;

type Pending<'env> = napi::Result<PromiseRaw<'env, Unknown<'env>>>;

/// The embedded deployment's configuration for `state_dir`, or for the
/// CLI's default directory when it is `None`.
fn embedded_config(state_dir: Option<String>) -> zixiao_core::Result<EmbeddedConfig> {
    // The same default as the CLI's `--state-dir`, so both drive one store.
    let dir = match state_dir {
        Some(dir) => PathBuf::from(dir),
        None => zixiao_embedded::default_state_dir()?,
    };
    Ok(EmbeddedConfig::new(dir))
}

/// Connects to a Zixiao server at `endpoint`.
///
/// Always rejects with code `unsupported` for now: the server API is not
/// built yet. Use `Controller.open()` for the embedded controller.
#[napi(ts_return_type = "Promise<Controller>")]
// Exported to JavaScript by #[napi], which rustc cannot see; napi registers
// nothing in a test build, so there it is unused.
#[allow(unreachable_pub)]
#[cfg_attr(test, allow(dead_code))]
pub fn connect(env: &Env, endpoint: String) -> Pending<'_> {
    promise(env, async move {
        Err::<(), _>(Error::Unsupported(format!(
            "cannot connect to `{endpoint}`: the server API (gRPC client) is not built yet; \
             use Controller.open() for the embedded controller"
        )))
    })
}

/// Drives nodes, instances and networks: the controller the `zixiao` CLI uses.
///
/// Every method returns a Promise; the work runs off the event loop. Results
/// are plain objects shaped like the CLI's JSON output. Errors carry the
/// error kind as `code` (`not_found`, `invalid_argument`, ...).
#[napi]
pub struct Controller {
    // `Controller` is itself a cheap handle over an `Arc`.
    inner: CoreController,
}

#[napi]
impl Controller {
    /// Opens the embedded controller over the state directory `stateDir`
    /// (default: the CLI's, `~/.local/share/zixiao`), registering this
    /// machine as its node. One process at a time may hold a directory:
    /// rejects with `unavailable` when another holds it.
    #[napi]
    pub fn open(env: &Env, state_dir: Option<String>) -> napi::Result<PromiseRaw<'_, Controller>> {
        promise_with(
            env,
            async move { zixiao_embedded::open(embedded_config(state_dir)?).await },
            |_, embedded| {
                Ok(Controller {
                    inner: embedded.controller,
                })
            },
        )
    }

    /// Every node, in id order.
    #[napi(ts_return_type = "Promise<Node[]>")]
    pub fn list_nodes<'env>(&self, env: &'env Env) -> Pending<'env> {
        let c = self.inner.clone();
        promise(env, async move { c.list_nodes().await })
    }

    /// The node with id (or hostname) `node`. Rejects with `not_found`.
    #[napi(ts_return_type = "Promise<Node>")]
    pub fn get_node<'env>(&self, env: &'env Env, node: String) -> Pending<'env> {
        let c = self.inner.clone();
        promise(env, async move { c.get_node(&node).await })
    }

    /// Stops new placements on a node.
    #[napi(ts_return_type = "Promise<Node>")]
    pub fn cordon_node<'env>(&self, env: &'env Env, node: String) -> Pending<'env> {
        let c = self.inner.clone();
        promise(env, async move { c.cordon_node(&node).await })
    }

    /// Allows placements on a cordoned node again.
    #[napi(ts_return_type = "Promise<Node>")]
    pub fn uncordon_node<'env>(&self, env: &'env Env, node: String) -> Pending<'env> {
        let c = self.inner.clone();
        promise(env, async move { c.uncordon_node(&node).await })
    }

    /// Empties a node (moves or stops its instances); it ends cordoned.
    #[napi(ts_return_type = "Promise<DrainReport>")]
    pub fn drain_node<'env>(&self, env: &'env Env, node: String) -> Pending<'env> {
        let c = self.inner.clone();
        promise(env, async move { c.drain_node(&node).await })
    }

    /// A summary of nodes, instances, capacity and allocation.
    #[napi(ts_return_type = "Promise<ClusterInfo>")]
    pub fn cluster_info<'env>(&self, env: &'env Env) -> Pending<'env> {
        let c = self.inner.clone();
        promise(env, async move { c.cluster_info().await })
    }

    /// Validates `request` and stores the instance's intent. Resolves to the
    /// pending instance before anything runs: call `converge` to wait for
    /// the outcome. Rejects with `invalid_argument` (naming the field in
    /// the message and in `field`), `already_exists`, `unsupported`.
    #[napi(
        ts_args_type = "request: CreateInstance",
        ts_return_type = "Promise<Instance>"
    )]
    pub fn create_instance<'env>(
        &self,
        env: &'env Env,
        request: serde_json::Value,
    ) -> Pending<'env> {
        let c = self.inner.clone();
        let request = from_js::<CreateInstance>(None, request);
        promise(env, async move { c.create_instance(request?).await })
    }

    /// The instance with id or name `instance`. Rejects with `not_found`.
    #[napi(ts_return_type = "Promise<Instance>")]
    pub fn get_instance<'env>(&self, env: &'env Env, instance: String) -> Pending<'env> {
        let c = self.inner.clone();
        promise(env, async move { c.get_instance(&instance).await })
    }

    /// The instances `filter` accepts, in name order.
    #[napi(
        ts_args_type = "filter?: InstanceFilter",
        ts_return_type = "Promise<Instance[]>"
    )]
    pub fn list_instances<'env>(
        &self,
        env: &'env Env,
        filter: Option<serde_json::Value>,
    ) -> Pending<'env> {
        let c = self.inner.clone();
        let filter = filter.map_or(Ok(InstanceFilter::default()), |f| {
            from_js::<InstanceFilter>(Some("filter"), f)
        });
        promise(env, async move { c.list_instances(&filter?).await })
    }

    /// Asks for the instance to run (call `converge` to wait).
    #[napi(ts_return_type = "Promise<Instance>")]
    pub fn start_instance<'env>(&self, env: &'env Env, instance: String) -> Pending<'env> {
        let c = self.inner.clone();
        promise(env, async move { c.start_instance(&instance).await })
    }

    /// Asks for the instance to stop (call `converge` to wait).
    #[napi(ts_return_type = "Promise<Instance>")]
    pub fn stop_instance<'env>(&self, env: &'env Env, instance: String) -> Pending<'env> {
        let c = self.inner.clone();
        promise(env, async move { c.stop_instance(&instance).await })
    }

    /// Asks for the instance to restart (call `converge` to wait).
    #[napi(ts_return_type = "Promise<Instance>")]
    pub fn restart_instance<'env>(&self, env: &'env Env, instance: String) -> Pending<'env> {
        let c = self.inner.clone();
        promise(env, async move { c.restart_instance(&instance).await })
    }

    /// Asks for the instance to be deleted (call `converge`, which resolves
    /// to `null` once it is gone).
    #[napi(ts_return_type = "Promise<Instance>")]
    pub fn delete_instance<'env>(&self, env: &'env Env, instance: String) -> Pending<'env> {
        let c = self.inner.clone();
        promise(env, async move { c.delete_instance(&instance).await })
    }

    /// Freezes a running instance.
    #[napi(ts_return_type = "Promise<Instance>")]
    pub fn pause_instance<'env>(&self, env: &'env Env, instance: String) -> Pending<'env> {
        let c = self.inner.clone();
        promise(env, async move { c.pause_instance(&instance).await })
    }

    /// Thaws a paused instance.
    #[napi(ts_return_type = "Promise<Instance>")]
    pub fn resume_instance<'env>(&self, env: &'env Env, instance: String) -> Pending<'env> {
        let c = self.inner.clone();
        promise(env, async move { c.resume_instance(&instance).await })
    }

    /// Carries out the instance's intent and resolves once it is met or
    /// must wait (capacity, back-off, a person): the instance, or `null`
    /// once it is deleted.
    #[napi(ts_return_type = "Promise<Instance | null>")]
    pub fn converge<'env>(&self, env: &'env Env, instance: String) -> Pending<'env> {
        let c = self.inner.clone();
        promise(env, async move { c.converge(&instance).await })
    }

    /// Converges every instance and reports what it found.
    #[napi(ts_return_type = "Promise<ReconcileReport>")]
    pub fn reconcile_all<'env>(&self, env: &'env Env) -> Pending<'env> {
        let c = self.inner.clone();
        promise(env, async move { c.reconcile_all().await })
    }

    /// Current resource usage of a placed instance.
    #[napi(ts_return_type = "Promise<InstanceStats>")]
    pub fn instance_stats<'env>(&self, env: &'env Env, instance: String) -> Pending<'env> {
        let c = self.inner.clone();
        promise(env, async move { c.instance_stats(&instance).await })
    }

    /// A reader of the instance's console output (or stdout and stderr).
    #[napi]
    pub fn logs<'env>(
        &self,
        env: &'env Env,
        instance: String,
    ) -> napi::Result<PromiseRaw<'env, LogReader>> {
        let c = self.inner.clone();
        promise_with(env, async move { c.logs(&instance).await }, |_, reader| {
            Ok(LogReader::new(reader))
        })
    }

    /// The store's current revision, to watch from "now".
    #[napi(ts_return_type = "Promise<number>")]
    pub fn current_revision<'env>(&self, env: &'env Env) -> Pending<'env> {
        let c = self.inner.clone();
        promise(env, async move { c.current_revision().await })
    }

    /// Instance changes after store revision `after` (default 0: the oldest
    /// kept), in order, then live. Rejects with `failed_precondition` when
    /// that history was compacted.
    #[napi]
    pub fn watch_instances<'env>(
        &self,
        env: &'env Env,
        after: Option<i64>,
    ) -> napi::Result<PromiseRaw<'env, InstanceWatch>> {
        let c = self.inner.clone();
        let after = u64::try_from(after.unwrap_or(0))
            .map_err(|_| Error::invalid("after", "a revision is not negative"));
        promise_with(
            env,
            async move { c.watch_instances(after?).await },
            |_, stream| Ok(InstanceWatch::new(stream)),
        )
    }

    /// Validates `request` (shaped like the CLI's `network create`: `name`,
    /// `subnets`, optional `gateways`, `reserved`, `nat`, `isolated`) and
    /// stores the network, setting it up on every node that can. Rejects
    /// with `invalid_argument` naming the field (`subnets[0]` also when it
    /// overlaps another network's), `already_exists`, `unsupported`.
    #[napi(
        ts_args_type = "request: CreateNetwork",
        ts_return_type = "Promise<Network>"
    )]
    pub fn create_network<'env>(
        &self,
        env: &'env Env,
        request: serde_json::Value,
    ) -> Pending<'env> {
        let c = self.inner.clone();
        let request = from_js::<CreateNetwork>(None, request);
        promise(env, async move { c.create_network(request?).await })
    }

    /// The network named `name`. Rejects with `not_found`.
    #[napi(ts_return_type = "Promise<Network>")]
    pub fn get_network<'env>(&self, env: &'env Env, name: String) -> Pending<'env> {
        let c = self.inner.clone();
        promise(env, async move { c.get_network(&name).await })
    }

    /// Every network, in name order.
    #[napi(ts_return_type = "Promise<Network[]>")]
    pub fn list_networks<'env>(&self, env: &'env Env) -> Pending<'env> {
        let c = self.inner.clone();
        promise(env, async move { c.list_networks().await })
    }

    /// Removes the network from every node and from the store. Rejects with
    /// `not_found`, `failed_precondition` naming the instances still on it.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn delete_network<'env>(&self, env: &'env Env, name: String) -> Pending<'env> {
        let c = self.inner.clone();
        promise(env, async move { c.delete_network(&name).await })
    }

    /// Releases addresses of instances that are gone and makes every node's
    /// networking match the store; resolves to what it removed and released.
    #[napi(ts_return_type = "Promise<NetworkReconcileReport>")]
    pub fn reconcile_networks<'env>(&self, env: &'env Env) -> Pending<'env> {
        let c = self.inner.clone();
        promise(env, async move { c.reconcile_networks().await })
    }
}

// A separate block: napi registers an impl block's methods together, so a
// method cannot be left out by `cfg` inside one.
#[cfg(feature = "testing")]
#[napi]
impl Controller {
    /// Test support (built with the `testing` feature only): a controller
    /// whose node runs every instance type on an in-memory fake runtime.
    #[napi(js_name = "_openWithFakeRuntimes")]
    pub fn open_with_fake_runtimes(
        env: &Env,
        state_dir: String,
    ) -> napi::Result<PromiseRaw<'_, Controller>> {
        promise_with(
            env,
            async move { crate::testing::open_with_fake_runtimes(state_dir.as_ref()).await },
            |_, inner| Ok(Controller { inner }),
        )
    }
}
