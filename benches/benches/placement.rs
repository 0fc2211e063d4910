//! Criterion micro-benchmarks of one placement on a cluster filled to 90%
//! (read-only, so every iteration sees the same state), at 1k, 10k and 50k
//! nodes; the trait path on an unchanged snapshot; `explain`; and building
//! the index.
//!
//! `cargo bench -p zixiao-benches --bench placement`

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion};
use zixiao_benches::{cluster, fill, stream};
use zixiao_core::{Scheduler, SchedulingContext};
use zixiao_sched::PluginScheduler;

const SEED: u64 = 42;

fn placement(c: &mut Criterion) {
    let mut group = c.benchmark_group("place_in_90pct");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for n in [1_000usize, 10_000, 50_000] {
        let scheduler = PluginScheduler::default();
        let nodes = cluster(n, SEED);
        let mut state = scheduler.state(&SchedulingContext::new(&nodes));
        fill(&scheduler, &mut state, stream(SEED), 90.0, 1_000);
        // A median instance with the stream's spread and selector.
        let probe: Vec<_> = stream(SEED + 7)
            .filter(|i| i.spec.cpus == zixiao_core::Cpus::cores(2))
            .take(64)
            .collect();
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let mut k = 0;
            b.iter(|| {
                k = (k + 1) % probe.len();
                black_box(scheduler.place_in(&state, &probe[k]).ok())
            })
        });
        if n == 10_000 {
            // Stored nodes carry distinct revisions, which is what lets the
            // cache skip comparing unchanged nodes field by field.
            let mut snapshot = state.nodes().to_vec();
            for (i, node) in snapshot.iter_mut().enumerate() {
                node.revision = i as u64 + 1;
            }
            let cx = SchedulingContext::new(&snapshot);
            let _ = scheduler.place(&probe[0], &cx);
            group.bench_function("trait_place_unchanged_snapshot_10k", |b| {
                b.iter(|| black_box(scheduler.place(&probe[1], &cx).ok()))
            });
            let mut huge = probe[0].clone();
            huge.spec.cpus = zixiao_core::Cpus::cores(500);
            group.bench_function("explain_10k", |b| {
                b.iter(|| black_box(scheduler.explain_in(&state, &huge)))
            });
            group.bench_function("index_build_10k", |b| {
                b.iter(|| black_box(scheduler.state(&cx)))
            });
        }
    }
    group.finish();
}

// What `criterion_group!`/`criterion_main!` expand to, written out: the
// macros generate an undocumented public function the workspace lints reject.
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    placement(&mut criterion);
    criterion.final_summary();
}
