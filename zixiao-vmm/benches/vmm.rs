//! End-to-end VMM benchmarks on /dev/kvm with the test guest (harness = false):
//! - launch-to-marker: `launch()` (process spawn, jail, guest load) +
//!   `start()` until the guest prints `ZX: ready` on a live console reader;
//!   100 boots each jailed (the default confinement), seccomp only, and
//!   unconfined, interleaved so all three see the same machine load;
//! - VMM RSS beyond the guest pages it touched (VmRSS minus the guest
//!   mapping's Rss in /proc/PID/smaps), and peak RSS (VmHWM), per confinement;
//! - microVMs booted per second (launch, start, marker, guest power-off),
//!   1 and 8 at a time;
//! - snapshot and restore (launch Restore until paused, then until the next
//!   counter line) for 64 MiB and 256 MiB guests;
//! - launch-to-marker and VmHWM with one virtio-block disk against none,
//!   and with every kind of device (a disk, a network card on a TAP, a
//!   vsock device and a balloon; jailed) (interleaved, same run);
//! - launch-to-marker and VmHWM with the ACPI tables against a baseline
//!   binary without them (`ZIXIAO_BENCH_BASELINE_VMM`; jailed, 2 vCPUs,
//!   interleaved, same run);
//! - virtio-block read throughput as the C guest (guest/blk.c, `zx.bench=1`)
//!   sees it, sequential 4 KiB and 1 MiB and random 4 KiB, against the same
//!   file read on the host (dd for sequential, pread for random);
//! - virtio-net round trip and throughput between the host end of a TAP
//!   (an AF_PACKET socket in a namespace the bench makes) and the C guest
//!   echoing frames (`zx.net=echo`), 60- and 1514-byte frames, one at a time;
//! - launch-to-marker and VmHWM with a vsock device against none (jailed,
//!   interleaved, same run), and the vsock round trip (64 bytes) and echo
//!   throughput (256 KiB) between a host process on the VMM's socket and
//!   the C guest echoing on port 1234;
//! - the measure of the devices' cost (section "devices"):
//!   launch-to-marker with every kind of device against none, the test
//!   guest in `zx.quiet` (only the marker printed, so both do the same
//!   guest work, as the reference guest did), jailed and unconfined.
//! - the balloon: time to give back 24 MiB of a guest that touched 32 MiB
//!   (target set until the guest reports `actual`), and to take it back,
//!   with the VMM's VmRSS and the guest mapping's Rss before and after
//!   (C balloon guest, jailed, 64 MiB).
//!
//! Prints a table and writes `target/bench-results/vmm.json`:
//! `{"name": "vmm", "machine": "...", "results": [rows]}`.
//!
//! Run: `cargo bench -p zixiao-vmm --bench vmm` (ZIXIAO_BENCH_BOOTS=N to change
//! 100; ZIXIAO_BENCH_ONLY=start,throughput,snapshot,disk,devices,acpi,block,net,vsock,balloon
//! to run some; ZIXIAO_BENCH_VMMS=LABEL=PATH,... adds other builds to the "disk" and "devices"
//! sections;
//! ZIXIAO_BENCH_SMAPS=DIR keeps the smaps of its VMMs at the marker).
//! With `ZIXIAO_VMM_TIMELINE=1` the start and devices sections also print
//! the median time of each step of a start (launcher, jail, devices,
//! threads, filters, the client's calls, vCPU 0's first KVM_RUN) per
//! kind, and write every boot's steps to the JSON.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use zixiao_vmm::{
    launch, launch_with, test_guest, Boot, Confinement, DiskConfig, VmConfig, VmmClient,
};

/// Every VMM launched, so a panicking run kills them (VMMs are detached).
static LAUNCHED: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

fn kill_launched() {
    for pid in LAUNCHED.lock().map(|l| l.clone()).unwrap_or_default() {
        // Only our VMMs: a pid of a VMM that already exited may be reused.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains("zixiao-vmm\0--run-dir") {
            continue;
        }
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn track(vmm: &VmmClient) {
    if let Ok(mut l) = LAUNCHED.lock() {
        l.push(vmm.pid());
    }
}

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_zixiao-vmm"))
}

fn config(kernel: &Path, cmdline: &str, memory_mib: u64) -> VmConfig {
    VmConfig {
        kernel: kernel.to_path_buf(),
        initrd: None,
        cmdline: cmdline.into(),
        vcpus: 1,
        memory_mib,
        disks: Vec::new(),
        nets: Vec::new(),
        vsock: None,
        balloon: None,
    }
}

