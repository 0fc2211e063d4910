//! Live resize latency of a container: how long from `instance update`
//! (through the one API, in this process) to the new memory and CPU
//! limits in the container's cgroup files on the host. Runs a busybox
//! container, changes its size back and forth, and prints the latency of
//! each change and their median and worst. A measurement, not a test.
//!
//! ```text
//! eval "$(scripts/services/containerd.sh start)"
//! cargo run -p zixiao-examples --features containerd --example resize -- \
//!     "$ZIXIAO_TEST_CONTAINERD_SOCKET" "$ZIXIAO_TEST_BUSYBOX_OCI" [ROUNDS]
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use zixiao_core::api::Progress;
use zixiao_core::{Cpus, CreateInstance, InstanceSpec, InstanceType, InstanceUpdate, Wait};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (socket, image, rounds) = match args.as_slice() {
        [socket, image] => (socket, image, 20),
        [socket, image, rounds] => (socket, image, rounds.parse()?),
        _ => return Err("usage: resize CONTAINERD_SOCKET BUSYBOX_OCI_ARCHIVE [ROUNDS]".into()),
    };
    let state = std::env::temp_dir().join(format!("zixiao-resize-{}", std::process::id()));
    let mut options = zixiao_client::OpenOptions::new(Some(state.clone()));
    options.containerd_socket = Some(socket.into());
    options.containerd_namespace = Some(format!("zixiao-resize-{}", std::process::id()));
    let zx = zixiao_client::open(options).await?;
    zx.import_images(
        None,
        InstanceType::Container,
        PathBuf::from(image),
        None,
        Progress::ignore(),
    )
    .await?;
    // Half a core reserved, capped at one: the cap is the CFS quota the
    // rounds change.
    let mut spec = InstanceSpec::container("busybox")
        .with_command(["sleep", "3600"])
        .with_size(1, 64);
    spec.cpus = Cpus::from_millis(500);
    spec.cpu_limit = Some(Cpus::cores(1));
    let web = zx
        .create_instance(CreateInstance::new("resize-bench", spec), Wait::Settled)
        .await?;
    let memory = cgroup_file(&web.id, "memory", "memory.limit_in_bytes")?;
    let cpu = cgroup_file(&web.id, "cpu", "cpu.cfs_quota_us")?;
    println!("container {} ({}), cgroup files:", web.name, web.id);
    println!("  {}\n  {}", memory.display(), cpu.display());

    let mut took = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let (cpus, mib) = if round % 2 == 0 { (2, 128) } else { (1, 64) };
        let update = InstanceUpdate {
            cpu_limit: Some(Cpus::cores(cpus)),
            memory_mib: Some(mib),
            ..InstanceUpdate::default()
        };
        let started = Instant::now();
        zx.update_instance(&web.id, update, Wait::No).await?;
        // Polled from the moment the call returns: the limit is already in
        // force then, so this is one read of each file.
        let want = (u64::from(cpus) * 100_000, mib << 20);
        while (read(&cpu)?, read(&memory)?) != want {
            if started.elapsed() > Duration::from_secs(10) {
                return Err(format!("the cgroup never showed {want:?}").into());
            }
            tokio::task::yield_now().await;
        }
        let elapsed = started.elapsed();
        println!(
            "round {round:>2}: {cpus} cpus, {mib:>3} MiB visible after {:.2} ms",
            ms(elapsed)
        );
        took.push(elapsed);
    }
    took.sort();
    if let (Some(median), Some(worst)) = (took.get(took.len() / 2), took.last()) {
        println!(
            "live resize, update to limits visible: median {:.2} ms, worst {:.2} ms over {} rounds",
            ms(*median),
            ms(*worst),
            took.len()
        );
    }
    zx.delete_instance(&web.id, Wait::Settled).await?;
    let _ = zx
        .remove_image(
            None,
            InstanceType::Container,
            "docker.io/library/busybox:latest",
        )
        .await;
    drop(zx);
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The instance's cgroup file `file` in `hierarchy` (cgroup v1), found
/// under whichever containerd namespace holds it.
fn cgroup_file(id: &str, hierarchy: &str, file: &str) -> Result<PathBuf, String> {
    let root = Path::new("/sys/fs/cgroup").join(hierarchy);
    std::fs::read_dir(&root)
        .map_err(|e| format!("{}: {e} (this example reads cgroup v1)", root.display()))?
        .flatten()
        .map(|namespace| namespace.path().join(id).join(file))
        .find(|path| path.is_file())
        .ok_or_else(|| format!("no {file} of {id} under {}", root.display()))
}

fn read(path: &Path) -> Result<u64, Box<dyn std::error::Error>> {
    Ok(std::fs::read_to_string(path)?.trim().parse()?)
}
