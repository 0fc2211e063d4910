//! The driver on its own: lifecycle, limits, logs, stats, cleanup.

use std::time::Duration;

use zixiao_core::{Driver, DriverError, RuntimeState};
use zixiao_testing::wait::wait_until;

use super::{busybox, fixture, instance, TIMEOUT};

fn exited(state: &RuntimeState) -> bool {
    matches!(state, RuntimeState::Exited { .. })
}

#[tokio::test]
async fn runs_to_completion_with_output_and_exit_code() {
    let Some(fx) = fixture("completion").await else {
        return;
    };
    let i = instance(
        "hello",
        busybox(&["sh", "-c", "echo hi; echo oops >&2; exit 3"]),
    );
    fx.driver.create(&i).await.expect("create");
    fx.driver.create(&i).await.expect("create is idempotent");
    assert_eq!(
        fx.driver.inspect(&i).await.expect("inspect"),
        RuntimeState::Created
    );
    fx.driver.start(&i).await.expect("start");
    let state = fx.wait_state(&i, "the container to exit", exited).await;
    let RuntimeState::Exited {
        code,
        oom_killed,
        at,
    } = state
    else {
        unreachable!()
    };
    assert_eq!((code, oom_killed), (3, false));
    assert!(at.is_some(), "containerd records when it exited");
    fx.wait_log_lines(&i, &["hi", "oops"]).await;
    // Starting an exited container runs it again, appending to its log.
    let first_run = fx.log(&i).await;
    fx.driver.start(&i).await.expect("start again");
    fx.wait_state(&i, "the second run to exit", exited).await;
    fx.wait_log_lines(&i, &["hi", "hi", "oops", "oops"]).await;
    assert!(
        fx.log(&i).await.starts_with(&first_run),
        "the second run appends to the log"
    );
    fx.driver.delete(&i).await.expect("delete");
    fx.finish().await;
}

#[tokio::test]
async fn long_running_container_stops_starts_restarts_pauses_and_resumes() {
    let Some(fx) = fixture("lifecycle").await else {
        return;
    };
    let i = instance("sleeper", busybox(&["sleep", "1000"]));
    fx.driver.create(&i).await.expect("create");
    fx.driver.start(&i).await.expect("start");
    fx.driver.start(&i).await.expect("start is idempotent");
    assert_eq!(
        fx.driver.inspect(&i).await.expect("inspect"),
        RuntimeState::Running
    );

    let pause = Driver::pause(fx.driver.as_ref()).expect("pause capability");
    pause.pause(&i).await.expect("pause");
    pause.pause(&i).await.expect("pause is idempotent");
    assert_eq!(
        fx.driver.inspect(&i).await.expect("inspect"),
        RuntimeState::Paused
    );
    let freezer = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/freezer{}/freezer.state",
        fx.driver.cgroups_path(&i)
    ));
    if let Ok(state) = freezer {
        assert_eq!(state.trim(), "FROZEN");
    }
    pause.resume(&i).await.expect("resume");
    pause.resume(&i).await.expect("resume is idempotent");
    assert_eq!(
        fx.driver.inspect(&i).await.expect("inspect"),
        RuntimeState::Running
    );

    // sleep as pid 1 ignores SIGTERM: the grace runs out and SIGKILL ends it.
    let started = std::time::Instant::now();
    fx.driver
        .stop(&i, Duration::from_millis(200))
        .await
        .expect("stop");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        fx.driver.inspect(&i).await.expect("inspect"),
        RuntimeState::Created
    );
    fx.driver
        .stop(&i, Duration::from_millis(200))
        .await
        .expect("stop is idempotent");
    assert!(matches!(
        pause.pause(&i).await,
        Err(DriverError::FailedPrecondition(_))
    ));

    fx.driver.start(&i).await.expect("start after stop");
    assert_eq!(
        fx.driver.inspect(&i).await.expect("inspect"),
        RuntimeState::Running
    );
    // A restart as the controller does it, from a paused state even.
    pause.pause(&i).await.expect("pause");
    fx.driver
        .stop(&i, Duration::ZERO)
        .await
        .expect("stop a paused container");
    fx.driver.start(&i).await.expect("start");
    assert_eq!(
        fx.driver.inspect(&i).await.expect("inspect"),
        RuntimeState::Running
    );

    // A workload that handles SIGTERM stops within its grace.
    let graceful = instance(
        "graceful",
        busybox(&[
            "sh",
            "-c",
            "trap 'exit 0' TERM; while true; do sleep 0.05; done",
        ]),
    );
    fx.driver.create(&graceful).await.expect("create");
    fx.driver.start(&graceful).await.expect("start");
    let started = std::time::Instant::now();
    fx.driver
        .stop(&graceful, Duration::from_secs(20))
        .await
        .expect("stop");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "SIGTERM was not delivered"
    );

    fx.driver.delete(&i).await.expect("delete");
    fx.driver.delete(&graceful).await.expect("delete");
    fx.finish().await;
}

