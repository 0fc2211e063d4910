"""The published surfaces against real runtimes, through `Controller.open`:
images (import with progress, list, remove), a container's console and
followed log, stats and pause on containerd; snapshots (create, list,
export, restore, revert, delete) of a microVM on zixiao-vmm.

Each test needs its runtime (scripts/services/*.sh start it, as
scripts/bindings.sh does) and skips with the reason elsewhere; with
ZIXIAO_REQUIRE_RUNTIMES=1 (CI) a missing runtime fails instead.
"""

import asyncio
import io
import json
import os
import shutil
import socket
import tarfile
import tempfile
import time

import pytest

import zixiao
from zixiao import _native


def missing(reason):
    if os.environ.get("ZIXIAO_REQUIRE_RUNTIMES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def runtime(variable, what):
    value = os.environ.get(variable)
    if not value:
        missing(f"{what}: {variable} is not set (scripts/services start it)")
    return value


@pytest.fixture
def short_dir():
    # Short: the monitors' socket paths live under it.
    path = tempfile.mkdtemp(prefix="zx-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def until(condition, what, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_images_console_log_stats_and_pause_on_containerd(short_dir):
    socket = runtime("ZIXIAO_TEST_CONTAINERD_SOCKET", "containerd")
    archive = runtime("ZIXIAO_TEST_BUSYBOX_OCI", "the busybox OCI archive")
    # A namespace of its own: the images it removes are its own.
    namespace = "zixiao-bindings-python"
    controller = zixiao.Controller.open(
        short_dir, containerd_socket=socket, containerd_namespace=namespace
    )

    progress = []
    images = controller.import_images(archive, progress=lambda done, total: progress.append((done, total)))
    [busybox] = [i for i in images if "busybox" in i["name"]]
    assert busybox["digest"].startswith("sha256:")
    assert progress, "the progress callback was called"
    assert all(0 <= done <= total for done, total in progress)
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)
    assert busybox["name"] in [i["name"] for i in controller.list_images()]

    # A console types into the container's stdin and reads what it writes.
    cat = controller.create_instance(
        {
            "name": "cat",
            "labels": {"zixiao.io/stdin": "true"},
            "spec": {"type": "container", "image": "busybox", "cpus": 1, "memory_mib": 32, "command": ["cat"]},
        }
    )
    assert cat["status"] == "running", cat
    with controller.attach_console("cat") as console:
        console.write(b"hello zixiao\n")
        seen = b""
        while b"hello zixiao" not in seen:
            piece = console.read()
            assert piece, f"the console ended before the echo: {seen!r}"
            seen += piece

    stats = controller.instance_stats("cat")
    assert stats["memory_limit_bytes"] == 32 * 1024 * 1024, stats
    assert stats["pids"] >= 1
    assert controller.pause_instance("cat")["status"] == "paused"
    assert controller.resume_instance("cat")["status"] == "running"

    # Following a log yields it as it grows and ends when the workload does.
    controller.create_instance(
        {
            "name": "talk",
            "spec": {
                "type": "container",
                "image": "busybox",
                "cpus": 1,
                "memory_mib": 32,
                "command": ["sh", "-c", "echo one; sleep 1; echo two"],
            },
        }
    )
    assert b"".join(controller.follow_log("talk")) == b"one\ntwo\n"
    assert controller.get_instance("talk")["status"] == "stopped"

    with pytest.raises(zixiao.FailedPrecondition):
        controller.remove_image(busybox["name"])
    for name in ("cat", "talk"):
        assert controller.delete_instance(name) is None
    controller.remove_image(busybox["name"])
    assert busybox["name"] not in [i["name"] for i in controller.list_images()]


def nameless_copy(archive, to):
    """`archive` (an OCI layout tar) with its index.json's annotations
    dropped, so its image has no name at all."""
    with tarfile.open(archive) as source, tarfile.open(to, "w") as copy:
        for member in source.getmembers():
            data = source.extractfile(member) if member.isfile() else None
            if member.name.lstrip("./") == "index.json":
                index = json.load(data)
                for manifest in index["manifests"]:
                    manifest.pop("annotations", None)
                content = json.dumps(index).encode()
                member.size = len(content)
                data = io.BytesIO(content)
            copy.addfile(member, data)
    return to


def test_an_image_without_a_name_is_imported_under_the_name_given(short_dir, tmp_path):
    socket = runtime("ZIXIAO_TEST_CONTAINERD_SOCKET", "containerd")
    archive = nameless_copy(
        runtime("ZIXIAO_TEST_BUSYBOX_OCI", "the busybox OCI archive"), tmp_path / "nameless.tar"
    )
    controller = zixiao.Controller.open(
        short_dir, containerd_socket=socket, containerd_namespace="zixiao-bindings-python-named"
    )

    with pytest.raises(zixiao.InvalidArgument, match="has no name"):
        controller.import_images(archive)
    with pytest.raises(zixiao.InvalidArgument, match="name.repository"):
        controller.import_images(archive, name="Not/A/Name")
    [image] = controller.import_images(archive, name="localhost/python/box:1")
    assert image["name"] == "localhost/python/box:1"

    controller.create_instance(
        {
            "name": "named",
            "spec": {
                "type": "container",
                "image": "localhost/python/box:1",
                "cpus": 1,
                "memory_mib": 32,
                "command": ["echo", "named"],
            },
        }
    )
    assert b"".join(controller.follow_log("named")) == b"named\n"
    assert controller.delete_instance("named") is None
    controller.remove_image(image["name"])


def test_a_kernel_and_initrd_imported_with_their_kind_are_listed_and_removed(short_dir, tmp_path):
    kernel = runtime("ZIXIAO_TEST_MICROVM_KERNEL", "the test microVM kernel")
    initrd = runtime("ZIXIAO_TEST_MICROVM_INITRD", "the test microVM initramfs")
    controller = zixiao.Controller.open(short_dir)

    [k] = controller.import_images(kernel, kind="kernel", name="py-kernel")
    [i] = controller.import_images(initrd, kind="initrd", name="py-initrd")
    assert (k["kind"], k["format"]) == ("kernel", "bzimage")
    assert i["kind"] == "initrd"
    listed = {image["name"]: image for image in controller.list_images(instance_type="microvm")}
    assert listed["py-kernel"]["size_bytes"] == os.path.getsize(kernel)
    assert listed["py-kernel"]["digest"] == k["digest"]
    assert listed["py-kernel"]["digest"].startswith("sha256:")
    assert listed["py-initrd"]["kind"] == "initrd"

    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"no kernel here")
    with pytest.raises(zixiao.InvalidArgument, match="is not a kernel"):
        controller.import_images(garbage, kind="kernel", name="bad")
    controller.remove_image("py-kernel", kind="kernel")
    controller.remove_image("py-initrd", kind="initrd")
    assert controller.list_images(instance_type="microvm") == []


