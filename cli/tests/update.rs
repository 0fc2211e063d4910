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

/// A fresh state directory with busybox imported, and the containerd
/// socket; `None` (the test skips, saying why) without the private
/// containerd.
fn with_busybox() -> Option<(tempfile::TempDir, String)> {
    let socket = runtime_endpoint("ZIXIAO_TEST_CONTAINERD_SOCKET", "containerd")?;
    let image =
        std::env::var("ZIXIAO_TEST_BUSYBOX_OCI").expect("ZIXIAO_TEST_BUSYBOX_OCI with the socket");
    let dir = tempfile::tempdir().expect("tempdir");
    ok(zixiao(dir.path(), &socket, &["image", "import", &image]));
    Some((dir, socket))
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

/// The number in cgroup file `file` of `hierarchy` for container `id`.
fn cgroup_number(id: &str, hierarchy: &str, file: &str) -> i64 {
    let path = cgroup(hierarchy, id).join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .expect("a number")
}

/// The CFS quota (µs per 100 ms, -1 for none) and the memory limit
/// (bytes) the kernel enforces for container `id`.
fn limits(id: &str) -> (i64, i64) {
    (
        cgroup_number(id, "cpu", "cpu.cfs_quota_us"),
        cgroup_number(id, "memory", "memory.limit_in_bytes"),
    )
}

#[test]
fn instance_update_resizes_a_running_container_live_and_refuses_bad_input() {
    let Some((dir, socket)) = with_busybox() else {
        return;
    };
    let state = dir.path();
    let run = |args: &[&str]| zixiao(state, &socket, args);
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
    // A container asks for a tenth of a core unless told, uncapped.
    assert_eq!(web["spec"]["cpus"], 0.1, "{web}");
    let id = web["id"].as_str().expect("id").to_owned();
    assert_eq!(limits(&id), (-1, 64 << 20));

    // Grow live: the new limits are in force when the command returns.
    let updated = json(run(&[
        "instance",
        "update",
        "web",
        "--cpus",
        "2",
        "--cpu-limit",
        "2",
        "--memory",
        "128",
        "--label",
        "tier=front",
        "-o",
        "json",
    ]));
    assert_eq!(updated["spec"]["cpus"], 2, "{updated}");
    assert_eq!(updated["spec"]["cpu_limit"], 2, "{updated}");
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
    let cases: [(&[&str], i32, &str, &str); 8] = [
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
            "invalid cpus: must be more than 0 (a container may ask for as little as 1m)",
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
        (
            &["instance", "update", "web", "--disk", "5"],
            2,
            "invalid_argument",
            "invalid disk_gib: a container has no disk of its own to grow",
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
        "--cpus <CPUS>",
        "--cpu-limit <CPUS>",
        "--memory-limit <MIB>",
        "--memory <MIB>",
        "--label <KEY=VALUE|KEY->",
        "--restart <POLICY>",
        "--restart-if-needed",
        "--disk <GIB>",
        "--max-cpus",
        "live",
        "zixiao instance update web --cpus 2 --memory 512",
    ] {
        assert!(help.contains(part), "help lacks `{part}`:\n{help}");
    }

    ok(run(&["instance", "delete", "web"]));
}

/// The container's CPU weight (cgroup v1 shares) and the memory the kernel
/// keeps from reclaiming (its soft limit), in bytes.
fn reservations(id: &str) -> (i64, i64) {
    (
        cgroup_number(id, "cpu", "cpu.shares"),
        cgroup_number(id, "memory", "memory.soft_limit_in_bytes"),
    )
}

#[test]
fn fractional_cpus_requests_limits_and_allocation_ratios() {
    let Some((dir, socket)) = with_busybox() else {
        return;
    };
    let state = dir.path();
    let run = |args: &[&str]| zixiao(state, &socket, args);
    let node = &json(run(&["node", "list", "-o", "json"]))[0];
    let cores = node["capacity"]["cpus"].as_u64().expect("whole cores");
    let local = node["id"].as_str().expect("id").to_owned();
    let local = local.as_str();
    // A new node promises four times its cores, and its memory once.
    assert_eq!(node["allocation_ratios"]["cpu"], 4, "{node}");
    assert_eq!(node["allocation_ratios"]["memory"], 1, "{node}");

    // A quarter of a core reserved, half a core at most; 32 MiB reserved,
    // 64 MiB at most: the kernel holds it to exactly that.
    let create = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "instance",
            "create",
            "--type",
            "container",
            "--image",
            "busybox",
            "--name",
            name,
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-o", "json", "--", "sleep", "600"]);
        run(&args)
    };
    let burst = json(create(
        "burst",
        &[
            "--cpus",
            "250m",
            "--cpu-limit",
            "0.5",
            "--memory",
            "32",
            "--memory-limit",
            "64",
        ],
    ));
    assert_eq!(burst["status"], "running", "{burst}");
    assert_eq!(burst["spec"]["cpus"], 0.25, "{burst}");
    assert_eq!(burst["spec"]["cpu_limit"], 0.5, "{burst}");
    let id = burst["id"].as_str().expect("id");
    assert_eq!(limits(id), (50_000, 64 << 20));
    assert_eq!(reservations(id), (256, 32 << 20));
    // Only the caps change, live: the cgroup has them when the command
    // returns, and the reservation stays.
    let raised = json(run(&[
        "instance",
        "update",
        "burst",
        "--cpu-limit",
        "1",
        "--memory-limit",
        "96",
        "-o",
        "json",
    ]));
    assert_eq!(raised["spec"]["cpu_limit"], 1, "{raised}");
    assert_eq!(raised["started_at"], burst["started_at"], "not restarted");
    assert_eq!(limits(id), (100_000, 96 << 20));
    assert_eq!(reservations(id), (256, 32 << 20));
    let node = &json(run(&["node", "get", local, "-o", "json"]));
    assert_eq!(node["allocated"]["cpus"], 0.25, "{node}");

    // With no overcommit, an instance that wants every core cannot fit
    // beside it: it waits, and says by how much, in cores.
    let exact = json(run(&[
        "node",
        "update",
        local,
        "--cpu-allocation-ratio",
        "1",
        "-o",
        "json",
    ]));
    assert_eq!(exact["allocation_ratios"]["cpu"], 1, "{exact}");
    let all = cores.to_string();
    let out = create("big", &["--cpus", &all, "--memory", "16"]);
    assert!(!out.status.success(), "a pending create is no success");
    let big: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the instance");
    assert_eq!(big["status"], "pending", "{big}");
    let free = cores as f64 - 0.25;
    let why = format!("insufficient cpu (need {cores} cores, max free {free} cores)");
    assert!(big["conditions"].to_string().contains(&why), "{big}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&why), "{stderr}");
    // Promising twice the cores makes room: the waiting instance is placed.
    ok(run(&[
        "node",
        "update",
        local,
        "--cpu-allocation-ratio",
        "2",
    ]));
    let placed = json(run(&["instance", "start", "big", "-o", "json"]));
    assert_eq!(placed["status"], "running", "{placed}");
    let shown = ok(run(&["node", "get", local]));
    let reservable = 2 * cores;
    assert!(
        shown.contains(&format!("allocated of {reservable} ({cores} cores × 2)")),
        "{shown}"
    );

    // Bad input: refused, naming the field; nothing is created or changed.
    let cases: [(&[&str], &str); 7] = [
        (&["--cpus", "0.0001"], "at most 3 decimals"),
        (
            &["--max-cpus", "2"],
            "invalid spec.max_cpus: only a vm changes its vCPUs live",
        ),
        (
            &["--max-memory", "256"],
            "invalid spec.max_memory_mib: only a vm changes its memory live",
        ),
        (
            &["--cpus", "1", "--cpu-limit", "0.5"],
            "invalid spec.cpu_limit",
        ),
        (
            &["--memory", "64", "--memory-limit", "32"],
            "invalid spec.memory_limit_mib",
        ),
        (&["--cpus", "-1"], "is not a CPU amount"),
        (&["--cpus", "lots"], "is not a CPU amount"),
    ];
    for (extra, part) in cases {
        let out = create("bad", extra);
        assert_refused(out, &format!("{extra:?}"), 2, "invalid_argument", part);
    }
    let microvm = run(&[
        "instance", "create", "--type", "microvm", "--kernel", "/vmlinuz", "--name", "bad",
        "--cpus", "1.5", "-o", "json",
    ]);
    assert_refused(
        microvm,
        "a fraction of a vCPU",
        2,
        "invalid_argument",
        "invalid spec.cpus: a microvm has whole vCPUs; 1.5 is not a whole number (use 2)",
    );
    for (args, part) in [
        (
            &[
                "node",
                "update",
                local,
                "--cpu-allocation-ratio",
                "0",
                "-o",
                "json",
            ][..],
            "outside 0.1..=64",
        ),
        (
            &["node", "update", local, "-o", "json"][..],
            "invalid allocation_ratios: nothing to change",
        ),
    ] {
        assert_refused(run(args), &format!("{args:?}"), 2, "invalid_argument", part);
    }
    let names: Vec<String> = json(run(&["instance", "list", "-o", "json"]))
        .as_array()
        .expect("list")
        .iter()
        .map(|i| i["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names, ["big", "burst"]);
    let node = &json(run(&["node", "get", local, "-o", "json"]));
    assert_eq!(node["allocation_ratios"]["cpu"], 2, "{node}");

    for name in ["big", "burst"] {
        ok(run(&["instance", "delete", name]));
    }
}