#[tokio::test]
async fn memory_limit_is_enforced_and_oom_reported() {
    let Some(fx) = fixture("oom").await else {
        return;
    };
    // tail buffers /dev/zero, which has no newline, until the limit kills it.
    let i = instance("hog", busybox(&["tail", "/dev/zero"]).with_size(1, 16));
    fx.driver.create(&i).await.expect("create");
    fx.driver.start(&i).await.expect("start");
    let state = fx.wait_state(&i, "the OOM killer", exited).await;
    assert!(
        matches!(
            state,
            RuntimeState::Exited {
                code: 137,
                oom_killed: true,
                ..
            }
        ),
        "{state:?}"
    );
    fx.driver.delete(&i).await.expect("delete");
    fx.finish().await;
}

/// A cgroup file of `path` on cgroup v1 (`v1` hierarchy) or v2.
pub(super) fn cgroup_file(v1: &str, path: &str, v1_file: &str, v2_file: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/fs/cgroup/{v1}{path}/{v1_file}"))
        .or_else(|_| std::fs::read_to_string(format!("/sys/fs/cgroup{path}/{v2_file}")))
        .ok()
        .map(|s| s.trim().to_owned())
}

#[tokio::test]
async fn limits_are_visible_in_the_cgroup() {
    let Some(fx) = fixture("cgroup").await else {
        return;
    };
    let mut i = instance("limited", busybox(&["sleep", "1000"]).with_size(2, 48));
    i.spec.cpu_limit = Some(zixiao_core::Cpus::cores(2));
    i.labels.insert(
        zixiao_drivers::containerd::spec::PIDS_LIMIT_LABEL.into(),
        "64".into(),
    );
    fx.driver.create(&i).await.expect("create");
    fx.driver.start(&i).await.expect("start");
    let path = fx.driver.cgroups_path(&i);
    let quota = cgroup_file("cpu", &path, "cpu.cfs_quota_us", "cpu.max").expect("cpu cgroup");
    assert!(
        quota == "200000" || quota == "200000 100000",
        "cpu quota {quota}"
    );
    let memory =
        cgroup_file("memory", &path, "memory.limit_in_bytes", "memory.max").expect("memory cgroup");
    assert_eq!(memory, (48u64 << 20).to_string());
    let pids = cgroup_file("pids", &path, "pids.max", "pids.max").expect("pids cgroup");
    assert_eq!(pids, "64");
    fx.driver.delete(&i).await.expect("delete");
    assert!(
        cgroup_file("cpu", &path, "cpu.cfs_quota_us", "cpu.max").is_none(),
        "cgroup left behind"
    );
    fx.finish().await;
}

#[tokio::test]
async fn logs_can_be_followed_while_written() {
    let Some(fx) = fixture("logs").await else {
        return;
    };
    let i = instance(
        "talker",
        busybox(&[
            "sh",
            "-c",
            "for n in 1 2 3 4 5; do echo line$n; sleep 0.1; done",
        ]),
    );
    assert!(matches!(
        fx.driver.read_log(&i, 0, 100).await,
        Err(DriverError::NotFound(_))
    ));
    fx.driver.create(&i).await.expect("create");
    fx.driver.start(&i).await.expect("start");
    // Follow as `zixiao instance logs --follow` does: read from the last
    // offset until the instance is done and nothing more comes.
    let follow = std::sync::Mutex::new((0u64, String::new(), 0usize));
    wait_until("the whole log", TIMEOUT, || async {
        let offset = follow.lock().expect("lock").0;
        let chunk = fx.driver.read_log(&i, offset, 8).await.expect("read");
        let mut f = follow.lock().expect("lock");
        if !chunk.data.is_empty() {
            assert_eq!(chunk.next_offset, offset + chunk.data.len() as u64);
            f.0 = chunk.next_offset;
            f.1.push_str(&String::from_utf8_lossy(&chunk.data));
            f.2 += 1;
        }
        f.1.contains("line5\n").then_some(())
    })
    .await;
    let (_, text, reads_with_data) = follow.into_inner().expect("lock");
    assert_eq!(text, "line1\nline2\nline3\nline4\nline5\n");
    assert!(reads_with_data >= 5, "8-byte reads make several chunks");
    fx.driver.delete(&i).await.expect("delete");
    assert!(!fx.driver.log_path(&i).exists(), "delete removes the log");
    fx.finish().await;
}

