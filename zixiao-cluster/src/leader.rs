//! What only the leading server runs: the failure detector (nodes whose
//! lease expired are failed over) and the reconcile loop (every instance
//! converged on each change and periodically). Every write is a
//! compare-and-swap, so a leader that has just lost the lead and its
//! successor acting at once never both apply the same change.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use zixiao_core::{Controller, Instance, InstanceFilter, NodeStatus};

use crate::election::wait;
use crate::membership::Membership;
use crate::timing::Timing;

/// Runs the leader's loops while `leading` is true, until `shutdown`.
pub async fn run(
    controller: Controller,
    membership: Membership,
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
        let queue = Queue::new(controller.clone());
        let tasks = vec![
            tokio::spawn(detect_failures(
                controller.clone(),
                membership.clone(),
                timing,
                queue.clone(),
                stop_rx.clone(),
            )),
            tokio::spawn(watch_instances(
                controller.clone(),
                queue.clone(),
                stop_rx.clone(),
            )),
            tokio::spawn(reconcile_periodically(queue.clone(), timing, stop_rx)),
        ];
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
        for task in tasks {
            task.abort();
        }
        // A server that lost the lead stops converging at once: the new
        // leader may already be moving the same instances.
        queue.abandon_all();
    }
}

/// Instances waiting to be converged, each at most once at a time: a change
/// that arrives while one converges runs it once more afterwards.
#[derive(Clone)]
struct Queue {
    controller: Controller,
    state: Arc<Mutex<QueueState>>,
}

#[derive(Default)]
struct QueueState {
    /// The instances converging now.
    running: HashMap<String, Converging>,
    /// Numbers the converge tasks, so a task that was replaced never
    /// removes its successor's entry.
    next: u64,
}

struct Converging {
    task: u64,
    again: bool,
    handle: Option<AbortHandle>,
}

impl Queue {
    fn new(controller: Controller) -> Self {
        Queue {
            controller,
            state: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, id: String) {
        let mut state = self.lock();
        if let Some(converging) = state.running.get_mut(&id) {
            converging.again = true;
            return;
        }
        self.spawn(&mut state, id);
    }

    /// Abandons the converge of `id` in flight, if any, and starts another.
    /// For the instances of a node just failed over: a call in flight to
    /// that node may hang until its connection is found dead, while the
    /// instance should already be placed elsewhere. Abandoning a converge
    /// is safe: every converge step is a compare-and-swap or an idempotent
    /// runtime call, as when a server dies mid-converge.
    fn restart(&self, id: String) {
        let mut state = self.lock();
        if let Some(handle) = state.running.remove(&id).and_then(|c| c.handle) {
            handle.abort();
        }
        self.spawn(&mut state, id);
    }

    /// Abandons every converge in flight.
    fn abandon_all(&self) {
        let mut state = self.lock();
        for (_, converging) in state.running.drain() {
            if let Some(handle) = converging.handle {
                handle.abort();
            }
        }
    }

    fn spawn(&self, state: &mut QueueState, id: String) {
        let task = state.next;
        state.next += 1;
        state.running.insert(
            id.clone(),
            Converging {
                task,
                again: false,
                handle: None,
            },
        );
        let queue = self.clone();
        let converge_id = id.clone();
        let handle = tokio::spawn(async move {
            let id = converge_id;
            loop {
                if let Err(e) = queue.controller.converge(&id).await {
                    if e.kind() != zixiao_core::ErrorKind::NotFound {
                        eprintln!("zixiao server: converging instance `{id}`: {}", e.chain());
                    }
                }
                let mut state = queue.lock();
                let Some(converging) = state.running.get_mut(&id) else {
                    return;
                };
                if converging.task != task {
                    return;
                }
                if !converging.again {
                    state.running.remove(&id);
                    return;
                }
                converging.again = false;
            }
        })
        .abort_handle();
        // The task may have finished already; then its entry is gone.
        if let Some(converging) = state.running.get_mut(&id) {
            if converging.task == task {
                converging.handle = Some(handle);
            }
        }
    }
}

async fn detect_failures(
    controller: Controller,
    membership: Membership,
    timing: Timing,
    queue: Queue,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        if let Err(e) = sweep(&controller, &membership, &queue).await {
            eprintln!("zixiao server: failure detector: {}", e.chain());
        }
        wait(&mut stop, timing.sweep()).await;
    }
}

