"""`zixiao.connect()` against a real cluster: a `zixiao server` on etcd and a
`zixiao agent` on the real containerd, both processes of the `zixiao`
binary (target/debug/zixiao, built by the test command before the
bindings; ZIXIAO_BIN overrides it). Through the same Controller surface as
`open()`: a container created, watched until it runs, its log read, its
console typed into, a snapshot its runtime cannot take (Unsupported), a bad
request (InvalidArgument naming the field), and deleted; the node's usage
history with its host's size.

Needs containerd and etcd (scripts/services start them); skips with the
reason elsewhere, fails instead with ZIXIAO_REQUIRE_RUNTIMES=1 (CI).
"""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import zixiao

from test_runtimes import missing, runtime, until


def binary():
    path = os.environ.get("ZIXIAO_BIN") or str(
        Path(__file__).resolve().parents[3] / "target" / "debug" / "zixiao"
    )
    if not os.access(path, os.X_OK):
        missing(f"the zixiao binary is not built at {path} (cargo build -p zixiao-cli --all-features)")
    return path


def start(command):
    """Starts `command` and returns it with the address of its first line."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    line = process.stdout.readline().strip()
    if " listening on " not in line:
        process.kill()
        pytest.fail(f"{command[1:3]} did not start: {line!r}")
    return process, line.rsplit(" listening on ", 1)[1]


@pytest.fixture(scope="module")
def server():
    socket = runtime("ZIXIAO_TEST_CONTAINERD_SOCKET", "containerd")
    etcd = runtime("ZIXIAO_TEST_ETCD_ENDPOINTS", "etcd")
    archive = runtime("ZIXIAO_TEST_BUSYBOX_OCI", "the busybox OCI archive")
    zx = binary()
    root = tempfile.mkdtemp(prefix="zx-py-")
    common = ["--containerd-socket", socket]
    # The image, in the containerd namespace the agent's node uses.
    subprocess.run(
        [zx, "--state-dir", f"{root}/import", *common, "image", "import", archive],
        check=True, capture_output=True,
    )
    processes = []
    try:
        server, address = start(
            [zx, *common, "server", "--etcd", etcd, "--etcd-prefix", f"/zixiao-py-{os.getpid()}",
             "--listen", "127.0.0.1:0", "--id", "py"]
        )
        processes.append(server)
        agent, _ = start(
            [zx, "--state-dir", f"{root}/agent", *common, "agent", "--server", address,
             "--name", "py-node", "--no-networks", "--listen", "127.0.0.1:0"]
        )
        processes.append(agent)
        controller = zixiao.connect(address)
        until(
            lambda: any(n["status"] == "ready" for n in controller.list_nodes()),
            "the agent's node to be ready",
        )
        yield address
    finally:
        for process in processes:
            process.kill()
            process.wait()
        # The agent's watchdog outlives the agent by design; it ends once
        # the node's state directory is gone.
        shutil.rmtree(root, ignore_errors=True)


def test_a_container_through_a_server(server):
    controller = zixiao.connect(server)
    watch = controller.watch_instances()  # from now
    controller.create_instance(
        {
            "name": "py-remote",
            "labels": {"zixiao.io/stdin": "true"},
            "spec": {"type": "container", "image": "busybox", "cpus": 1, "memory_mib": 32,
                     "command": ["sh", "-c", "echo hello from the agent; exec cat"]},
        },
        wait=False,
    )
    for event in watch:
        instance = event["instance"]
        if instance and instance["name"] == "py-remote" and instance["status"] == "running":
            break
    web = controller.get_instance("py-remote")
    assert web["node"] == "py-node"
    assert web["runtime"] == "containerd"

    until(
        lambda: b"hello from the agent" in controller.read_log("py-remote").data,
        "the container's first line",
    )
    with controller.attach_console("py-remote") as console:
        console.write(b"typed through two hops\n")
        seen = b""
        while b"typed through two hops" not in seen:
            piece = console.read()
            assert piece, f"the console ended before the echo: {seen!r}"
            seen += piece

    with pytest.raises(zixiao.Unsupported):
        controller.create_snapshot("py-remote", "s1")
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.create_instance(
            {"name": "tiny", "spec": {"type": "container", "image": "busybox", "cpus": 1,
                                      "memory_mib": 1}}
        )
    assert raised.value.field == "spec.memory_mib"
    with pytest.raises(zixiao.NotFound):
        controller.get_instance("tiny")

    assert controller.delete_instance("py-remote") is None
    with pytest.raises(zixiao.NotFound):
        controller.get_instance("py-remote")


def test_a_nodes_history_carries_its_hosts_usage(server):
    """The agent's heartbeats bring what its host (this machine) uses; the
    server samples every 10 s."""
    controller = zixiao.connect(server)

    def hosted():
        samples = controller.node_stats_history("py-node")
        return next((s for s in reversed(samples) if s["host_memory_capacity_bytes"]), None)

    sample = until(hosted, "the node's host usage")
    with open("/proc/meminfo") as meminfo:
        kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    assert sample["host_memory_capacity_bytes"] == kib * 1024
    assert sample["host_cpu_capacity_millicores"] == os.cpu_count() * 1000
    assert 0 < sample["host_memory_bytes"] < kib * 1024
