//! The CLI against a real containerd: import the locally built busybox
//! image, run `echo hi`, read its log, look at stats, pause, delete.
//! Needs the private containerd that `scripts/test.sh` starts; skips with a
//! reason elsewhere (and fails in CI, where ZIXIAO_REQUIRE_RUNTIMES=1).
#![cfg(feature = "containerd")]

use std::path::Path;
use std::process::{Command, Output};

use zixiao_testing::output::{assert_refused, refused};
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

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// containerd's socket and the busybox OCI archive that comes with it;
/// `None` (the test skips with a reason) without the runtime.
fn containerd_and_busybox() -> Option<(String, String)> {
    let socket = runtime_endpoint("ZIXIAO_TEST_CONTAINERD_SOCKET", "containerd")?;
    let busybox =
        std::env::var("ZIXIAO_TEST_BUSYBOX_OCI").expect("ZIXIAO_TEST_BUSYBOX_OCI with the socket");
    Some((socket, busybox))
}

/// Runs `echo TEXT` in container `instance` from `image`, and returns its
/// log once it holds a whole line (polled for up to 10 s).
fn echo_in(state: &Path, socket: &str, image: &str, instance: &str, text: &str) -> String {
    let create = [
        "instance",
        "create",
        "--type",
        "container",
        "--image",
        image,
        "--name",
        instance,
        "--",
        "echo",
        text,
    ];
    ok(zixiao(state, socket, &create));
    log_with(state, socket, instance, "\n")
}

#[test]
fn hello_prints_hi_and_a_long_runner_can_be_paused_measured_and_deleted() {
    let Some((socket, image)) = containerd_and_busybox() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path();
    // The tests share containerd's namespace; each uses images of its own names.
    let imported = ok(zixiao(state, &socket, &["image", "import", &image]));
    assert!(imported.contains("busybox"), "{imported}");
    let images = ok(zixiao(state, &socket, &["image", "list"]));
    assert!(images.contains("busybox"), "{images}");

    assert_eq!(echo_in(state, &socket, "busybox", "hello", "hi"), "hi\n");
    let hello = ok(zixiao(
        state,
        &socket,
        &["instance", "get", "hello", "-o", "json"],
    ));
    let hello: serde_json::Value = serde_json::from_str(&hello).expect("json");
    assert_eq!(
        hello["status"], "stopped",
        "echo ran to completion: {hello}"
    );
    assert_eq!(hello["exit"]["code"], 0);

    ok(zixiao(
        state,
        &socket,
        &[
            "instance",
            "create",
            "--type",
            "container",
            "--image",
            "busybox",
            "--name",
            "sleeper",
            "--memory",
            "32",
            "--",
            "sleep",
            "600",
        ],
    ));
    let stats = ok(zixiao(
        state,
        &socket,
        &["instance", "stats", "sleeper", "-o", "json"],
    ));
    let stats: serde_json::Value = serde_json::from_str(&stats).expect("json");
    assert_eq!(stats["memory_limit_bytes"], 32 * 1024 * 1024, "{stats}");
    assert!(stats["pids"].as_u64().is_some_and(|p| p >= 1), "{stats}");
    let paused = ok(zixiao(
        state,
        &socket,
        &["instance", "pause", "sleeper", "-o", "json"],
    ));
    assert!(paused.contains("\"paused\""), "{paused}");
    ok(zixiao(state, &socket, &["instance", "resume", "sleeper"]));

    for name in ["hello", "sleeper"] {
        ok(zixiao(state, &socket, &["instance", "delete", name]));
    }
    let list = ok(zixiao(state, &socket, &["instance", "list", "-o", "json"]));
    assert_eq!(list.trim(), "[]");
}