/// Fails over every node that has lost its lease and still has a reason to
/// be failed over (it is ready, or holds instances).
async fn sweep(
    controller: &Controller,
    membership: &Membership,
    queue: &Queue,
) -> zixiao_core::Result<()> {
    let live = membership.live_nodes().await?;
    let nodes = controller.list_nodes().await?;
    // A node failed over while its agent was already registering again
    // holds a live lease: it is back. Only its status is flipped, against
    // the stored record: `nodes` may be older than what it registered.
    for node in nodes
        .iter()
        .filter(|n| n.status == NodeStatus::NotReady && live.contains(&n.id))
    {
        controller.node_returned(&node.id).await?;
    }
    let lost: Vec<_> = nodes
        .iter()
        .filter(|n| n.address != "local" && !live.contains(&n.id))
        .filter(|n| n.status != NodeStatus::Decommissioned)
        .collect();
    if lost.is_empty() {
        return Ok(());
    }
    let instances = controller
        .list_instances(&InstanceFilter::default())
        .await?;
    let mut held: BTreeMap<&str, Vec<&Instance>> = BTreeMap::new();
    for instance in &instances {
        if let Some(node) = instance.node.as_deref() {
            held.entry(node).or_default().push(instance);
        }
    }
    for node in lost {
        let holds = held.get(node.id.as_str()).is_some_and(|v| !v.is_empty());
        if node.status != NodeStatus::Ready && !holds {
            continue;
        }
        let report = controller
            .fail_node(&node.id, "its agent stopped renewing its lease")
            .await?;
        if !report.is_empty() {
            eprintln!(
                "zixiao server: node `{}` lost: moved {:?}, failed {:?}, released {:?}",
                node.id, report.moved, report.failed, report.released
            );
        }
        // Converges still talking to the lost node are abandoned once, when
        // its instances are released; later sweeps only queue them.
        for instance in instances
            .iter()
            .filter(|i| i.node.as_deref() == Some(node.id.as_str()))
        {
            if report.is_empty() {
                queue.push(instance.id.clone());
            } else {
                queue.restart(instance.id.clone());
            }
        }
    }
    Ok(())
}

async fn watch_instances(controller: Controller, queue: Queue, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        let after = match controller.current_revision().await {
            Ok(revision) => revision,
            Err(e) => {
                eprintln!("zixiao server: instance watch: {}", e.chain());
                wait(&mut stop, std::time::Duration::from_millis(500)).await;
                continue;
            }
        };
        // Whatever changed before the watch starts is picked up here.
        if let Ok(instances) = controller.list_instances(&InstanceFilter::default()).await {
            for instance in instances.iter().filter(|i| !i.has_converged()) {
                queue.push(instance.id.clone());
            }
        }
        let mut events = match controller.watch_instances(after).await {
            Ok(events) => Box::pin(events),
            Err(e) => {
                eprintln!("zixiao server: instance watch: {}", e.chain());
                wait(&mut stop, std::time::Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            let mut stop_signal = stop.clone();
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(event)) => {
                        let settled = event.instance.as_ref().is_none_or(|i| i.has_converged());
                        if !settled {
                            queue.push(event.id);
                        }
                    }
                    Some(Err(e)) => {
                        eprintln!("zixiao server: instance watch: {}", e.chain());
                        break;
                    }
                    None => break,
                },
                _ = stop_signal.changed() => return,
            }
        }
    }
}

async fn reconcile_periodically(queue: Queue, timing: Timing, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        wait(&mut stop, timing.reconcile()).await;
        match queue
            .controller
            .list_instances(&InstanceFilter::default())
            .await
        {
            Ok(instances) => {
                for instance in instances {
                    queue.push(instance.id);
                }
            }
            Err(e) => eprintln!("zixiao server: reconcile: {}", e.chain()),
        }
    }
}
