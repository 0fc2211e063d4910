import asyncio
import tempfile

import zixiao


async def main():
    controller = await zixiao.AsyncController.open(tempfile.mkdtemp(prefix="zixiao-"))
    nodes = await controller.list_nodes()
    print("nodes:", [n["id"] for n in nodes])
    try:
        await controller.get_instance("web")
    except zixiao.NotFound as e:
        print(f"{e.kind}: {e}")
    watch = await controller.watch_instances()  # from now
    print("watching", type(watch).__name__)


asyncio.run(main())
