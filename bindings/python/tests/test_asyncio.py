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
        start = await controller.current_revision()
        await controller.create_instance(container("web"))
        assert (await controller.converge("web"))["status"] == "running"
        assert [i["name"] for i in await controller.list_instances()] == ["web"]
        await controller.stop_instance("web")
        assert (await controller.converge("web"))["status"] == "stopped"
        await controller.start_instance("web")
        assert (await controller.converge("web"))["status"] == "running"
        reader = await controller.logs("web")
        assert (await reader.read()).data.startswith(b"started web")
        await controller.delete_instance("web")
        assert await controller.converge("web") is None

        kinds = []
        async for event in await controller.watch_instances(after=start):
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
        with pytest.raises(zixiao.Unsupported):
            await zixiao.connect_async("http://127.0.0.1:7400")

    asyncio.run(main())


def test_awaiting_does_not_block_the_event_loop(state_dir):
    # A watch waits in the runtime, not in the loop: other tasks run meanwhile
    # and produce the very event it waits for.
    async def main():
        controller = await zixiao.AsyncController._open_with_fake_runtimes(state_dir)
        watch = await controller.watch_instances(after=await controller.current_revision())
        waiting = asyncio.ensure_future(watch.__anext__())
        await controller.create_instance(container("web"))
        event = await waiting
        assert event["kind"] == "added" and event["instance"]["name"] == "web"

    asyncio.run(main())


def test_cancelling_an_awaitable_cancels_the_call(state_dir):
    async def main():
        controller = await zixiao.AsyncController._open_with_fake_runtimes(state_dir)
        watch = await controller.watch_instances(after=await controller.current_revision())
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
