"""Templates: versions stay as stored, instances created from a version
record it and are counted per version, a version in use is not deleted,
and bad input raises the exception of its kind naming the field, with
nothing created. On the fake-runtime controller."""

import asyncio

import pytest

import zixiao


def spec(memory_mib):
    return {
        "labels": {"app": "web"},
        "spec": {"type": "container", "image": "busybox", "cpus": 1, "memory_mib": memory_mib},
    }


def counts(template):
    return [(v["version"], v["in_use"], v["instances"]) for v in template["versions"]]


def test_versions_counts_and_a_refused_delete(controller):
    created = controller.create_template("web", spec(64))
    assert [v["version"] for v in created["versions"]] == [1]
    both = controller.update_template("web", spec(96))
    assert [v["spec"]["memory_mib"] for v in both["versions"]] == [64, 96]

    a = controller.create_from_template("a", "web@1", set=["cpus=2", "labels.tier=front"])
    assert a["status"] == "running"
    assert a["template"] == {"name": "web", "version": 1}
    assert a["spec"]["cpus"] == 2 and a["labels"] == {"app": "web", "tier": "front"}
    b = controller.create_from_template("b", "web", wait=False)
    assert b["template"]["version"] == 2
    assert controller.get_instance("a")["template"] == a["template"]

    assert counts(controller.get_template("web")) == [(1, 1, ["a"]), (2, 1, ["b"])]
    assert counts(controller.get_template("web", version=2)) == [(2, 1, ["b"])]
    assert [t["name"] for t in controller.list_templates()] == ["web"]

    with pytest.raises(zixiao.FailedPrecondition) as raised:
        controller.delete_template("web", version=1)
    assert "in use by a" in str(raised.value)
    controller.delete_instance("a")
    assert controller.delete_template("web", version=1) is None
    assert counts(controller.get_template("web")) == [(2, 1, ["b"])]


def test_bad_input_raises_by_kind_and_creates_nothing(controller):
    bad = spec(64)
    bad["spec"]["cpus"] = 0
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.create_template("web", bad)
    assert raised.value.field == "spec.cpus"
    assert controller.list_templates() == []

    controller.create_template("web", spec(64))
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.create_from_template("c", "web", set=["colour=red"])
    assert raised.value.field == "set" and "unknown field `colour`" in str(raised.value)
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.create_from_template("c", "web@x")
    assert raised.value.field == "template"
    with pytest.raises(zixiao.NotFound):
        controller.create_from_template("c", "web@3")
    with pytest.raises(zixiao.AlreadyExists):
        controller.create_template("web", spec(96))
    assert controller.list_instances() == []


def test_the_async_controller_does_the_same(state_dir):
    async def main():
        controller = await zixiao.AsyncController._open_with_fake_runtimes(state_dir)
        await controller.create_template("web", spec(64))
        a = await controller.create_from_template("a", "web", set=["memory_mib=128"])
        assert a["spec"]["memory_mib"] == 128 and a["template"]["version"] == 1
        template = await controller.get_template("web")
        assert counts(template) == [(1, 1, ["a"])]
        with pytest.raises(zixiao.FailedPrecondition):
            await controller.delete_template("web")

    asyncio.run(main())