#[test]
fn an_instance_that_fits_nowhere_is_pending_and_get_says_why() {
    let Some(socket) = runtime_endpoint("ZIXIAO_TEST_CONTAINERD_SOCKET", "containerd") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path();
    // 8 TiB: valid, but more than this machine has.
    let out = zixiao(
        state,
        &socket,
        &[
            "instance",
            "create",
            "--type",
            "container",
            "--image",
            "busybox",
            "--name",
            "huge",
            "--memory",
            "8388608",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("instance huge is pending: 1 node: insufficient memory (need 8388608 MiB"),
        "{stderr}"
    );
    let get = ok(zixiao(state, &socket, &["instance", "get", "huge"]));
    assert!(get.contains("status:") && get.contains("pending"), "{get}");
    assert!(
        get.contains("Unschedulable: 1 node: insufficient memory"),
        "{get}"
    );
    ok(zixiao(state, &socket, &["instance", "delete", "huge"]));
}

#[test]
fn instance_list_pages_on_request_and_a_foreign_token_is_refused() {
    let Some(socket) = runtime_endpoint("ZIXIAO_TEST_CONTAINERD_SOCKET", "containerd") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path();
    // Pending (8 TiB fits nowhere), so nothing runs: only the list counts.
    for name in ["c", "a", "b"] {
        ok(zixiao(
            state,
            &socket,
            &[
                "instance",
                "create",
                "--no-wait",
                "--type",
                "container",
                "--image",
                "busybox",
                "--name",
                name,
                "--memory",
                "8388608",
            ],
        ));
    }
    let page = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["instance", "list", "-o", "json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&ok(zixiao(state, &socket, &args))).expect("JSON")
    };
    let names = |page: &serde_json::Value| -> Vec<String> {
        page["instances"]
            .as_array()
            .expect("instances")
            .iter()
            .map(|i| i["name"].as_str().expect("name").to_owned())
            .collect()
    };
    let first = page(&["--page-size", "2"]);
    assert_eq!(names(&first), ["a", "b"]);
    let token = first["next_page_token"].as_str().expect("a next page");
    let last = page(&["--page-size", "2", "--page-token", token]);
    assert_eq!(names(&last), ["c"]);
    assert!(last.get("next_page_token").is_none(), "{last}");

    // A table says how to go on, on stderr, so stdout stays the table.
    let table = zixiao(state, &socket, &["instance", "list", "--page-size", "1"]);
    let hint = String::from_utf8_lossy(&table.stderr);
    assert!(hint.contains("--page-size 1 --page-token "), "{hint}");
    assert_eq!(ok(table).lines().count(), 2, "a header and one instance");

    let forged = zixiao(
        state,
        &socket,
        &["instance", "list", "--page-token", "../etc"],
    );
    assert_eq!(forged.status.code(), Some(2));
    let message = String::from_utf8_lossy(&forged.stderr);
    assert!(message.contains("invalid page_token"), "{message}");
    for name in ["a", "b", "c"] {
        ok(zixiao(state, &socket, &["instance", "delete", name]));
    }
}

/// With containerd out of reach (`--containerd-socket` pointing nowhere),
/// a command changes only what its message says: `get` shows the state
/// last recorded and says so, `delete` records the delete, exits 1 and
/// says it completes when containerd answers (the next command with
/// containerd does it), and `create` stores nothing. `logs` of an
/// instance that never started, and `start` of a paused one, say why
/// they do nothing.
#[test]
fn an_unreachable_runtime_changes_only_what_the_message_says() {
    let Some((socket, image)) = containerd_and_busybox() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path();
    let nowhere = dir.path().join("nowhere.sock");
    let nowhere = nowhere.to_str().expect("utf-8");
    ok(zixiao(state, &socket, &["image", "import", &image]));
    let sleeper = [
        "instance",
        "create",
        "--type",
        "container",
        "--image",
        "busybox",
        "--name",
        "c",
        "--",
        "sh",
        "-c",
        "trap 'exit 0' TERM; sleep 600 & wait",
    ];
    ok(zixiao(state, &socket, &sleeper));
    let c: serde_json::Value = serde_json::from_str(&ok(zixiao(
        state,
        &socket,
        &["-o", "json", "instance", "get", "c"],
    )))
    .expect("json");
    let id = c["id"].as_str().expect("id").to_owned();
    let tasks = zixiao_testing::runtimes::ContainerdNamespace::new(&socket, "zixiao").only([id]);
    let running = || {
        tasks
            .tasks()
            .expect("ctr")
            .iter()
            .filter(|t| t.status == "RUNNING")
            .count()
    };
    assert_eq!(running(), 1);

    let got = ok(zixiao(
        state,
        nowhere,
        &["-o", "json", "instance", "get", "c"],
    ));
    assert!(
        got.contains("RuntimeUnavailable") && got.contains("this is the state last recorded"),
        "{got}"
    );
    let out = zixiao(state, nowhere, &["instance", "delete", "c"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "the delete of instance `c` is recorded and completes when containerd answers"
        ),
        "{stderr}"
    );
    assert_eq!(
        running(),
        1,
        "the container runs until containerd is reached"
    );
    let listed = ok(zixiao(state, nowhere, &["-o", "json", "instance", "list"]));
    assert!(listed.contains("\"desired\": \"deleted\""), "{listed}");
    let out = zixiao(state, nowhere, &sleeper);
    assert_eq!(out.status.code(), Some(1));
    // With containerd again, the delete asked again carries it out (a read
    // never writes; a daemon would carry it out by itself).
    ok(zixiao(state, &socket, &["instance", "delete", "c"]));
    let listed = ok(zixiao(state, &socket, &["-o", "json", "instance", "list"]));
    assert_eq!(listed.trim(), "[]");
    assert_eq!(running(), 0);
    assert!(tasks.containers().expect("ctr").is_empty());

    // Never started: it has no log, and logs says why.
    let out = zixiao(
        state,
        &socket,
        &[
            "instance",
            "create",
            "--type",
            "container",
            "--image",
            "busybox",
            "--name",
            "never",
            "--",
            "/no/such/command",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let out = zixiao(state, &socket, &["instance", "logs", "never"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("instance `never` has never started, so it has no log")
            && stderr.contains("spec.command"),
        "{stderr}"
    );
    ok(zixiao(state, &socket, &["instance", "delete", "never"]));

    // Start of a paused instance: refused, and it stays paused.
    ok(zixiao(state, &socket, &sleeper));
    ok(zixiao(state, &socket, &["instance", "pause", "c"]));
    let out = zixiao(state, &socket, &["instance", "start", "c"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("zixiao instance resume c"));
    let got = ok(zixiao(
        state,
        &socket,
        &["-o", "json", "instance", "get", "c"],
    ));
    assert!(got.contains("\"status\": \"paused\""), "{got}");
    ok(zixiao(state, &socket, &["instance", "delete", "c"]));
}

/// A project's quota in the embedded default, with real containers: creates
/// within it run, the next is refused with `resource_exhausted` naming the
/// project, the resource, the usage, the request and the limit, and stores
/// nothing; `project get` shows the usage against the quota; a delete gives
/// its share back.
#[test]
fn a_project_quota_admits_up_to_its_limit_and_a_delete_gives_room_back() {
    let Some((socket, image)) = containerd_and_busybox() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path();
    ok(zixiao(state, &socket, &["image", "import", &image]));
    ok(zixiao(
        state,
        &socket,
        &[
            "project",
            "create",
            "web",
            "--quota",
            "instances=2,memory=100",
        ],
    ));
    let create = |name: &str, memory: &str| {
        zixiao(
            state,
            &socket,
            &[
                "-o",
                "json",
                "instance",
                "create",
                "--project",
                "web",
                "--type",
                "container",
                "--image",
                "busybox",
                "--name",
                name,
                "--memory",
                memory,
                "--",
                "sleep",
                "300",
            ],
        )
    };
    for name in ["a", "b"] {
        let created: serde_json::Value =
            serde_json::from_str(&ok(create(name, "32"))).expect("json");
        assert_eq!(created["status"], "running", "{created}");
    }
    let list = || {
        let listed = ok(zixiao(state, &socket, &["-o", "json", "instance", "list"]));
        let listed: serde_json::Value = serde_json::from_str(&listed).expect("json");
        listed
            .as_array()
            .expect("instances")
            .iter()
            .map(|i| i["name"].as_str().expect("name").to_owned())
            .collect::<Vec<_>>()
    };

    // Over memory first (64 + 40 > 100), then over the count.
    let (code, kind, message) = refused(create("c", "40"));
    assert_eq!(code, 1);
    assert_eq!(kind, "resource_exhausted", "{message}");
    assert_eq!(
        message,
        "project `web` allows 100 memory_mib; 64 are used and 40 more were asked for"
    );
    let (code, kind, message) = refused(create("c", "8"));
    assert_eq!(code, 1);
    assert_eq!(kind, "resource_exhausted", "{message}");
    assert!(
        message.contains("allows 2 instances; 2 are used and 1 more"),
        "{message}"
    );
    assert_eq!(list(), ["a", "b"], "a refused create stores nothing");

    let web = ok(zixiao(
        state,
        &socket,
        &["-o", "json", "project", "get", "web"],
    ));
    let web: serde_json::Value = serde_json::from_str(&web).expect("json");
    assert_eq!(web["usage"]["instances"], 2, "{web}");
    assert_eq!(web["usage"]["memory_mib"], 64, "{web}");
    assert_eq!(web["quota"]["instances"], 2, "{web}");
    let text = ok(zixiao(state, &socket, &["project", "get", "web"]));
    let line = |key: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_else(|| panic!("no {key} in {text}"))
            .to_owned()
    };
    assert!(line("instances").ends_with("2/2"), "{text}");
    assert!(line("memory mib").ends_with("64/100"), "{text}");

    ok(zixiao(state, &socket, &["instance", "delete", "a"]));
    let created: serde_json::Value = serde_json::from_str(&ok(create("c", "8"))).expect("json");
    assert_eq!(created["status"], "running", "{created}");
    assert_eq!(list(), ["b", "c"]);
    for name in ["b", "c"] {
        ok(zixiao(state, &socket, &["instance", "delete", name]));
    }
    let web = ok(zixiao(
        state,
        &socket,
        &["-o", "json", "project", "get", "web"],
    ));
    let web: serde_json::Value = serde_json::from_str(&web).expect("json");
    assert_eq!(web["usage"]["instances"], 0, "{web}");
}

#[test]
fn an_image_pulled_from_the_loopback_registry_runs_and_bad_references_name_the_part() {
    let Some(socket) = runtime_endpoint("ZIXIAO_TEST_CONTAINERD_SOCKET", "containerd") else {
        return;
    };
    let Some(image) = runtime_endpoint("ZIXIAO_TEST_REGISTRY_BUSYBOX", "the loopback registry")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path();
    let out = zixiao(state, &socket, &["-o", "json", "image", "pull", &image]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let pulled: serde_json::Value = serde_json::from_str(&ok(out)).expect("json");
    assert_eq!(pulled["name"], image.as_str());
    // One line per verified blob: busybox has a config and one layer.
    assert!(
        stderr.contains("[1/2] sha256:") && stderr.contains("[2/2] sha256:"),
        "{stderr}"
    );
    assert!(ok(zixiao(state, &socket, &["image", "list"])).contains(&image));

    let name = format!("pulled-{}", std::process::id());
    assert_eq!(echo_in(state, &socket, &image, &name, "hi"), "hi\n");
    ok(zixiao(state, &socket, &["instance", "delete", &name]));

    // A bad reference is invalid input (exit 2) naming the part.
    let bad = zixiao(
        state,
        &socket,
        &["image", "pull", "127.0.0.1:25000/busybox:.bad"],
    );
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("image.tag") && stderr.contains(".bad"),
        "{stderr}"
    );
    // An unknown tag is NotFound (exit 1) naming what is missing.
    let registry = image.rsplit_once('/').map(|(r, _)| r).unwrap_or_default();
    let missing = zixiao(
        state,
        &socket,
        &["image", "pull", &format!("{registry}/busybox:nope")],
    );
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("busybox:nope") && stderr.contains("not found"),
        "{stderr}"
    );
    ok(zixiao(state, &socket, &["image", "rm", &image]));
}

/// The busybox OCI layout unpacked into `dir`, to be packed again with
/// another index.json: archives as umoci, skopeo or a hand-made layout
/// name (or do not name) their images.
struct Layout {
    dir: std::path::PathBuf,
    manifest: serde_json::Value,
}

impl Layout {
    fn unpack(archive: &str, dir: &Path) -> Layout {
        let dir = dir.join("layout");
        std::fs::create_dir_all(&dir).expect("layout dir");
        let untar = Command::new("tar")
            .arg("-xf")
            .arg(archive)
            .arg("-C")
            .arg(&dir)
            .status()
            .expect("run tar");
        assert!(untar.success(), "tar -xf {archive}");
        let index = std::fs::read(dir.join("index.json")).expect("index.json");
        let index: serde_json::Value = serde_json::from_slice(&index).expect("index json");
        let mut manifest = index["manifests"][0].clone();
        manifest
            .as_object_mut()
            .expect("a descriptor")
            .remove("annotations");
        Layout { dir, manifest }
    }

    /// The image's manifest descriptor, with `annotations` if given.
    fn descriptor(&self, annotations: Option<serde_json::Value>) -> serde_json::Value {
        let mut descriptor = self.manifest.clone();
        if let Some(annotations) = annotations {
            descriptor["annotations"] = annotations;
        }
        descriptor
    }

    /// A second image: busybox's manifest with an annotation of its own,
    /// so another digest, written as a blob of the layout.
    fn second_image(&self) -> serde_json::Value {
        let digest = self.manifest["digest"].as_str().expect("digest");
        let blob = |d: &str| self.dir.join("blobs/sha256").join(&d["sha256:".len()..]);
        let mut manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(blob(digest)).expect("manifest blob"))
                .expect("manifest json");
        manifest["annotations"] = serde_json::json!({ "test": "second" });
        let data = serde_json::to_vec(&manifest).expect("encode");
        let sum = Command::new("sha256sum")
            .arg("-")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().expect("stdin").write_all(&data)?;
                child.wait_with_output()
            })
            .expect("sha256sum");
        let hex: String = String::from_utf8_lossy(&sum.stdout)
            .chars()
            .take(64)
            .collect();
        let second = format!("sha256:{hex}");
        std::fs::write(blob(&second), &data).expect("write blob");
        let mut descriptor = self.manifest.clone();
        descriptor["digest"] = second.into();
        descriptor["size"] = data.len().into();
        descriptor
    }

    /// The layout packed with `manifests` as its index, into `to`.
    fn pack(&self, manifests: Vec<serde_json::Value>, to: &Path) -> String {
        let index = serde_json::json!({ "schemaVersion": 2, "manifests": manifests });
        std::fs::write(self.dir.join("index.json"), index.to_string()).expect("index.json");
        let packed = Command::new("tar")
            .arg("-cf")
            .arg(to)
            .arg("-C")
            .arg(&self.dir)
            .arg(".")
            .status()
            .expect("run tar");
        assert!(packed.success(), "tar -cf {}", to.display());
        to.to_string_lossy().into_owned()
    }
}

