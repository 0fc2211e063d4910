//! End-to-end benchmark of the container driver against `ctr run --rm` on
//! the same containerd and the same busybox image, measured in one run:
//!
//! - create to first output, and create to running, p50/p99 over 50 runs;
//! - containers started per second with 1 and with 8 starts in parallel.
//!
//! ```text
//! eval "$(scripts/services/containerd.sh start)"
//! cargo bench -p zixiao-drivers --features containerd --bench container_start
//! ```
//! Without `ZIXIAO_TEST_CONTAINERD_SOCKET` it prints why and exits.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zixiao_core::driver::Images;
use zixiao_core::{Driver, Instance, InstanceSpec};
use zixiao_drivers::containerd::{ContainerdDriver, ContainerdOptions};

const RUNS: usize = 50;
const NAMESPACE: &str = "zixiao-bench";
const IMAGE: &str = "docker.io/library/busybox:latest";
/// Containers started in each throughput round.
const THROUGHPUT_CONTAINERS: usize = 32;

fn instance(command: &[&str]) -> Instance {
    zixiao_testing::fake_driver::placed_instance(
        "bench",
        InstanceSpec::container("busybox").with_command(command.iter().copied()),
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{what:<44} p50 {:>7.1} ms   p99 {:>7.1} ms   ({} runs)",
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
        samples.len()
    );
}

/// Time from spawning `ctr run --rm` to its first byte of output, and to its exit.
fn ctr_run(socket: &Path, id: &str) -> (Duration, Duration) {
    let started = Instant::now();
    let mut child = Command::new("ctr")
        .args([
            "--address",
            &socket.display().to_string(),
            "-n",
            NAMESPACE,
            "run",
            "--rm",
            IMAGE,
            id,
        ])
        .args(["echo", "hi"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ctr");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut byte = [0u8; 1];
    stdout.read_exact(&mut byte).expect("ctr printed nothing");
    let first_output = started.elapsed();
    let status = child.wait().expect("wait for ctr");
    assert!(status.success(), "ctr run failed: {status}");
    (first_output, started.elapsed())
}

/// Time from `create` to the task running, and to its first byte of output
/// in the log file (polled every 200 µs).
async fn zixiao_run(driver: &ContainerdDriver) -> (Duration, Duration) {
    let i = instance(&["echo", "hi"]);
    let log = driver.log_path(&i);
    let started = Instant::now();
    driver.create(&i).await.expect("create");
    driver.start(&i).await.expect("start");
    let running = started.elapsed();
    loop {
        if std::fs::metadata(&log)
            .map(|m| m.len() > 0)
            .unwrap_or(false)
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no output");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let first_output = started.elapsed();
    driver.delete(&i).await.expect("delete");
    (first_output, running)
}

/// Starts [`THROUGHPUT_CONTAINERS`] long-running containers, `parallel` at a
/// time, and returns containers started per second (create + start).
async fn throughput(driver: Arc<ContainerdDriver>, parallel: usize) -> f64 {
    let instances: Vec<Instance> = (0..THROUGHPUT_CONTAINERS)
        .map(|_| instance(&["sleep", "600"]))
        .collect();
    let queue = Arc::new(std::sync::Mutex::new(instances.clone()));
    let started = Instant::now();
    let workers: Vec<_> = (0..parallel)
        .map(|_| {
            let driver = Arc::clone(&driver);
            let queue = Arc::clone(&queue);
            tokio::spawn(async move {
                loop {
                    let next = queue.lock().expect("lock").pop();
                    let Some(i) = next else { break };
                    driver.create(&i).await.expect("create");
                    driver.start(&i).await.expect("start");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker");
    }
    let rate = THROUGHPUT_CONTAINERS as f64 / started.elapsed().as_secs_f64();
    for i in &instances {
        driver.delete(i).await.expect("delete");
    }
    rate
}

fn main() {
    let (Some(socket), Some(archive)) = (
        std::env::var_os("ZIXIAO_TEST_CONTAINERD_SOCKET").map(PathBuf::from),
        std::env::var_os("ZIXIAO_TEST_BUSYBOX_OCI").map(PathBuf::from),
    ) else {
        eprintln!("skipped: ZIXIAO_TEST_CONTAINERD_SOCKET and ZIXIAO_TEST_BUSYBOX_OCI are not set (eval \"$(scripts/services/containerd.sh start)\")");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let state = tempfile::tempdir().expect("tempdir");
        let options = ContainerdOptions::new(&socket, state.path()).with_namespace(NAMESPACE);
        let driver = Arc::new(ContainerdDriver::connect(options).await.expect("connect"));
        driver.import(&archive, None, &|_| {}).await.expect("import busybox");

        // One warm-up of each, then interleaved runs so both see the same machine.
        ctr_run(&socket, "zixiao-bench-warmup");
        zixiao_run(&driver).await;
        let (mut ctr_first, mut ctr_total, mut z_first, mut z_running) = (vec![], vec![], vec![], vec![]);
        for n in 0..RUNS {
            let (first, total) = ctr_run(&socket, &format!("zixiao-bench-ctr-{n}"));
            ctr_first.push(first);
            ctr_total.push(total);
            let (first, running) = zixiao_run(&driver).await;
            z_first.push(first);
            z_running.push(running);
        }
        println!("container start, busybox `echo hi`, {RUNS} runs each, interleaved:");
        report("zixiao: create to first output", z_first);
        report("ctr run --rm: spawn to first output", ctr_first);
        report("zixiao: create to running", z_running);
        report("ctr run --rm: spawn to exit (incl. cleanup)", ctr_total);
        for parallel in [1, 8] {
            let rate = throughput(Arc::clone(&driver), parallel).await;
            println!("zixiao: containers started per second, {parallel} in parallel: {rate:.1} ({THROUGHPUT_CONTAINERS} containers)");
        }
    });
}