def test_an_image_pulled_from_a_registry_is_listed_and_bad_pulls_name_the_field(short_dir):
    socket = runtime("ZIXIAO_TEST_CONTAINERD_SOCKET", "containerd")
    reference = runtime("ZIXIAO_TEST_REGISTRY_BUSYBOX", "the loopback registry's busybox")
    controller = zixiao.Controller.open(
        short_dir, containerd_socket=socket, containerd_namespace="zixiao-bindings-python-pull"
    )
    events = []
    image = controller.pull_image(reference, progress=events.append)
    assert image["name"] == reference
    assert image["digest"].startswith("sha256:")
    assert [e["event"] for e in events][0] == "resolved"
    assert "fetched" in [e["event"] for e in events]
    assert events[-1]["event"] == "unpacking"
    assert reference in [i["name"] for i in controller.list_images()]

    # The asyncio controller (a state directory of its own, the same
    # containerd namespace) pulls the same image the same way.
    async def pull_async(state_dir):
        async_controller = await zixiao.AsyncController.open(
            state_dir, containerd_socket=socket, containerd_namespace="zixiao-bindings-python-pull"
        )
        return await async_controller.pull_image(reference)

    async_dir = tempfile.mkdtemp(prefix="zx-")
    try:
        assert asyncio.run(pull_async(async_dir))["digest"] == image["digest"]
    finally:
        shutil.rmtree(async_dir, ignore_errors=True)

    with pytest.raises(zixiao.InvalidArgument, match="tag"):
        controller.pull_image(reference.rsplit(":", 1)[0] + ":.bad")
    with pytest.raises(zixiao.InvalidArgument, match="password"):
        controller.pull_image(reference, username="alice")
    with pytest.raises(zixiao.NotFound):
        controller.pull_image(reference.rsplit(":", 1)[0] + ":nope")
    with pytest.raises(zixiao.InvalidArgument, match="platform"):
        controller.pull_image(reference, platform="Linux/amd64")
    assert controller.pull_image(reference, platform="linux/amd64")["digest"] == image["digest"]
    controller.remove_image(reference)

    # A registry whose certificate a private CA issued: trusted with that
    # CA's PEM; a key given instead is refused before anything is sent.
    tls_reference = runtime("ZIXIAO_TEST_TLS_REGISTRY_BUSYBOX", "the TLS registry's busybox")
    with open(os.environ["ZIXIAO_TEST_TLS_REGISTRY_CA"]) as f:
        ca = f.read()
    with open(os.environ["ZIXIAO_TEST_TLS_REGISTRY_PASSWORD_FILE"]) as f:
        login = {"username": os.environ["ZIXIAO_TEST_TLS_REGISTRY_USER"], "password": f.read().strip()}
    with pytest.raises(zixiao.FailedPrecondition, match="registry-ca"):
        controller.pull_image(tls_reference, **login)
    key = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"
    with pytest.raises(zixiao.InvalidArgument, match="registry_ca"):
        controller.pull_image(tls_reference, registry_cas=[key], **login)
    assert controller.pull_image(tls_reference, registry_cas=[ca], **login)["name"] == tls_reference
    controller.remove_image(tls_reference)


