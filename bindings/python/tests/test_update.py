"""update_instance: sizes, labels and the restart policy, with the fake
runtimes (a container resizes live, a VM needs a restart), and bad input
raising the exception of its kind with nothing changed."""

import asyncio

import pytest

import zixiao
from conftest import container


def test_a_running_container_is_resized_and_relabelled(controller):
    web = controller.create_instance(container("web", restart="never"))
    updated = controller.update_instance(
        "web",
        {"cpus": 2, "memory_mib": 128, "set_labels": {"tier": "front"}, "restart": "always"},
    )
    assert updated["status"] == "running"
    assert updated["spec"]["cpus"] == 2
    assert updated["spec"]["memory_mib"] == 128
    assert updated["spec"]["restart"] == "always"
    assert updated["labels"] == {"tier": "front"}
    assert updated["started_at"] == web["started_at"], "resized live, not restarted"
    removed = controller.update_instance("web", {"remove_labels": ["tier"]})
    assert removed["labels"] == {}
    assert controller.get_instance("web")["revision"] == removed["revision"]


def test_bad_updates_raise_and_change_nothing(controller):
    controller.create_instance(container("web"))
    before = controller.get_instance("web")
    with pytest.raises(zixiao.NotFound):
        controller.update_instance("nope", {"cpus": 2})
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.update_instance("web", {"cpus": 0})
    assert raised.value.field == "cpus"
    assert "must be more than 0" in str(raised.value)
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.update_instance("web", {})
    assert raised.value.field == "update"
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.update_instance("web", {"cpu": 2})
    assert "cpu" in str(raised.value)
    # 8 TiB: valid, more than any test machine's node has.
    with pytest.raises(zixiao.ResourceExhausted) as raised:
        controller.update_instance("web", {"memory_mib": 8 * 1024 * 1024})
    assert "MiB free, the update of `web` needs" in str(raised.value)
    assert controller.get_instance("web") == before


def test_a_running_vm_restarts_for_a_new_size_only_when_allowed(controller):
    vm = controller.create_instance(
        {
            "name": "vm1",
            "spec": {"type": "vm", "image": "/images/base.qcow2", "cpus": 1, "memory_mib": 256},
        }
    )
    assert vm["status"] == "running"
    with pytest.raises(zixiao.FailedPrecondition) as raised:
        controller.update_instance("vm1", {"memory_mib": 512})
    assert "--restart-if-needed" in str(raised.value)
    assert controller.get_instance("vm1")["spec"]["memory_mib"] == 256
    restarted = controller.update_instance("vm1", {"memory_mib": 512, "restart_if_needed": True})
    assert restarted["status"] == "running"
    assert restarted["spec"]["memory_mib"] == 512
    assert restarted["restarts_done"] == vm["restarts_done"] + 1


def test_the_async_controller_updates_too(state_dir):
    async def main():
        controller = await zixiao.AsyncController._open_with_fake_runtimes(state_dir)
        await controller.create_instance(container("web"))
        updated = await controller.update_instance("web", {"memory_mib": 96})
        assert updated["spec"]["memory_mib"] == 96
        with pytest.raises(zixiao.InvalidArgument):
            await controller.update_instance("web", {"memory_mib": 1})

    asyncio.run(main())


def test_snapshot_schedules_are_stored_checked_and_refused_where_none_can_be_taken(controller):
    schedule = {"every": "1h", "keep": 24}
    vm = controller.create_instance(
        {
            "name": "vm1",
            "spec": {
                "type": "vm",
                "image": "/images/base.qcow2",
                "cpus": 1,
                "memory_mib": 256,
                "snapshot_schedule": schedule,
            },
        }
    )
    assert vm["spec"]["snapshot_schedule"] == schedule
    controller.create_instance(container("web"))
    before = {name: controller.get_instance(name) for name in ("vm1", "web")}
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.update_instance("vm1", {"snapshot_every": "30s", "snapshot_keep": 2})
    assert raised.value.field == "snapshot_every"
    assert "shorter than the minimum of 1m" in str(raised.value)
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.update_instance("vm1", {"snapshot_keep": 0})
    assert raised.value.field == "snapshot_keep"
    with pytest.raises(zixiao.NotFound):
        controller.update_instance("nope", {"snapshot_keep": 2})
    # Containers take no snapshots; nor does the fake VM runtime.
    for name, says in (("web", "containers cannot be snapshotted"), ("vm1", "snapshot")):
        with pytest.raises(zixiao.Unsupported) as raised:
            controller.update_instance(name, {"snapshot_every": "2h", "snapshot_keep": 2})
        assert says in str(raised.value)
    assert {name: controller.get_instance(name) for name in ("vm1", "web")} == before
    cleared = controller.update_instance("vm1", {"clear_snapshot_schedule": True})
    assert "snapshot_schedule" not in cleared["spec"]


def test_fractional_cpus_and_allocation_ratios(controller):
    """Containers ask for fractions of a core (as numbers or millicores), a
    node promises its cores times its ratio, and bad amounts name the field."""
    node = controller.list_nodes()[0]
    cores = node["capacity"]["cpus"]
    assert node["allocation_ratios"] == {"cpu": 4, "memory": 1}
    quarter = controller.create_instance(container("quarter", cpus="250m", cpu_limit=0.5))
    assert quarter["spec"]["cpus"] == 0.25
    assert quarter["spec"]["cpu_limit"] == 0.5
    half = controller.create_instance(container("half", cpus=0.5))
    assert half["status"] == "running"
    assert controller.get_node(node["id"])["allocated"]["cpus"] == 0.75

    exact = controller.set_allocation_ratios(node["id"], cpu=1)
    assert exact["allocation_ratios"] == {"cpu": 1, "memory": 1}
    big = controller.create_instance(container("big", cpus=cores))
    assert big["status"] == "pending"
    assert "insufficient cpu" in str(big["conditions"])
    roomy = controller.set_allocation_ratios(node["id"], cpu=2.5)
    assert roomy["allocation_ratios"]["cpu"] == 2.5
    assert controller.get_instance("big")["status"] == "running"

    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.create_instance(container("tiny", cpus=0.0001))
    assert raised.value.field == "spec.cpus"
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.create_instance(container("capped", cpus=1, cpu_limit=0.5))
    assert raised.value.field == "spec.cpu_limit"
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.set_allocation_ratios(node["id"], memory=0)
    assert raised.value.field == "memory"
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.set_allocation_ratios(node["id"])
    assert raised.value.field == "allocation_ratios"
    assert [i["name"] for i in controller.list_instances()] == ["big", "half", "quarter"]


def test_vm_maximums_and_disk_growth_options(controller):
    """A VM keeps the maximums it was created with; a container refuses
    them and a disk size, naming the field, with nothing changed."""
    vm = controller.create_instance(
        {
            "name": "vm1",
            "spec": {
                "type": "vm",
                "image": "/images/base.qcow2",
                "cpus": 1,
                "max_cpus": 2,
                "memory_mib": 256,
                "max_memory_mib": 512,
            },
        }
    )
    assert (vm["spec"]["max_cpus"], vm["spec"]["max_memory_mib"]) == (2, 512)
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.create_instance(container("capped", max_cpus=2))
    assert raised.value.field == "spec.max_cpus"
    controller.create_instance(container("web"))
    before = controller.get_instance("web")
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.update_instance("web", {"disk_gib": 5})
    assert raised.value.field == "disk_gib"
    assert "no disk of its own" in str(raised.value)
    assert controller.get_instance("web") == before