#[tokio::test]
async fn stats_report_cpu_memory_and_pids() {
    let Some(fx) = fixture("stats").await else {
        return;
    };
    let i = instance(
        "busy",
        busybox(&["sh", "-c", "sleep 1000 & while true; do :; done"]).with_size(1, 64),
    );
    fx.driver.create(&i).await.expect("create");
    let stats = Driver::stats(fx.driver.as_ref()).expect("stats capability");
    assert!(matches!(
        stats.stats(&i).await,
        Err(DriverError::FailedPrecondition(_))
    ));
    fx.driver.start(&i).await.expect("start");
    let sample = wait_until("cpu time to accumulate", TIMEOUT, || async {
        let s = stats.stats(&i).await.expect("stats");
        (s.cpu_time_ns > 10_000_000 && s.pids == Some(2)).then_some(s)
    })
    .await;
    assert!(sample.memory_bytes > 0, "{sample:?}");
    assert_eq!(sample.memory_limit_bytes, Some(64 << 20));
    fx.driver.delete(&i).await.expect("delete");
    fx.finish().await;
}

#[tokio::test]
async fn delete_removes_everything() {
    let Some(fx) = fixture("delete").await else {
        return;
    };
    let i = instance("doomed", busybox(&["sleep", "1000"]));
    fx.driver.create(&i).await.expect("create");
    fx.driver.start(&i).await.expect("start");
    let path = fx.driver.cgroups_path(&i);
    assert!(!fx.leftovers().await.is_empty());
    fx.driver.delete(&i).await.expect("delete");
    assert_eq!(
        fx.driver.inspect(&i).await.expect("inspect"),
        RuntimeState::Missing
    );
    fx.driver.delete(&i).await.expect("delete is idempotent");
    fx.driver
        .stop(&i, Duration::ZERO)
        .await
        .expect("stopping a missing container is fine");
    assert!(matches!(
        fx.driver.start(&i).await,
        Err(DriverError::NotFound(_))
    ));
    assert!(
        fx.leftovers().await.is_empty(),
        "{:?}",
        fx.leftovers().await
    );
    assert!(!fx.driver.log_path(&i).parent().expect("dir").exists());
    assert!(!std::path::Path::new(&format!("/sys/fs/cgroup/memory{path}")).exists());
    fx.finish().await;
}

#[tokio::test]
async fn console_writes_stdin_and_reads_output() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(fx) = fixture("console").await else {
        return;
    };
    let mut i = instance(
        "echoer",
        busybox(&[
            "sh",
            "-c",
            "while read line; do echo got:$line; done; echo bye",
        ]),
    );
    i.labels.insert(
        zixiao_drivers::containerd::STDIN_LABEL.into(),
        "true".into(),
    );
    fx.driver.create(&i).await.expect("create");
    let console = Driver::console(fx.driver.as_ref()).expect("console capability");
    assert!(matches!(
        console.attach(&i).await,
        Err(DriverError::FailedPrecondition(_))
    ));
    fx.driver.start(&i).await.expect("start");
    let mut stream = console.attach(&i).await.expect("attach");
    stream.input.write_all(b"hello\n").await.expect("type");
    stream.input.flush().await.expect("flush");
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("got:hello\n") {
        let n = tokio::time::timeout(TIMEOUT, stream.output.read(&mut buf))
            .await
            .expect("output in time")
            .expect("read");
        assert!(
            n > 0,
            "output ended early: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    // The shim keeps the FIFO open, so stdin outlives a console session:
    // a second console types into the same loop.
    drop(stream);
    let mut stream = console.attach(&i).await.expect("attach again");
    stream.input.write_all(b"again\n").await.expect("type");
    let mut seen = String::new();
    while !seen.contains("got:again\n") {
        let n = tokio::time::timeout(TIMEOUT, stream.output.read(&mut buf))
            .await
            .expect("output in time")
            .expect("read");
        assert!(n > 0, "output ended early: {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        !seen.contains("got:hello"),
        "a console shows output from when it attached: {seen:?}"
    );
    // The console's output ends when the task does.
    fx.driver
        .stop(&i, Duration::from_millis(100))
        .await
        .expect("stop");
    let mut rest = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.output.read_to_end(&mut rest))
        .await
        .expect("output ends with the task")
        .expect("read");

    // Without the label there is no stdin, and typing says why.
    let plain = instance("plain", busybox(&["sleep", "1000"]));
    fx.driver.create(&plain).await.expect("create");
    fx.driver.start(&plain).await.expect("start");
    let mut stream = console.attach(&plain).await.expect("attach");
    let err = stream.input.write_all(b"x").await.expect_err("no stdin");
    assert!(err.to_string().contains("zixiao.io/stdin"), "{err}");
    fx.driver.delete(&i).await.expect("delete");
    fx.driver.delete(&plain).await.expect("delete");
    fx.finish().await;
}
