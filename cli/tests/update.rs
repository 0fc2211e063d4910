//! `zixiao instance update` end to end against the embedded default and a
//! real containerd: a running container's new CPU and memory limits read
//! from its cgroup files on the host, labels and the restart policy, and
//! bad input refused with the field or the shortfall named and nothing
//! changed. Needs the private containerd that `scripts/test.sh` starts;
//! skips with a reason elsewhere (and fails in CI, where
//! ZIXIAO_REQUIRE_RUNTIMES=1).
#![cfg(feature = "containerd")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use zixiao_testing::output::{assert_refused, json, ok};
use zixiao_testing::wait::runtime_endpoint;

fn zixiao(state: &Path, socket: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zixiao"))
        .arg("--state-dir")
        .arg(state)
        .args(["--containerd-socket", socket])
        .args(args)
        .output()
        .expect("run zixiao")
}

/// The container's cgroup directory in `hierarchy` (cgroup v1): containerd
/// puts it at `/<namespace>/<instance id>`, the namespace being the
/// embedded node's own.
fn cgroup(hierarchy: &str, id: &str) -> PathBuf {
    let root = Path::new("/sys/fs/cgroup").join(hierarchy);
    std::fs::read_dir(&root)
        .expect("cgroup hierarchy")
        .flatten()
        .map(|namespace| namespace.path().join(id))
        .find(|dir| dir.is_dir())
        .unwrap_or_else(|| panic!("no cgroup of {id} under {}", root.display()))
}

/// The CFS quota (µs per 100 ms) and the memory limit (bytes) the kernel
/// enforces for container `id`.
fn limits(id: &str) -> (u64, u64) {
    let read = |hierarchy: &str, file: &str| -> u64 {
        let path = cgroup(hierarchy, id).join(file);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .parse()
            .expect("a number")
    };
    (
        read("cpu", "cpu.cfs_quota_us"),
        read("memory", "memory.limit_in_bytes"),
    )
}

#[test]
fn instance_update_resizes_a_running_container_live_and_refuses_bad_input() {
    let Some(socket) = runtime_endpoint("ZIXIAO_TEST_CONTAINERD_SOCKET", "containerd") else {
        return;
    };
    let image =
        std::env::var("ZIXIAO_TEST_BUSYBOX_OCI").expect("ZIXIAO_TEST_BUSYBOX_OCI with the socket");
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path();
    let run = |args: &[&str]| zixiao(state, &socket, args);
    ok(run(&["image", "import", &image]));
    let web = json(run(&[
        "instance",
        "create",
        "--type",
        "container",
        "--image",
        "busybox",
        "--name",
        "web",
        "--memory",
        "64",
        "--label",
        "app=web",
        "-o",
        "json",
        "--",
        "sleep",
        "600",
    ]));
    assert_eq!(web["status"], "running", "{web}");
    let id = web["id"].as_str().expect("id").to_owned();
    assert_eq!(limits(&id), (100_000, 64 << 20));

    // Grow live: the new limits are in force when the command returns.
    let updated = json(run(&[
        "instance",
        "update",
        "web",
        "--cpus",
        "2",
        "--memory",
        "128",
        "--label",
        "tier=front",
        "-o",
        "json",
    ]));
    assert_eq!(updated["spec"]["cpus"], 2, "{updated}");
    assert_eq!(updated["spec"]["memory_mib"], 128, "{updated}");
    assert_eq!(updated["labels"]["tier"], "front", "{updated}");
    assert_eq!(updated["labels"]["app"], "web", "{updated}");
    assert_eq!(updated["status"], "running", "{updated}");
    assert_eq!(updated["started_at"], web["started_at"], "not restarted");
    assert_eq!(limits(&id), (200_000, 128 << 20));

    // Labels and the restart policy, in the table output.
    let shown = ok(run(&[
        "instance",
        "update",
        "web",
        "--label",
        "app-",
        "--restart",
        "on-failure",
    ]));
    assert!(shown.contains("web"), "{shown}");
    let got = json(run(&["instance", "get", "web", "-o", "json"]));
    assert!(got["labels"].get("app").is_none(), "{got}");
    assert_eq!(got["labels"]["tier"], "front", "{got}");
    assert_eq!(got["spec"]["restart"], "on_failure", "{got}");

    // Bad input: refused, naming the field or the shortfall; nothing changes.
    let before = json(run(&["instance", "get", "web", "-o", "json"]));
    let cases: [(&[&str], i32, &str, &str); 7] = [
        (
            &["instance", "update", "nope", "--cpus", "2"],
            1,
            "not_found",
            "instance `nope`",
        ),
        (
            &["instance", "update", "web", "--cpus", "0"],
            2,
            "invalid_argument",
            "invalid cpus: must be at least 1",
        ),
        (
            &["instance", "update", "web"],
            2,
            "invalid_argument",
            "invalid update: nothing to change",
        ),
        (
            &["instance", "update", "web", "--memory", "2"],
            2,
            "invalid_argument",
            "invalid memory_mib",
        ),
        (
            &["instance", "update", "web", "--label", "oops"],
            2,
            "invalid_argument",
            "neither KEY=VALUE (set) nor KEY- (remove)",
        ),
        (
            &["instance", "update", "web", "--restart", "sometimes"],
            2,
            "invalid_argument",
            "unknown restart policy `sometimes`",
        ),
        // 8 TiB: valid, more than this machine has.
        (
            &["instance", "update", "web", "--memory", "8388608"],
            1,
            "resource_exhausted",
            "MiB free, the update of `web` needs",
        ),
    ];
    for (args, code, kind, part) in cases {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        assert_refused(run(&args), &format!("{args:?}"), code, kind, part);
    }
    let after = json(run(&["instance", "get", "web", "-o", "json"]));
    assert_eq!(after["revision"], before["revision"], "nothing was stored");
    assert_eq!(after["spec"], before["spec"]);
    assert_eq!(limits(&id), (200_000, 128 << 20));

    // The help says what the flags do.
    let help = ok(run(&["instance", "update", "--help"]));
    for part in [
        "--cpus <N>",
        "--memory <MIB>",
        "--label <KEY=VALUE|KEY->",
        "--restart <POLICY>",
        "--restart-if-needed",
        "live",
        "zixiao instance update web --cpus 2 --memory 512",
    ] {
        assert!(help.contains(part), "help lacks `{part}`:\n{help}");
    }

    ok(run(&["instance", "delete", "web"]));
}