#[test]
fn an_archive_named_only_by_a_tag_or_not_at_all_imports_under_the_name_given_and_runs() {
    let Some((socket, busybox)) = containerd_and_busybox() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let state = &dir.path().join("state");
    let layout = Layout::unpack(&busybox, dir.path());
    let tag_only = layout.pack(
        vec![layout.descriptor(Some(serde_json::json!({
            "org.opencontainers.image.ref.name": "latest"
        })))],
        &dir.path().join("image.tar"),
    );
    let nameless = layout.pack(
        vec![layout.descriptor(None)],
        &dir.path().join("nameless.tar"),
    );
    let two = vec![layout.descriptor(None), layout.second_image()];
    let two_images = layout.pack(two, &dir.path().join("two.tar"));

    // Without a name, a nameless image is refused, saying how to name it.
    let (code, kind, message) = refused(zixiao(
        state,
        &socket,
        &["-o", "json", "image", "import", &nameless],
    ));
    assert_eq!((code, kind.as_str()), (2, "invalid_argument"), "{message}");
    assert!(message.contains("has no name"), "{message}");
    // A tag-only archive takes its file's name (`image`) unless told.
    let imported = ok(zixiao(
        state,
        &socket,
        &["-o", "json", "image", "import", &tag_only],
    ));
    assert!(
        imported.contains("docker.io/library/image:latest"),
        "{imported}"
    );

    for (archive, name, stored) in [
        (
            &tag_only,
            "localhost/tools/box:v2",
            "localhost/tools/box:v2",
        ),
        (&nameless, "nameless", "docker.io/library/nameless:latest"),
    ] {
        let out = ok(zixiao(
            state,
            &socket,
            &["-o", "json", "image", "import", archive, "--name", name],
        ));
        let images: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(images.as_array().map(Vec::len), Some(1), "{images}");
        assert_eq!(images[0]["name"], stored, "{images}");
    }
    let list = ok(zixiao(state, &socket, &["-o", "json", "image", "list"]));
    assert!(
        list.contains("localhost/tools/box:v2") && list.contains("nameless:latest"),
        "{list}"
    );

    let logs = echo_in(
        state,
        &socket,
        "localhost/tools/box:v2",
        "named",
        "named hi",
    );
    assert_eq!(logs, "named hi\n");
    ok(zixiao(state, &socket, &["instance", "delete", "named"]));

    // Two images and one name: which one would be a guess, so nothing is
    // imported; a name that is not `NAME[:TAG]` names the part.
    let before = ok(zixiao(state, &socket, &["-o", "json", "image", "list"]));
    let (code, _, message) = refused(zixiao(
        state,
        &socket,
        &[
            "-o",
            "json",
            "image",
            "import",
            &two_images,
            "--name",
            "two",
        ],
    ));
    assert_eq!(code, 2, "{message}");
    assert!(
        message.contains("`docker.io/library/two:latest`") && message.contains("lists 2"),
        "{message}"
    );
    let digest = format!("box@sha256:{}", "a".repeat(64));
    for (bad, part) in [("Box", "name.repository"), (digest.as_str(), "name.digest")] {
        let (code, _, message) = refused(zixiao(
            state,
            &socket,
            &["-o", "json", "image", "import", &nameless, "--name", bad],
        ));
        assert_eq!(code, 2, "{message}");
        assert!(message.contains(part), "{bad}: {message}");
    }
    // The tests share containerd's namespace, so others may add images
    // meanwhile: what this test's refused imports could have done is add a
    // name of theirs or replace an image that was there.
    let names = |list: &str| -> Vec<(String, String)> {
        let images: Vec<serde_json::Value> = serde_json::from_str(list).expect("json");
        images
            .iter()
            .map(|i| (i["name"].to_string(), i["digest"].to_string()))
            .collect()
    };
    let (before, after) = (
        names(&before),
        names(&ok(zixiao(
            state,
            &socket,
            &["-o", "json", "image", "list"],
        ))),
    );
    assert!(
        before.iter().all(|image| after.contains(image)),
        "a refused import changed an image: {before:?} -> {after:?}"
    );
    assert!(
        !after
            .iter()
            .any(|(name, _)| name.contains("/two:") || name.contains("box@")),
        "a refused import added an image: {after:?}"
    );
    for image in [
        "docker.io/library/image:latest",
        "localhost/tools/box:v2",
        "nameless",
    ] {
        ok(zixiao(state, &socket, &["image", "rm", image]));
    }
}

