//! The jail and the seccomp filters, seen from outside on /dev/kvm: a VMM
//! runs filtered, unprivileged, in its own mount and PID namespaces and
//! cgroup; a syscall outside its filter kills it and the launcher says so;
//! a malformed snapshot is refused with the field named. (Boot, console,
//! pause, snapshot and restore run jailed in the other test files.)

mod common;

use std::time::Duration;

use common::*;
use zixiao_core::ErrorKind;
use zixiao_vmm::{
    launch, launch_with, Boot, Confinement, JailConfig, VmState, VmmClient, VmmError,
};

const T: Duration = Duration::from_secs(30);

/// `Key:` line of /proc/PID/task/TID/status, whitespace-normalised.
fn status_line(path: &str, key: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn tasks(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("status").display().to_string())
        .collect()
}

/// What VMM `pid` sees at `/` is the way down to `run_dir` (absolute),
/// and nothing else.
fn assert_root_leads_only_to(pid: u32, run_dir: &std::path::Path) {
    let top: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/root"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let first = run_dir.components().nth(1).unwrap().as_os_str().to_owned();
    assert_eq!(top, vec![first]);
}

fn ns(pid: &str, kind: &str) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap()
}

async fn wait_exit(vmm: &VmmClient) -> VmState {
    zixiao_testing::wait::wait_until("the VMM to exit", T, || async {
        let info = vmm.info().await.ok()?;
        matches!(info.state, VmState::Exited { .. }).then_some(info.state)
    })
    .await
}

#[tokio::test]
async fn a_jailed_vmm_runs_filtered_unprivileged_in_its_own_namespaces_and_cgroup() {
    let Some(kernel) = guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut config = guest_config(&kernel, "zx.mode=echo");
    config.vcpus = 2;
    let vmm = launch(&vmm_binary(), &tmp.path().join("vm"), Boot::Fresh(config))
        .await
        .unwrap();
    let _reaper = Reaper(vmm.pid());
    let pid = vmm.pid();
    let jail = JailConfig::default();

    // Every thread (API, 2 vCPUs, console, lifecycle) is filtered by the
    // time the VMM answers its first request, and runs as the jail's user
    // and group, with no capabilities.
    assert_eq!(vmm.info().await.unwrap().state, VmState::Configured);
    let threads = tasks(pid);
    assert_eq!(threads.len(), 5, "{threads:?}");
    for status in &threads {
        assert_eq!(status_line(status, "Seccomp:"), "Seccomp: 2", "{status}");
        let uid = jail.uid;
        assert_eq!(
            status_line(status, "Uid:"),
            format!("Uid: {uid} {uid} {uid} {uid}"),
            "{status}"
        );
        let gid = jail.gid;
        assert_eq!(
            status_line(status, "Gid:"),
            format!("Gid: {gid} {gid} {gid} {gid}")
        );
        assert_eq!(status_line(status, "CapEff:"), "CapEff: 0000000000000000");
        assert_eq!(status_line(status, "NoNewPrivs:"), "NoNewPrivs: 1");
    }
    let me = std::process::id().to_string();
    let vm = pid.to_string();
    assert_ne!(ns(&vm, "mnt"), ns(&me, "mnt"), "own mount namespace");
    assert_ne!(
        ns(&vm, "pid_for_children"),
        ns(&me, "pid_for_children"),
        "own PID namespace"
    );
    // It is pid 1 of that namespace.
    assert_eq!(
        status_line(&format!("/proc/{pid}/status"), "NSpid:"),
        format!("NSpid: {pid} 1")
    );
    // Its root is the jail: the host's / is not what it sees, nor the
    // files it opened before the jail (kernel, KVM device), nor a /proc.
    let run_dir = tmp.path().join("vm").canonicalize().unwrap();
    assert!(std::fs::read_dir(format!("/proc/{pid}/root{}", run_dir.display())).is_ok());
    assert_root_leads_only_to(pid, &run_dir);
    for hidden in [
        "/etc".to_string(),
        "/proc".to_string(),
        zixiao_vmm::KVM_DEVICE.to_string(),
        kernel.canonicalize().unwrap().display().to_string(),
    ] {
        assert!(
            std::fs::metadata(format!("/proc/{pid}/root{hidden}")).is_err(),
            "{hidden} is in the jail"
        );
    }
    // Its mount table, as it can see it, holds only the jail's two mounts
    // (its root and the run dir): the host's tree it was cloned with is
    // not reachable from its root.
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let mut points: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .collect();
    points.sort();
    let mut expected = vec!["/".to_string(), run_dir.display().to_string()];
    expected.sort();
    assert_eq!(points, expected, "{mountinfo}");

    // Its cgroup caps memory at guest + overhead and tasks at vCPUs + extra.
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        cgroups.contains(&format!("zixiao-vmm/vmm-{pid}")),
        "{cgroups}"
    );
    let limits: Vec<String> = zixiao_vmm::cgroup::limit_files(pid)
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap().trim().to_string())
        .collect();
    assert_eq!(
        limits,
        vec![
            ((32 + jail.memory_overhead_mib) << 20).to_string(),
            (2 + jail.extra_pids).to_string()
        ]
    );

    // The console and the guest work as unjailed.
    let mut console = vmm.attach_console().await.unwrap();
    vmm.start().await.unwrap();
    wait_console(&vmm.console_log(), "ZX: echo", T).await;
    tokio::io::AsyncWriteExt::write_all(&mut console, b"jailed-ping\n")
        .await
        .unwrap();
    wait_console(&vmm.console_log(), "jailed-ping", T).await;
    // vCPU times come from the threads' CPU clocks (the jail has no /proc):
    // the boot vCPU has run the guest;
    // and its resident set from the statm it opened before the jail.
    let stats = vmm.stats().await.unwrap();
    let times = stats.vcpu_time_ns;
    assert_eq!(times.len(), 2);
    assert!(times[0] > 0, "{times:?}");
    assert!(stats.vmm_rss_bytes > 1 << 20, "{}", stats.vmm_rss_bytes);

    vmm.shutdown(Duration::from_secs(5)).await.unwrap();
    for file in zixiao_vmm::cgroup::limit_files(pid) {
        assert!(
            !file.parent().unwrap().exists(),
            "cgroup {} left",
            file.display()
        );
    }
    assert!(
        !tmp.path().join("vm/jail").exists() || {
            std::fs::read_dir(tmp.path().join("vm/jail"))
                .unwrap()
                .count()
                == 0
        }
    );
}

