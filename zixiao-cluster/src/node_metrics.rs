//! What an agent's `/metrics` reports: the instances its node holds, by
//! type and by the state their runtime reports (`running`, `exited`,
//! `missing`...), and what each running one uses (CPU time, memory), read
//! from the runtimes at each scrape (zixiao-metrics' [`Source`]), and what
//! its watchdog fenced, from the fence log. The
//! cluster's view, by stored status, is the servers'.

use std::sync::Arc;

use async_trait::async_trait;
use zixiao_core::{NodeAgent, Result, RuntimeState};
use zixiao_metrics::{Fences, InstanceUsage, Snapshot, Source};

use crate::records::Records;
use crate::watchdog::WatchdogFiles;

/// The node's instances from its state directory's records, their usage
/// from `agent`'s drivers.
pub struct NodeSource {
    records: Records,
    watchdog: WatchdogFiles,
    agent: Arc<dyn NodeAgent>,
}

impl NodeSource {
    /// The node of `state_dir`, whose runtimes `agent` reaches (the
    /// agent's own drivers, or another set over the same runtimes, as the
    /// watchdog has).
    pub fn new(state_dir: &std::path::Path, agent: Arc<dyn NodeAgent>) -> Self {
        NodeSource {
            records: Records::new(state_dir),
            watchdog: WatchdogFiles::new(state_dir),
            agent,
        }
    }
}

impl std::fmt::Debug for NodeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSource")
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Source for NodeSource {
    async fn snapshot(&self) -> Result<Snapshot> {
        let fences = self.watchdog.fences();
        let mut snapshot = Snapshot {
            fences: Some(Fences {
                instances: fences.len() as u64,
                stop_seconds: fences.iter().filter_map(|f| f.stop_ms).sum::<u64>() as f64 / 1000.0,
            }),
            ..Snapshot::default()
        };
        for instance in self.records.list() {
            let instance_type = instance.spec.instance_type.to_string();
            // The node's records say what it was asked to run; its
            // runtime says what runs now. An instance whose runtime cannot
            // be asked counts as `unknown`.
            let driver = self.agent.driver(instance.spec.instance_type).ok();
            let state = match &driver {
                Some(driver) => driver.inspect(&instance).await.ok(),
                None => None,
            };
            let status = match &state {
                Some(RuntimeState::Missing) => "missing",
                Some(RuntimeState::Created) => "created",
                Some(RuntimeState::Running) => "running",
                Some(RuntimeState::Paused) => "paused",
                Some(RuntimeState::Exited { .. }) => "exited",
                None => "unknown",
            };
            let key = (instance_type.clone(), status.to_owned());
            *snapshot.instances.entry(key).or_default() += 1;
            if !matches!(state, Some(RuntimeState::Running)) {
                continue;
            }
            let Some(stats) = driver.as_ref().and_then(|d| d.stats()) else {
                continue;
            };
            // Stopped since it was inspected: no usage series this time.
            if let Ok(used) = stats.stats(&instance).await {
                snapshot.usage.push(InstanceUsage {
                    name: instance.name.clone(),
                    instance_type,
                    cpu_seconds: used.cpu_time_ns as f64 / 1e9,
                    memory_bytes: used.memory_bytes,
                    disk_read_bytes: used.disk_read_bytes,
                    disk_written_bytes: used.disk_write_bytes,
                    network_receive_bytes: used.net_rx_bytes,
                    network_transmit_bytes: used.net_tx_bytes,
                });
            }
        }
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zixiao_core::host::HostFacts;
    use zixiao_core::LocalAgent;

    #[tokio::test]
    async fn the_fence_log_is_counted_and_its_stop_times_added() {
        let dir = tempfile::tempdir().expect("tempdir");
        let agent: Arc<dyn NodeAgent> = Arc::new(LocalAgent::new(HostFacts {
            hostname: "test".to_owned(),
            capacity: zixiao_core::Resources::default(),
        }));
        let source = NodeSource::new(dir.path(), agent);
        // No watchdog ever fenced here: zero, not absent.
        let none = source.snapshot().await.expect("snapshot");
        assert_eq!(none.fences, Some(Fences::default()));
        let log = dir.path().join("watchdog");
        std::fs::create_dir_all(&log).expect("mkdir");
        // An old line without a stop time, two new ones, one cut short.
        std::fs::write(log.join("fence.log"), "100 old\n200 a 40\n300 b 60\n400").expect("write");
        let fenced = source.snapshot().await.expect("snapshot");
        assert_eq!(
            fenced.fences,
            Some(Fences {
                instances: 3,
                stop_seconds: 0.1
            })
        );
    }
}