async fn read_until(console: &mut tokio::net::UnixStream, needle: &str) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(30), async {
        while !String::from_utf8_lossy(&seen).contains(needle) {
            let n = console.read(&mut buf).await.expect("console read");
            assert!(n > 0, "console closed before `{needle}`");
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("marker within 30 s");
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Rss (KiB) of the mapping whose size is exactly `size_kib` (the guest memory).
fn mapping_rss_kib(pid: u32, size_kib: u64) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut in_guest = false;
    for line in smaps.lines() {
        if let Some(v) = line.strip_prefix("Size:") {
            in_guest = v.split_whitespace().next().and_then(|n| n.parse().ok()) == Some(size_kib);
        } else if in_guest {
            if let Some(v) = line.strip_prefix("Rss:") {
                return v
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
            }
        }
    }
    0
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn boot_to_marker(kernel: &Path, run: &Path, cmdline: &str) -> (Duration, VmmClient) {
    let (t, _, vmm) = boot_to_marker_split(kernel, run, cmdline, &Confinement::default()).await;
    (t, vmm)
}

/// Total time to the marker, and the part spent in `launch()` (spawn,
/// jail, load).
async fn boot_to_marker_split(
    kernel: &Path,
    run: &Path,
    cmdline: &str,
    confinement: &Confinement,
) -> (Duration, Duration, VmmClient) {
    boot_config_to_marker(
        &binary(),
        config(kernel, cmdline, 64),
        run,
        confinement,
        None,
    )
    .await
}

/// [`boot_to_marker_split`] of any config, on the VMM `binary`.
async fn boot_config_to_marker(
    binary: &Path,
    config: VmConfig,
    run: &Path,
    confinement: &Confinement,
    netns: Option<&std::fs::File>,
) -> (Duration, Duration, VmmClient) {
    zixiao_vmm::timeline::mark("B:launch");
    let t0 = Instant::now();
    let vmm = match netns {
        Some(ns) => {
            zixiao_vmm::launch_in_netns(binary, run, Boot::Fresh(config), confinement, ns).await
        }
        None => launch_with(binary, run, Boot::Fresh(config), confinement).await,
    }
    .expect("launch");
    let launched = t0.elapsed();
    track(&vmm);
    let mut console = vmm.attach_console().await.expect("console");
    zixiao_vmm::timeline::mark("B:launched");
    vmm.start().await.expect("start");
    zixiao_vmm::timeline::mark("B:started");
    read_until(&mut console, test_guest::READY_MARKER).await;
    zixiao_vmm::timeline::mark("B:marker");
    (t0.elapsed(), launched, vmm)
}

/// The confinements compared, with their names in the table and the JSON.
fn confinements() -> [(&'static str, Confinement); 3] {
    [
        ("jailed", Confinement::default()),
        ("seccomp only", Confinement::seccomp_only()),
        ("unconfined", Confinement::none()),
    ]
}

fn ms_f(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

/// One row of timings (ms) for `measure` under `confinement`.
fn timing_row(measure: &str, confinement: &str, sorted: &[Duration]) -> Value {
    json!({
        "measure": measure,
        "confinement": confinement,
        "unit": "ms",
        "n": sorted.len(),
        "min": ms_f(sorted[0]),
        "p50": ms_f(pct(sorted, 0.5)),
        "p99": ms_f(pct(sorted, 0.99)),
        "max": ms_f(sorted[sorted.len() - 1]),
    })
}

#[derive(Default)]
struct StartSamples {
    times: Vec<Duration>,
    launch_times: Vec<Duration>,
    rss: Vec<u64>,
    overhead: Vec<u64>,
    hwm: Vec<u64>,
    /// Per boot, with `ZIXIAO_VMM_TIMELINE=1`: each step's time since the
    /// bench called `launch()`, in µs (the launcher's, the VMM's, the bench's).
    timelines: Vec<Vec<(String, u64)>>,
}

/// This boot's steps (see [`StartSamples::timelines`]), launcher's and
/// bench's from this process, the VMM's from its `vmm.log`.
fn boot_timeline(run: &Path) -> Vec<(String, u64)> {
    let mut steps = zixiao_vmm::timeline::take();
    let log = std::fs::read_to_string(run.join(zixiao_vmm::files::VMM_LOG)).unwrap_or_default();
    // The VMM's line at ready, then vCPU 0's (its first KVM_RUN and exit).
    for vmm in log.lines().filter_map(zixiao_vmm::timeline::parse) {
        steps.extend(vmm);
    }
    let Some(t0) = steps.iter().find(|(l, _)| l == "B:launch").map(|s| s.1) else {
        return Vec::new();
    };
    let mut steps: Vec<(String, u64)> = steps
        .into_iter()
        .map(|(l, t)| (l, t.saturating_sub(t0)))
        .collect();
    steps.sort_by_key(|s| s.1);
    steps
}

/// Per step, the median time since `launch()` and the median time since
/// the step before it (in each boot's own order), per confinement: where
/// a boot's time goes, and what a confinement adds.
fn print_timelines(kinds: &[String], samples: &[StartSamples]) {
    if samples.iter().all(|s| s.timelines.is_empty()) {
        return;
    }
    let median = |mut v: Vec<f64>| -> Option<f64> {
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| v[v.len() / 2])
    };
    // The steps in the order of the first confinement's first boot, then
    // any the others have.
    let mut labels: Vec<String> = Vec::new();
    for s in samples {
        for t in s.timelines.iter().take(1) {
            for (l, _) in t {
                if !labels.contains(l) {
                    labels.push(l.clone());
                }
            }
        }
    }
    println!();
    print!("{:<22}", "step (ms, median)");
    for name in kinds {
        print!(" {:>13} {:>7}", format!("{name} at"), "+step");
    }
    println!();
    for label in &labels {
        print!("{label:<22}");
        for s in samples {
            let at = median(
                s.timelines
                    .iter()
                    .filter_map(|t| t.iter().find(|(l, _)| l == label))
                    .map(|(_, us)| *us as f64 / 1e3)
                    .collect(),
            );
            let step = median(
                s.timelines
                    .iter()
                    .filter_map(|t| {
                        let i = t.iter().position(|(l, _)| l == label)?;
                        let before = if i == 0 { 0 } else { t[i - 1].1 };
                        Some((t[i].1 - before) as f64 / 1e3)
                    })
                    .collect(),
            );
            match (at, step) {
                (Some(at), Some(step)) => print!(" {at:>13.2} {step:>7.2}"),
                _ => print!(" {:>13} {:>7}", "-", "-"),
            }
        }
        println!();
    }
}

async fn bench_start(kernel: &Path, dir: &Path, rows: &mut Vec<Value>) {
    let boots = boots();
    let kinds = confinements();
    let mut samples: Vec<StartSamples> = kinds.iter().map(|_| StartSamples::default()).collect();
    // Interleaved: boot i of every confinement runs back to back, so a
    // burst of load on the shared machine hits all of them alike.
    for i in 0..boots {
        for ((name, confinement), s) in kinds.iter().zip(samples.iter_mut()) {
            let run = dir.join(format!("start-{}-{i}", name.replace(' ', "-")));
            let (t, launched, vmm) =
                boot_to_marker_split(kernel, &run, "zx.mode=halt", confinement).await;
            s.times.push(t);
            s.launch_times.push(launched);
            let pid = vmm.pid();
            let total = status_kib(pid, "VmRSS:");
            s.rss.push(total);
            s.overhead
                .push(total.saturating_sub(mapping_rss_kib(pid, 64 * 1024)));
            s.hwm.push(status_kib(pid, "VmHWM:"));
            if zixiao_vmm::timeline::enabled() {
                s.timelines.push(boot_timeline(&run));
            }
            vmm.shutdown(Duration::from_secs(2))
                .await
                .expect("shutdown");
            let _ = std::fs::remove_dir_all(&run);
        }
    }
    // Paired by boot (jailed i against unconfined i, which ran back to
    // back): a burst of load shifts both, so the median of the differences
    // is steadier than the difference of the medians.
    let mut paired: Vec<f64> = samples[0]
        .times
        .iter()
        .zip(&samples[2].times)
        .map(|(j, u)| (j.as_secs_f64() - u.as_secs_f64()) * 1e3)
        .collect();
    paired.sort_by(f64::total_cmp);
    let paired_p50 = paired[paired.len() / 2];
    println!();
    println!(
        "{:<14} {:>9} {:>9} {:>9} {:>9} {:>11} {:>10} {:>10} {:>10}",
        "confinement",
        "min ms",
        "p50 ms",
        "p99 ms",
        "max ms",
        "launch p50",
        "RSS KiB",
        "VMM KiB",
        "HWM KiB"
    );
    for ((name, _), s) in kinds.iter().zip(samples.iter_mut()) {
        for v in [&mut s.rss, &mut s.overhead, &mut s.hwm] {
            v.sort();
        }
        s.times.sort();
        s.launch_times.sort();
        let median = |v: &[u64]| v[v.len() / 2];
        println!(
            "{:<14} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>11.2} {:>10} {:>10} {:>10}",
            name,
            ms_f(s.times[0]),
            ms_f(pct(&s.times, 0.5)),
            ms_f(pct(&s.times, 0.99)),
            ms_f(s.times[s.times.len() - 1]),
            ms_f(pct(&s.launch_times, 0.5)),
            median(&s.rss),
            median(&s.overhead),
            median(&s.hwm),
        );
        rows.push(timing_row(
            "launch-to-marker (64 MiB, 1 vCPU)",
            name,
            &s.times,
        ));
        rows.push(timing_row("of which launch()", name, &s.launch_times));
        if !s.timelines.is_empty() {
            rows.push(json!({
                "measure": "start steps, µs since launch() (ZIXIAO_VMM_TIMELINE=1)",
                "confinement": name,
                "boots": s.timelines,
            }));
        }
        rows.push(json!({
            "measure": "VMM RSS at marker (median)",
            "confinement": name,
            "unit": "KiB",
            "n": s.rss.len(),
            "total": median(&s.rss),
            "beyond_guest_pages": median(&s.overhead),
            "peak_hwm": median(&s.hwm),
        }));
    }
    let names: Vec<String> = kinds.iter().map(|(n, _)| n.to_string()).collect();
    print_timelines(&names, &samples);
    let p50 = |i: usize| pct(&samples[i].times, 0.5).as_secs_f64();
    let min = |i: usize| samples[i].times[0].as_secs_f64();
    println!(
        "jailed vs unconfined: p50 {:+.1}%, min {:+.1}%, median paired difference {:+.2} ms \
         ({:+.1}% of the unconfined p50)\n  goal: within 10%; last recorded (README \
         \"Benchmarks\"): +0.37 ms paired at the median of 5 runs (+0.24 to +0.55 ms, \
         +4.1 to +10.8%), 2026-12-08 00:38-00:39 UTC, this command (ZIXIAO_BENCH_ONLY=start \
         ZIXIAO_BENCH_BOOTS=100), 2 vCPU AMD EPYC VM, nested KVM kvm_pvm, load average 1.7-2.0",
        (p50(0) / p50(2) - 1.0) * 100.0,
        (min(0) / min(2) - 1.0) * 100.0,
        paired_p50,
        paired_p50 / (p50(2) * 1e3) * 100.0
    );
    rows.push(json!({
        "measure": "launch-to-marker, jailed minus unconfined (paired by boot)",
        "unit": "ms",
        "n": paired.len(),
        "p50": paired_p50,
    }));
    println!();
}

async fn bench_throughput(
    kernel: &Path,
    dir: &Path,
    parallel: usize,
    total: usize,
    rows: &mut Vec<Value>,
) {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        let (next, kernel, dir) = (next.clone(), kernel.to_path_buf(), dir.to_path_buf());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return;
                }
                let run = dir.join(format!("tp{parallel}-{i}"));
                // Power-off mode: the guest prints the marker and resets; the VMM exits.
                let (_, vmm) = boot_to_marker(&kernel, &run, "zx.mode=poweroff").await;
                vmm.shutdown(Duration::from_secs(2))
                    .await
                    .expect("shutdown");
                let _ = std::fs::remove_dir_all(&run);
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "microVMs booted to marker and stopped (jailed), {parallel} at a time: {total} in {secs:.2} s = {:.1}/s",
        total as f64 / secs
    );
    rows.push(json!({
        "measure": format!("microVMs booted to marker and stopped, {parallel} at a time"),
        "confinement": "jailed",
        "unit": "per_s",
        "n": total,
        "value": ((total as f64 / secs) * 10.0).round() / 10.0,
    }));
}

async fn bench_snapshot(kernel: &Path, dir: &Path, memory_mib: u64, rows: &mut Vec<Value>) {
    let mut snap_t = Vec::new();
    let mut restore_t = Vec::new();
    let mut resume_t = Vec::new();
    for i in 0..5 {
        let snap = dir.join(format!("snap-{memory_mib}-{i}"));
        let vmm = launch(
            &binary(),
            &dir.join(format!("s{memory_mib}-{i}")),
            Boot::Fresh(config(kernel, "zx.mode=loop", memory_mib)),
        )
        .await
        .expect("launch");
        track(&vmm);
        let mut console = vmm.attach_console().await.expect("console");
        vmm.start().await.expect("start");
        read_until(&mut console, "ZX: count=2\n").await;
        let t0 = Instant::now();
        vmm.snapshot(&snap).await.expect("snapshot");
        snap_t.push(t0.elapsed());
        vmm.shutdown(Duration::from_secs(2))
            .await
            .expect("shutdown");

        let t0 = Instant::now();
        let restored = launch(
            &binary(),
            &dir.join(format!("r{memory_mib}-{i}")),
            Boot::Restore {
                snapshot_dir: snap.clone(),
            },
        )
        .await
        .expect("restore");
        restore_t.push(t0.elapsed());
        track(&restored);
        let mut console = restored.attach_console().await.expect("console");
        restored.resume().await.expect("resume");
        read_until(&mut console, "ZX: count=").await;
        resume_t.push(t0.elapsed());
        restored
            .shutdown(Duration::from_secs(2))
            .await
            .expect("shutdown");
        let _ = std::fs::remove_dir_all(&snap);
    }
    snap_t.sort();
    restore_t.sort();
    resume_t.sort();
    println!(
        "{memory_mib} MiB guest (jailed): snapshot median {} (min {}), restore-to-paused median {} (min {}), restore-to-next-guest-output median {}",
        ms(snap_t[2]),
        ms(snap_t[0]),
        ms(restore_t[2]),
        ms(restore_t[0]),
        ms(resume_t[2])
    );
    rows.push(timing_row(
        &format!("snapshot, {memory_mib} MiB"),
        "jailed",
        &snap_t,
    ));
    rows.push(timing_row(
        &format!("restore until paused and ready, {memory_mib} MiB"),
        "jailed",
        &restore_t,
    ));
    rows.push(timing_row(
        &format!("restore until the next guest output, {memory_mib} MiB"),
        "jailed",
        &resume_t,
    ));
}

fn boots() -> usize {
    std::env::var("ZIXIAO_BENCH_BOOTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

/// A disk image of `mib` MiB of non-zero data (no holes: every read is real).
fn disk_image(path: &Path, mib: usize) {
    let data: Vec<u8> = (0..mib << 20).map(|i| (i % 251) as u8 + 1).collect();
    std::fs::write(path, data).expect("disk image");
}

/// The devices a boot of [`bench_disks`] has.
#[derive(Clone, Copy, PartialEq)]
enum Devices {
    None,
    OneDisk,
    /// A disk, a network card on a TAP and a vsock device: every kind of
    /// device the VMM announces (virtio-mmio and in the DSDT).
    Every,
}

/// Other builds of the VMM that [`bench_disks`] also boots, jailed, with
/// no device and with every kind: `ZIXIAO_BENCH_VMMS=LABEL=PATH,...`, e.g.
/// `static=$(scripts/build-vmm.sh)` or `before=/path/to/an/older/zixiao-vmm`.
fn other_vmms() -> Vec<(String, PathBuf)> {
    std::env::var("ZIXIAO_BENCH_VMMS")
        .unwrap_or_default()
        .split(',')
        .filter_map(|entry| {
            let (label, path) = entry.split_once('=')?;
            Some((label.to_string(), PathBuf::from(path)))
        })
        .collect()
}

/// Boot to marker and VmHWM with one disk against none, jailed and
/// unconfined, and with every kind of device (jailed), on this build and
/// on the [`other_vmms`], all interleaved so they see the same load.
async fn bench_disks(kernel: &Path, dir: &Path, rows: &mut Vec<Value>) {
    let disk = dir.join("boot-disk.img");
    disk_image(&disk, 64);
    let ns = BenchNetns::new("tap0");
    let this = || (String::new(), binary());
    let mut kinds = vec![
        ("jailed", Confinement::default(), Devices::None, this()),
        ("jailed", Confinement::default(), Devices::OneDisk, this()),
        ("jailed", Confinement::default(), Devices::Every, this()),
        ("unconfined", Confinement::none(), Devices::None, this()),
        ("unconfined", Confinement::none(), Devices::OneDisk, this()),
    ];
    for (label, path) in other_vmms() {
        for devices in [Devices::None, Devices::Every] {
            let build = (format!(", {label} build"), path.clone());
            kinds.push(("jailed", Confinement::default(), devices, build));
        }
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); kinds.len()];
    let mut hwm: Vec<Vec<u64>> = vec![Vec::new(); kinds.len()];
    for i in 0..boots() {
        for (k, (_, confinement, devices, (_, vmm))) in kinds.iter().enumerate() {
            let mut config = config(kernel, "zx.mode=halt", 64);
            config.disks = vec![DiskConfig::new(&disk)];
            let mut netns = None;
            if *devices == Devices::Every {
                netns = Some(add_net_vsock_balloon(&mut config, &ns));
            }
            // The test guest prints its command line one byte (one I/O
            // exit, tens of microseconds here) at a time: without a disk it
            // gets a same-length stand-in for the announcement, so both
            // guests do the same work and only the device differs.
            if *devices == Devices::None {
                config.cmdline = config
                    .kernel_cmdline()
                    .replace("virtio_mmio.device=", "zx.pad.mmio.device=");
                config.disks.clear();
            }
            let run = dir.join(format!("disk-{k}-{i}"));
            let (t, peak) = boot_and_shut_down(vmm, config, &run, confinement, netns).await;
            times[k].push(t);
            hwm[k].push(peak);
        }
    }
    for (k, (confinement, _, devices, (build, _))) in kinds.iter().enumerate() {
        let kind = match devices {
            Devices::None => "no disk",
            Devices::OneDisk => "1 disk",
            Devices::Every => "disk+net+vsock+balloon",
        };
        let kind = format!("{kind}{build}");
        report_boots(&kind, confinement, 1, &mut times[k], &mut hwm[k], rows);
    }
}

/// The measure of what devices cost a boot: the test guest with
/// `zx.quiet` prints only the marker, as the reference guest Firecracker
/// was measured with did, so a boot with every kind of device (a disk, a
/// network card on a TAP, a vsock device, a balloon) and one with none do the same
/// guest work whatever the command line holds. Jailed and unconfined, on
/// this build and the [`other_vmms`], all interleaved; with
/// `ZIXIAO_VMM_TIMELINE=1` also each step's median per kind.
async fn bench_devices(kernel: &Path, dir: &Path, rows: &mut Vec<Value>) {
    let disk = dir.join("devices-disk.img");
    disk_image(&disk, 64);
    let ns = BenchNetns::new("tap0");
    let mut builds = vec![(String::new(), binary())];
    builds.extend(
        other_vmms()
            .into_iter()
            .map(|(label, path)| (format!(", {label} build"), path)),
    );
    let mut kinds = Vec::new();
    for (build, path) in &builds {
        for (confinement, how) in [
            ("jailed", Confinement::default()),
            ("unconfined", Confinement::none()),
        ] {
            for every in [false, true] {
                let devices = if every { "every device" } else { "no device" };
                let name = format!("{devices}, quiet guest{build}");
                kinds.push((name, confinement, how.clone(), every, path.clone()));
            }
        }
    }
    let mut samples: Vec<StartSamples> = kinds.iter().map(|_| StartSamples::default()).collect();
    for i in 0..boots() {
        for (k, (_, _, confinement, every, vmm)) in kinds.iter().enumerate() {
            let mut config = config(kernel, "zx.quiet zx.mode=halt", 64);
            let mut netns = None;
            if *every {
                config.disks = vec![DiskConfig::new(&disk)];
                netns = Some(add_net_vsock_balloon(&mut config, &ns));
            }
            let run = dir.join(format!("devices-{k}-{i}"));
            let (t, _, client) = boot_config_to_marker(vmm, config, &run, confinement, netns).await;
            let s = &mut samples[k];
            s.times.push(t);
            s.hwm.push(status_kib(client.pid(), "VmHWM:"));
            if zixiao_vmm::timeline::enabled() {
                s.timelines.push(boot_timeline(&run));
            }
            client
                .shutdown(Duration::from_secs(2))
                .await
                .expect("shutdown");
            let _ = std::fs::remove_dir_all(&run);
        }
    }
    let mut names = Vec::new();
    for ((name, confinement, ..), s) in kinds.iter().zip(samples.iter_mut()) {
        report_boots(name, confinement, 1, &mut s.times, &mut s.hwm, rows);
        if !s.timelines.is_empty() {
            rows.push(json!({
                "measure": format!("start steps, {name}, µs since launch() (ZIXIAO_VMM_TIMELINE=1)"),
                "confinement": confinement,
                "boots": s.timelines,
            }));
        }
        names.push(format!(
            "{} {}",
            &confinement[..1],
            name.replace(", quiet guest", "")
        ));
    }
    print_timelines(&names, &samples);
}

/// Boots `config` on `binary` to the marker, shuts it down and removes
/// `run`; returns the launch-to-marker time and the VmHWM (KiB) at the marker.
async fn boot_and_shut_down(
    binary: &Path,
    config: VmConfig,
    run: &Path,
    confinement: &Confinement,
    netns: Option<&std::fs::File>,
) -> (Duration, u64) {
    let (t, _, vmm) = boot_config_to_marker(binary, config, run, confinement, netns).await;
    let peak = status_kib(vmm.pid(), "VmHWM:");
    dump_smaps(vmm.pid(), run);
    vmm.shutdown(Duration::from_secs(2))
        .await
        .expect("shutdown");
    let _ = std::fs::remove_dir_all(run);
    (t, peak)
}

/// With `ZIXIAO_BENCH_SMAPS=DIR`: the VMM's /proc/PID/smaps and status at
/// the marker, as `DIR/<run dir name>.smaps` and `.status`, to see where
/// its memory goes (file-backed text, heap, stacks, guest pages).
fn dump_smaps(pid: u32, run: &Path) {
    let Some(dir) = std::env::var_os("ZIXIAO_BENCH_SMAPS").map(PathBuf::from) else {
        return;
    };
    let name = run.file_name().unwrap_or_default().to_string_lossy();
    for file in ["smaps", "status"] {
        if let Ok(text) = std::fs::read(format!("/proc/{pid}/{file}")) {
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(dir.join(format!("{name}.{file}")), text);
        }
    }
}

/// Prints and records launch-to-marker `times` and the VmHWM at the marker
/// of the boots of `kind` (64 MiB, `vcpus`) under `confinement`.
fn report_boots(
    kind: &str,
    confinement: &str,
    vcpus: u8,
    times: &mut [Duration],
    hwm: &mut [u64],
    rows: &mut Vec<Value>,
) {
    times.sort();
    hwm.sort();
    let median_hwm = hwm[hwm.len() / 2];
    let vcpus = if vcpus == 1 {
        "1 vCPU".to_string()
    } else {
        format!("{vcpus} vCPUs")
    };
    println!(
        "launch-to-marker, {kind}, {vcpus} ({confinement}): min {} p50 {} p99 {}, VmHWM median {median_hwm} KiB",
        ms(times[0]),
        ms(pct(times, 0.5)),
        ms(pct(times, 0.99)),
    );
    rows.push(timing_row(
        &format!("launch-to-marker, {kind} (64 MiB, {vcpus})"),
        confinement,
        times,
    ));
    rows.push(json!({
        "measure": format!("VmHWM at marker, {kind} (median)"),
        "confinement": confinement,
        "unit": "KiB",
        "n": hwm.len(),
        "value": median_hwm,
    }));
}

/// The cost of the ACPI tables (built and written at every fresh boot):
/// launch-to-marker and VmHWM of this VMM against a baseline binary built
/// without them (`ZIXIAO_BENCH_BASELINE_VMM`, e.g. the commit before ACPI),
/// both jailed, interleaved, same run, with 2 vCPUs (the MADT and MP table
/// grow per vCPU).
async fn bench_acpi(kernel: &Path, dir: &Path, rows: &mut Vec<Value>) {
    let Some(baseline) = std::env::var_os("ZIXIAO_BENCH_BASELINE_VMM").map(PathBuf::from) else {
        println!("acpi: skipped: set ZIXIAO_BENCH_BASELINE_VMM to a zixiao-vmm built without ACPI");
        return;
    };
    let kinds = [("no ACPI (baseline binary)", baseline), ("ACPI", binary())];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); kinds.len()];
    let mut hwm: Vec<Vec<u64>> = vec![Vec::new(); kinds.len()];
    for i in 0..boots() {
        for (k, (_, vmm_binary)) in kinds.iter().enumerate() {
            let mut config = config(kernel, "zx.mode=halt", 64);
            config.vcpus = 2;
            let run = dir.join(format!("acpi-{k}-{i}"));
            let (t, peak) =
                boot_and_shut_down(vmm_binary, config, &run, &Confinement::default(), None).await;
            times[k].push(t);
            hwm[k].push(peak);
        }
    }
    for (k, (kind, _)) in kinds.iter().enumerate() {
        report_boots(kind, "jailed", 2, &mut times[k], &mut hwm[k], rows);
    }
}

