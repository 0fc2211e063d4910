//! Prometheus metrics for Zixiao's servers and agents.
//!
//! Three small pieces:
//! - [`Metered`] wraps any [`Api`]: every call is counted by operation and
//!   outcome (`zixiao_api_requests_total{operation,code}`) and timed
//!   (`zixiao_api_request_duration_seconds{operation}`). Like `Authorized`
//!   and `Audited` in zixiao-auth, it is a wrapper around the one trait,
//!   not code in each handler, so every frontend and every transport is
//!   measured alike.
//! - A [`Source`] says what the deployment holds when a scrape comes
//!   ([`Snapshot`]): [`ApiSource`] counts instances by type and status and
//!   nodes by status through an `Api`, and each node's capacity, what is
//!   promised on it and, when the server samples usage
//!   ([`ApiSource::with_node_usage`]), what its instances and its host use
//!   (`zixiao_node_*{node}`); an agent's source adds its
//!   instances' CPU time and memory from the runtimes. Read at scrape time,
//!   never cached, so a gauge cannot go stale and an instance deleted
//!   since the last scrape leaves no series behind.
//! - [`serve`] answers `GET /metrics` in the OpenMetrics text format
//!   (which Prometheus reads) on a listener of its own.
//!
//! ```
//! use std::sync::Arc;
//! use zixiao_metrics::{Metered, Metrics};
//! # fn wrap(api: Arc<dyn zixiao_core::api::Api>) {
//! let metrics = Arc::new(Metrics::new());
//! let measured = Metered::new(api, metrics.clone());
//! // serve `measured` to clients, and `metrics` on a /metrics listener.
//! # let _ = measured;
//! # }
//! ```

mod controller;
mod http;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use zixiao_core::api::{
    list_all_instances, Api, LatestNodeUsage, NodeUsageSample, Request, Response,
};
use zixiao_core::{InstanceFilter, Result};

pub use http::serve;

/// The labels of a request count: its operation (`instance.create`) and
/// outcome (`ok`, or the error kind: `not_found`, `permission_denied`).
type RequestLabels = [(&'static str, &'static str); 2];
/// The label of a request's duration: its operation.
type OperationLabels = [(&'static str, &'static str); 1];

/// One process's metrics: what [`Metered`] records, and what its
/// [`Source`] reports at each scrape.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<OperationLabels, Histogram, fn() -> Histogram>,
    controller: controller::ControllerSeries,
    snapshot: Arc<Mutex<Option<Snapshot>>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Request durations from 0.5 ms to about 16 s, doubling.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    /// Empty metrics, registered under `zixiao_`.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "zixiao_api_requests",
            "API calls by operation and outcome (ok, or the error kind)",
            requests.clone(),
        );
        let durations =
            Family::<OperationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        registry.register_with_unit(
            "zixiao_api_request_duration",
            "How long API calls took, by operation (a streaming call: until its stream opened)",
            Unit::Seconds,
            durations.clone(),
        );
        let controller = controller::ControllerSeries::register(&mut registry);
        let snapshot = Arc::new(Mutex::new(None));
        registry.register_collector(Box::new(SnapshotCollector(snapshot.clone())));
        Metrics {
            registry,
            requests,
            durations,
            controller,
            snapshot,
        }
    }

    /// Counts one call of `operation` that ended with `code` after `seconds`.
    pub fn observe(&self, operation: &'static str, code: &'static str, seconds: f64) {
        self.requests
            .get_or_create(&[("operation", operation), ("code", code)])
            .inc();
        self.durations
            .get_or_create(&[("operation", operation)])
            .observe(seconds);
    }

    /// The metrics in the OpenMetrics text format, with `snapshot` as the
    /// deployment's state (`None`: its source could not be read; the
    /// request metrics are still there, and `zixiao_up` says 0).
    pub fn encode(&self, snapshot: Option<Snapshot>) -> String {
        *self
            .snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = snapshot;
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// What a deployment holds at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Instances by (type, status), as `zixiao instance list` names them.
    pub instances: BTreeMap<(String, String), u64>,
    /// Nodes by status.
    pub nodes: BTreeMap<String, u64>,
    /// What running instances use (an agent's own; empty on a server).
    pub usage: Vec<InstanceUsage>,
    /// Each node's capacity, allocation and usage (a server's; empty on an
    /// agent).
    pub node_figures: Vec<NodeFigures>,
    /// How many instances are due for a converge and wait for a worker (a
    /// server's, when its source knows; `None` on an agent).
    pub converge_queue: Option<usize>,
    /// What the node's watchdog fenced so far (an agent's; `None` on a
    /// server).
    pub fences: Option<Fences>,
}