def test_snapshots_of_a_microvm_export_and_restore(short_dir, tmp_path):
    runtime("ZIXIAO_VMM_BIN", "the zixiao-vmm monitor")
    guest = _native._vmm_test_guest()
    if guest is None:
        missing("zixiao-vmm's test guest was not built (gcc and ld build it)")
    controller = zixiao.Controller.open(short_dir)
    spec = {
        "type": "microvm",
        "kernel": str(guest),
        "cmdline": "console=ttyS0 zx.mode=loop",
        "cpus": 1,
        "memory_mib": 64,
        "backend": "vmm",
    }
    v1 = controller.create_instance({"name": "v1", "spec": spec})
    assert v1["status"] == "running", v1
    assert v1["runtime"] == "vmm"
    until(lambda: b"ZX: count=" in controller.read_log("v1").data, "the guest to count")

    taken = controller.create_snapshot("v1", "s1")
    assert taken["name"] == "s1" and taken["includes_memory"] is True
    assert [s["name"] for s in controller.list_snapshots("v1")] == ["s1"]

    copy = tmp_path / "v1-s1"
    controller.export_snapshot("v1", "s1", str(copy))
    assert (copy / "zixiao-snapshot.json").is_file()
    with pytest.raises(zixiao.InvalidArgument, match="exists and is not empty"):
        controller.export_snapshot("v1", "s1", str(copy))

    v2 = controller.restore_instance("v2", str(copy))
    assert v2["status"] == "running", v2
    log = until(
        lambda: (lambda d: d if b"ZX: count=" in d else None)(controller.read_log("v2").data),
        "the restored guest to count",
    )
    assert b"ZX: ready" not in log, "the restored guest went on, it did not boot again"

    controller.revert_snapshot("v1", "s1")
    assert controller.get_instance("v1")["status"] == "running"
    controller.delete_snapshot("v1", "s1")
    assert controller.list_snapshots("v1") == []
    with pytest.raises(zixiao.NotFound):
        controller.revert_snapshot("v1", "s1")

    for name in ("v1", "v2"):
        assert controller.delete_instance(name) is None