/// dd's own elapsed seconds for `count` blocks of `bs` from `file`.
fn dd_seconds(file: &Path, bs: &str, count: u32) -> f64 {
    let out = std::process::Command::new("dd")
        .arg(format!("if={}", file.display()))
        .args([
            "of=/dev/null",
            &format!("bs={bs}"),
            &format!("count={count}"),
        ])
        .output()
        .expect("dd");
    // "... bytes (...) copied, 0.00426 s, 2.0 GB/s"
    String::from_utf8_lossy(&out.stderr)
        .rsplit("copied, ")
        .next()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Random 4 KiB preads of `file` on the host, with the guest's generator.
fn host_random_4k_seconds(file: &Path, count: u64) -> f64 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(file).expect("disk");
    let slots = f.metadata().expect("stat").len() / 4096;
    let mut buf = vec![0u8; 4096];
    let mut seed: u64 = 12345;
    let t0 = Instant::now();
    for _ in 0..count {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        f.read_exact_at(&mut buf, ((seed >> 33) % slots) * 4096)
            .expect("pread");
    }
    t0.elapsed().as_secs_f64()
}

/// virtio-block read throughput seen by the C guest vs the host reading
/// the same (page-cached) file.
async fn bench_block(dir: &Path, rows: &mut Vec<Value>) {
    let Some(guest) = test_guest::virtio_kernel_path() else {
        println!("block throughput skipped: the virtio guest was not built");
        return;
    };
    let disk = dir.join("bench-disk.img");
    disk_image(&disk, 64);
    let mut config = config(&guest, "zx.bench=1", 64);
    config.disks = vec![DiskConfig {
        path: disk.clone(),
        read_only: true,
    }];
    let vmm = launch(&binary(), &dir.join("block"), Boot::Fresh(config))
        .await
        .expect("launch");
    track(&vmm);
    let mut console = vmm.attach_console().await.expect("console");
    vmm.start().await.expect("start");
    // Each complete console line with the time it arrived.
    let mut lines: Vec<(String, Instant)> = Vec::new();
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(300), async {
        while !lines.iter().any(|(l, _)| l == "ZX: bye") {
            let n = console.read(&mut buf).await.expect("console read");
            assert!(n > 0, "console closed before the benchmark ended");
            let now = Instant::now();
            pending.extend_from_slice(&buf[..n]);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                lines.push((String::from_utf8_lossy(&line).trim().to_string(), now));
            }
        }
    })
    .await
    .expect("the guest's benchmark within 300 s");
    vmm.shutdown(Duration::from_secs(2)).await.ok();
    let at = |prefix: &str| {
        lines
            .iter()
            .find(|(l, _)| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line"))
    };
    let host = [
        dd_seconds(&disk, "4k", 2048),
        dd_seconds(&disk, "1M", 64),
        host_random_4k_seconds(&disk, 2048),
    ];
    for ((name, label), host_s) in [
        ("seq4k", "sequential 4 KiB reads"),
        ("seq1m", "sequential 1 MiB reads"),
        ("rand4k", "random 4 KiB reads"),
    ]
    .into_iter()
    .zip(host)
    {
        let (_, start) = at(&format!("ZX: bench {name} start"));
        let (done, end) = at(&format!("ZX: bench {name} done"));
        assert!(done.ends_with("errors=0"), "{done}");
        let bytes: f64 = done
            .split_whitespace()
            .find_map(|w| w.strip_prefix("bytes="))
            .and_then(|b| b.parse().ok())
            .expect("bytes=");
        let secs = end.duration_since(*start).as_secs_f64();
        let (guest_mib_s, host_mib_s) = (bytes / secs / 1048576.0, bytes / host_s / 1048576.0);
        println!(
            "virtio-block {label}: guest {guest_mib_s:.1} MiB/s ({:.1} us/request), host {host_mib_s:.1} MiB/s",
            secs * 1e6 / (bytes / if name == "seq1m" { 1048576.0 } else { 4096.0 })
        );
        rows.push(json!({
            "measure": format!("virtio-block {label} (64 MiB page-cached raw file)"),
            "confinement": "jailed",
            "unit": "MiB/s",
            "guest": (guest_mib_s * 10.0).round() / 10.0,
            "host": (host_mib_s * 10.0).round() / 10.0,
        }));
    }
}

