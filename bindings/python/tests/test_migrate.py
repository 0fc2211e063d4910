"""migrate_instance through the binding: the embedded deployment has one
node, so a migration is refused saying so, and bad input raises the
exception of its kind; nothing changes. (Moves between agents are tested
with real runtimes in cli/tests/cluster.rs.)"""

import asyncio

import pytest

import zixiao
from conftest import container


def test_one_node_has_nowhere_to_migrate_to_and_bad_input_raises(controller):
    controller.create_instance(container("web"))
    before = controller.get_instance("web")
    with pytest.raises(zixiao.FailedPrecondition) as raised:
        controller.migrate_instance("web", mode="restart")
    assert "no other node to migrate instance `web` to" in str(raised.value)
    with pytest.raises(zixiao.NotFound):
        controller.migrate_instance("nope")
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.migrate_instance("web", mode="teleport")
    assert raised.value.field == "mode"
    assert controller.get_instance("web") == before


def test_the_async_controller_migrates_too(state_dir):
    async def main():
        controller = await zixiao.AsyncController._open_with_fake_runtimes(state_dir)
        await controller.create_instance(container("web"))
        with pytest.raises(zixiao.FailedPrecondition):
            await controller.migrate_instance("web", to="elsewhere")

    asyncio.run(main())
