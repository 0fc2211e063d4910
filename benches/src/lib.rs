//! Workloads shared by Zixiao's benchmarks: seeded clusters and instance
//! streams, filling a cluster while timing each placement, and measuring
//! how much capacity a fill leaves stranded.
//!
//! Everything is generated from a seed with SplitMix64, so every run
//! schedules exactly the same cluster and stream.

use std::time::{Duration, Instant};

use zixiao_core::scheduler::{LabelRequirement, LabelSelector, ZoneSpread};
use zixiao_core::{Cpus, Instance, Node, Resources};
use zixiao_sched::{testing, ClusterState, PluginScheduler};

/// A small, fast, seeded generator (SplitMix64): the benches need
/// reproducible streams, not statistical quality.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// How many zones the generated clusters have.
pub const ZONES: usize = 4;

/// A cluster of `count` Ready nodes over [`ZONES`] zones of one region:
/// 20% with 16 cores and 64 GiB, 50% with 32 cores and 128 GiB, 30% with
/// 64 cores and 256 GiB; 2 TiB of disk and 110 instance slots each;
/// label `tier` is `a` or `b` at random.
pub fn cluster(count: usize, seed: u64) -> Vec<Node> {
    let mut rng = SplitMix::new(seed);
    (0..count)
        .map(|i| {
            let (cpus, gib) = match rng.below(10) {
                0..=1 => (16, 64),
                2..=6 => (32, 128),
                _ => (64, 256),
            };
            let mut node = testing::node(
                &format!("node-{i:05}"),
                Resources {
                    cpus: Cpus::cores(cpus),
                    memory_mib: gib * 1024,
                    disk_gib: 2048,
                    instances: 110,
                },
            );
            node.zone = format!("zone-{}", i % ZONES);
            let tier = if rng.below(2) == 0 { "a" } else { "b" };
            node.labels.insert("tier".into(), tier.into());
            node
        })
        .collect()
}

/// The instance sizes of the stream, with their weights in percent: a mix
/// of shapes (1:2 to 1:6 GiB per core) whose average, about 4 GiB per core,
/// matches the nodes', so neither dimension runs out alone by construction.
pub const SIZES: [(u32, u64, u64); 5] = [
    // (cores, MiB, weight %)
    (1, 2 * 1024, 30),
    (2, 8 * 1024, 30),
    (4, 16 * 1024, 20),
    (8, 24 * 1024, 15),
    (16, 96 * 1024, 5),
];

/// The median instance of the stream: 2 cores, 8 GiB.
pub const MEDIAN: Resources = Resources {
    cpus: Cpus::cores(2),
    memory_mib: 8 * 1024,
    disk_gib: 0,
    instances: 1,
};

/// The largest instance of the stream: 16 cores, 96 GiB.
pub const LARGEST: Resources = Resources {
    cpus: Cpus::cores(16),
    memory_mib: 96 * 1024,
    disk_gib: 0,
    instances: 1,
};

/// An endless, seeded stream of instances of mixed [`SIZES`], 10 GiB of disk
/// on one in five, every one with an even zone spread and a node selector
/// on `tier` (half `tier in (a,b)`, a quarter each `tier=a` and `tier notin (a)`).
pub fn stream(seed: u64) -> impl Iterator<Item = Instance> {
    let mut rng = SplitMix::new(seed);
    (0u64..).map(move |i| {
        let mut pick = rng.below(100);
        let (cpus, memory_mib) = SIZES
            .iter()
            .find(|(_, _, weight)| {
                if pick < *weight {
                    true
                } else {
                    pick -= weight;
                    false
                }
            })
            .map_or((1, 1024), |(c, m, _)| (*c, *m));
        let mut instance = testing::instance(&format!("i-{i:07}"), cpus, memory_mib);
        if rng.below(5) == 0 {
            instance.spec.disk_gib = 10;
        }
        let selector = match rng.below(4) {
            0 => LabelRequirement::equals("tier", "a"),
            1 => LabelRequirement::none_of("tier", ["a"]),
            _ => LabelRequirement::one_of("tier", ["a", "b"]),
        };
        instance.spec.placement.node_selector = LabelSelector(vec![selector]);
        instance.spec.placement.spread = Some(ZoneSpread::default());
        instance
    })
}

/// The sum of the nodes' capacity and allocation.
pub fn totals(nodes: &[Node]) -> (Resources, Resources) {
    nodes.iter().fold(
        (Resources::default(), Resources::default()),
        |(cap, used), n| {
            (
                cap.saturating_add(&n.capacity),
                used.saturating_add(&n.allocated),
            )
        },
    )
}

/// The larger of cpu and memory utilisation of `nodes`, in percent.
pub fn utilisation(nodes: &[Node]) -> f64 {
    let (cap, used) = totals(nodes);
    let cpu = f64::from(used.cpus.millis()) / f64::from(cap.cpus.millis().max(1));
    let mem = used.memory_mib as f64 / cap.memory_mib.max(1) as f64;
    100.0 * cpu.max(mem)
}