/// Runs `ip ARGS`, panicking on failure (the bench runs as root).
fn ip(args: &[&str]) {
    let ok = std::process::Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ip {args:?} failed");
}

/// virtio-net: frames of 60 and 1514 bytes sent one at a time from the
/// host end of the TAP to the echoing guest; the time until each comes
/// back (round trip) and the bytes moved both ways per second.
async fn bench_net(dir: &Path, rows: &mut Vec<Value>) {
    let Some(guest) = test_guest::virtio_kernel_path() else {
        println!("net skipped: the virtio guest was not built");
        return;
    };
    let ns = BenchNetns::new("tap0");
    let socket = zixiao_testing::packet::PacketSocket::open_in(&ns.file, "tap0", 0x88b5)
        .expect("a packet socket on tap0");
    let mut config = config(&guest, "zx.net=echo", 64);
    config.nets = vec![bench_net_config("tap0")];
    let vmm = zixiao_vmm::launch_in_netns(
        &binary(),
        &dir.join("net"),
        Boot::Fresh(config),
        &Confinement::default(),
        &ns.file,
    )
    .await
    .expect("launch");
    track(&vmm);
    vmm.start().await.expect("start");
    let round_trip = |payload: &[u8], size: usize| -> Duration {
        let mut frame = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0xfe, 0x88, 0xb6];
        frame.extend_from_slice(payload);
        frame.resize(size, 0);
        let started = Instant::now();
        socket.send(&frame).expect("send");
        socket
            .recv_starting(payload, Duration::from_secs(5))
            .expect("the guest's echo within 5 s");
        started.elapsed()
    };
    // The first exchange is answered during the guest's boot.
    round_trip(b"warm-up", 60);
    let count = 200;
    for size in [60usize, 1514] {
        let mut times: Vec<Duration> = (0..count)
            .map(|i| round_trip(format!("rtt-{i}-").as_bytes(), size))
            .collect();
        let total: Duration = times.iter().sum();
        times.sort();
        let mib_s = (2 * size * count) as f64 / total.as_secs_f64() / 1048576.0;
        println!(
            "virtio-net {size}-byte frames: round trip p50 {} p99 {}, {mib_s:.2} MiB/s both ways",
            ms(pct(&times, 0.5)),
            ms(pct(&times, 0.99))
        );
        let mut row = timing_row(
            &format!("virtio-net round trip, {size}-byte frame (host TAP end to echoing guest)"),
            "jailed",
            &times,
        );
        row["mib_per_s_both_ways"] = json!((mib_s * 100.0).round() / 100.0);
        rows.push(row);
    }
    vmm.shutdown(Duration::from_secs(2)).await.ok();
}

