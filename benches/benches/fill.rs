//! Fills seeded clusters to 90% with a mixed stream (zone spread and a node
//! selector on every instance) and reports, as Markdown tables:
//! placements per second and latency quantiles at 1k, 10k and 50k nodes;
//! stranded capacity for bin-pack and spread; the sampling limit's
//! trade-off; sampled against exhaustive best-fit on a small cluster; and
//! the cost of the `Scheduler` trait path, which syncs a snapshot per call.
//!
//! `cargo bench -p zixiao-benches --bench fill` (set `FILL_SIZES=1000,10000`
//! to choose the cluster sizes).

use std::time::{Duration, Instant};

use zixiao_benches::{cluster, fill, quantile, stranded, stream, utilisation, LARGEST, MEDIAN};
use zixiao_core::scheduler::Strategy;
use zixiao_core::{Scheduler, SchedulingContext};
use zixiao_sched::PluginScheduler;

const SEED: u64 = 42;

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn sizes() -> Vec<usize> {
    std::env::var("FILL_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000, 50_000])
}

fn throughput() {
    println!("\n## Fill to 90%: bin-pack, zone spread + node selector on every instance\n");
    println!("| nodes | placed | unschedulable | placements/s | p50 µs | p99 µs | p99.9 µs | max µs | failed p50 µs | index build ms |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for n in sizes() {
        let scheduler = PluginScheduler::default();
        let nodes = cluster(n, SEED);
        let built = Instant::now();
        let mut state = scheduler.state(&SchedulingContext::new(&nodes));
        let build = built.elapsed();
        let report = fill(&scheduler, &mut state, stream(SEED), 90.0, 1_000);
        println!(
            "| {n} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {:.1} |",
            report.placed,
            report.unschedulable,
            report.per_second(),
            us(report.quantile(0.5)),
            us(report.quantile(0.99)),
            us(report.quantile(0.999)),
            us(report.quantile(1.0)),
            us(quantile(&report.failures, 0.5)),
            build.as_secs_f64() * 1e3,
        );
    }
}

fn quality_row(label: &str, scheduler: &PluginScheduler, n: usize, target: f64) {
    let nodes = cluster(n, SEED);
    let mut state = scheduler.state(&SchedulingContext::new(&nodes));
    let report = fill(scheduler, &mut state, stream(SEED), target, 200);
    let median = stranded(state.nodes(), MEDIAN);
    let largest = stranded(state.nodes(), LARGEST);
    println!(
        "| {label} | {} | {:.1} | {:.0} | {} | {:.1} / {:.1} | {:.2} / {:.2} | {} | {:.1} / {:.1} |",
        report.placed,
        utilisation(state.nodes()),
        report.per_second(),
        us(report.quantile(0.99)),
        median.free_cpu_percent,
        median.free_memory_percent,
        median.cpu_percent,
        median.memory_percent,
        largest.slots,
        largest.cpu_percent,
        largest.memory_percent,
    );
}

fn quality_header(title: &str) {
    println!("\n## {title}\n");
    println!("| run | placed | util % | placements/s | p99 µs | free cpu / mem % | stranded for median cpu / mem % | 16c/96G slots left | stranded for 16c/96G cpu / mem % |");
    println!("|---|---|---|---|---|---|---|---|---|");
}

fn packing() {
    quality_header("Packing quality after a 90% fill, 10,000 nodes");
    for (label, strategy, balanced) in [
        ("bin-pack", Strategy::BinPack, 1),
        ("spread", Strategy::Spread, 1),
        ("bin-pack, no balance score", Strategy::BinPack, 0),
        ("spread, no balance score", Strategy::Spread, 0),
    ] {
        let scheduler = PluginScheduler::builder()
            .default_strategy(strategy)
            .score_weight("balanced", balanced)
            .build();
        quality_row(label, &scheduler, 10_000, 90.0);
    }

    quality_header(
        "Sampling limit (candidates per zone, 4 zones), bin-pack, 90% fill, 10,000 nodes",
    );
    for limit in [1, 2, 4, 8, 16, 32] {
        let scheduler = PluginScheduler::builder()
            .candidates_per_zone(limit, limit)
            .build();
        quality_row(&format!("limit {limit}"), &scheduler, 10_000, 90.0);
    }

    quality_header(
        "Sampled against exhaustive best-fit, 500 nodes, filled until 200 attempts in a row fail",
    );
    for (label, strategy, limit, balanced) in [
        ("bin-pack, limit 4", Strategy::BinPack, 4, 1),
        ("bin-pack, exhaustive", Strategy::BinPack, usize::MAX, 1),
        (
            "bin-pack, limit 4, no balance score",
            Strategy::BinPack,
            4,
            0,
        ),
        (
            "bin-pack, exhaustive, no balance score",
            Strategy::BinPack,
            usize::MAX,
            0,
        ),
        ("spread, limit 4", Strategy::Spread, 4, 1),
        ("spread, exhaustive", Strategy::Spread, usize::MAX, 1),
    ] {
        let scheduler = PluginScheduler::builder()
            .default_strategy(strategy)
            .candidates_per_zone(limit, limit)
            .score_weight("balanced", balanced)
            .build();
        quality_row(label, &scheduler, 500, 100.0);
    }
}

/// The controller's path: every call passes a fresh snapshot; the
/// scheduler syncs its cached index to it. The snapshot is updated the way
/// the store does it (allocation and revision of the chosen node).
fn trait_path() {
    println!("\n## `Scheduler::place` (the controller's path), 10,000 nodes at 50%\n");
    println!("| variant | placements | placements/s | p50 µs | p99 µs |");
    println!("|---|---|---|---|---|");
    let scheduler = PluginScheduler::default();
    let mut nodes = cluster(10_000, SEED);
    let mut state = scheduler.state(&SchedulingContext::new(&nodes));
    fill(&scheduler, &mut state, stream(SEED), 50.0, 1_000);
    nodes.clone_from_slice(state.nodes());
    for (i, node) in nodes.iter_mut().enumerate() {
        node.revision = i as u64 + 1;
    }
    let mut revision = nodes.len() as u64;
    for (label, fresh) in [
        ("cached index, synced per call", false),
        ("index rebuilt per call", true),
    ] {
        let count = if fresh { 200 } else { 5_000 };
        let mut latencies = Vec::with_capacity(count);
        for instance in stream(SEED + 1).take(count) {
            let began = Instant::now();
            let placed = if fresh {
                scheduler
                    .clone()
                    .place(&instance, &SchedulingContext::new(&nodes))
            } else {
                scheduler.place(&instance, &SchedulingContext::new(&nodes))
            };
            latencies.push(began.elapsed());
            if let Ok(id) = placed {
                if let Some(node) = nodes.iter_mut().find(|n| n.id == id) {
                    node.allocated = node.allocated.saturating_add(&instance.spec.resources());
                    revision += 1;
                    node.revision = revision;
                }
            }
        }
        let busy: Duration = latencies.iter().sum();
        println!(
            "| {label} | {count} | {:.0} | {} | {} |",
            count as f64 / busy.as_secs_f64(),
            us(quantile(&latencies, 0.5)),
            us(quantile(&latencies, 0.99)),
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects sections.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let run = |name: &str| only.is_empty() || only.iter().any(|o| name.contains(o.as_str()));
    println!(
        "# zixiao-sched fill benchmark ({} CPUs visible)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if run("throughput") {
        throughput();
    }
    if run("packing") {
        packing();
    }
    if run("trait") {
        trait_path();
    }
}
