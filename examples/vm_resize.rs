//! Live resize latency of a libvirt VM: how long from `instance update`
//! (through the one API, in this process) to the new size in `virsh
//! dominfo`: the vCPUs hot-plugged, and the memory once the guest's
//! balloon driver has given it back or taken it. Boots a VM with
//! `--max-cpus 2 --max-memory 512` at 1 vCPU and 256 MiB, hot-plugs the
//! second vCPU, moves its memory back and forth within the maximum, and
//! prints each change and the median and worst, and writes them to
//! `target/bench-results/vm-resize.json`. A measurement, not a test. The
//! guest's initramfs must load `virtio_balloon` (the test one does).
//!
//! ```text
//! eval "$(scripts/services/libvirt.sh start)"
//! cargo run -p zixiao-examples --features libvirt --example vm_resize -- \
//!     "$ZIXIAO_TEST_LIBVIRT_URI" "$ZIXIAO_TEST_VM_KERNEL" "$ZIXIAO_TEST_VM_INITRD" \
//!     "$ZIXIAO_TEST_VM_BASE_IMAGE" [ROUNDS]
//! ```

use std::time::{Duration, Instant};

use zixiao_core::{Cpus, CreateInstance, InstanceSpec, InstanceUpdate, Wait};

/// How long a guest may take to boot and balloon down under TCG.
const SETTLE: Duration = Duration::from_secs(120);

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (uri, kernel, initrd, base, rounds) = match args.as_slice() {
        [uri, kernel, initrd, base] => (uri, kernel, initrd, base, 10),
        [uri, kernel, initrd, base, rounds] => (uri, kernel, initrd, base, rounds.parse()?),
        _ => return Err("usage: vm_resize LIBVIRT_URI KERNEL INITRD BASE_IMAGE [ROUNDS]".into()),
    };
    // QEMU runs as its own user: the state directory must be searchable.
    let state = std::env::temp_dir().join(format!("zixiao-vm-resize-{}", std::process::id()));
    std::fs::create_dir_all(&state)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755))?;
    let mut options = zixiao_client::OpenOptions::new(Some(state.clone()));
    options.libvirt_uri = Some(uri.clone());
    let zx = zixiao_client::open(options).await?;

    let mut spec = InstanceSpec::vm(base.as_str()).with_size(1, 256);
    spec.kernel = Some(kernel.into());
    spec.initrd = Some(initrd.into());
    spec.cmdline = Some("console=ttyS0 panic=-1 quiet".into());
    spec.max_cpus = Some(Cpus::cores(2));
    spec.max_memory_mib = Some(512);
    let vm = zx
        .create_instance(
            CreateInstance::new(format!("vm-resize-{}", std::process::id()), spec),
            Wait::Settled,
        )
        .await?;
    println!("vm {} ({}) on {uri}", vm.name, vm.id);
    // The VM is deleted whatever the measurement's outcome.
    let measured: Result<(), Box<dyn std::error::Error>> = async {
        // Booted, its balloon driver holding back what is above 256 MiB.
        wait_for(uri, &vm.id, 1, 256, Instant::now(), SETTLE)?;

        // The first round hot-plugs the second vCPU (a running guest gives
        // one back only with a restart); every round moves the balloon.
        let mut rows = Vec::with_capacity(rounds);
        println!("round  size              call ms  vCPUs seen ms  memory seen ms");
        for round in 0..rounds {
            let mib = if round % 2 == 0 { 384 } else { 256 };
            let update = InstanceUpdate {
                cpus: Some(Cpus::cores(2)),
                memory_mib: Some(mib),
                ..InstanceUpdate::default()
            };
            let started = Instant::now();
            zx.update_instance(&vm.id, update, Wait::No).await?;
            let call = started.elapsed();
            let (vcpus_seen, memory_seen) =
                wait_for(uri, &vm.id, 2, mib, started, Duration::from_secs(30))?;
            let vcpus_seen = (round == 0).then_some(vcpus_seen);
            println!(
                "{round:>5}  2 vCPU, {mib:>3} MiB  {:>8.1}  {:>13}  {:>14.1}",
                ms(call),
                vcpus_seen.map_or("-".to_owned(), |d| format!("{:.1}", ms(d))),
                ms(memory_seen)
            );
            rows.push((mib, call, vcpus_seen, memory_seen));
        }
        let summary = |all: Vec<Duration>| {
            let mut all = all;
            all.sort();
            (all[all.len() / 2], all[all.len() - 1])
        };
        if !rows.is_empty() {
            let (median, worst) = summary(rows.iter().map(|r| r.1).collect());
            let (memory_median, memory_worst) = summary(rows.iter().map(|r| r.3).collect());
            println!(
                "update call:       median {:>8.1} ms, worst {:>8.1} ms over {} rounds",
                ms(median),
                ms(worst),
                rows.len()
            );
            println!(
                "memory in dominfo: median {:>8.1} ms, worst {:>8.1} ms over {} rounds",
                ms(memory_median),
                ms(memory_worst),
                rows.len()
            );
            if let Some(vcpu) = rows[0].2 {
                println!(
                    "vCPU hot-plug in dominfo: {:.1} ms (1 to 2 vCPUs)",
                    ms(vcpu)
                );
            }
        }
        let json: Vec<_> = rows
            .iter()
            .map(|(mib, call, vcpus, memory)| {
                serde_json::json!({
                    "cpus": 2,
                    "memory_mib": mib,
                    "call_ms": ms(*call),
                    "vcpus_visible_ms": vcpus.map(ms),
                    "memory_visible_ms": ms(*memory),
                })
            })
            .collect();
        let path = zixiao_benches::write_results("vm-resize", &zixiao_benches::machine(), json)?;
        println!("wrote {}", path.display());
        Ok(())
    }
    .await;
    zx.delete_instance(&vm.id, Wait::Settled).await?;
    drop(zx);
    let _ = std::fs::remove_dir_all(&state);
    measured
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Polls `virsh dominfo` of domain `uuid` until it shows `cpus` vCPUs and
/// `mib` MiB in use; how long after `since` each showed.
fn wait_for(
    uri: &str,
    uuid: &str,
    cpus: u32,
    mib: u64,
    since: Instant,
    limit: Duration,
) -> Result<(Duration, Duration), Box<dyn std::error::Error>> {
    let (want_cpus, want_memory) = (cpus.to_string(), format!("{} KiB", mib * 1024));
    let (mut cpus_seen, mut memory_seen) = (None, None);
    loop {
        let out = std::process::Command::new("virsh")
            .args(["-q", "-c", uri, "dominfo", uuid])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        if cpus_seen.is_none() && field("CPU(s):").as_deref() == Some(want_cpus.as_str()) {
            cpus_seen = Some(since.elapsed());
        }
        if memory_seen.is_none() && field("Used memory:").as_deref() == Some(want_memory.as_str()) {
            memory_seen = Some(since.elapsed());
        }
        if let (Some(c), Some(m)) = (cpus_seen, memory_seen) {
            return Ok((c, m));
        }
        if since.elapsed() > limit {
            return Err(
                format!("virsh dominfo never showed {cpus} vCPUs and {mib} MiB:\n{text}").into(),
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