/// A VMM under `confinement` whose guest has started counting; the
/// directory its run directory is in, and its reaper.
async fn counting_vmm(
    kernel: &std::path::Path,
    confinement: &Confinement,
) -> (tempfile::TempDir, VmmClient, Reaper) {
    let tmp = tempfile::tempdir().unwrap();
    let vmm = launch_with(
        &vmm_binary(),
        &tmp.path().join("vm"),
        Boot::Fresh(guest_config(kernel, "zx.mode=loop")),
        confinement,
    )
    .await
    .unwrap();
    let reaper = Reaper(vmm.pid());
    vmm.start().await.unwrap();
    wait_console(&vmm.console_log(), "ZX: count=1", T).await;
    (tmp, vmm, reaper)
}

/// The reason and code `vmm` exited with, once its process is gone too.
async fn ended(vmm: &VmmClient) -> (String, i32) {
    let VmState::Exited { reason, code } = wait_exit(vmm).await else {
        unreachable!()
    };
    zixiao_testing::wait::wait_until("the VMM process to end", T, || async {
        (!alive(vmm.pid())).then_some(())
    })
    .await;
    (reason, code)
}

/// The launcher makes the cgroup while the VMM starts; when the kernel
/// refuses it (a `pids.max` above the kernel's limit), the launch fails
/// with the reason and leaves no process, no cgroup and no run dir.
#[tokio::test]
async fn a_cgroup_the_launcher_cannot_make_fails_the_launch_and_leaves_nothing() {
    let Some(kernel) = guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("vm");
    let confinement = Confinement {
        jail: Some(JailConfig {
            extra_pids: 5_000_000,
            ..JailConfig::default()
        }),
        seccomp: true,
    };
    let err = launch_with(
        &vmm_binary(),
        &run,
        Boot::Fresh(guest_config(&kernel, "zx.mode=loop")),
        &confinement,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let text = err.to_string();
    assert!(text.contains("pids.max"), "{text}");
    // The group's path names the VMM's pid.
    let pid: u32 = text
        .split("/vmm-")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no group in {text}"));
    assert!(!alive(pid), "VMM {pid} still runs");
    for file in zixiao_vmm::cgroup::limit_files(pid) {
        assert!(
            !file.parent().unwrap().exists(),
            "cgroup {} left",
            file.display()
        );
    }
    assert!(!run.exists(), "run dir left");
}

#[tokio::test]
async fn a_blocked_syscall_kills_the_vmm_and_the_launcher_records_sigsys() {
    let Some(kernel) = guest() else { return };
    for (name, confinement) in [
        ("jailed", Confinement::default()),
        ("seccomp only", Confinement::seccomp_only()),
    ] {
        let (_tmp, vmm, _reaper) = counting_vmm(&kernel, &confinement).await;
        // The API thread calls socket(AF_INET): the filter kills the VMM
        // before it can answer.
        let err = vmm.test_blocked_syscall().await.unwrap_err();
        assert!(
            matches!(
                err.kind(),
                ErrorKind::Unavailable | ErrorKind::FailedPrecondition
            ),
            "{name}: {err}"
        );
        let (reason, code) = ended(&vmm).await;
        assert_eq!(code, -libc::SIGSYS, "{name}: {reason}");
        assert!(
            reason.contains("blocked syscall") && reason.contains("SIGSYS"),
            "{name}: {reason}"
        );
    }
}

#[tokio::test]
async fn a_panic_in_the_vmm_ends_it_and_the_launcher_records_it() {
    let Some(kernel) = guest() else { return };
    for (name, confinement) in [
        ("jailed", Confinement::default()),
        ("unconfined", Confinement::none()),
    ] {
        let (_tmp, vmm, _reaper) = counting_vmm(&kernel, &confinement).await;
        // The API thread panics: the whole VMM ends (not only that thread),
        // with the panic hook's code, whether built to unwind or to abort.
        vmm.test_panic().await.unwrap_err();
        let (reason, code) = ended(&vmm).await;
        assert_eq!(
            code,
            zixiao_vmm::exit_reasons::PANIC_EXIT_CODE,
            "{name}: {reason}"
        );
        assert!(
            reason.starts_with(zixiao_vmm::exit_reasons::PANICKED) && reason.contains("vmm.log"),
            "{name}: {reason}"
        );
        let log = std::fs::read_to_string(vmm.run_dir().join(zixiao_vmm::files::VMM_LOG)).unwrap();
        assert!(
            log.contains("test hook: a deliberate panic"),
            "{name}: {log}"
        );
    }
}

#[tokio::test]
async fn an_unconfined_vmm_shares_the_launchers_namespaces_and_is_unfiltered() {
    let Some(kernel) = guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let vmm = launch_with(
        &vmm_binary(),
        &tmp.path().join("vm"),
        Boot::Fresh(guest_config(&kernel, "zx.mode=loop")),
        &Confinement::none(),
    )
    .await
    .unwrap();
    let _reaper = Reaper(vmm.pid());
    let status = format!("/proc/{}/status", vmm.pid());
    assert_eq!(status_line(&status, "Seccomp:"), "Seccomp: 0");
    let me = std::process::id().to_string();
    assert_eq!(ns(&vmm.pid().to_string(), "mnt"), ns(&me, "mnt"));
    // Unfiltered, the forbidden syscall is harmless and the VMM lives on.
    vmm.test_blocked_syscall().await.unwrap();
    assert!(matches!(
        vmm.info().await.unwrap().state,
        VmState::Configured
    ));
    vmm.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Takes a 2-vCPU snapshot, then restores edited copies of it.
#[tokio::test]
async fn a_malformed_snapshot_is_invalid_argument_naming_the_field() {
    let Some(kernel) = guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp.path().join("snap");
    let mut config = guest_config(&kernel, "zx.smp=1 zx.mode=loop");
    config.vcpus = 2;
    let vmm = launch(&vmm_binary(), &tmp.path().join("vm"), Boot::Fresh(config))
        .await
        .unwrap();
    let _reaper = Reaper(vmm.pid());
    vmm.start().await.unwrap();
    wait_console(&vmm.console_log(), "ZX: count=1", T).await;
    vmm.snapshot(&snap).await.unwrap();
    vmm.shutdown(Duration::from_secs(5)).await.unwrap();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(snap.join("state.json")).unwrap()).unwrap();

    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit); 5] = [
        ("machine.vcpus", |s| {
            s["machine"]["vcpus"] = serde_json::json!([])
        }),
        ("memory_bytes", |s| {
            s["memory_bytes"] = serde_json::json!(1u64 << 62)
        }),
        ("config.vcpus", |s| {
            s["config"]["vcpus"] = serde_json::json!(0)
        }),
        ("machine.vcpus[1].xsave", |s| {
            // XSTATE_BV (byte 512) with the AMX tile data bit (18): an area
            // from a machine with AMX.
            let b = &mut s["machine"]["vcpus"][1]["xsave"][514];
            *b = serde_json::json!(b.as_u64().unwrap() | 0x4);
        }),
        ("machine.vcpus[0].cpuid", |s| {
            let entry = s["machine"]["vcpus"][0]["cpuid"][0].clone();
            s["machine"]["vcpus"][0]["cpuid"] = serde_json::json!(vec![entry; 500]);
        }),
    ];
    for (i, (field, edit)) in cases.into_iter().enumerate() {
        let bad = tmp.path().join(format!("bad{i}"));
        std::fs::create_dir(&bad).unwrap();
        let mut s = state.clone();
        edit(&mut s);
        std::fs::write(bad.join("state.json"), serde_json::to_vec(&s).unwrap()).unwrap();
        std::fs::hard_link(snap.join("memory.bin"), bad.join("memory.bin")).unwrap();
        let run = tmp.path().join(format!("r{i}"));
        let err = launch(&vmm_binary(), &run, Boot::Restore { snapshot_dir: bad })
            .await
            .unwrap_err();
        match &err {
            VmmError::InvalidArgument { field: f, .. } => assert_eq!(f, field, "{err}"),
            other => panic!("{field}: expected InvalidArgument, got {other:?}"),
        }
        // The VMM exited cleanly and left nothing behind.
        assert!(!run.exists(), "{field}: stray run dir");
    }
    // The snapshot itself still restores.
    let ok = launch(
        &vmm_binary(),
        &tmp.path().join("good"),
        Boot::Restore { snapshot_dir: snap },
    )
    .await
    .unwrap();
    let _reaper = Reaper(ok.pid());
    assert_eq!(ok.info().await.unwrap().state, VmState::Paused);
    ok.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// `zixiao-vmm` run by hand (no launcher): it clones itself into its PID