/// A network namespace of the bench's own with one TAP up in it, deleted
/// when dropped.
struct BenchNetns {
    name: String,
    /// The namespace, for `launch_in_netns` and packet sockets.
    file: std::fs::File,
}

impl BenchNetns {
    fn new(tap: &str) -> BenchNetns {
        let name = format!("zxbench-{}-{tap}", std::process::id());
        ip(&["netns", "add", &name]);
        ip(&[
            "netns",
            "exec",
            &name,
            "sysctl",
            "-qw",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]);
        ip(&["-n", &name, "tuntap", "add", "dev", tap, "mode", "tap"]);
        ip(&["-n", &name, "link", "set", tap, "up"]);
        let file = std::fs::File::open(format!("/run/netns/{name}")).expect("netns");
        BenchNetns { name, file }
    }
}

impl Drop for BenchNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A network card on `tap` (in the bench's namespace).
/// Gives `config` the devices of "every device" but the disk: a network
/// card on `ns`'s TAP, a vsock device and a balloon. Returns the network
/// namespace the VMM must start in for its TAP.
fn add_net_vsock_balloon<'a>(config: &mut VmConfig, ns: &'a BenchNetns) -> &'a std::fs::File {
    config.nets = vec![bench_net_config("tap0")];
    config.vsock = Some(bench_vsock_config());
    config.balloon = Some(bench_balloon_config());
    &ns.file
}

