"""Node labels, traits and host aggregates: an instance that asks for a
trait or an aggregate waits, naming it, until it is declared, and is then
placed; operator labels are kept apart from the agent's; bad input raises
the exception of its kind naming the field. On the fake-runtime
controller."""

import asyncio

import pytest

import zixiao


def waiting(name, placement):
    return {
        "name": name,
        "spec": {
            "type": "container",
            "image": "busybox",
            "cpus": 1,
            "memory_mib": 64,
            "placement": placement,
        },
    }


def test_a_declared_trait_and_aggregate_place_the_waiting_instance(controller):
    node = controller.list_nodes()[0]["id"]
    db = controller.create_instance(waiting("db", {"required_traits": ["ssd"]}))
    assert db["status"] == "pending"
    scheduled = [c for c in db["conditions"] if c["type"] == "scheduled"][0]
    assert "missing trait `ssd`" in scheduled["message"]

    labelled = controller.label_node(node, ["disk=ssd", "tier=front"])
    assert labelled["operator"]["labels"] == {"disk": "ssd", "tier": "front"}
    assert labelled["labels"]["disk"] == "ssd"
    traits = controller.add_node_traits(node, ["ssd"])
    assert "ssd" in traits["traits"] and traits["operator"]["traits"] == ["ssd"]
    placed = controller.get_instance("db")
    assert placed["status"] == "running" and placed["node"] == node

    web = controller.create_instance(waiting("web", {"aggregates": ["fast"]}))
    assert web["status"] == "pending"
    fast = controller.create_aggregate("fast", {"tier": "gold"})
    assert fast["metadata"] == {"tier": "gold"} and fast["nodes"] == []
    assert controller.add_aggregate_node("fast", node)["nodes"] == [node]
    assert controller.get_instance("web")["status"] == "running"
    assert [a["name"] for a in controller.list_aggregates()] == ["fast"]
    assert controller.get_aggregate("fast")["nodes"] == [node]
    edited = controller.set_aggregate_metadata("fast", ["tier=silver", "old-"])
    assert edited["metadata"] == {"tier": "silver"}
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.set_aggregate_metadata("fast", ["no key=v"])
    assert raised.value.field == "metadata"

    with pytest.raises(zixiao.FailedPrecondition) as raised:
        controller.delete_aggregate("fast")
    assert node in str(raised.value)
    assert controller.remove_aggregate_node("fast", node)["nodes"] == []
    assert controller.delete_aggregate("fast") is None
    controller.remove_node_traits(node, ["ssd"])
    assert "operator" not in controller.label_node(node, ["disk-", "tier-"])


def test_bad_input_raises_by_kind_naming_the_field(controller):
    node = controller.list_nodes()[0]["id"]
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.label_node(node, ["no-equals-sign"])
    assert raised.value.field == "labels"
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.add_node_traits(node, ["has space"])
    assert raised.value.field == "traits"
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.create_aggregate("Fast")
    assert raised.value.field == "name"
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.create_aggregate("fast", {"bad key": "v"})
    assert raised.value.field == "metadata"
    with pytest.raises(zixiao.NotFound):
        controller.label_node("no-such-node", ["a=b"])
    controller.create_aggregate("fast")
    with pytest.raises(zixiao.AlreadyExists):
        controller.create_aggregate("fast")
    with pytest.raises(zixiao.NotFound):
        controller.add_aggregate_node("fast", "no-such-node")
    assert controller.get_aggregate("fast")["nodes"] == []


def test_the_async_controller_does_the_same(state_dir):
    async def main():
        controller = await zixiao.AsyncController._open_with_fake_runtimes(state_dir)
        node = (await controller.list_nodes())[0]["id"]
        db = await controller.create_instance(waiting("db", {"required_traits": ["gpu"]}))
        assert db["status"] == "pending"
        await controller.add_node_traits(node, ["gpu"])
        assert (await controller.get_instance("db"))["status"] == "running"
        await controller.create_aggregate("fast")
        assert (await controller.add_aggregate_node("fast", node))["nodes"] == [node]
        labelled = await controller.label_node(node, ["disk=ssd"])
        assert labelled["labels"]["disk"] == "ssd"
        with pytest.raises(zixiao.InvalidArgument):
            await controller.remove_node_traits(node, [])

    asyncio.run(main())


def test_a_declared_carbon_intensity_steers_placement(controller):
    node = controller.list_nodes()[0]["id"]
    dirty = controller.set_node_carbon(node, 300)
    assert dirty["carbon_intensity"] == 300 and dirty["operator"]["carbon_intensity"] == 300
    green = controller.create_instance(waiting("green", {"carbon": {"max_intensity": 200}}))
    scheduled = [c for c in green["conditions"] if c["type"] == "scheduled"][0]
    assert "carbon intensity above 200" in scheduled["message"]
    for bad in (-1, 9000):
        with pytest.raises(zixiao.InvalidArgument) as raised:
            controller.set_node_carbon(node, bad)
        assert raised.value.field == "carbon_intensity"
    assert controller.get_node(node)["carbon_intensity"] == 300
    controller.set_node_carbon(node, 120)
    assert controller.get_instance("green")["status"] == "running"
    assert "operator" not in controller.set_node_carbon(node, None)
    with pytest.raises(zixiao.NotFound):
        controller.set_node_carbon("no-such-node", 100)


def test_a_decommissioned_node_takes_nothing_and_is_deleted_once_empty(controller):
    node = controller.list_nodes()[0]["id"]
    stays = waiting("stays", {})
    stays["spec"]["restart"] = "never"
    assert controller.create_instance(stays)["status"] == "running"

    report = controller.decommission_node(node)
    assert report["status"] == "decommissioned" and report["stopped"] == ["stays"]
    retired = controller.get_node(node)
    assert retired["status"] == "decommissioned" and retired["runtimes"] == []
    assert "decommissioned" in retired["missing_runtimes"]["container"]
    with pytest.raises(zixiao.FailedPrecondition) as raised:
        controller.start_instance("stays")
    assert "decommissioned" in str(raised.value)
    with pytest.raises(zixiao.FailedPrecondition) as raised:
        controller.deregister_node(node)
    assert "stays" in str(raised.value)
    controller.delete_instance("stays")
    assert controller.deregister_node(node) is None
    with pytest.raises(zixiao.NotFound):
        controller.get_node(node)