/// `zixiao image pull` of `reference` with `password` (if any) on standard
/// input and `DOCKER_CONFIG` set to `docker_config`.
fn pull_as(
    state: &Path,
    socket: &str,
    docker_config: &Path,
    reference: &str,
    login: Option<(&str, &str)>,
) -> Output {
    pull_with(state, socket, docker_config, reference, login, &[])
}

/// [`pull_as`] with more arguments.
fn pull_with(
    state: &Path,
    socket: &str,
    docker_config: &Path,
    reference: &str,
    login: Option<(&str, &str)>,
    more: &[&str],
) -> Output {
    use std::io::Write;
    let mut command = Command::new(env!("CARGO_BIN_EXE_zixiao"));
    command
        .arg("--state-dir")
        .arg(state)
        .args(["--containerd-socket", socket, "-o", "json", "image", "pull"])
        .arg(reference)
        .args(more)
        .env("DOCKER_CONFIG", docker_config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some((user, _)) = login {
        command.args(["--username", user, "--password-stdin"]);
    }
    let mut child = command.spawn().expect("run zixiao");
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some((_, password)) = login {
        stdin.write_all(password.as_bytes()).expect("write");
    }
    drop(stdin);
    child.wait_with_output().expect("wait")
}

#[test]
fn a_registry_that_wants_a_password_gets_it_from_stdin_or_the_docker_config() {
    let Some((socket, busybox)) = containerd_and_busybox() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (user, password) = ("puller", "s3cret-Pw");
    let registry = zixiao_testing::registry::AuthRegistry::start(
        &dir.path().join("registry"),
        user,
        password,
        &busybox,
    )
    .expect("a registry with basic auth");
    let image = format!("{}/busybox:1", registry.address);
    let state = &dir.path().join("state");
    let docker_config = dir.path().join("docker");
    std::fs::create_dir_all(&docker_config).expect("docker config dir");

    // No credentials at all, then wrong ones: refused, and the password
    // given is nowhere in what the user sees.
    for login in [None, Some((user, "wrong-Pw"))] {
        let out = pull_as(state, &socket, &docker_config, &image, login);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let (code, kind, message) = refused(out);
        assert_eq!(
            (code, kind.as_str()),
            (1, "failed_precondition"),
            "{message}"
        );
        assert!(message.contains("refused the pull"), "{message}");
        assert!(!message.contains("wrong-Pw") && !stdout.contains("wrong-Pw"));
    }
    let list = ok(zixiao(state, &socket, &["-o", "json", "image", "list"]));
    assert!(
        !list.contains(&image),
        "a refused pull keeps nothing: {list}"
    );

    let out = pull_as(
        state,
        &socket,
        &docker_config,
        &image,
        Some((user, password)),
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains(password));
    let pulled: serde_json::Value = serde_json::from_str(&ok(out)).expect("json");
    assert_eq!(pulled["name"], image.as_str());
    ok(zixiao(state, &socket, &["image", "rm", &image]));

    // `docker login` would have written this (base64 of `puller:s3cret-Pw`).
    let config = serde_json::json!({ "auths": {
        format!("http://{}/v1/", registry.address): { "auth": "cHVsbGVyOnMzY3JldC1Qdw==" }
    }});
    std::fs::write(docker_config.join("config.json"), config.to_string()).expect("config.json");
    let pulled: serde_json::Value =
        serde_json::from_str(&ok(pull_as(state, &socket, &docker_config, &image, None)))
            .expect("json");
    assert_eq!(pulled["name"], image.as_str());
    ok(zixiao(state, &socket, &["image", "rm", &image]));

    // A config file that is not JSON is the user's to fix: named, not skipped.
    std::fs::write(docker_config.join("config.json"), "{oops").expect("config.json");
    let (code, _, message) = refused(pull_as(state, &socket, &docker_config, &image, None));
    assert_eq!(code, 2, "{message}");
    assert!(
        message.contains("docker-config") && message.contains("config.json"),
        "{message}"
    );
}

/// A registry whose certificate a private CA issued: refused, naming the
/// flag that fixes it, until `--registry-ca` gives that CA; a file of
/// something else than certificates is refused before anything is sent.
#[test]
fn a_registry_of_a_private_ca_is_trusted_with_registry_ca() {
    let Some((socket, _)) = containerd_and_busybox() else {
        return;
    };
    let Some(image) = runtime_endpoint("ZIXIAO_TEST_TLS_REGISTRY_BUSYBOX", "the TLS registry")
    else {
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name}"));
    let ca = var("ZIXIAO_TEST_TLS_REGISTRY_CA");
    let user = var("ZIXIAO_TEST_TLS_REGISTRY_USER");
    let password = std::fs::read_to_string(var("ZIXIAO_TEST_TLS_REGISTRY_PASSWORD_FILE"))
        .expect("the registry's password");
    let login = Some((user.as_str(), password.trim()));
    let dir = tempfile::tempdir().expect("tempdir");
    let state = &dir.path().join("state");
    let docker_config = dir.path().join("docker");

    let out = pull_with(state, &socket, &docker_config, &image, login, &[]);
    let (code, kind, message) = refused(out);
    assert_eq!(
        (code, kind.as_str()),
        (1, "failed_precondition"),
        "{message}"
    );
    assert!(message.contains("--registry-ca FILE"), "{message}");

    let key = dir.path().join("key.pem");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n",
    )
    .expect("key");
    let key_flag = ["--registry-ca", key.to_str().expect("path")];
    let out = pull_with(state, &socket, &docker_config, &image, login, &key_flag);
    let (code, kind, message) = refused(out);
    assert_eq!((code, kind.as_str()), (2, "invalid_argument"), "{message}");
    assert!(
        message.contains("registry_ca") && message.contains("PRIVATE KEY"),
        "{message}"
    );
    let list = ok(zixiao(state, &socket, &["-o", "json", "image", "list"]));
    assert!(
        !list.contains(&image),
        "a refused pull keeps nothing: {list}"
    );

    let out = pull_with(
        state,
        &socket,
        &docker_config,
        &image,
        login,
        &["--registry-ca", &ca],
    );
    let pulled: serde_json::Value = serde_json::from_str(&ok(out)).expect("json");
    assert_eq!(pulled["name"], image.as_str());
    ok(zixiao(state, &socket, &["image", "rm", &image]));
}

