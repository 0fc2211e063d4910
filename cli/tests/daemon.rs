//! `zixiao daemon` as a laptop user runs it: while it holds a state
//! directory, every command on that directory goes through its socket (no
//! "in use by another zixiao process"), including those that read this
//! machine's files (an image import with progress, a state backup), and a
//! `--restart always` container killed from outside runs again within
//! seconds without any further command. `daemon install --print` shows the
//! systemd unit that keeps it running.
//!
//! Needs the private containerd of `scripts/services/containerd.sh`; skips
//! with a reason elsewhere (and fails in CI, where ZIXIAO_REQUIRE_RUNTIMES=1).
#![cfg(feature = "containerd")]

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use zixiao_testing::output::{json, ok, text};
use zixiao_testing::runtimes::ContainerdNamespace;
use zixiao_testing::wait::{runtime_endpoint, wait_until_ok};

/// The containerd namespace the CLI's nodes use.
const NAMESPACE: &str = "zixiao";

fn zixiao(state: &Path, socket: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_zixiao"));
    command
        .arg("--state-dir")
        .arg(state)
        .args(["--containerd-socket", socket])
        .env_remove("ZIXIAO_STATE_DIR")
        .env_remove("ZIXIAO_ENDPOINT");
    command
}

/// The daemon, killed when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn commands_go_through_the_daemon_and_restart_policies_work_between_them() {
    let Some(socket) = runtime_endpoint("ZIXIAO_TEST_CONTAINERD_SOCKET", "containerd") else {
        return;
    };
    let busybox =
        std::env::var("ZIXIAO_TEST_BUSYBOX_OCI").expect("ZIXIAO_TEST_BUSYBOX_OCI with the socket");
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let mut child = zixiao(&state, &socket)
        .arg("daemon")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the daemon");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let daemon = Daemon(child);
    let first = lines.next().expect("a line").expect("read");
    assert!(first.contains("listening on https://127.0.0.1:"), "{first}");
    let second = lines.next().expect("a line").expect("read");
    let sock = state.join("zixiao.sock");
    assert!(second.ends_with(&sock.display().to_string()), "{second}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the socket is {mode:o}");

    // The state directory is the daemon's, yet commands on it work.
    let nodes = json(
        zixiao(&state, &socket)
            .args(["-o", "json", "node", "list"])
            .output()
            .expect("run"),
    );
    assert_eq!(nodes.as_array().map(Vec::len), Some(1), "{nodes}");
    // Even those that read this machine's files: through the daemon's socket.
    ok(zixiao(&state, &socket)
        .args(["image", "import", &busybox])
        .output()
        .expect("run"));
    // The name given crosses the socket with the archive's path.
    let named = json(
        zixiao(&state, &socket)
            .args(["-o", "json", "image", "import", &busybox])
            .args(["--name", "localhost/through/daemon:1"])
            .output()
            .expect("run"),
    );
    assert_eq!(named[0]["name"], "localhost/through/daemon:1", "{named}");
    let backup = dir.path().join("backup.redb");
    let backed_up = json(
        zixiao(&state, &socket)
            .args(["-o", "json", "state", "backup", &backup.to_string_lossy()])
            .output()
            .expect("run"),
    );
    assert!(
        backed_up["keys"].as_u64().expect("keys") >= 1,
        "{backed_up}"
    );

    let created = json(
        zixiao(&state, &socket)
            .args([
                "-o",
                "json",
                "instance",
                "create",
                "--name",
                "always",
                "--type",
                "container",
                "--image",
                "busybox",
                "--memory",
                "32",
                "--restart",
                "always",
                "--",
                "sh",
                "-c",
                "echo hi; exec sleep 300",
            ])
            .output()
            .expect("run"),
    );
    assert_eq!(created["status"], "running", "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let containerd = ContainerdNamespace::new(&socket, NAMESPACE).only([id.clone()]);
    let before = containerd.tasks().expect("tasks");
    assert_eq!(before.len(), 1, "{before:?}");

    // Killed from outside; no command runs meanwhile, the daemon restarts it.
    let killed = Command::new("ctr")
        .args([
            "--address",
            &socket,
            "--namespace",
            NAMESPACE,
            "tasks",
            "kill",
            "-s",
            "SIGKILL",
            &id,
        ])
        .output()
        .expect("ctr");
    assert!(killed.status.success(), "{}", text(&killed.stderr));
    let restarted = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(wait_until_ok(
            "the daemon to restart the killed container",
            Duration::from_secs(30),
            || async {
                let tasks = containerd.tasks()?;
                match tasks.as_slice() {
                    [task] if task.status == "RUNNING" && task.pid != before[0].pid => {
                        Ok(task.clone())
                    }
                    other => Err(format!("tasks: {other:?}")),
                }
            },
        ));
    assert_ne!(restarted.pid, before[0].pid);
    let after = json(
        zixiao(&state, &socket)
            .args(["-o", "json", "instance", "get", "always"])
            .output()
            .expect("run"),
    );
    assert_eq!(after["status"], "running", "{after}");
    assert!(
        after["restarts_done"].as_u64().expect("restarts") >= 1,
        "{after}"
    );

    let deleted = json(
        zixiao(&state, &socket)
            .args(["-o", "json", "instance", "delete", "always"])
            .output()
            .expect("run"),
    );
    assert_eq!(deleted["deleted"], id.as_str());
    assert!(containerd.tasks().expect("tasks").is_empty());
    drop(daemon);
}

#[test]
fn install_prints_a_unit_that_runs_the_daemon_of_the_state_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = ok(zixiao(dir.path(), "/run/containerd/containerd.sock")
        .args(["daemon", "install", "--print"])
        .output()
        .expect("run"));
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    assert!(exec.starts_with(env!("CARGO_BIN_EXE_zixiao")), "{exec}");
    assert!(
        exec.contains(&format!("--state-dir {}", dir.path().display())),
        "{exec}"
    );
    assert!(exec.ends_with(" daemon"), "{exec}");
    assert!(unit.contains("KillMode=process"), "{unit}");
    assert!(unit.contains("WantedBy=multi-user.target"), "{unit}");
}
