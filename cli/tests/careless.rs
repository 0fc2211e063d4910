//! Careless and hostile input on the embedded default, as a user types it:
//! every mistake is exit 2 with a message naming what is wrong, `-o json`
//! errors are one JSON object, and nothing is stored.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use zixiao_testing::output::refused;

fn zixiao(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zixiao"))
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("ZIXIAO_STATE_DIR")
        .output()
        .expect("run zixiao")
}

/// The message of the one JSON error a failed `-o json` command prints,
/// after checking that it is invalid input (exit 2).
fn json_error(out: &Output) -> String {
    let (code, kind, message) = refused(out.clone());
    assert_eq!((code, kind.as_str()), (2, "invalid_argument"), "{message}");
    message
}

fn nothing_stored(state: &Path) {
    let out = zixiao(state, &["instance", "list", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(list, serde_json::json!([]), "something was stored");
}

#[test]
fn spec_files_that_never_end_never_open_or_do_not_parse_are_refused_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let fifo = dir.path().join("spec.fifo");
    let c = std::ffi::CString::new(fifo.to_str().expect("utf-8")).expect("path");
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let trailing = dir.path().join("trailing.json");
    std::fs::write(
        &trailing,
        r#"{"name": "w", "spec": {"type": "container", "image": "busybox",}}"#,
    )
    .expect("write");
    let wrong = dir.path().join("wrong.yaml");
    std::fs::write(&wrong, "name: w\nspec:\n  type: container\n  cpus: many\n").expect("write");
    let cases: [(&str, &str); 5] = [
        ("/dev/zero", "character device"),
        (fifo.to_str().expect("utf-8"), "FIFO"),
        (dir.path().to_str().expect("utf-8"), "directory"),
        (
            trailing.to_str().expect("utf-8"),
            "trailing comma at line 1",
        ),
        (wrong.to_str().expect("utf-8"), "spec.cpus"),
    ];
    for (file, expected) in cases {
        let started = Instant::now();
        let out = zixiao(&state, &["instance", "create", "-f", file, "-o", "json"]);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{file} took {:?}",
            started.elapsed()
        );
        let message = json_error(&out);
        assert!(
            message.contains("--file") && message.contains(expected),
            "{file}: {message}"
        );
    }
    nothing_stored(&state);
}

#[test]
fn a_name_that_reads_as_an_id_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = zixiao(
        dir.path(),
        &[
            "instance",
            "create",
            "--name",
            "0d2f5b3e-4c1a-4e8b-9f6d-2a7c1e9b8d40",
            "--type",
            "container",
            "--image",
            "busybox",
            "-o",
            "json",
        ],
    );
    let message = json_error(&out);
    assert!(
        message.starts_with("invalid name:") && message.contains("UUID"),
        "{message}"
    );
    nothing_stored(dir.path());
}

#[test]
fn command_line_mistakes_are_json_with_json_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = zixiao(
        dir.path(),
        &[
            "instance",
            "create",
            "--name",
            "x",
            "--type",
            "container",
            "--cpus",
            "-1",
            "-o",
            "json",
        ],
    );
    let message = json_error(&out);
    assert!(message.contains("--cpus"), "{message}");
    assert!(
        !message.contains("-- -1"),
        "the tip would make it a command: {message}"
    );
    let out = zixiao(dir.path(), &["--bogus", "--output=json"]);
    assert!(json_error(&out).contains("--bogus"));
    let out = zixiao(dir.path(), &["version", "-o", "json"]);
    assert!(out.status.success());
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
}

