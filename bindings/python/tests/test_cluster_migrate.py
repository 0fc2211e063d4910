"""migrate_instance through `zixiao.connect()` against a real cluster of
processes the test starts: a `zixiao server` and two `zixiao agent`s (the
binary of test_server.py). A container restarts on the other node (its
mode, restart, shown by the operation's steps: nothing copied); a VM, its
agents on the two libvirtds (ZIXIAO_TEST_LIBVIRT_URI and
ZIXIAO_TEST_LIBVIRT2_URI), migrates with mode="cold": stopped, its disk
copied, started on the other node (the operation's `copying` step and
byte count, the instance's `MigratedCold` condition). Both keep their id
and name.

Needs containerd and etcd (the container), the two libvirtds and the test
VM's files (the VM); skips with the reason elsewhere, fails instead with
ZIXIAO_REQUIRE_RUNTIMES=1 (CI).
"""

import os
import shutil
import subprocess
import tempfile

import pytest

import zixiao

from test_runtimes import runtime, until
from test_server import binary, start


def agent(zx, state, server, name, zone, *flags):
    """Starts node `name`'s agent for `server` in `zone`, its files in `state`."""
    process, _ = start(
        [zx, "--state-dir", state, *flags, "agent", "--server", server, "--name", name,
         "--zone", zone, "--no-networks", "--no-watchdog", "--skip-smoke-test",
         "--listen", "127.0.0.1:0"]
    )
    return process


def ready(controller, names):
    until(
        lambda: {n["id"] for n in controller.list_nodes() if n["status"] == "ready"}
        >= set(names),
        f"nodes {names} to be ready",
    )


def stopped(processes):
    for process in processes:
        process.kill()
        process.wait()


def scheduled_reason(instance):
    return next(
        (c["reason"] for c in instance.get("conditions", []) if c["type"] == "scheduled"), None
    )


def test_a_container_restarts_on_the_other_node():
    socket = runtime("ZIXIAO_TEST_CONTAINERD_SOCKET", "containerd")
    etcd = runtime("ZIXIAO_TEST_ETCD_ENDPOINTS", "etcd")
    archive = runtime("ZIXIAO_TEST_BUSYBOX_OCI", "the busybox OCI archive")
    zx = binary()
    root = tempfile.mkdtemp(prefix="zx-h-cold2-py-")
    common = ["--containerd-socket", socket]
    subprocess.run(
        [zx, "--state-dir", f"{root}/import", *common, "image", "import", archive],
        check=True, capture_output=True,
    )
    processes = []
    names = [f"pymig-a-{os.getpid()}", f"pymig-b-{os.getpid()}"]
    try:
        server, address = start(
            [zx, *common, "server", "--etcd", etcd, "--etcd-prefix",
             f"/zixiao-pymig-{os.getpid()}", "--listen", "127.0.0.1:0", "--id", "pymig"]
        )
        processes.append(server)
        for name in names:
            processes.append(agent(zx, f"{root}/{name}", address, name, name, *common))
        controller = zixiao.connect(address)
        ready(controller, names)
        mover = f"pymover-{os.getpid()}"
        created = controller.create_instance(
            zixiao.CreateInstance(
                name=mover,
                spec=zixiao.InstanceSpec(
                    type="container", image="busybox", cpus=1, memory_mib=64,
                    command=["sleep", "600"],
                ),
            )
        )
        assert created["status"] == "running", created
        other = next(n for n in names if n != created["node"])

        # A container has no disk to carry: cold is refused, saying so.
        with pytest.raises(zixiao.FailedPrecondition) as raised:
            controller.migrate_instance(mover, to=other, mode="cold")
        assert "has no disk to copy" in str(raised.value)

        moved = controller.migrate_instance(mover, to=other, mode="restart")
        assert (moved["id"], moved["name"]) == (created["id"], mover)
        assert moved["node"] == other, moved
        until(
            lambda: controller.get_instance(mover)["status"] == "running",
            "the container to run on the other node",
        )
        assert controller.get_instance(mover)["node"] == other
        operation = controller.get_operation(moved["operation"])
        assert operation["phase"] == "succeeded", operation
        assert operation["kind"] == "migrate", operation
        # Restarted: stopped here, started there, nothing copied.
        assert "copying" not in operation["steps"], operation
        assert operation["steps"][-1] == "done", operation
        controller.delete_instance(mover)
    finally:
        stopped(processes)
        shutil.rmtree(root, ignore_errors=True)


