"""The asyncio API: the same calls as awaitables, and `async for` over a watch."""

import asyncio
import subprocess
import sys

import pytest

import zixiao
from conftest import container


def test_async_lifecycle_and_watch(state_dir):
    async def main():
        controller = await zixiao.AsyncController._open_with_fake_runtimes(state_dir)
        watch = await controller.watch_instances()
        assert (await controller.create_instance(container("web")))["status"] == "running"
        assert [i["name"] for i in await controller.list_instances()] == ["web"]
        assert (await controller.stop_instance("web"))["status"] == "stopped"
        assert (await controller.start_instance("web"))["status"] == "running"
        assert (await controller.pause_instance("web"))["status"] == "paused"
        assert (await controller.resume_instance("web"))["status"] == "running"
        assert "cpu_time_ns" in await controller.instance_stats("web")
        assert (await controller.read_log("web")).data.startswith(b"started web")
        # Placed in the create's own commit; nothing runs it until a call waits.
        assert (await controller.create_instance(container("db"), wait=False))["status"] == "scheduled"
        assert await controller.delete_instance("db") is None
        await controller.stop_instance("web")
        pieces = [piece async for piece in await controller.follow_log("web")]
        assert b"".join(pieces) == b"started web\n" * 2  # started twice
        assert await controller.delete_instance("web") is None

        kinds = []
        async for event in watch:
            kinds.append(event["kind"])
            if event["kind"] == "deleted":
                break
        assert kinds[0] == "added" and kinds[-1] == "deleted"
        info = await controller.cluster_info()
        assert info["instances"] == 0

    asyncio.run(main())


def test_async_errors_are_the_same_exceptions(state_dir):
    async def main():
        controller = await zixiao.AsyncController._open_with_fake_runtimes(state_dir)
        with pytest.raises(zixiao.NotFound):
            await controller.get_instance("ghost")
        with pytest.raises(zixiao.InvalidArgument) as raised:
            await controller.create_instance(container("web", cpus=0))
        assert raised.value.field == "spec.cpus"
        remote = await zixiao.connect_async("http://127.0.0.1:7400")
        with pytest.raises(zixiao.Unavailable):
            await remote.list_nodes()

    asyncio.run(main())


def test_async_nodes_snapshots_images_and_backups(state_dir, tmp_path):
    async def main():
        controller = await zixiao.AsyncController._open_with_fake_runtimes(state_dir)
        watch = await controller.watch_nodes()
        assert (await controller.cordon_node("local"))["status"] == "cordoned"
        assert (await watch.__anext__())["node"]["status"] == "cordoned"
        assert (await controller.uncordon_node("local"))["status"] == "ready"
        assert (await controller.set_maintenance("local", True))["status"] == "maintenance"
        assert (await controller.set_maintenance("local", False))["status"] == "ready"
        assert (await controller.drain_node("local"))["node"] == "local"
        await controller.uncordon_node("local")
        await controller.create_instance(container("web"))
        with pytest.raises(zixiao.Unsupported):
            await controller.create_snapshot("web", "s1")
        with pytest.raises(zixiao.Unsupported):
            await controller.attach_console("web")
        with pytest.raises(zixiao.Unsupported):
            await controller.import_images(str(tmp_path / "none.tar"), progress=print)
        with pytest.raises(zixiao.InvalidArgument) as raised:
            await controller.list_images(instance_type="jail")
        assert raised.value.field == "instance_type"
        summary = await controller.backup_state(str(tmp_path / "backup.redb"))
        assert summary["keys"] >= 2
        await controller.delete_instance("web")
        assert await controller.deregister_node("local") is None
        assert await controller.list_nodes() == []

    asyncio.run(main())


def test_awaiting_does_not_block_the_event_loop(state_dir):
    # A watch waits in the runtime, not in the loop: other tasks run meanwhile
    # and produce the very event it waits for.
    async def main():
        controller = await zixiao.AsyncController._open_with_fake_runtimes(state_dir)
        watch = await controller.watch_instances()
        waiting = asyncio.ensure_future(watch.__anext__())
        await controller.create_instance(container("web"))
        event = await waiting
        assert event["kind"] == "added" and event["instance"]["name"] == "web"

    asyncio.run(main())


def test_cancelling_an_awaitable_cancels_the_call(state_dir):
    async def main():
        controller = await zixiao.AsyncController._open_with_fake_runtimes(state_dir)
        watch = await controller.watch_instances()
        waiting = watch.__anext__()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        # The cancelled wait let go of the watch: the next one gets the event.
        following = watch.__anext__()
        await controller.create_instance(container("web"))
        event = await following
        assert event["kind"] == "added"

    asyncio.run(main())


def test_the_interpreter_exits_cleanly_after_async_calls(state_dir):
    # Runtime threads never take the GIL, so none is caught holding it while
    # the interpreter exits (which aborts the process).
    script = f"""
import asyncio, zixiao
async def main():
    c = await zixiao.AsyncController._open_with_fake_runtimes({state_dir!r})
    try:
        await c.get_instance("ghost")
    except zixiao.NotFound:
        pass
    await c.list_nodes()
asyncio.run(main())
"""
    for _ in range(5):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
