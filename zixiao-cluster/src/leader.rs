//! What only the leading server runs: the failure detector (nodes without
//! a liveness key are failed over) and the controller's reconcilers (the
//! work queue of converges, fed by the controller's cache). Every write is
//! a compare-and-swap, so a leader that has just lost the lead and its
//! successor acting at once never both apply the same change.

use std::collections::BTreeSet;

use futures::StreamExt;
use tokio::sync::watch;
use zixiao_core::controller::ReconcilerOptions;
use zixiao_core::{Controller, NodeStatus};

use crate::election::wait;
use crate::membership::NODE_LEASES_PREFIX;
use crate::timing::Timing;

/// How many lost nodes are failed over at once (a zone may go at once).
const FAILOVERS_AT_ONCE: usize = 32;

/// Runs the leader's loops while `leading` is true, until `shutdown`.
pub async fn run(
    controller: Controller,
    timing: Timing,
    mut leading: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        if !*leading.borrow() {
            let mut shutdown = shutdown.clone();
            tokio::select! {
                changed = leading.changed() => if changed.is_err() { return },
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let reconcilers = controller.run_reconcilers(ReconcilerOptions {
            resync: timing.reconcile(),
            ..ReconcilerOptions::default()
        });
        let detector = tokio::spawn(detect_failures(controller.clone(), timing, stop_rx));
        // Until the lead is lost or the server stops.
        loop {
            if *shutdown.borrow() || !*leading.borrow() {
                break;
            }
            let mut shutdown = shutdown.clone();
            tokio::select! {
                changed = leading.changed() => if changed.is_err() { break },
                _ = shutdown.changed() => {}
            }
        }
        let _ = stop_tx.send(true);
        detector.abort();
        // A server that lost the lead stops converging at once: the new
        // leader may already be moving the same instances.
        reconcilers.stop();
    }
}

async fn detect_failures(controller: Controller, timing: Timing, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if let Err(e) = sweep(&controller).await {
            tracing::warn!("failure detector: {}", e.chain());
        }
        wait(&mut stop, timing.sweep()).await;
    }
}

/// The nodes with a liveness key now: from the controller's cache when it
/// keeps them (a server's controller does), else listed from the store.
async fn live_nodes(controller: &Controller) -> zixiao_core::Result<BTreeSet<String>> {
    let keys = if controller.caches(NODE_LEASES_PREFIX) {
        controller.cached_keys(NODE_LEASES_PREFIX).await?
    } else {
        controller.store().list(NODE_LEASES_PREFIX).await?.items
    };
    Ok(keys
        .into_iter()
        .filter_map(|kv| kv.key.strip_prefix(NODE_LEASES_PREFIX).map(str::to_owned))
        .collect())
}

/// Fails over every node that has lost its liveness key and still has a
/// reason to be failed over (it is ready, or holds instances), several at
/// once; brings back the not-ready nodes whose key is back.
async fn sweep(controller: &Controller) -> zixiao_core::Result<()> {
    let live = live_nodes(controller).await?;
    // A node failed over while its agent was already registering again
    // holds a live key: it is back. Only its status is flipped, against
    // the stored record.
    let back = controller
        .nodes_matching(|n, _| n.status == NodeStatus::NotReady && live.contains(&n.id))
        .await?;
    for node in back {
        controller.node_returned(&node.id).await?;
    }
    let lost = controller
        .nodes_matching(|n, placed| {
            n.address != "local"
                && !live.contains(&n.id)
                && n.status != NodeStatus::Decommissioned
                && (n.status == NodeStatus::Ready || placed > 0)
        })
        .await?;
    if lost.is_empty() {
        return Ok(());
    }
    let failovers = futures::stream::iter(lost)
        .map(|node| async move { fail_over(controller, &node.id).await })
        .buffer_unordered(FAILOVERS_AT_ONCE)
        .collect::<Vec<_>>()
        .await;
    failovers.into_iter().collect()
}

/// Fails over one lost node and requeues its instances.
async fn fail_over(controller: &Controller, node: &str) -> zixiao_core::Result<()> {
    let held: Vec<String> = controller
        .list_instances(&zixiao_core::InstanceFilter {
            node: Some(node.to_owned()),
            ..Default::default()
        })
        .await?
        .into_iter()
        .map(|i| i.id)
        .collect();
    let report = controller
        .fail_node(node, "its agent stopped heartbeating")
        .await?;
    if !report.is_empty() {
        tracing::warn!(
            node = %node,
            "lost: moved {}, failed {:?}, released {:?}",
            report.moved.len(),
            report.failed,
            report.released
        );
    }
    // Converges still talking to the lost node are abandoned once, when
    // its instances are released; later sweeps only queue them.
    let queue = controller.queue();
    for id in held {
        if !report.is_empty() {
            queue.cancel(&id);
        }
        queue.add(&id);
    }
    Ok(())
}