def test_a_vm_migrates_cold_between_two_libvirt_nodes():
    uris = [
        runtime("ZIXIAO_TEST_LIBVIRT_URI", "libvirt"),
        runtime("ZIXIAO_TEST_LIBVIRT2_URI", "the second libvirtd"),
    ]
    files = [
        (runtime("ZIXIAO_TEST_VM_KERNEL", "the test VM kernel"), "kernel", "k1"),
        (runtime("ZIXIAO_TEST_VM_INITRD", "the test VM initrd"), "initrd", "i1"),
        (runtime("ZIXIAO_TEST_VM_BASE_IMAGE", "the test VM disk"), "disk", "base"),
    ]
    zx = binary()
    # Both daemons' QEMU open the nodes' images and overlays: a directory
    # they can search, as the Rust migration tests use.
    parent = os.path.join(os.environ.get("ZIXIAO_TEST_DIR", "/tmp/zixiao-test"), "libvirt")
    root = tempfile.mkdtemp(prefix="zx-h-cold2-py-", dir=parent)
    os.chmod(root, 0o755)
    processes = []
    names = [f"pycold-a-{os.getpid()}", f"pycold-b-{os.getpid()}"]
    vm = f"pycold-{os.getpid()}"
    # The agents' zone, where the VM is placed: the embedded server's own
    # node is elsewhere.
    zone = vm
    created = None
    try:
        for name, uri in zip(names, uris):
            for path, kind, image in files:
                subprocess.run(
                    [zx, "--state-dir", f"{root}/{name}", "--libvirt-uri", uri, "image",
                     "import", path, "--kind", kind, "--name", image],
                    check=True, capture_output=True,
                )
        server, address = start(
            [zx, "--state-dir", f"{root}/server", "server", "--embedded",
             "--insecure-no-tls", "--listen", "127.0.0.1:0"]
        )
        processes.append(server)
        controller = zixiao.connect(address)
        processes.append(agent(zx, f"{root}/{names[0]}", address, names[0], zone,
                               "--libvirt-uri", uris[0]))
        ready(controller, names[:1])
        created = controller.create_instance(
            zixiao.CreateInstance(
                name=vm,
                spec=zixiao.InstanceSpec(
                    type="vm", image="base", disk_gib=1, kernel="k1", initrd="i1",
                    cmdline="console=ttyS0", cpus=1, memory_mib=256,
                    placement={"zone": zone},
                ),
            )
        )
        assert created["status"] == "running", created
        processes.append(agent(zx, f"{root}/{names[1]}", address, names[1], zone,
                               "--libvirt-uri", uris[1]))
        ready(controller, names)
        assert created["node"] == names[0], created

        moved = controller.migrate_instance(vm, to=names[1], mode="cold")
        assert (moved["id"], moved["name"]) == (created["id"], vm)
        assert moved["node"] == names[1], moved
        assert scheduled_reason(moved) == "MigratedCold", moved
        until(
            lambda: controller.get_instance(vm)["status"] == "running",
            "the VM to run on the other node",
        )
        operation = controller.get_operation(moved["operation"])
        assert operation["phase"] == "succeeded", operation
        assert operation["steps"] == ["placing", "stopping", "copying", "starting", "done"]
        assert operation["progress"]["unit"] == "bytes", operation
        assert operation["progress"]["done"] > 0, operation
        controller.delete_instance(vm)
    finally:
        stopped(processes)
        for uri in uris if created else []:
            # Nothing of the VM stays on a shared daemon if the test failed.
            for verb in (["destroy"], ["undefine", "--nvram"]):
                subprocess.run(["virsh", "-q", "-c", uri, verb[0], created["id"], *verb[1:]],
                               capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