/// namespace, makes its own cgroup and builds its own jail, with the same
/// result as a launched VMM's.
#[tokio::test]
async fn a_vmm_started_by_hand_builds_its_own_jail() {
    use std::io::BufRead;
    let Some(kernel) = guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("vm");
    let config = guest_config(&kernel, "zx.mode=echo");
    let mut started = std::process::Command::new(vmm_binary())
        .arg("--run-dir")
        .arg(&run_dir)
        .arg("--boot")
        .arg(serde_json::to_string(&Boot::Fresh(config)).unwrap())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Its lines: the jailed VMM's host pid, then ready (with that pid).
    let mut lines = std::io::BufReader::new(started.stdout.take().unwrap()).lines();
    let mut pid_of = |what: &str| {
        let line = lines.next().unwrap().unwrap();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let (key, pid) = value.as_object().unwrap().iter().next().unwrap();
        assert!(key.eq_ignore_ascii_case(what), "{line}");
        pid.as_u64().unwrap() as u32
    };
    let pid = pid_of("spawned");
    let _reaper = Reaper(pid);
    assert_eq!(pid_of("ready"), pid);
    // The process that cloned it has ended.
    assert!(started.wait().unwrap().success());

    let run_dir = run_dir.canonicalize().unwrap();
    let vmm = VmmClient::connect(&run_dir).await.unwrap();
    assert_eq!(vmm.pid(), pid);
    // It answers only once every thread is filtered.
    vmm.info().await.unwrap();
    for task in tasks(pid) {
        assert_eq!(status_line(&task, "Seccomp:"), "Seccomp: 2", "{task}");
    }
    assert_eq!(
        status_line(&format!("/proc/{pid}/status"), "Seccomp:"),
        "Seccomp: 2"
    );
    let uid = status_line(&format!("/proc/{pid}/status"), "Uid:");
    assert!(!uid.starts_with("Uid: 0 "), "{uid}");
    assert_root_leads_only_to(pid, &run_dir);
    assert!(std::fs::read_dir(format!("/proc/{pid}/root{}", run_dir.display())).is_ok());
    assert!(std::fs::metadata(format!("/proc/{pid}/root/etc")).is_err());
    vmm.shutdown(T).await.unwrap();
}
