//! What the test guests' `/init` (scripts/images/vm-init.sh) prints on
//! their serial console, read back by the driver tests.

/// The cloud-init seed the guest found (booted with `zixiao.cidata`): the
/// text between its `ZIXIAO-CIDATA-BEGIN` and `ZIXIAO-CIDATA-END` lines,
/// starting with ` /dev/vdX label=VOLUME-ID` and then each file after a
/// `== NAME` line. Panics with the whole console when there is none.
pub fn cidata_seed(console: &str) -> &str {
    console
        .split("ZIXIAO-CIDATA-BEGIN")
        .nth(1)
        .and_then(|rest| rest.split("ZIXIAO-CIDATA-END").next())
        .unwrap_or_else(|| panic!("no cloud-init seed seen by the guest:\n{console}"))
}

/// Whether the seed's volume label (see [`cidata_seed`]) is `cidata`, the
/// one cloud-init's NoCloud data source looks for (either case).
pub fn labelled_cidata(seed: &str) -> bool {
    seed.split("label=")
        .nth(1)
        .is_some_and(|label| label.to_lowercase().starts_with("cidata "))
}

/// The `/init` of [`counter_initramfs`]: the counter on the serial
/// console, one `C<n>` line every 10 ms of guest time, from `C0` at boot.
const COUNTER_INIT: &str = "#!/bin/busybox sh\n\
/bin/busybox --install -s /bin\n\
i=0\n\
while :; do echo C$i; i=$((i+1)); usleep 10000; done\n";

/// Writes an initramfs (an uncompressed newc cpio) whose `/init` prints a
/// counter on the console (`C0`, `C1`, ... every 10 ms; see
/// [`console_counts`]), with the host's static `/bin/busybox`. A guest
/// that keeps counting across a migration was not rebooted; the gaps
/// between counts are its downtime as it sees it.
pub fn counter_initramfs(out: &std::path::Path) -> std::io::Result<()> {
    let busybox = std::fs::read("/bin/busybox")?;
    let mut cpio = Vec::with_capacity(busybox.len() + 4096);
    let entries: [CpioEntry; 7] = [
        ("dev", 0o040755, (0, 0), b""),
        // The kernel opens /dev/console for init before anything runs.
        ("dev/console", 0o020600, (5, 1), b""),
        ("proc", 0o040755, (0, 0), b""),
        ("sys", 0o040755, (0, 0), b""),
        ("bin", 0o040755, (0, 0), b""),
        ("bin/busybox", 0o100755, (0, 0), &busybox),
        ("init", 0o100755, (0, 0), COUNTER_INIT.as_bytes()),
    ];
    for (ino, (name, mode, (major, minor), data)) in entries.into_iter().enumerate() {
        newc_entry(&mut cpio, ino as u32 + 1, name, mode, major, minor, data);
    }
    newc_entry(&mut cpio, 0, "TRAILER!!!", 0, 0, 0, b"");
    std::fs::write(out, cpio)
}

/// A file of the initramfs: its name, mode, device (major, minor) and data.
type CpioEntry<'a> = (&'a str, u32, (u32, u32), &'a [u8]);

/// Appends one newc cpio entry (header, name, data, each padded to 4 bytes).
fn newc_entry(
    cpio: &mut Vec<u8>,
    ino: u32,
    name: &str,
    mode: u32,
    rdev_major: u32,
    rdev_minor: u32,
    data: &[u8],
) {
    let fields = [
        ino,
        mode,
        0,
        0,
        1,
        0,
        data.len() as u32,
        0,
        0,
        rdev_major,
        rdev_minor,
        name.len() as u32 + 1,
        0,
    ];
    cpio.extend_from_slice(b"070701");
    for field in fields {
        cpio.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    cpio.extend_from_slice(name.as_bytes());
    cpio.push(0);
    pad4(cpio);
    cpio.extend_from_slice(data);
    pad4(cpio);
}

fn pad4(cpio: &mut Vec<u8>) {
    while cpio.len() % 4 != 0 {
        cpio.push(0);
    }
}

/// The counts a [`counter_initramfs`] guest printed on `console`, in order
/// (lines `C<n>`; anything else, such as kernel messages, is skipped).
pub fn console_counts(console: &str) -> Vec<u64> {
    console
        .lines()
        .filter_map(|line| line.trim_end_matches('\r').strip_prefix('C')?.parse().ok())
        .collect()
}

/// Watches console logs for a [`counter_initramfs`] guest's counts, with
/// the time each count arrived: one thread polls every log every 0.2 ms
/// (console logs written by virtlogd carry no timestamps). A migrating
/// guest's counts come from the source's log, then the target's; merged by
/// count, the longest gap between consecutive counts is the downtime as
/// the guest's console shows it.
pub struct CounterWatcher {
    seen: std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, u64)>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CounterWatcher {
    /// Starts watching `logs` (files that may not exist yet), from their
    /// current ends: only counts printed from now on are seen.
    pub fn start(logs: Vec<std::path::PathBuf>) -> CounterWatcher {
        use std::sync::atomic::Ordering;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (into, stopped) = (seen.clone(), stop.clone());
        let mut read: Vec<usize> = logs
            .iter()
            .map(|log| std::fs::metadata(log).map_or(0, |m| m.len() as usize))
            .collect();
        let thread = std::thread::spawn(move || {
            let mut partial = vec![String::new(); logs.len()];
            while !stopped.load(Ordering::Relaxed) {
                for (i, log) in logs.iter().enumerate() {
                    let Ok(bytes) = std::fs::read(log) else {
                        continue;
                    };
                    if bytes.len() <= read[i] {
                        continue;
                    }
                    let now = std::time::Instant::now();
                    partial[i].push_str(&String::from_utf8_lossy(&bytes[read[i]..]));
                    read[i] = bytes.len();
                    while let Some(end) = partial[i].find('\n') {
                        let line: String = partial[i].drain(..=end).collect();
                        if let Some(&count) = console_counts(&line).first() {
                            into.lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push((now, count));
                        }
                    }
                }
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        });
        CounterWatcher {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// The counts seen so far, with their arrival times, in arrival order.
    pub fn counts(&self) -> Vec<(std::time::Instant, u64)> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops watching; the counts seen, merged by count (each count once,
    /// at its first arrival), in count order.
    pub fn finish(mut self) -> Vec<(std::time::Instant, u64)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let mut counts = self.counts();
        counts.sort_by_key(|&(at, count)| (count, at));
        counts.dedup_by_key(|&mut (_, count)| count);
        counts
    }
}

impl Drop for CounterWatcher {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The longest time between two consecutive counts of `counts` (as
/// [`CounterWatcher::finish`] returns them), and whether the counts are
/// consecutive (no count missing, none repeated after a reboot).
pub fn longest_gap(counts: &[(std::time::Instant, u64)]) -> (std::time::Duration, bool) {
    let gap = counts
        .windows(2)
        .map(|w| w[1].0.saturating_duration_since(w[0].0))
        .max()
        .unwrap_or_default();
    let consecutive = counts.windows(2).all(|w| w[1].1 == w[0].1 + 1);
    (gap, consecutive)
}
