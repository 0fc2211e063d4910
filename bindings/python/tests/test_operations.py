"""Operations from Python, on the fake runtimes: a create without waiting
names its operation, which `wait_operation` follows to success; lists,
cancels, and bad ids or cancels raising the exception of their kind with
nothing changed."""

import asyncio

import pytest

import zixiao
from conftest import container


def test_a_create_without_waiting_is_followed_to_success(controller):
    created = controller.create_instance(container("web"), wait=False)
    op_id = created["operation"]
    assert op_id.startswith("op-")
    assert controller.get_operation(op_id)["phase"] == "running"
    assert [o["id"] for o in controller.list_operations()] == [op_id]

    ended = controller.wait_operation(op_id, timeout=30)
    assert ended["phase"] == "succeeded", ended
    assert ended["result"] == created["id"]
    assert controller.get_instance("web")["status"] == "running"
    assert controller.list_operations() == [], "no operation is unfinished"
    kept = controller.list_operations(all=True, target="web", kind="create")
    assert [o["id"] for o in kept] == [op_id]


def test_a_running_create_is_cancelled(controller):
    created = controller.create_instance(container("web"), wait=False)
    cancelled = controller.cancel_operation(created["operation"])
    assert cancelled["phase"] == "cancelled"
    assert "deleted" in cancelled["error"]["message"]


def test_bad_ids_and_cancels_raise_and_change_nothing(controller):
    created = controller.create_instance(container("web"))
    op_id = created["operation"]
    before = controller.get_operation(op_id)
    with pytest.raises(zixiao.FailedPrecondition) as raised:
        controller.cancel_operation(op_id)
    assert "succeeded" in str(raised.value)
    assert controller.get_operation(op_id) == before
    with pytest.raises(zixiao.NotFound):
        controller.get_operation("op-" + "0" * 32)
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.get_operation("../instances/web")
    assert raised.value.field == "operation"
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.list_operations(kind="teleport")
    assert raised.value.field == "kind"


def test_the_async_controller_awaits_an_operation(state_dir):
    async def main():
        controller = await zixiao.AsyncController._open_with_fake_runtimes(state_dir)
        created = await controller.create_instance(container("web"), wait=False)
        ended = await controller.wait_operation(created["operation"])
        assert ended["phase"] == "succeeded"
        listed = await controller.list_operations(all=True)
        assert [o["id"] for o in listed] == [created["operation"]]

    asyncio.run(main())