/// `image pull --platform`: a malformed platform is refused naming the
/// flag; the node's own platform, asked for by name, pulls the image. (The
/// choice among platforms is the driver's test, on a two-platform image.)
#[test]
fn image_pull_takes_a_platform() {
    let Some((socket, _)) = containerd_and_busybox() else {
        return;
    };
    let Some(image) = runtime_endpoint("ZIXIAO_TEST_REGISTRY_BUSYBOX", "the loopback registry")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let state = &dir.path().join("state");
    let docker_config = dir.path().join("docker");
    for bad in ["amd64", "Linux/amd64", "linux/amd64/v1/x"] {
        let out = pull_with(
            state,
            &socket,
            &docker_config,
            &image,
            None,
            &["--platform", bad],
        );
        let (code, kind, message) = refused(out);
        assert_eq!((code, kind.as_str()), (2, "invalid_argument"), "{message}");
        assert!(
            message.contains("platform") && message.contains(bad),
            "{message}"
        );
    }
    let out = pull_with(
        state,
        &socket,
        &docker_config,
        &image,
        None,
        &["--platform", "linux/amd64"],
    );
    let pulled: serde_json::Value = serde_json::from_str(&ok(out)).expect("json");
    assert_eq!(pulled["name"], image.as_str());
}

/// `template create|update|get|list|delete` and `instance create
/// --template` with real containers: two versions, instances of each, the
/// counts, a used version that is not deleted, `--set` visible in
/// `instance get`, and bad input refused with nothing created.
#[test]
fn templates_keep_versions_count_their_instances_and_refuse_deleting_a_used_one() {
    let Some((socket, image)) = containerd_and_busybox() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path();
    let run = |args: &[&str]| zixiao(state, &socket, args);
    let json = |args: &[&str]| -> serde_json::Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        serde_json::from_str(&ok(run(&args))).expect("JSON")
    };
    ok(run(&["image", "import", &image]));
    // The format `instance create -f` reads, its `name` included.
    let file = |name: &str, memory: u64| {
        let path = state.join(name);
        let spec = format!(
            "name: web\nlabels: {{app: web}}\nspec:\n  type: container\n  image: busybox\n  \
             cpus: 1\n  memory_mib: {memory}\n  command: [sleep, \"600\"]\n"
        );
        std::fs::write(&path, spec).expect("write spec");
        path.to_str().expect("utf-8").to_owned()
    };
    let (v1, v2) = (file("v1.yaml", 64), file("v2.yaml", 96));
    let created = json(&["template", "create", "web", "-f", &v1]);
    assert_eq!(created["versions"][0]["version"], 1, "{created}");
    let updated = json(&["template", "update", "web", "-f", &v2]);
    assert_eq!(
        updated["versions"][0]["spec"]["memory_mib"], 64,
        "{updated}"
    );
    assert_eq!(
        updated["versions"][1]["spec"]["memory_mib"], 96,
        "{updated}"
    );

    let a = json(&[
        "instance",
        "create",
        "--template",
        "web@1",
        "--name",
        "a",
        "--set",
        "memory_mib=80",
        "--set",
        "labels.tier=front",
    ]);
    assert_eq!(a["status"], "running", "{a}");
    let b = json(&["instance", "create", "--template", "web", "--name", "b"]);
    assert_eq!(b["status"], "running", "{b}");
    let got = json(&["instance", "get", "a"]);
    assert_eq!(got["template"]["name"], "web", "{got}");
    assert_eq!(got["template"]["version"], 1, "{got}");
    // This machine has 2 cores: a and b take one each.
    assert_eq!(got["spec"]["memory_mib"], 80, "--set memory_mib: {got}");
    assert_eq!(got["spec"]["cpus"], 1, "{got}");
    assert_eq!(got["labels"]["tier"], "front", "{got}");
    assert_eq!(got["labels"]["app"], "web", "{got}");
    let shown = ok(run(&["instance", "get", "b"]));
    assert!(shown.contains("template:  web@2"), "{shown}");
    // A create from a template is an operation like any create.
    let operation = b["operation"].as_str().expect("the create's operation");
    let operation = json(&["operation", "get", operation]);
    assert_eq!(operation["kind"], "create", "{operation}");
    assert_eq!(operation["target"]["name"], "b", "{operation}");
    assert_eq!(operation["phase"], "succeeded", "{operation}");

    let counts = |template: &serde_json::Value| -> Vec<(u64, u64)> {
        let versions = template["versions"].as_array().expect("versions");
        versions
            .iter()
            .map(|v| {
                (
                    v["version"].as_u64().unwrap(),
                    v["in_use"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(counts(&json(&["template", "get", "web"])), [(1, 1), (2, 1)]);
    let listed = json(&["template", "list"]);
    assert_eq!(counts(&listed[0]), [(1, 1), (2, 1)]);
    let table = ok(run(&["template", "get", "web", "--version", "2"]));
    assert!(table.contains("IN USE") && table.contains(" b "), "{table}");

    // Bad input: refused, naming the field or the users; nothing changes.
    let bad = state.join("bad.yaml");
    std::fs::write(
        &bad,
        "spec:\n  type: container\n  cpus: 0\n  memory_mib: 64\n",
    )
    .unwrap();
    let bad = bad.to_str().unwrap();
    let before = json(&["template", "get", "web"]);
    let cases: [(&[&str], i32, &str, &str); 5] = [
        (
            &["template", "update", "web", "-f", bad],
            2,
            "invalid_argument",
            "invalid spec.cpus: must be more than 0 (a container may ask for as little as 1m)",
        ),
        (
            &["template", "create", "bad", "-f", bad],
            2,
            "invalid_argument",
            "invalid spec.cpus",
        ),
        (
            &[
                "instance",
                "create",
                "--template",
                "web",
                "--name",
                "c",
                "--set",
                "colour=red",
            ],
            2,
            "invalid_argument",
            "invalid --set: unknown field `colour`",
        ),
        (
            &["template", "delete", "web", "--version", "1"],
            1,
            "failed_precondition",
            "template `web` version 1 is in use by a; delete them first",
        ),
        (
            &["instance", "create", "--template", "web@7", "--name", "c"],
            1,
            "not_found",
            "template `web` version 7",
        ),
    ];
    for (args, code, kind, part) in cases {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        assert_refused(run(&args), &format!("{args:?}"), code, kind, part);
    }
    assert_eq!(json(&["template", "get", "web"]), before, "nothing changed");
    let names: Vec<String> = json(&["instance", "list"])
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["a", "b"], "no instance `c` was created");
    let templates = json(&["template", "list"]);
    assert_eq!(
        templates.as_array().map(Vec::len),
        Some(1),
        "no `bad`: {templates}"
    );

    // Once its instance is gone, version 1 goes; version 2 stays.
    ok(run(&["instance", "delete", "a"]));
    ok(run(&["template", "delete", "web", "--version", "1"]));
    assert_eq!(counts(&json(&["template", "get", "web"])), [(2, 1)]);
    ok(run(&["instance", "delete", "b"]));
    ok(run(&["template", "delete", "web"]));
    assert_eq!(json(&["template", "list"]), serde_json::json!([]));

    let help = ok(run(&["instance", "create", "--help"]));
    assert!(
        help.contains("--template <NAME[@V]>") && help.contains("--set <FIELD=VALUE>"),
        "{help}"
    );
}

/// The log of `instance` once it contains `text` (polled for up to 10 s).
fn log_with(state: &Path, socket: &str, instance: &str, text: &str) -> String {
    let mut logs = String::new();
    for _ in 0..200 {
        logs = ok(zixiao(state, socket, &["instance", "logs", instance]));
        if logs.contains(text) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    logs
}

#[test]
fn a_clone_of_a_running_container_runs_the_same_command_as_a_new_instance() {
    let Some((socket, image)) = containerd_and_busybox() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path();
    let box_name = "localhost/clone/busybox:1";
    ok(zixiao(
        state,
        &socket,
        &["image", "import", &image, "--name", box_name],
    ));
    let command = "echo up-$(hostname); sleep 600";
    ok(zixiao(
        state,
        &socket,
        &[
            "instance",
            "create",
            "--type",
            "container",
            "--image",
            box_name,
            "--name",
            "src",
            "--label",
            "tier=web",
            "--",
            "sh",
            "-c",
            command,
        ],
    ));
    assert!(log_with(state, &socket, "src", "up-").contains("up-"));
    let source: serde_json::Value = serde_json::from_str(&ok(zixiao(
        state,
        &socket,
        &["instance", "get", "src", "-o", "json"],
    )))
    .expect("json");

    let cloned = ok(zixiao(
        state,
        &socket,
        &["instance", "clone", "src", "--name", "copy", "-o", "json"],
    ));
    let clone: serde_json::Value = serde_json::from_str(&cloned).expect("json");
    assert_eq!(clone["name"], "copy", "{clone}");
    assert_eq!(clone["status"], "running", "{clone}");
    assert_ne!(clone["id"], source["id"], "a clone is a new instance");
    assert_eq!(clone["clone_of"]["source"], source["id"], "{clone}");
    assert_eq!(clone["clone_of"]["linked"], false, "{clone}");
    assert_eq!(
        clone["node"], source["node"],
        "a clone runs on its source's node"
    );
    assert_eq!(clone["spec"]["command"], source["spec"]["command"]);
    assert_eq!(clone["labels"]["tier"], "web", "{clone}");
    // Its own container, running the same command.
    let logs = log_with(state, &socket, "copy", "up-");
    assert!(logs.starts_with("up-"), "{logs}");
    let shown = ok(zixiao(state, &socket, &["instance", "get", "copy"]));
    assert!(shown.contains("clone_of"), "{shown}");

    // A taken name is refused, and nothing is stored.
    let before = ok(zixiao(state, &socket, &["instance", "list", "-o", "json"]));
    let (code, kind, message) = refused(zixiao(
        state,
        &socket,
        &["-o", "json", "instance", "clone", "src", "--name", "copy"],
    ));
    assert_eq!((code, kind.as_str()), (1, "already_exists"), "{message}");
    assert!(message.contains("copy"), "{message}");
    let (_, kind, message) = refused(zixiao(
        state,
        &socket,
        &[
            "-o", "json", "instance", "clone", "src", "--name", "other", "--linked",
        ],
    ));
    assert_eq!(kind, "invalid_argument", "{message}");
    assert!(message.contains("linked"), "{message}");
    let (_, kind, message) = refused(zixiao(
        state,
        &socket,
        &["-o", "json", "instance", "clone", "nope", "--name", "other"],
    ));
    assert_eq!(kind, "not_found", "{message}");
    let after = ok(zixiao(state, &socket, &["instance", "list", "-o", "json"]));
    let names = |list: &str| -> Vec<String> {
        let list: serde_json::Value = serde_json::from_str(list).expect("json");
        list.as_array()
            .expect("array")
            .iter()
            .map(|i| format!("{} {}", i["name"], i["revision"]))
            .collect()
    };
    assert_eq!(
        names(&before),
        names(&after),
        "refused clones change nothing"
    );

    // A container clone is independent of its source.
    ok(zixiao(state, &socket, &["instance", "delete", "src"]));
    let copy = ok(zixiao(
        state,
        &socket,
        &["instance", "get", "copy", "-o", "json"],
    ));
    assert!(copy.contains("\"running\""), "{copy}");
    ok(zixiao(state, &socket, &["instance", "delete", "copy"]));
}

/// A shell behind `instance console`, as a user types into it: it answers,
/// and `exit` ends the session by itself, with the terminal's input still
/// open (the command used to wait for one more line of input).
#[test]
fn a_console_session_answers_and_ends_when_its_shell_exits() {
    use std::io::{Read, Write};
    use std::process::Stdio;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    let Some((socket, image)) = containerd_and_busybox() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path();
    let box_name = "localhost/console/busybox:1";
    ok(zixiao(
        state,
        &socket,
        &["image", "import", &image, "--name", box_name],
    ));
    let create = [
        "instance",
        "create",
        "--type",
        "container",
        "--image",
        box_name,
        "--name",
        "shell",
        "--label",
        "zixiao.io/stdin=true",
        "--",
        "sh",
    ];
    ok(zixiao(state, &socket, &create));

    let mut session = Command::new(env!("CARGO_BIN_EXE_zixiao"))
        .arg("--state-dir")
        .arg(state)
        .args([
            "--containerd-socket",
            &socket,
            "instance",
            "console",
            "shell",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run zixiao");
    let mut keyboard = session.stdin.take().expect("stdin");
    let mut screen = session.stdout.take().expect("stdout");
    let (shown, seen) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n @ 1..) = screen.read(&mut buffer) {
            if shown.send(buffer[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    keyboard
        .write_all(b"echo hi-$((6*7))\n")
        .expect("type a command");
    let mut output = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&output).contains("hi-42") {
        let left = deadline.saturating_duration_since(Instant::now());
        match seen.recv_timeout(left) {
            Ok(chunk) => output.extend(chunk),
            Err(_) => panic!(
                "the shell never answered; the console showed {:?}",
                String::from_utf8_lossy(&output)
            ),
        }
    }

    keyboard.write_all(b"exit\n").expect("type exit");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = session.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = session.kill();
            panic!("the console still runs 30 s after its shell exited");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(keyboard);
    assert!(status.success(), "the session ends cleanly: {status:?}");
    let mut stopped = String::new();
    for _ in 0..200 {
        stopped = ok(zixiao(
            state,
            &socket,
            &["instance", "get", "shell", "-o", "json"],
        ));
        if stopped.contains("\"status\": \"stopped\"") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let shell: serde_json::Value = serde_json::from_str(&stopped).expect("json");
    assert_eq!(shell["status"], "stopped", "{shell}");
    assert_eq!(shell["exit"]["code"], 0, "{shell}");
    ok(zixiao(state, &socket, &["instance", "delete", "shell"]));
}