def test_a_vmm_microvm_with_vsock_echoes_through_the_socket_get_instance_names(short_dir):
    runtime("ZIXIAO_VMM_BIN", "the zixiao-vmm monitor")
    guest = _native._vmm_virtio_guest()
    if guest is None:
        missing("zixiao-vmm's virtio test guest was not built (gcc and ld build it)")
    controller = zixiao.Controller.open(short_dir)
    spec = zixiao.InstanceSpec(
        type="microvm",
        kernel=str(guest),
        cmdline="console=ttyS0",
        cpus=1,
        memory_mib=64,
        backend="vmm",
        vsock={"cid": 9},
    )
    with pytest.raises(zixiao.InvalidArgument, match=r"spec\.vsock\.cid"):
        bad = dict(spec.to_dict(), vsock={"cid": 2})
        controller.create_instance({"name": "bad", "spec": bad})
    with pytest.raises(zixiao.Unsupported, match=r"spec\.vsock"):
        controller.create_instance({"name": "bad", "spec": dict(spec.to_dict(), backend="qemu")})
    assert controller.list_instances() == []

    created = controller.create_instance(zixiao.CreateInstance(name="v1", spec=spec).to_dict())
    assert created["status"] == "running", created
    vsock = controller.get_instance("v1")["vsock"]
    assert vsock["cid"] == 9 and vsock["socket"].startswith(short_dir), vsock
    until(lambda: b"ZX: ready" in controller.read_log("v1").data, "the guest to listen")
    assert b"ZX: vsock cid=9" in controller.read_log("v1").data

    # Through the socket, the way a process on the node reaches the guest:
    # CONNECT to its port 1234, where it echoes what it gets.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stream:
        stream.settimeout(60)
        stream.connect(vsock["socket"])
        stream.sendall(b"CONNECT 1234\n")
        answer = b""
        while not answer.endswith(b"\n"):
            answer += stream.recv(1)
        assert answer.startswith(b"OK "), answer
        sent = bytes(i * 7 % 253 for i in range(8192))
        stream.sendall(sent)
        back = b""
        while len(back) < len(sent):
            chunk = stream.recv(len(sent) - len(back))
            assert chunk, "closed before the whole echo"
            back += chunk
        assert back == sent

    assert controller.delete_instance("v1") is None
    assert not os.path.exists(vsock["socket"])


def test_a_container_clone_is_a_new_instance_running_the_same_spec(short_dir):
    socket = runtime("ZIXIAO_TEST_CONTAINERD_SOCKET", "containerd")
    archive = runtime("ZIXIAO_TEST_BUSYBOX_OCI", "the busybox OCI archive")
    controller = zixiao.Controller.open(
        short_dir, containerd_socket=socket, containerd_namespace="zixiao-bindings-python-clone"
    )
    [image] = controller.import_images(archive, name="localhost/python/clone:1")
    source = controller.create_instance(
        {
            "name": "src",
            "spec": {
                "type": "container",
                "image": image["name"],
                "cpus": 1,
                "memory_mib": 32,
                "command": ["sh", "-c", "echo cloned-cmd; sleep 600"],
            },
        }
    )
    clone = controller.clone_instance("src", "copy")
    assert clone["status"] == "running"
    assert clone["id"] != source["id"]
    assert clone["clone_of"]["source"] == source["id"]
    assert clone["spec"]["command"] == source["spec"]["command"]
    until(lambda: b"cloned-cmd" in controller.read_log("copy").data, "the clone's output")

    with pytest.raises(zixiao.AlreadyExists):
        controller.clone_instance("src", "copy")
    with pytest.raises(zixiao.InvalidArgument, match="linked"):
        controller.clone_instance("src", "other", linked=True)
    with pytest.raises(zixiao.NotFound):
        controller.clone_instance("nope", "other")
    assert sorted(i["name"] for i in controller.list_instances()) == ["copy", "src"]

    for name in ["copy", "src"]:
        assert controller.delete_instance(name) is None
    controller.remove_image(image["name"])
