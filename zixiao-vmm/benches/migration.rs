//! Live migration of a 256 MiB test guest between two VMM processes on
//! /dev/kvm (harness = false), at three dirty rates: the guest's `dirty`
//! mode writes `zx.pages` pages per tick and prints its counter every tick.
//!
//! The dirty rate is the guest's before migrating (pages per tick over
//! the tick); while dirty logging is on, each first write to a page after
//! a log read faults to KVM, so the guest dirties more slowly then.
//!
//! For each rate: total time, copy rounds, whether it converged (30 rounds
//! at most, a 50 ms downtime target, forced when it does not converge, so
//! every rate gives figures), the downtime the source measured (vCPUs
//! paused to the target's ack), and the downtime the guest shows: the
//! longest gap between two consecutive counter lines, seen by one thread
//! that polls both VMMs' console.log every 0.2 ms (the source's lines
//! before, the target's after), against the median gap before migrating
//! (the tick, which is also the resolution).
//!
//! Prints a table and writes `target/bench-results/vmm-migration.json`.
//! Run: `cargo bench -p zixiao-vmm --bench migration`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use zixiao_vmm::{launch, test_guest, Boot, MigrationParams, VmConfig, VmmClient};

const MEMORY_MIB: u64 = 256;
/// Pages written per tick (the guest's `zx.pages`).
const RATES: [u32; 3] = [0, 64, 1024];
/// The guest's `zx.delay`: a tick of about 1 ms on this project's
/// software-nested KVM with no pages to write (each loop iteration is
/// emulated, ~2 us).
const DELAY: u32 = 400;

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_zixiao-vmm"))
}

fn config(kernel: &Path, pages: u32) -> VmConfig {
    VmConfig {
        kernel: kernel.to_path_buf(),
        initrd: None,
        cmdline: format!("zx.mode=dirty zx.pages={pages} zx.delay={DELAY}"),
        vcpus: 1,
        memory_mib: MEMORY_MIB,
        disks: Vec::new(),
        nets: Vec::new(),
        vsock: None,
        balloon: None,
    }
}