fn bench_net_config(tap: &str) -> zixiao_vmm::NetConfig {
    zixiao_vmm::NetConfig {
        tap: tap.to_string().try_into().expect("name"),
        mac: "02:00:00:00:00:01".to_string().try_into().expect("mac"),
    }
}

/// The balloon every VMM microVM of Zixiao's driver boots with.
fn bench_balloon_config() -> zixiao_vmm::BalloonConfig {
    zixiao_vmm::BalloonConfig {
        amount_mib: 0,
        deflate_on_oom: true,
    }
}

fn bench_vsock_config() -> zixiao_vmm::VsockConfig {
    zixiao_vmm::VsockConfig::new(zixiao_vmm::GuestCid::try_from(3).expect("a guest CID"))
}

/// vsock: what the device costs at boot (the test guest does not drive
/// it: the device, its socket and its thread are what is measured), then
/// round trips and echo throughput through the VMM's socket to the C guest.
async fn bench_vsock(kernel: &Path, dir: &Path, rows: &mut Vec<Value>) {
    let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut hwm: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    for i in 0..boots() {
        for (k, with_vsock) in [false, true].into_iter().enumerate() {
            let mut config = config(kernel, "zx.mode=halt", 64);
            config.vsock = Some(bench_vsock_config());
            // Same-length command line either way (see bench_disks).
            if !with_vsock {
                config.cmdline = config
                    .kernel_cmdline()
                    .replace("virtio_mmio.device=", "zx.pad.mmio.device=");
                config.vsock = None;
            }
            let run = dir.join(format!("vsock-boot-{k}-{i}"));
            let (t, peak) =
                boot_and_shut_down(&binary(), config, &run, &Confinement::default(), None).await;
            times[k].push(t);
            hwm[k].push(peak);
        }
    }
    for (k, kind) in ["no vsock", "a vsock device"].into_iter().enumerate() {
        report_boots(kind, "jailed", 1, &mut times[k], &mut hwm[k], rows);
    }

    let Some(guest) = test_guest::virtio_kernel_path() else {
        println!("vsock round trip skipped: the virtio guest was not built");
        return;
    };
    let mut config = config(&guest, "console=ttyS0", 64);
    config.vsock = Some(bench_vsock_config());
    let run = dir.join("vsock");
    let vmm = launch(&binary(), &run, Boot::Fresh(config))
        .await
        .expect("launch");
    track(&vmm);
    vmm.start().await.expect("start");
    let log = vmm.console_log();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("ZX: ready")
    {
        assert!(
            Instant::now() < deadline,
            "the guest's ZX: ready within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let uds = bench_vsock_config().uds_path(vmm.run_dir());
    let (rtts, echo_s) = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::os::unix::net::UnixStream::connect(&uds).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.write_all(b"CONNECT 1234\n").expect("CONNECT");
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while byte[0] != b'\n' {
            stream.read_exact(&mut byte).expect("the OK line");
            line.push(byte[0]);
        }
        assert!(line.starts_with(b"OK "), "{line:?}");
        let mut rtts = Vec::new();
        let mut back = [0u8; 64];
        for i in 0..200u8 {
            let msg = [i; 64];
            let started = Instant::now();
            stream.write_all(&msg).expect("write");
            stream.read_exact(&mut back).expect("echo");
            rtts.push(started.elapsed());
            assert_eq!(back, msg);
        }
        let data: Vec<u8> = (0..256 * 1024u32).map(|i| ((i * 31) >> 3) as u8).collect();
        let mut writer = stream.try_clone().expect("clone");
        let started = Instant::now();
        let sent = data.clone();
        let sender = std::thread::spawn(move || writer.write_all(&sent));
        let mut echoed = vec![0u8; data.len()];
        stream.read_exact(&mut echoed).expect("the echo");
        let echo_s = started.elapsed().as_secs_f64();
        sender.join().expect("writer").expect("write");
        assert!(echoed == data, "the echo differs");
        (rtts, echo_s)
    })
    .await
    .expect("vsock exchange");
    vmm.shutdown(Duration::from_secs(2)).await.ok();
    let mut rtts = rtts;
    rtts.sort();
    let mib_s = 2.0 * 256.0 / 1024.0 / echo_s;
    println!(
        "vsock 64-byte round trip p50 {} p99 {}; 256 KiB echo {:.0} ms ({mib_s:.2} MiB/s both ways)",
        ms(pct(&rtts, 0.5)),
        ms(pct(&rtts, 0.99)),
        echo_s * 1000.0
    );
    rows.push(timing_row(
        "vsock round trip, 64 bytes (host process on the VMM socket to echoing C guest)",
        "jailed",
        &rtts,
    ));
    rows.push(json!({
        "measure": "vsock echo of 256 KiB (guest buffer 16 KiB)",
        "confinement": "jailed",
        "unit": "MiB/s both ways",
        "value": (mib_s * 100.0).round() / 100.0,
    }));
}