/// What a node's watchdog fenced, from its fence log (so the counts
/// survive restarts of the agent and of the watchdog).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Fences {
    /// Instances stopped by fencing.
    pub instances: u64,
    /// The time their stops took, in all, in seconds.
    pub stop_seconds: f64,
}

/// One node's figures, as the server's store and samples know them.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFigures {
    /// The node's id.
    pub node: String,
    /// Its CPUs, in cores.
    pub cpu_capacity_cores: f64,
    /// The CPU placement may promise on it (capacity times its allocation
    /// ratio), in cores.
    pub cpu_allocatable_cores: f64,
    /// The CPU its instances hold, in cores.
    pub cpu_allocated_cores: f64,
    /// Its memory, in bytes.
    pub memory_capacity_bytes: u64,
    /// The memory placement may promise on it, in bytes.
    pub memory_allocatable_bytes: u64,
    /// The memory its instances hold, in bytes.
    pub memory_allocated_bytes: u64,
    /// How many instances are placed on it.
    pub instances: u32,
    /// Its newest usage sample, when the server samples usage and has
    /// sampled it.
    pub usage: Option<NodeUsageSample>,
}

/// What one instance uses, as its runtime reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceUsage {
    /// The instance's name.
    pub name: String,
    /// Its type (`container`, `microvm`, `vm`).
    pub instance_type: String,
    /// CPU time used since it started, in seconds.
    pub cpu_seconds: f64,
    /// Memory in use, in bytes.
    pub memory_bytes: u64,
    /// Bytes read from its disks since it started, if its runtime says.
    pub disk_read_bytes: Option<u64>,
    /// Bytes written to its disks since it started, if its runtime says.
    pub disk_written_bytes: Option<u64>,
    /// Bytes its network interfaces received, if its runtime says.
    pub network_receive_bytes: Option<u64>,
    /// Bytes its network interfaces sent, if its runtime says.
    pub network_transmit_bytes: Option<u64>,
}

/// Where a scrape learns what the deployment holds.
#[async_trait]
pub trait Source: Send + Sync {
    /// The deployment's state now.
    async fn snapshot(&self) -> Result<Snapshot>;
}

/// Instances and nodes as an [`Api`] lists them (a server's own
/// controller, so the scrape is neither authorized nor audited).
pub struct ApiSource<A> {
    api: A,
    node_usage: Option<LatestNodeUsage>,
    converge_queue: Option<QueueDepth>,
}

/// Reads a controller's converge queue depth at each scrape.
pub type QueueDepth = Box<dyn Fn() -> usize + Send + Sync>;

impl<A: fmt::Debug> fmt::Debug for ApiSource<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiSource")
            .field("api", &self.api)
            .field("node_usage", &self.node_usage.is_some())
            .field("converge_queue", &self.converge_queue.is_some())
            .finish()
    }
}

impl<A: Api> ApiSource<A> {
    /// Counts what `api` lists.
    pub fn new(api: A) -> Self {
        ApiSource {
            api,
            node_usage: None,
            converge_queue: None,
        }
    }

    /// The same source, reporting the converge queue's depth as `depth`
    /// reads it (a server's `Controller::converge_queue_depth`).
    pub fn with_converge_queue(mut self, depth: QueueDepth) -> Self {
        self.converge_queue = Some(depth);
        self
    }

    /// The same source, reporting each node's newest usage sample too (a
    /// server's [`zixiao_core::api::StatsHistory::latest_node_usage`]).
    pub fn with_node_usage(mut self, usage: LatestNodeUsage) -> Self {
        self.node_usage = Some(usage);
        self
    }
}