/// Counter lines as they appear in console logs: (when seen, value).
struct Watcher {
    seen: Arc<Mutex<Vec<(Instant, u64)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(logs: Vec<PathBuf>) -> Watcher {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut read = vec![0usize; logs.len()];
            let mut partial = vec![String::new(); logs.len()];
            while !st.load(Ordering::Relaxed) {
                for (i, log) in logs.iter().enumerate() {
                    let Ok(bytes) = std::fs::read(log) else {
                        continue;
                    };
                    if bytes.len() <= read[i] {
                        continue;
                    }
                    let now = Instant::now();
                    partial[i].push_str(&String::from_utf8_lossy(&bytes[read[i]..]));
                    read[i] = bytes.len();
                    while let Some(end) = partial[i].find('\n') {
                        let line: String = partial[i].drain(..=end).collect();
                        if let Some(n) = line
                            .trim()
                            .strip_prefix("ZX: count=")
                            .and_then(|n| n.parse().ok())
                        {
                            s.lock().unwrap().push((now, n));
                        }
                    }
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        Watcher {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn lines(&self) -> Vec<(Instant, u64)> {
        self.seen.lock().unwrap().clone()
    }

    fn finish(mut self) -> Vec<(Instant, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.lines()
    }
}

fn median_gap_ms(lines: &[(Instant, u64)]) -> f64 {
    let mut gaps: Vec<f64> = lines
        .windows(2)
        .map(|w| (w[1].0 - w[0].0).as_secs_f64() * 1000.0)
        .collect();
    gaps.sort_by(|a, b| a.total_cmp(b));
    gaps.get(gaps.len() / 2).copied().unwrap_or(0.0)
}

async fn wait_lines(w: &Watcher, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while w.lines().len() < n {
        assert!(Instant::now() < deadline, "the guest printed too little");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn one(kernel: &Path, dir: &Path, pages: u32) -> Value {
    let cfg = config(kernel, pages);
    let source = launch(&binary(), &dir.join("source"), Boot::Fresh(cfg.clone()))
        .await
        .expect("source");
    let target = launch(&binary(), &dir.join("target"), Boot::Incoming(cfg))
        .await
        .expect("target");
    let watcher = Watcher::start(vec![source.console_log(), target.console_log()]);
    source.start().await.expect("start");
    wait_lines(&watcher, 40).await;
    let tick_ms = median_gap_ms(&watcher.lines());
    let params = MigrationParams::new(30, 50).expect("params").forced();
    let before = watcher.lines().len();
    let report = source
        .migrate(&target.migration_socket(), params)
        .await
        .expect("migrate");
    wait_lines(&watcher, before + 20).await;
    let mut lines = watcher.finish();
    // Merged by counter value: the source's lines, then the target's.
    lines.sort_by_key(|&(_, n)| n);
    lines.dedup_by_key(|&mut (_, n)| n);
    let longest_gap_ms = lines
        .windows(2)
        .map(|w| w[1].0.saturating_duration_since(w[0].0).as_secs_f64() * 1000.0)
        .fold(0.0, f64::max);
    let continues = lines.windows(2).all(|w| w[1].1 == w[0].1 + 1);
    let dirty_mib_s = f64::from(pages) * 4096.0 / (tick_ms / 1000.0) / f64::from(1 << 20);
    shutdown(&[&source, &target]).await;
    json!({
        "pages_per_tick": pages,
        "tick_ms": tick_ms,
        "dirty_mib_s": dirty_mib_s,
        "total_ms": report.total_ms,
        "rounds": report.rounds,
        "converged": report.converged,
        "downtime_vmm_ms": report.downtime_ms,
        "longest_counter_gap_ms": longest_gap_ms,
        "counter_continuous": continues,
        "memory_mib_sent": report.memory_bytes_sent as f64 / f64::from(1 << 20),
        "final_kib": report.final_bytes / 1024,
        "throughput_mib_s": report.throughput_mib_s,
    })
}

async fn shutdown(vmms: &[&VmmClient]) {
    for vmm in vmms {
        let _ = vmm.shutdown(Duration::from_secs(2)).await;
    }
}

fn write_results(rows: &[Value]) {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.parent()?.parent()?.to_path_buf())
        })
        .unwrap_or_else(|| PathBuf::from("target"));
    let dir = target.join("bench-results");
    let kvm = format!("{:?}", zixiao_vmm::kvm_support());
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let doc = json!({"name": "vmm-migration", "machine": kvm, "profile": profile, "results": rows});
    let path = dir.join("vmm-migration.json");
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap_or_default()));
    match written {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => println!("could not write {}: {e}", path.display()),
    }
}

fn main() {
    // `cargo test --benches` runs this without --bench: one quick rate.
    let quick = !std::env::args().any(|a| a == "--bench");
    if let Some(why) = zixiao_vmm::kvm_skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let Some(kernel) = test_guest::kernel_path() else {
        println!("skipped: the test guest was not built (gcc/ld missing)");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let rates: &[u32] = if quick { &RATES[..1] } else { &RATES };
    let rows: Vec<Value> = rt.block_on(async {
        let mut rows = Vec::new();
        for (i, &pages) in rates.iter().enumerate() {
            rows.push(one(&kernel, &dir.path().join(format!("rate{i}")), pages).await);
        }
        rows
    });
    println!(
        "{:>6} {:>8} {:>11} {:>9} {:>6} {:>9} {:>10} {:>10} {:>9} {:>8}",
        "pages",
        "tick ms",
        "dirty MiB/s",
        "total ms",
        "rounds",
        "converged",
        "down(vmm)",
        "max gap",
        "sent MiB",
        "MiB/s"
    );
    let f = |r: &Value, k: &str| r[k].as_f64().unwrap_or(0.0);
    for r in &rows {
        println!(
            "{:>6} {:>8.2} {:>11.1} {:>9} {:>6} {:>9} {:>8}ms {:>8.1}ms {:>9.1} {:>8.0}",
            f(r, "pages_per_tick"),
            f(r, "tick_ms"),
            f(r, "dirty_mib_s"),
            f(r, "total_ms"),
            f(r, "rounds"),
            r["converged"].as_bool().unwrap_or(false),
            f(r, "downtime_vmm_ms"),
            f(r, "longest_counter_gap_ms"),
            f(r, "memory_mib_sent"),
            f(r, "throughput_mib_s"),
        );
    }
    if !quick {
        write_results(&rows);
    }
}