/// What a fill did and how long each placement took.
#[derive(Debug, Clone, Default)]
pub struct Fill {
    /// Instances placed.
    pub placed: usize,
    /// Instances reported unschedulable (with their explanation).
    pub unschedulable: usize,
    /// Time of each successful placement (choose and record), in order.
    pub latencies: Vec<Duration>,
    /// Time of each unschedulable attempt (including its explanation).
    pub failures: Vec<Duration>,
    /// Wall time of all placements and attempts, stream generation excluded.
    pub elapsed: Duration,
}

impl Fill {
    /// Successful placements per second of scheduling time.
    pub fn per_second(&self) -> f64 {
        let busy: Duration = self.latencies.iter().sum();
        self.placed as f64 / busy.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// The `q` quantile (0..=1) of the successful placements' latency.
    pub fn quantile(&self, q: f64) -> Duration {
        quantile(&self.latencies, q)
    }
}

/// The `q` quantile (0..=1) of `samples`.
pub fn quantile(samples: &[Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let at = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

/// Places instances of `stream` into `state` with `scheduler` until cpu or
/// memory reaches `target_percent`, or `give_up` attempts in a row fail.
pub fn fill(
    scheduler: &PluginScheduler,
    state: &mut ClusterState,
    stream: impl Iterator<Item = Instance>,
    target_percent: f64,
    give_up: usize,
) -> Fill {
    let (capacity, mut used) = totals(state.nodes());
    let limit = |cap: u64| cap as f64 * target_percent / 100.0;
    let mut report = Fill::default();
    let mut failed_in_a_row = 0;
    let started = Instant::now();
    for instance in stream {
        if f64::from(used.cpus.millis()) >= limit(u64::from(capacity.cpus.millis()))
            || used.memory_mib as f64 >= limit(capacity.memory_mib)
            || failed_in_a_row >= give_up
        {
            break;
        }
        let begun = Instant::now();
        let result = scheduler.schedule(state, &instance);
        let took = begun.elapsed();
        match result {
            Ok(_) => {
                report.placed += 1;
                report.latencies.push(took);
                used = used.saturating_add(&instance.spec.resources());
                failed_in_a_row = 0;
            }
            Err(_) => {
                report.unschedulable += 1;
                report.failures.push(took);
                failed_in_a_row += 1;
            }
        }
    }
    report.elapsed = started.elapsed();
    report
}

/// Free capacity that no instance of a given size can use.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stranded {
    /// Free cores left over once as many `size` instances as fit are placed,
    /// as a percentage of all cores.
    pub cpu_percent: f64,
    /// The same for memory.
    pub memory_percent: f64,
    /// Free cores in all, in percent.
    pub free_cpu_percent: f64,
    /// Free memory in all, in percent.
    pub free_memory_percent: f64,
    /// How many more instances of `size` fit.
    pub slots: u64,
}

/// How much free capacity of `nodes` is stranded for instances of `size`:
/// per node, what remains free after as many of them as fit.
pub fn stranded(nodes: &[Node], size: Resources) -> Stranded {
    let (capacity, _) = totals(nodes);
    let mut out = Stranded::default();
    let (mut cpu_left, mut mem_left, mut cpu_free, mut mem_free) = (0u64, 0u64, 0u64, 0u64);
    for node in nodes.iter().filter(|n| n.is_schedulable()) {
        let free = node.free();
        let fit = [
            u64::from(free.cpus.millis()) / u64::from(size.cpus.millis().max(1)),
            free.memory_mib / size.memory_mib.max(1),
            u64::from(free.instances),
        ]
        .into_iter()
        .min()
        .unwrap_or(0);
        out.slots += fit;
        cpu_free += u64::from(free.cpus.millis());
        mem_free += free.memory_mib;
        cpu_left += u64::from(free.cpus.millis()) - fit * u64::from(size.cpus.millis());
        mem_left += free.memory_mib - fit * size.memory_mib;
    }
    let pct = |part: u64, whole: u64| 100.0 * part as f64 / whole.max(1) as f64;
    out.cpu_percent = pct(cpu_left, u64::from(capacity.cpus.millis()));
    out.memory_percent = pct(mem_left, capacity.memory_mib);
    out.free_cpu_percent = pct(cpu_free, u64::from(capacity.cpus.millis()));
    out.free_memory_percent = pct(mem_free, capacity.memory_mib);
    out
}

/// The machine a benchmark ran on, for people reading its figures: the
/// CPU model, how many cores, memory, and the load average when it started
/// (this project's machines are shared: other builds run alongside).
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".to_owned(), |m| m.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / (1024 * 1024));
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned());
    format!("{cores} cores ({model}), {memory_gib} GiB, load average {load} at start")
}

/// Where the benchmarks write their JSON summaries: `target/bench-results`
/// under the workspace's target directory (`CARGO_TARGET_DIR` if set).
pub fn results_dir() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join("target")
        });
    target.join("bench-results")
}

/// Writes `target/bench-results/<name>.json` as `{"name", "machine",
/// "results": [rows]}` and returns its path.
pub fn write_results(
    name: &str,
    machine: &str,
    rows: Vec<serde_json::Value>,
) -> std::io::Result<std::path::PathBuf> {
    let dir = results_dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.json"));
    let body = serde_json::json!({ "name": name, "machine": machine, "results": rows });
    std::fs::write(&path, serde_json::to_vec_pretty(&body).unwrap_or_default())?;
    Ok(path)
}