#[async_trait]
impl<A: Api> Source for ApiSource<A> {
    async fn snapshot(&self) -> Result<Snapshot> {
        let mut snapshot = Snapshot {
            converge_queue: self.converge_queue.as_ref().map(|depth| depth()),
            ..Snapshot::default()
        };
        let instances = list_all_instances(&self.api, InstanceFilter::default()).await?;
        for instance in instances {
            let key = (
                instance.spec.instance_type.to_string(),
                instance.status.as_str().to_owned(),
            );
            *snapshot.instances.entry(key).or_default() += 1;
        }
        let Response::Nodes(nodes) = self.api.call(Request::ListNodes).await? else {
            return Err(zixiao_core::Error::Internal(
                "node.list answered with another response".to_owned(),
            ));
        };
        let mut usage = self
            .node_usage
            .as_ref()
            .map(LatestNodeUsage::per_node)
            .unwrap_or_default();
        for node in nodes {
            *snapshot
                .nodes
                .entry(node.status.as_str().to_owned())
                .or_default() += 1;
            let allocatable = node.allocatable();
            snapshot.node_figures.push(NodeFigures {
                node: node.id.to_string(),
                cpu_capacity_cores: cores(node.capacity.cpus.millis().into()),
                cpu_allocatable_cores: cores(allocatable.cpus.millis().into()),
                cpu_allocated_cores: cores(node.allocated.cpus.millis().into()),
                memory_capacity_bytes: mib(node.capacity.memory_mib),
                memory_allocatable_bytes: mib(allocatable.memory_mib),
                memory_allocated_bytes: mib(node.allocated.memory_mib),
                instances: node.allocated.instances,
                usage: usage.remove(node.id.as_str()),
            });
        }
        Ok(snapshot)
    }
}

/// `millis` thousandths of a core, in cores.
fn cores(millis: u64) -> f64 {
    millis as f64 / 1000.0
}

/// `mib` MiB, in bytes.
fn mib(mib: u64) -> u64 {
    mib.saturating_mul(1 << 20)
}