/// Polls the balloon's `actual` until it is `pages`; the time it took.
async fn until_actual(vmm: &VmmClient, pages: u32, started: Instant) -> Duration {
    loop {
        let stats = vmm.balloon().await.expect("balloon stats");
        if stats.actual_pages == pages {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "balloon at {stats:?}"
        );
    }
}

/// Giving 24 MiB back and taking it back, on fresh VMMs of the balloon
/// guest (touches 32 MiB of 64), jailed: set_balloon until the guest
/// reports `actual` (the guest polls its InterruptStatus), with VmRSS and
/// the guest mapping's Rss before and after.
async fn bench_balloon(dir: &Path, rows: &mut Vec<Value>) {
    let Some(kernel) = test_guest::balloon_kernel_path() else {
        println!("balloon: skipped: the balloon guest was not built");
        return;
    };
    const PAGES: u32 = 24 * 256;
    let (mut inflate, mut deflate) = (Vec::new(), Vec::new());
    let mut rss: [Vec<u64>; 4] = Default::default();
    for i in 0..boots().min(20) {
        let mut config = config(&kernel, "console=ttyS0 zx.touch=32", 64);
        config.balloon = Some(zixiao_vmm::BalloonConfig::default());
        let vmm = launch(
            &binary(),
            &dir.join(format!("balloon-{i}")),
            Boot::Fresh(config),
        )
        .await
        .expect("launch");
        track(&vmm);
        vmm.start().await.expect("start");
        let log = vmm.console_log();
        zixiao_testing::wait::wait_until("the guest ready", Duration::from_secs(30), || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("ZX: ready\n").then_some(())
        })
        .await;
        let pid = vmm.pid();
        rss[0].push(status_kib(pid, "VmRSS:"));
        rss[1].push(mapping_rss_kib(pid, 64 << 10));
        let started = Instant::now();
        vmm.set_balloon(24).await.expect("set_balloon");
        inflate.push(until_actual(&vmm, PAGES, started).await);
        rss[2].push(status_kib(pid, "VmRSS:"));
        rss[3].push(mapping_rss_kib(pid, 64 << 10));
        let started = Instant::now();
        vmm.set_balloon(0).await.expect("set_balloon");
        deflate.push(until_actual(&vmm, 0, started).await);
        vmm.shutdown(Duration::from_secs(2)).await.ok();
    }
    inflate.sort();
    deflate.sort();
    let median = |v: &mut Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let [vm_before, guest_before, vm_after, guest_after] = rss.map(|mut v| median(&mut v));
    println!(
        "balloon: give back 24 MiB min {} p50 {} max {}; take back p50 {}; VmRSS {} -> {} KiB, \
         guest mapping Rss {} -> {} KiB (medians, {} VMMs)",
        ms(inflate[0]),
        ms(pct(&inflate, 0.5)),
        ms(inflate[inflate.len() - 1]),
        ms(pct(&deflate, 0.5)),
        vm_before,
        vm_after,
        guest_before,
        guest_after,
        inflate.len()
    );
    rows.push(timing_row(
        "balloon: give back 24 MiB (set_balloon until the guest reports actual)",
        "jailed",
        &inflate,
    ));
    rows.push(timing_row(
        "balloon: take back 24 MiB (set_balloon(0) until actual is 0)",
        "jailed",
        &deflate,
    ));
    rows.push(json!({
        "measure": "balloon: VMM VmRSS and guest mapping Rss before and after giving back 24 MiB (medians)",
        "confinement": "jailed",
        "unit": "KiB",
        "vmrss_before": vm_before,
        "vmrss_after": vm_after,
        "guest_rss_before": guest_before,
        "guest_rss_after": guest_after,
    }));
}