/// A microVM that cannot boot here is refused before anything is stored,
/// with exit 2 and the field named: a kernel that is a device, a
/// directory, a symlink loop, an empty file or the initrd; less memory
/// than the kernel needs or the backend allows; a command line longer
/// than the kernel takes. Nothing is stored and no monitor runs.
#[cfg(feature = "microvm")]
#[test]
fn microvms_that_cannot_boot_are_refused_before_they_are_stored() {
    let Some(kernel) =
        zixiao_testing::wait::runtime_endpoint("ZIXIAO_TEST_MICROVM_KERNEL", "the test kernel")
    else {
        return;
    };
    let Some(initrd) =
        zixiao_testing::wait::runtime_endpoint("ZIXIAO_TEST_MICROVM_INITRD", "the test initrd")
    else {
        return;
    };
    let dir = tempfile::Builder::new()
        .prefix("zx-")
        .tempdir()
        .expect("tempdir");
    let state = dir.path().join("s");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").expect("write");
    let a = dir.path().join("a");
    std::os::unix::fs::symlink(dir.path().join("b"), &a).expect("symlink");
    std::os::unix::fs::symlink(&a, dir.path().join("b")).expect("symlink");
    let path = |p: &Path| p.to_str().expect("utf-8").to_owned();
    let long = "x".repeat(3000);
    let cases: Vec<(Vec<String>, &str, &str)> = vec![
        (
            vec!["--kernel".into(), "/dev/null".into()],
            "spec.kernel",
            "character device",
        ),
        (
            vec!["--kernel".into(), path(dir.path())],
            "spec.kernel",
            "directory",
        ),
        (
            vec!["--kernel".into(), path(&a)],
            "spec.kernel",
            "symbolic links",
        ),
        (
            vec!["--kernel".into(), path(&empty)],
            "spec.kernel",
            "is empty",
        ),
        (
            vec!["--kernel".into(), initrd.clone()],
            "spec.kernel",
            "not a kernel",
        ),
        (
            vec![
                "--kernel".into(),
                kernel.clone(),
                "--initrd".into(),
                "/dev/zero".into(),
            ],
            "spec.initrd",
            "character device",
        ),
        (
            vec![
                "--kernel".into(),
                kernel.clone(),
                "--initrd".into(),
                initrd.clone(),
                "--memory".into(),
                "4".into(),
            ],
            "spec.memory_mib",
            "needs at least",
        ),
        (
            vec![
                "--kernel".into(),
                kernel.clone(),
                "--initrd".into(),
                initrd.clone(),
                "--memory".into(),
                "64".into(),
            ],
            "spec.memory_mib",
            "needs at least",
        ),
        (
            vec!["--kernel".into(), kernel.clone(), "--cmdline".into(), long],
            "spec.cmdline",
            "at most",
        ),
    ];
    for (files, field, expected) in cases {
        let mut args = vec![
            "instance",
            "create",
            "--name",
            "m",
            "--type",
            "microvm",
            "--backend",
            "qemu",
            "-o",
            "json",
        ];
        args.extend(files.iter().map(String::as_str));
        let started = Instant::now();
        let out = zixiao(&state, &args);
        assert!(started.elapsed() < Duration::from_secs(30));
        let message = json_error(&out);
        assert!(
            message.starts_with(&format!("invalid {field}:")) && message.contains(expected),
            "{files:?}: {message}"
        );
    }
    // The vmm backend's own bounds.
    let out = zixiao(
        &state,
        &[
            "instance",
            "create",
            "--name",
            "m",
            "--type",
            "microvm",
            "--backend",
            "vmm",
            "--kernel",
            &kernel,
            "--memory",
            "8",
            "-o",
            "json",
        ],
    );
    if out.status.code() == Some(2) {
        let message = json_error(&out);
        assert!(message.contains("vmm backend's minimum"), "{message}");
    }
    nothing_stored(&state);
    let runs = state.join("runtime").join("microvm");
    assert!(
        std::fs::read_dir(&runs).map_or(true, |mut d| d.next().is_none()),
        "a microVM directory was made"
    );
}

/// A server that is not there: exit 1, and the message names the address
/// and the operating system's reason (what `zixiao_api::connect` says).
#[test]
fn an_unreachable_server_is_named_with_the_os_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_zixiao"))
        .args(["--endpoint", "127.0.0.1:1", "-o", "json", "node", "list"])
        .env("ZIXIAO_STATE_DIR", dir.path())
        .env_remove("ZIXIAO_ENDPOINT")
        .output()
        .expect("run zixiao");
    assert_eq!(out.status.code(), Some(1));
    let body: serde_json::Value = serde_json::from_slice(&out.stderr).expect("one JSON error");
    assert_eq!(body["error"]["kind"], "unavailable", "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("the zixiao server `127.0.0.1:1` is unavailable")
            && message.contains("Connection refused (os error 111)"),
        "{message}"
    );
}

