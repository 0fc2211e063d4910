//! The `zixiao` binary as a user runs it: exit codes, messages, JSON output,
//! on a fresh embedded state directory.

use std::path::Path;
use std::process::{Command, Output};

fn zixiao(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zixiao"))
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("ZIXIAO_STATE_DIR")
        .output()
        .expect("run zixiao")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

#[test]
fn a_fresh_state_dir_shows_the_local_node_with_real_capacity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = zixiao(dir.path(), &["node", "list", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let nodes = json(&out);
    let nodes = nodes.as_array().expect("a list");
    assert_eq!(nodes.len(), 1);
    let node = &nodes[0];
    let cpus = std::thread::available_parallelism().expect("cpus").get() as u64;
    assert_eq!(node["capacity"]["cpus"].as_u64(), Some(cpus));
    assert_eq!(
        node["capacity"]["memory_mib"].as_u64(),
        Some(zixiao_testing::host::mem_total_bytes() >> 20)
    );
    assert!(node["capacity"]["disk_gib"].as_u64().expect("disk") > 0);
    assert_eq!(node["status"], "ready");

    // The same node on the next command: registered once, not twice.
    let again = json(&zixiao(dir.path(), &["node", "list", "-o", "json"]));
    assert_eq!(again.as_array().map(Vec::len), Some(1));

    let info = zixiao(dir.path(), &["cluster", "info"]);
    assert!(info.status.success(), "{}", stderr(&info));
    let text = stdout(&info);
    assert!(
        text.contains("nodes:") && text.contains("1 ready"),
        "{text}"
    );
    assert!(text.contains(&format!("0 allocated of {cpus}")), "{text}");
}

#[test]
fn invalid_specs_exit_2_naming_the_field_and_leave_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = [
        "instance",
        "create",
        "--type",
        "container",
        "--image",
        "busybox",
    ];
    let cases: &[(&[&str], &str)] = &[
        (&["--name", ""], "invalid name: must not be empty"),
        (&["--name", "Web_1"], "invalid name:"),
        (&["--name=-web"], "invalid name:"),
        (
            &["--name", "w", "--cpus", "0"],
            "invalid spec.cpus: must be more than 0 (a container may ask for as little as 1m)",
        ),
        (&["--name", "w", "--cpus", "4096"], "invalid spec.cpus:"),
        (
            &["--name", "w", "--memory", "0"],
            "invalid spec.memory_mib:",
        ),
        (
            &["--name", "w", "--memory", "99999999999"],
            "invalid spec.memory_mib:",
        ),
        (
            &["--name", "w", "--kernel", "/boot/vmlinuz"],
            "invalid spec.kernel:",
        ),
        (
            &["--name", "w", "--label", "novalue"],
            "invalid --label: `novalue` is not KEY=VALUE",
        ),
        (&["--name", "w", "--env", "=x"], "invalid --env:"),
        (
            &["--name", "w", "--restart", "sometimes"],
            "invalid spec.restart:",
        ),
        (
            &["--name", "w", "--zone", "Zone A"],
            "invalid spec.placement.zone:",
        ),
        (&["--name", "w", "--", ""], "invalid spec.command:"),
    ];
    for (extra, message) in cases {
        let args: Vec<&str> = base.iter().chain(extra.iter()).copied().collect();
        let out = zixiao(dir.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }
    let other_types: &[(&[&str], &str)] = &[
        (
            &["instance", "create", "--name", "w", "--type", "vps"],
            "invalid spec.type: unknown instance type `vps`",
        ),
        (
            &["instance", "create", "--name", "w", "--type", "container"],
            "invalid spec.image:",
        ),
        (
            &["instance", "create", "--name", "w", "--type", "microvm"],
            "invalid spec.kernel:",
        ),
        (
            &[
                "instance", "create", "--name", "w", "--type", "microvm", "--kernel", "/k", "--",
                "sh",
            ],
            "invalid spec.command:",
        ),
        (
            &["instance", "create", "--name", "w", "--type", "vm"],
            "invalid spec.image:",
        ),
    ];
    for (args, message) in other_types {
        let out = zixiao(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }
    let list = zixiao(dir.path(), &["instance", "list", "-o", "json"]);
    assert!(list.status.success(), "{}", stderr(&list));
    assert_eq!(json(&list), serde_json::json!([]));
}

#[test]
fn spec_files_are_checked_like_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("web.yaml");
    std::fs::write(
        &file,
        "name: web\nspec:\n  type: container\n  image: busybox\n  cpus: 1\n  memroy_mib: 64\n",
    )
    .expect("write");
    let out = zixiao(
        dir.path(),
        &["instance", "create", "-f", file.to_str().expect("utf8")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unknown field `memroy_mib`"),
        "{}",
        stderr(&out)
    );

    std::fs::write(
        &file,
        "name: web\nspec:\n  type: container\n  image: busybox\n  cpus: 0\n  memory_mib: 64\n",
    )
    .expect("write");
    let out = zixiao(
        dir.path(),
        &["instance", "create", "-f", file.to_str().expect("utf8")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("invalid spec.cpus"),
        "{}",
        stderr(&out)
    );

    let out = zixiao(
        dir.path(),
        &["instance", "create", "-f", "/nonexistent/web.yaml"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("invalid --file: `/nonexistent/web.yaml` does not exist"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_type_without_a_runtime_is_unsupported_and_says_what_is_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kernel = "/boot/vmlinux";
    // Whether or not this build has the microvm driver, point it at
    // monitors that do not exist, so this node cannot run microVMs.
    let out = Command::new(env!("CARGO_BIN_EXE_zixiao"))
        .arg("--state-dir")
        .arg(dir.path())
        .args([
            "instance", "create", "--name", "m1", "--type", "microvm", "--kernel", kernel, "-o",
            "json",
        ])
        .env_remove("ZIXIAO_STATE_DIR")
        .env("ZIXIAO_QEMU_BIN", "/nonexistent/qemu-system-x86_64")
        .env("ZIXIAO_VMM_BIN", "/nonexistent/zixiao-vmm")
        .output()
        .expect("run zixiao");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err: serde_json::Value = serde_json::from_slice(&out.stderr).expect("a JSON error");
    assert_eq!(err["error"]["kind"], "unsupported");
    let message = err["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("no node can run microvm instances"),
        "{message}"
    );
    let says_what_is_missing = message.contains("not built in")
        || (message.contains("qemu-system-x86_64") && message.contains("zixiao-vmm"));
    assert!(says_what_is_missing, "{message}");
    let list = zixiao(dir.path(), &["instance", "list", "-o", "json"]);
    assert_eq!(json(&list), serde_json::json!([]));
}

#[test]
fn unknown_ids_are_not_found_with_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    for args in [
        &["instance", "get", "nope"][..],
        &["instance", "delete", "nope"][..],
        &["node", "get", "nope"][..],
        &["node", "cordon", "nope"][..],
    ] {
        let out = zixiao(dir.path(), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains("`nope` not found"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn node_lifecycle_commands_change_the_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = json(&zixiao(dir.path(), &["node", "list", "-o", "json"]))[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let status = |args: &[&str]| {
        let out = zixiao(dir.path(), args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        json(&zixiao(dir.path(), &["node", "get", &node, "-o", "json"]))["status"].clone()
    };
    assert_eq!(status(&["node", "cordon", &node]), "cordoned");
    assert_eq!(status(&["node", "uncordon", &node]), "ready");
    assert_eq!(status(&["node", "maintenance", &node, "on"]), "maintenance");
    let out = zixiao(dir.path(), &["node", "uncordon", &node]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is maintenance"), "{}", stderr(&out));
    assert_eq!(status(&["node", "maintenance", &node, "off"]), "ready");
    assert_eq!(status(&["node", "drain", &node]), "cordoned");
}

#[test]
fn version_and_help_work_without_a_state_dir() {
    let out = Command::new(env!("CARGO_BIN_EXE_zixiao"))
        .arg("version")
        .output()
        .expect("run");
    assert!(out.status.success());
    assert!(stdout(&out).starts_with("zixiao "), "{}", stdout(&out));
    let out = Command::new(env!("CARGO_BIN_EXE_zixiao"))
        .args(["instance", "create", "--help"])
        .output()
        .expect("run");
    assert!(out.status.success());
    assert!(stdout(&out).contains("--no-wait"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("--publish <[HOST_IP:]HOST_PORT:GUEST_PORT[/tcp|udp]>"),
        "{}",
        stdout(&out)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_zixiao"))
        .args(["instance", "frobnicate"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn completion_scripts_are_valid_shell_and_know_the_commands() {
    let script = |shell: &str| -> Output {
        Command::new(env!("CARGO_BIN_EXE_zixiao"))
            .args(["completion", shell])
            .output()
            .expect("run")
    };
    let bash = script("bash");
    assert!(bash.status.success(), "{}", stderr(&bash));
    let text = stdout(&bash);
    for word in ["instance", "create", "--page-size", "completion"] {
        assert!(text.contains(word), "bash completion lacks {word}");
    }
    // bash itself reads it without a syntax error.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("zixiao.bash");
    std::fs::write(&file, &text).expect("write the script");
    let checked = Command::new("bash")
        .arg("-n")
        .arg(&file)
        .output()
        .expect("run bash");
    assert!(checked.status.success(), "{}", stderr(&checked));
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = script(shell);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        assert!(stdout(&out).contains("instance"), "{shell}");
    }
    let unknown = script("tcsh");
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        stderr(&unknown).contains("possible values"),
        "{}",
        stderr(&unknown)
    );
}

/// A reader that stops early (`| head`) ends the command quietly: no
/// panic, exit 0. The bash completion script is larger than a pipe holds,
/// so the write meets the closed pipe.
#[test]
fn output_to_a_reader_that_goes_away_is_not_a_panic() {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_zixiao"))
        .args(["completion", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 10];
    stdout.read_exact(&mut first).expect("the first bytes");
    drop(stdout);
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{:?}: {}", out.status, stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

#[test]
fn the_dashboard_serves_loopback_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    for listen in ["0.0.0.0:7780", "192.0.2.1:80", "[::]:7780"] {
        let out = zixiao(dir.path(), &["ui", "--listen", listen]);
        assert_eq!(out.status.code(), Some(2), "{listen}: {}", stderr(&out));
        let message = stderr(&out);
        assert!(
            message.contains("--listen") && message.contains("not a loopback address"),
            "{listen}: {message}"
        );
    }
}