/// Whether `section` is selected by ZIXIAO_BENCH_ONLY (all when unset).
fn selected(section: &str) -> bool {
    std::env::var("ZIXIAO_BENCH_ONLY").map_or(true, |only| only.split(',').any(|s| s == section))
}

/// This machine in one line: CPU model and count, KVM kind, kernel, load.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{cpu}, {} CPUs, KVM {:?}, Linux {}, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        zixiao_vmm::kvm_support(),
        kernel.trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// `target/bench-results/vmm.json` (the target dir is three levels above
/// this bench's executable, `target/release/deps/vmm-*`).
fn write_results(rows: Vec<Value>) {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.parent()?.parent()?.to_path_buf())
        })
        .unwrap_or_else(|| PathBuf::from("target"));
    let dir = target.join("bench-results");
    let doc = json!({"name": "vmm", "machine": machine(), "results": rows});
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        std::fs::write(
            dir.join("vmm.json"),
            serde_json::to_vec_pretty(&doc).unwrap_or_default(),
        )
    });
    match written {
        Ok(()) => println!("wrote {}", dir.join("vmm.json").display()),
        Err(e) => println!("could not write {}: {e}", dir.join("vmm.json").display()),
    }
}

fn main() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        kill_launched();
        default_hook(info);
    }));
    // `cargo test --benches` runs this with --bench absent: keep that quick.
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
    rt.block_on(async {
        if quick {
            let (t, vmm) = boot_to_marker(&kernel, &dir.path().join("smoke"), "zx.mode=halt").await;
            vmm.shutdown(Duration::from_secs(2))
                .await
                .expect("shutdown");
            println!(
                "smoke: launch-to-marker {} (run with `cargo bench` for the full set)",
                ms(t)
            );
            return;
        }
        println!("KVM: {:?}", zixiao_vmm::kvm_support());
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "host: {} CPUs, load average {}",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            load.trim()
        );
        let mut rows = Vec::new();
        if selected("start") {
            bench_start(&kernel, dir.path(), &mut rows).await;
        }
        if selected("throughput") {
            bench_throughput(&kernel, dir.path(), 1, 40, &mut rows).await;
            bench_throughput(&kernel, dir.path(), 8, 40, &mut rows).await;
        }
        if selected("snapshot") {
            bench_snapshot(&kernel, dir.path(), 64, &mut rows).await;
            bench_snapshot(&kernel, dir.path(), 256, &mut rows).await;
        }
        if selected("disk") {
            bench_disks(&kernel, dir.path(), &mut rows).await;
        }
        if selected("devices") {
            bench_devices(&kernel, dir.path(), &mut rows).await;
        }
        if selected("acpi") {
            bench_acpi(&kernel, dir.path(), &mut rows).await;
        }
        if selected("block") {
            bench_block(dir.path(), &mut rows).await;
        }
        if selected("net") {
            bench_net(dir.path(), &mut rows).await;
        }
        if selected("vsock") {
            bench_vsock(&kernel, dir.path(), &mut rows).await;
        }
        if selected("balloon") {
            bench_balloon(dir.path(), &mut rows).await;
        }
        write_results(rows);
    });
}