/// `zixiao instance create` of container `web` (busybox) with `extra`
/// flags, `-o json`.
fn create_web(state: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "instance",
        "create",
        "--name",
        "web",
        "--type",
        "container",
        "--image",
        "busybox",
        "-o",
        "json",
    ];
    args.extend_from_slice(extra);
    zixiao(state, &args)
}

#[test]
fn bad_published_ports_are_refused_naming_the_flag_or_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let create = |extra: &[&str]| create_web(&state, extra);
    for (publish, expected) in [
        ("0:80", "the host port 0 is not 1 to 65535"),
        ("70000:80", "the host port 70000 is not 1 to 65535"),
        ("80", "expected [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp|udp]"),
        ("a:b", "the host port `a` is not a number"),
        ("8080:80/sctp", "the protocol `sctp` is not tcp or udp"),
        ("127.0.0.1:8080:80", "loopback"),
    ] {
        let out = create(&["--network", "lan", "--publish", publish]);
        let message = json_error(&out);
        assert!(
            message.starts_with(&format!(
                "invalid --publish: `{publish}` is not a published port"
            )) && message.contains(expected),
            "{publish}: {message}"
        );
    }
    // A published port leads to the instance's address on its first network.
    let message = json_error(&create(&["--publish", "8080:80"]));
    assert!(
        message.starts_with("invalid spec.publish:") && message.contains("join a network"),
        "{message}"
    );
    let message = json_error(&create(&[
        "--network",
        "lan",
        "-p",
        "8080:80",
        "-p",
        "8080:81",
    ]));
    assert!(message.starts_with("invalid spec.publish[1]:"), "{message}");
    // The spec file's field goes through the same parser.
    let file = dir.path().join("web.yaml");
    std::fs::write(
        &file,
        "name: web\nspec:\n  type: container\n  image: busybox\n  cpus: 1\n  memory_mib: 64\n  \
         networks: [lan]\n  publish: [\"8080:80/sctp\"]\n",
    )
    .expect("write");
    let out = zixiao(
        &state,
        &[
            "instance",
            "create",
            "-f",
            file.to_str().unwrap(),
            "-o",
            "json",
        ],
    );
    let message = json_error(&out);
    assert!(
        message.contains("spec.publish") && message.contains("`sctp` is not tcp or udp"),
        "{message}"
    );
    nothing_stored(&state);
}

#[test]
fn a_host_port_a_process_holds_is_refused_naming_it_before_anything_is_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    // This test's own socket: the embedded default runs on this machine.
    let held = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = held.local_addr().expect("address").port();
    let publish = format!("{port}:80");
    let out = create_web(&state, &["--network", "lan", "--publish", &publish]);
    refused_as_held(&out, port);
    nothing_stored(&state);
    drop(held);
}

/// The same from a template: what its version makes is checked against
/// this node before anything is stored.
#[test]
fn a_template_whose_port_a_process_holds_makes_no_instance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let held = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = held.local_addr().expect("address").port();
    let file = dir.path().join("web.yaml");
    let spec = format!(
        "spec:\n  type: container\n  image: busybox\n  cpus: 1\n  memory_mib: 64\n  \
         networks: [lan]\n  publish: [\"{port}:80\"]\n"
    );
    std::fs::write(&file, spec).expect("write");
    let made = zixiao(
        &state,
        &["template", "create", "web", "-f", file.to_str().unwrap()],
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let out = zixiao(
        &state,
        &[
            "instance",
            "create",
            "--template",
            "web",
            "--name",
            "a",
            "-o",
            "json",
        ],
    );
    refused_as_held(&out, port);
    nothing_stored(&state);
    drop(held);
}

/// Checks that `out` (`-o json`) was refused because this process holds
/// host port `port`, naming it.
fn refused_as_held(out: &Output, port: u16) {
    let (code, kind, message) = refused(out.clone());
    assert_eq!(
        (code, kind.as_str()),
        (1, "failed_precondition"),
        "{message}"
    );
    assert!(
        message.contains(&format!("host port {port}/tcp is taken on this node"))
            && message.contains(&format!("process {} (`", std::process::id())),
        "{message}"
    );
}

