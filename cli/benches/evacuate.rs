//! Evacuating a node of running VMs, through a server and two agents on
//! the two libvirtds of `scripts/services/libvirt.sh` (two nodes on one
//! machine, TCG guests), as an operator does it, in one run:
//!
//! - `node drain A` with `EVAC_INSTANCES` (default 10) counting VMs on A
//!   (busybox initramfs, 256 MiB, restart policy `always`): each migrates
//!   live to B, a few at a time (the controller's
//!   `evacuation_concurrency`, 4): the whole drain, and each instance's
//!   migration from its operation's start to its end;
//! - then, for comparison, `node maintenance B on` with A taking no live
//!   migrations: the same VMs migrate cold to A (each stopped, its disk
//!   copied through the server, started there), until every one runs
//!   there. A build without cold migration restarted them from their
//!   images instead; the table says which happened.
//!
//! ```text
//! eval "$(scripts/services/libvirt.sh start)"
//! cargo bench -p zixiao-cli --features libvirt --bench evacuate
//! ```
//! Prints a table and writes `target/bench-results/evacuate.json`.
//! Without the libvirt services it says so and exits.

#[cfg(feature = "libvirt")]
#[path = "../tests/processes/mod.rs"]
mod processes;

#[cfg(not(feature = "libvirt"))]
fn main() {
    eprintln!("evacuate: needs `--features libvirt` (VMs on the two libvirtds)");
}

#[cfg(feature = "libvirt")]
fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(evacuate());
}

/// How long each instance's migration took, from its operation: its
/// start to its end, in milliseconds.
#[cfg(feature = "libvirt")]
fn migration_ms(pair: &processes::LibvirtPair, name: &str) -> Option<i64> {
    let shown = zixiao_testing::output::json(pair.run(&["instance", "get", name]));
    let op = shown["operation"].as_str()?;
    let op = zixiao_testing::output::json(pair.run(&["operation", "get", op]));
    let at = |field: &str| {
        chrono::DateTime::parse_from_rfc3339(op[field].as_str()?)
            .ok()
            .map(|t| t.timestamp_millis())
    };
    Some(at("finished_at")? - at("started_at")?)
}

#[cfg(feature = "libvirt")]
async fn evacuate() {
    use std::time::Instant;
    use zixiao_testing::output::json;

    let count: usize = std::env::var("EVAC_INSTANCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let machine = zixiao_benches::machine();
    let Some(mut pair) = processes::LibvirtPair::start("evb").await else {
        eprintln!("evacuate: the libvirt services are not running: nothing measured");
        return;
    };
    // Room for every VM on either node: 2 cores take 8 VMs of 1 CPU at
    // the default ratio of 4.
    let ratio = (count as u32).div_ceil(2).max(4).to_string();
    let make_room = |pair: &processes::LibvirtPair, node: &str| {
        zixiao_testing::output::ok(pair.run(&[
            "node",
            "update",
            node,
            "--cpu-allocation-ratio",
            &ratio,
        ]));
    };
    make_room(&pair, &pair.a);
    let pid = std::process::id();
    let names: Vec<String> = (0..count).map(|i| format!("evb-{pid}-{i}")).collect();
    for name in &names {
        pair.create_counter(name, &["--restart", "always"]);
    }
    for name in &names {
        pair.counts_past(name, 20).await;
    }
    pair.start_b().await;
    make_room(&pair, &pair.b);
    let (a, b) = (pair.a.clone(), pair.b.clone());

    let started = Instant::now();
    let drained = json(pair.run(&["node", "drain", &a]));
    let drain = started.elapsed();
    let live = drained["migrated"]
        .as_array()
        .map_or(0, |m| m.iter().filter(|m| m["mode"] == "live").count());
    assert_eq!(live, count, "not every VM migrated live: {drained}");
    let mut each: Vec<i64> = names
        .iter()
        .filter_map(|n| migration_ms(&pair, n))
        .collect();
    each.sort_unstable();
    let median = each.get(each.len() / 2).copied().unwrap_or_default();
    let slowest = each.last().copied().unwrap_or_default();

    zixiao_testing::output::ok(pair.run(&["node", "uncordon", &a]));
    let started = Instant::now();
    let back = json(pair.run(&["node", "maintenance", &b, "on"]));
    let back_took = started.elapsed();
    let cold = back["migrated"]
        .as_array()
        .map_or(0, |m| m.iter().filter(|m| m["mode"] == "cold").count());
    let moved = back["moved"].as_array().map_or(0, Vec::len);
    assert_eq!(cold + moved, count, "not every VM moved to A: {back}");
    let how_back = format!("{cold} cold migrations, {moved} restarts from their images");
    for name in &names {
        let _ = pair.run(&["instance", "delete", name]);
    }

    println!("evacuating {count} running VMs (256 MiB, TCG) from one node; {machine}");
    println!("| how | whole evacuation | per instance (median / slowest) |");
    println!("|---|---|---|");
    println!(
        "| `node drain`: live migration, 4 at a time | {} ms | {median} / {slowest} ms |",
        drain.as_millis()
    );
    println!(
        "| `node maintenance on`: {how_back} (guests reboot) | {} ms | - |",
        back_took.as_millis()
    );
    let rows = vec![
        serde_json::json!({
            "how": "drain, live migration",
            "instances": count,
            "total_ms": drain.as_millis() as u64,
            "per_instance_median_ms": median,
            "per_instance_max_ms": slowest,
        }),
        serde_json::json!({
            "how": format!("maintenance: {how_back}"),
            "instances": count,
            "total_ms": back_took.as_millis() as u64,
        }),
    ];
    match zixiao_benches::write_results("evacuate", &machine, rows) {
        Ok(path) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("evacuate: writing the results: {e}"),
    }
}
