//! End-to-end benchmark of the microvm driver's QEMU backend, measured in
//! one run on the same machine: create to Linux boot marker through the
//! driver (plan and checks, QEMU launched detached with `-S`, QMP
//! negotiation, `cont`, until the guest prints `ZIXIAO-BOOT-OK` in the
//! console log), against the plain `qemu-system-x86_64 -M microvm` command
//! line with the same machine options and a file serial console,
//! alternating, `ZIXIAO_BENCH_RUNS` each (default 5).
//!
//! ```text
//! eval "$(scripts/services/microvm.sh start)"
//! cargo bench -p zixiao-drivers --features microvm --bench microvm_boot
//! ```
//! Without `ZIXIAO_TEST_MICROVM_QEMU` it prints why and exits.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use zixiao_core::{Driver, InstanceSpec, MicrovmBackend};
use zixiao_drivers::microvm::{MicrovmDriver, MicrovmOptions};

const MARKER: &str = "ZIXIAO-BOOT-OK";
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
const CMDLINE: &str = "console=ttyS0 panic=-1 quiet";

struct Setup {
    qemu: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
}

fn setup() -> Option<Setup> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    Some(Setup {
        qemu: var("ZIXIAO_TEST_MICROVM_QEMU")?.into(),
        kernel: var("ZIXIAO_TEST_MICROVM_KERNEL")?.into(),
        initrd: var("ZIXIAO_TEST_MICROVM_INITRD")?.into(),
    })
}

fn contains_marker(log: &Path) -> bool {
    std::fs::read(log).is_ok_and(|data| data.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()))
}

/// Create to marker through the driver; the microVM is deleted afterwards (untimed).
async fn through_driver(driver: &MicrovmDriver, s: &Setup, run: usize) -> Duration {
    let mut spec = InstanceSpec::microvm(&s.kernel).with_size(1, 256);
    spec.initrd = Some(s.initrd.clone());
    spec.cmdline = Some(CMDLINE.to_owned());
    spec.backend = MicrovmBackend::Qemu;
    let vm = zixiao_testing::fake_driver::placed_instance(&format!("bench-{run}"), spec);
    let start = Instant::now();
    driver.create(&vm).await.expect("create");
    driver.start(&vm).await.expect("start");
    let log = driver.console_log_path(&vm);
    while !contains_marker(&log) {
        assert!(
            start.elapsed() < BOOT_TIMEOUT,
            "no marker in {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = start.elapsed();
    driver.delete(&vm).await.expect("delete");
    took
}

/// The same guest from the plain command line (TCG here, as the driver
/// chooses on a host without hardware KVM); killed afterwards (untimed).
async fn plain_qemu(s: &Setup, dir: &Path, accel: &[&str]) -> Duration {
    let log = dir.join("plain-console.log");
    let _ = std::fs::remove_file(&log);
    let start = Instant::now();
    let mut child = Command::new(&s.qemu)
        .args(["-M", "microvm"])
        .args(accel)
        .args(["-smp", "1", "-m", "256M", "-kernel"])
        .arg(&s.kernel)
        .arg("-initrd")
        .arg(&s.initrd)
        .args(["-append", CMDLINE])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run qemu");
    while !contains_marker(&log) {
        assert!(start.elapsed() < BOOT_TIMEOUT, "no marker from plain QEMU");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = start.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    took
}

fn summary(name: &str, mut times: Vec<Duration>) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<44} min {:>8.1} ms  median {:>8.1} ms  max {:>8.1} ms  ({} runs)",
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
        times.len()
    );
}

fn main() {
    let Some(s) = setup() else {
        println!(
            "microvm_boot: skipped (ZIXIAO_TEST_MICROVM_QEMU/KERNEL/INITRD not set; \
             eval \"$(scripts/services/microvm.sh start)\")"
        );
        return;
    };
    let runs: usize = std::env::var("ZIXIAO_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|r| *r > 0)
        .unwrap_or(5);
    let dir = tempfile::Builder::new()
        .prefix("mvb-")
        .tempdir()
        .expect("tempdir");
    let options = MicrovmOptions {
        qemu_binary: Some(s.qemu.clone()),
        ..MicrovmOptions::new(dir.path())
    };
    let driver = MicrovmDriver::new(options).expect("driver");
    let accel: Vec<&str> = match driver.kvm_support() {
        zixiao_drivers::microvm::KvmSupport::Hardware => vec!["-accel", "kvm", "-cpu", "host"],
        _ => vec!["-accel", "tcg", "-icount", "shift=auto"],
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (mut zixiao, mut plain) = (Vec::new(), Vec::new());
    runtime.block_on(async {
        for run in 0..runs {
            zixiao.push(through_driver(&driver, &s, run).await);
            plain.push(plain_qemu(&s, dir.path(), &accel).await);
        }
    });
    println!(
        "QEMU {} microvm, 1 vCPU, 256 MiB, Debian cloud kernel + busybox initramfs",
        accel[1]
    );
    summary("zixiao microvm driver: create to marker", zixiao);
    summary("plain qemu-system-x86_64 -M microvm", plain);
}