#[test]
fn a_node_that_takes_no_host_paths_refuses_them_from_its_own_administrator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let snapshot = dir.path().join("snapshot");
    std::fs::create_dir(&snapshot).expect("mkdir");
    let snapshot = snapshot.to_str().expect("utf-8");
    let microvm = [
        "instance",
        "create",
        "--name",
        "m",
        "--type",
        "microvm",
        "--kernel",
        "/etc/shadow",
        "-o",
        "json",
    ];
    let vm = [
        "instance",
        "create",
        "--name",
        "v",
        "--type",
        "vm",
        "--image",
        "/etc/shadow",
        "-o",
        "json",
    ];
    let restore = [
        "instance", "restore", "--from", snapshot, "--name", "r", "-o", "json",
    ];
    // `args` with ZIXIAO_ALLOW_HOST_PATHS set to `value`.
    let with_setting = |args: &[&str], value: &str| {
        Command::new(env!("CARGO_BIN_EXE_zixiao"))
            .arg("--state-dir")
            .arg(&state)
            .args(args)
            .env_remove("ZIXIAO_STATE_DIR")
            .env("ZIXIAO_ALLOW_HOST_PATHS", value)
            .output()
            .expect("run zixiao")
    };
    let cases: [(&[&str], &str); 3] = [
        (&microvm, "spec.kernel"),
        (&vm, "spec.image"),
        (&restore, "from"),
    ];
    for (args, field) in cases {
        // The flag and the environment variable say the same.
        let by_flag = [&["--allow-host-paths", "false"], args].concat();
        for out in [zixiao(&state, &by_flag), with_setting(args, "off")] {
            let message = json_error(&out);
            assert!(
                message.contains(field)
                    && message.contains("/")
                    && message.contains("allow_host_paths setting is off"),
                "{args:?}: {message}"
            );
        }
    }
    nothing_stored(&state);
    // A value that is not a boolean is refused naming the option.
    let message = json_error(&with_setting(&microvm, "maybe"));
    assert!(message.contains("--allow-host-paths"), "{message}");
    nothing_stored(&state);
}

#[test]
fn bad_cloud_init_data_is_refused_naming_the_flag_or_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let file = |name: &str, content: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).expect("write");
        path.to_string_lossy().into_owned()
    };
    let vm = |extra: &[&str]| {
        let mut args = vec![
            "instance", "create", "--name", "vm1", "--type", "vm", "--image", "disk1", "-o", "json",
        ];
        args.extend_from_slice(extra);
        zixiao(&state, &args)
    };
    let init = file("init.yaml", b"#cloud-config\n");
    // Containers do not run cloud-init.
    let out = zixiao(
        &state,
        &[
            "instance",
            "create",
            "--name",
            "c1",
            "--type",
            "container",
            "--image",
            "busybox",
            "--user-data",
            &init,
            "-o",
            "json",
        ],
    );
    let message = json_error(&out);
    assert!(
        message.starts_with("invalid spec.cloud_init:") && message.contains("container"),
        "{message}"
    );
    let big = file("big.yaml", &vec![b'#'; 70 * 1024]);
    let message = json_error(&vm(&["--user-data", &big]));
    assert!(
        message.starts_with("invalid --user-data:")
            || message.starts_with("invalid spec.cloud_init:"),
        "{message}"
    );
    let binary = file("binary", &[0xff, 0xfe, 0x00]);
    let message = json_error(&vm(&["--user-data", &binary]));
    assert!(message.contains("not UTF-8 text"), "{message}");
    let not_a_key = file("id.pub", b"# my key\nhunter2\n");
    let message = json_error(&vm(&["--ssh-key", &not_a_key]));
    assert!(
        message.starts_with("invalid spec.cloud_init.ssh_authorized_keys[0]:"),
        "{message}"
    );
    let missing = dir.path().join("missing.yaml");
    let message = json_error(&vm(&["--user-data", missing.to_str().unwrap()]));
    assert!(
        message.starts_with("invalid --user-data:") && message.contains("does not exist"),
        "{message}"
    );
    nothing_stored(&state);
}