/// Encodes the last [`Snapshot`] at each scrape.
#[derive(Debug)]
struct SnapshotCollector(Arc<Mutex<Option<Snapshot>>>);

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let snapshot = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let up = ConstGauge::new(i64::from(snapshot.is_some()));
        up.encode(encoder.encode_descriptor(
            "zixiao_up",
            "1 when this scrape could read the deployment's state, 0 when not",
            None,
            up.metric_type(),
        )?)?;
        let Some(snapshot) = snapshot else {
            return Ok(());
        };
        let mut instances = encoder.encode_descriptor(
            "zixiao_instances",
            "Instances by type and status",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for ((instance_type, status), count) in &snapshot.instances {
            let labels = [
                ("type", instance_type.as_str()),
                ("status", status.as_str()),
            ];
            ConstGauge::new(*count as i64).encode(instances.encode_family(&labels)?)?;
        }
        let mut nodes = encoder.encode_descriptor(
            "zixiao_nodes",
            "Nodes by status",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (status, count) in &snapshot.nodes {
            let labels = [("status", escape(status))];
            ConstGauge::new(i64::try_from(*count).unwrap_or(i64::MAX))
                .encode(nodes.encode_family(&labels)?)?;
        }
        encode_node_figures(&mut encoder, &snapshot.node_figures)?;
        if let Some(fences) = snapshot.fences {
            let fenced = ConstCounter::new(fences.instances);
            fenced.encode(encoder.encode_descriptor(
                "zixiao_fenced_instances",
                "Instances this node's watchdog stopped because the node lost its lease",
                None,
                fenced.metric_type(),
            )?)?;
            let seconds = ConstCounter::new(fences.stop_seconds);
            seconds.encode(encoder.encode_descriptor(
                "zixiao_fence_stop",
                "The time this node's watchdog spent stopping fenced instances",
                Some(&Unit::Seconds),
                seconds.metric_type(),
            )?)?;
        }
        if let Some(depth) = snapshot.converge_queue {
            let depth = ConstGauge::new(i64::try_from(depth).unwrap_or(i64::MAX));
            depth.encode(encoder.encode_descriptor(
                "zixiao_converge_queue_depth",
                "Instances due for a converge, waiting for a worker",
                None,
                depth.metric_type(),
            )?)?;
        }
        if snapshot.usage.is_empty() {
            return Ok(());
        }
        let seconds = Unit::Seconds;
        let mut cpu = encoder.encode_descriptor(
            "zixiao_instance_cpu",
            "CPU time a running instance used since it started",
            Some(&seconds),
            prometheus_client::metrics::MetricType::Counter,
        )?;
        // prometheus-client writes label values as given: escaped here,
        // so no name can break the exposition.
        let usage: Vec<_> = snapshot
            .usage
            .iter()
            .map(|u| {
                let labels = [
                    ("instance", escape(&u.name)),
                    ("type", escape(&u.instance_type)),
                ];
                (labels, u)
            })
            .collect();
        for (labels, usage) in &usage {
            ConstCounter::new(usage.cpu_seconds).encode(cpu.encode_family(labels)?)?;
        }
        let bytes = Unit::Bytes;
        let mut memory = encoder.encode_descriptor(
            "zixiao_instance_memory",
            "Memory a running instance uses",
            Some(&bytes),
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (labels, usage) in &usage {
            ConstGauge::new(i64::try_from(usage.memory_bytes).unwrap_or(i64::MAX))
                .encode(memory.encode_family(labels)?)?;
        }
        type Total = fn(&InstanceUsage) -> Option<u64>;
        let totals: [(&str, &str, Total); 4] = [
            (
                "zixiao_instance_disk_read",
                "Bytes a running instance read from its disks since it started",
                |u| u.disk_read_bytes,
            ),
            (
                "zixiao_instance_disk_written",
                "Bytes a running instance wrote to its disks since it started",
                |u| u.disk_written_bytes,
            ),
            (
                "zixiao_instance_network_receive",
                "Bytes a running instance's network interfaces received",
                |u| u.network_receive_bytes,
            ),
            (
                "zixiao_instance_network_transmit",
                "Bytes a running instance's network interfaces sent",
                |u| u.network_transmit_bytes,
            ),
        ];
        for (name, help, total) in totals {
            // Only the instances whose runtime reports it: no false zeros.
            let known: Vec<_> = usage
                .iter()
                .filter_map(|(labels, u)| Some((labels, total(u)?)))
                .collect();
            if known.is_empty() {
                continue;
            }
            let mut family = encoder.encode_descriptor(
                name,
                help,
                Some(&bytes),
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (labels, value) in known {
                ConstCounter::new(value).encode(family.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

/// One gauge per node and figure: `zixiao_node_<figure>_<unit>{node}`. A
/// figure a node does not have (usage not sampled yet, a host that sent no
/// reading) has no series rather than a zero.
fn encode_node_figures(encoder: &mut DescriptorEncoder, figures: &[NodeFigures]) -> fmt::Result {
    type Figure = fn(&NodeFigures) -> Option<f64>;
    let cores = || Some(Unit::Other("cores".to_owned()));
    let bytes = || Some(Unit::Bytes);
    let gauges: [(&str, &str, Option<Unit>, Figure); 12] = [
        (
            "zixiao_node_cpu_capacity",
            "The node's CPUs",
            cores(),
            |f| Some(f.cpu_capacity_cores),
        ),
        (
            "zixiao_node_cpu_allocatable",
            "The CPU placement may promise on the node (capacity times its allocation ratio)",
            cores(),
            |f| Some(f.cpu_allocatable_cores),
        ),
        (
            "zixiao_node_cpu_allocated",
            "The CPU the node's instances hold",
            cores(),
            |f| Some(f.cpu_allocated_cores),
        ),
        (
            "zixiao_node_memory_capacity",
            "The node's memory",
            bytes(),
            |f| Some(f.memory_capacity_bytes as f64),
        ),
        (
            "zixiao_node_memory_allocatable",
            "The memory placement may promise on the node",
            bytes(),
            |f| Some(f.memory_allocatable_bytes as f64),
        ),
        (
            "zixiao_node_memory_allocated",
            "The memory the node's instances hold",
            bytes(),
            |f| Some(f.memory_allocated_bytes as f64),
        ),
        (
            "zixiao_node_instances",
            "Instances placed on the node",
            None,
            |f| Some(f64::from(f.instances)),
        ),
        (
            "zixiao_node_instances_cpu",
            "The CPU the node's running instances used over the last sampling round",
            cores(),
            |f| f.usage.as_ref().map(|u| u.cpu_millicores as f64 / 1000.0),
        ),
        (
            "zixiao_node_instances_memory",
            "The memory the node's running instances use",
            bytes(),
            |f| f.usage.as_ref().map(|u| u.memory_bytes as f64),
        ),
        (
            "zixiao_node_host_cpu",
            "The CPU the node's whole host used over its last reading",
            cores(),
            |f| {
                f.usage
                    .as_ref()?
                    .host_cpu_millicores
                    .map(|m| m as f64 / 1000.0)
            },
        ),
        (
            "zixiao_node_host_memory",
            "The memory the node's whole host uses (total less available)",
            bytes(),
            |f| f.usage.as_ref()?.host_memory_bytes.map(|b| b as f64),
        ),
        (
            "zixiao_node_host_load1",
            "The node's one-minute load average",
            None,
            |f| f.usage.as_ref()?.host_load1,
        ),
    ];
    if figures.is_empty() {
        return Ok(());
    }
    for (name, help, unit, figure) in gauges {
        let values: Vec<(String, f64)> = figures
            .iter()
            .filter_map(|f| Some((escape(&f.node), figure(f)?)))
            .collect();
        if values.is_empty() {
            continue;
        }
        let mut family = encoder.encode_descriptor(
            name,
            help,
            unit.as_ref(),
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (node, value) in values {
            ConstGauge::new(value).encode(family.encode_family(&[("node", node)])?)?;
        }
    }
    Ok(())
}

/// `value` as the text format wants a label value: backslash, double
/// quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// An [`Api`] whose every call is counted and timed in [`Metrics`].
#[derive(Debug)]
pub struct Metered<A> {
    inner: A,
    metrics: Arc<Metrics>,
}

impl<A> Metered<A> {
    /// Measures the calls made to `inner`.
    pub fn new(inner: A, metrics: Arc<Metrics>) -> Self {
        Metered { inner, metrics }
    }

    /// The wrapped API.
    pub fn inner(&self) -> &A {
        &self.inner
    }
}

#[async_trait]
impl<A: Api> Api for Metered<A> {
    async fn call(&self, request: Request) -> Result<Response> {
        let operation = request.operation();
        let started = Instant::now();
        let result = self.inner.call(request).await;
        let code = match &result {
            Ok(_) => "ok",
            Err(e) => e.kind().as_str(),
        };
        self.metrics
            .observe(operation, code, started.elapsed().as_secs_f64());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample `line_start` (name and labels) in `text`.
    pub(crate) fn sample(text: &str, line_start: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(line_start))
            .and_then(|v| v.trim().parse().ok())
    }

    #[test]
    fn requests_are_counted_by_operation_and_outcome() {
        let metrics = Metrics::new();
        metrics.observe("instance.create", "ok", 0.01);
        metrics.observe("instance.create", "ok", 0.02);
        metrics.observe("instance.create", "permission_denied", 0.001);
        let text = metrics.encode(None);
        assert_eq!(
            sample(
                &text,
                "zixiao_api_requests_total{operation=\"instance.create\",code=\"ok\"}"
            ),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "zixiao_api_requests_total{operation=\"instance.create\",code=\"permission_denied\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "zixiao_api_request_duration_seconds_count{operation=\"instance.create\"}"
            ),
            Some(3.0)
        );
        assert_eq!(sample(&text, "zixiao_up"), Some(0.0));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn a_snapshot_is_encoded_as_gauges_and_counters_with_escaped_labels() {
        let metrics = Metrics::new();
        let snapshot = Snapshot {
            instances: [(("container".to_owned(), "running".to_owned()), 2)].into(),
            nodes: [("ready".to_owned(), 3)].into(),
            usage: vec![InstanceUsage {
                name: "we\"b".to_owned(),
                instance_type: "container".to_owned(),
                cpu_seconds: 1.5,
                memory_bytes: 4096,
                disk_read_bytes: Some(512),
                disk_written_bytes: None,
                network_receive_bytes: Some(100),
                network_transmit_bytes: Some(200),
            }],
            node_figures: Vec::new(),
            converge_queue: None,
            fences: Some(Fences {
                instances: 2,
                stop_seconds: 0.25,
            }),
        };
        let text = metrics.encode(Some(snapshot));
        assert_eq!(sample(&text, "zixiao_up"), Some(1.0), "{text}");
        assert_eq!(
            sample(
                &text,
                "zixiao_instances{type=\"container\",status=\"running\"}"
            ),
            Some(2.0)
        );
        assert_eq!(sample(&text, "zixiao_nodes{status=\"ready\"}"), Some(3.0));
        assert_eq!(
            sample(&text, "zixiao_fenced_instances_total "),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, "zixiao_fence_stop_seconds_total "),
            Some(0.25)
        );
        assert_eq!(
            sample(
                &text,
                "zixiao_instance_cpu_seconds_total{instance=\"we\\\"b\",type=\"container\"}"
            ),
            Some(1.5),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "zixiao_instance_memory_bytes{instance=\"we\\\"b\",type=\"container\"}"
            ),
            Some(4096.0)
        );
        let labels = "{instance=\"we\\\"b\",type=\"container\"} ";
        let total = |name: &str| sample(&text, &format!("{name}{labels}"));
        assert_eq!(
            total("zixiao_instance_disk_read_bytes_total"),
            Some(512.0),
            "{text}"
        );
        assert_eq!(
            total("zixiao_instance_network_receive_bytes_total"),
            Some(100.0)
        );
        assert_eq!(
            total("zixiao_instance_network_transmit_bytes_total"),
            Some(200.0)
        );
        // Unknown to its runtime: no series.
        assert!(!text.contains("zixiao_instance_disk_written"), "{text}");
        // The next scrape without the instance has no series for it.
        let text = metrics.encode(Some(Snapshot::default()));
        assert!(!text.contains("we\\\"b"), "{text}");
    }

    #[test]
    fn each_node_gets_its_figures_and_no_series_for_what_is_unknown() {
        let metrics = Metrics::new();
        let figures = |node: &str, usage| NodeFigures {
            node: node.to_owned(),
            cpu_capacity_cores: 2.0,
            cpu_allocatable_cores: 8.0,
            cpu_allocated_cores: 0.25,
            memory_capacity_bytes: 1 << 30,
            memory_allocatable_bytes: 3 << 29,
            memory_allocated_bytes: 64 << 20,
            instances: 2,
            usage,
        };
        let sampled = NodeUsageSample {
            at: chrono::Utc::now(),
            instances: 2,
            cpu_millicores: 1500,
            memory_bytes: 5000,
            host_cpu_millicores: None,
            host_cpu_capacity_millicores: Some(2000),
            host_memory_bytes: Some(7000),
            host_memory_capacity_bytes: Some(1 << 30),
            host_load1: Some(0.5),
        };
        let snapshot = Snapshot {
            node_figures: vec![figures("n\"1", Some(sampled)), figures("n2", None)],
            ..Snapshot::default()
        };
        let text = metrics.encode(Some(snapshot));
        let of = |name: &str, node: &str| sample(&text, &format!("{name}{{node=\"{node}\"}} "));
        assert_eq!(
            of("zixiao_node_cpu_capacity_cores", "n2"),
            Some(2.0),
            "{text}"
        );
        assert_eq!(of("zixiao_node_cpu_allocatable_cores", "n2"), Some(8.0));
        assert_eq!(of("zixiao_node_cpu_allocated_cores", "n2"), Some(0.25));
        assert_eq!(
            of("zixiao_node_memory_allocatable_bytes", "n2"),
            Some(1610612736.0)
        );
        assert_eq!(of("zixiao_node_instances", "n\\\"1"), Some(2.0), "{text}");
        assert_eq!(of("zixiao_node_instances_cpu_cores", "n\\\"1"), Some(1.5));
        assert_eq!(of("zixiao_node_host_memory_bytes", "n\\\"1"), Some(7000.0));
        assert_eq!(of("zixiao_node_host_load1", "n\\\"1"), Some(0.5));
        // A first host reading has no CPU figure, and an unsampled node
        // no usage at all: absent, never zero.
        assert!(!text.contains("zixiao_node_host_cpu_cores"), "{text}");
        assert_eq!(of("zixiao_node_instances_memory_bytes", "n2"), None);
    }
}
