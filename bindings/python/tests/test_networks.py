"""Networks: create, list, get and delete them; instances that join one get
an address in its subnet and a MAC; bad input raises the exception of its
kind, naming the field. The fake-runtime controller stores networks and
hands out addresses without touching this machine's networking."""

import asyncio
import ipaddress

import pytest

import zixiao
from conftest import container

LAN = {"name": "lan", "subnets": ["10.77.0.0/24"]}


def test_create_get_list_delete(controller):
    lan = controller.create_network({**LAN, "reserved": ["10.77.0.2"], "nat": False})
    assert lan["name"] == "lan"
    assert [s["cidr"] for s in lan["subnets"]] == ["10.77.0.0/24"]
    assert lan["subnets"][0]["gateway"] == "10.77.0.1"
    assert lan["subnets"][0]["reserved"] == ["10.77.0.2/32"]
    assert lan["nat"] is False and lan["isolated"] is True
    assert lan["bridge"].startswith("zxb")

    controller.create_network({"name": "dmz", "subnets": ["10.78.0.0/24", "fd78::/64"]})
    assert [n["name"] for n in controller.list_networks()] == ["dmz", "lan"]
    assert controller.get_network("lan") == lan
    # The network's own fields, and its state per node that sets up
    # networks (this fake-runtime controller touches no host networking,
    # so a node either has none or cannot tell).
    status = controller.network_status("lan")
    assert {k: v for k, v in status.items() if k not in ("nodes", "repaired")} == lan
    for node in status["nodes"]:
        assert node["parts"] or node["error"], node
    with pytest.raises(zixiao.NotFound):
        controller.network_status("ghost")

    assert controller.delete_network("lan") is None
    assert [n["name"] for n in controller.list_networks()] == ["dmz"]
    with pytest.raises(zixiao.NotFound):
        controller.get_network("lan")


def test_bad_requests_raise_by_kind_and_change_nothing(controller):
    controller.create_network(LAN)

    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.create_network({"name": "wide", "subnets": ["10.77.0.0/16"]})
    assert raised.value.field == "subnets[0]"
    assert "overlaps" in str(raised.value) and "lan" in str(raised.value)

    with pytest.raises(zixiao.AlreadyExists) as raised:
        controller.create_network({"name": "lan", "subnets": ["10.99.0.0/24"]})
    assert raised.value.kind == "already_exists"

    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.create_network({"name": "odd", "subnets": ["10.79.0.0/33"]})
    assert raised.value.field == "subnets[0]"

    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.create_network({"name": "odd", "subnets": ["10.79.0.0/24"], "mtu": 9000})
    assert "mtu" in str(raised.value)

    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.create_network({"name": "odd", "subnets": "10.79.0.0/24"})
    assert raised.value.field == "subnets"

    with pytest.raises(zixiao.NotFound) as raised:
        controller.get_network("ghost")
    assert "ghost" in str(raised.value)
    with pytest.raises(zixiao.NotFound):
        controller.delete_network("ghost")

    assert [n["name"] for n in controller.list_networks()] == ["lan"]


def test_an_instance_on_a_network_gets_an_address_and_holds_the_network(controller):
    controller.create_network(LAN)
    created = controller.create_instance(container("web", networks=["lan"]), wait=False)
    assert created["spec"]["networks"] == ["lan"]
    [attachment] = created["attachments"]
    assert attachment["network"] == "lan"
    assert attachment["interface"] == "eth0"
    [address] = attachment["addresses"]
    assert ipaddress.ip_address(address["address"]) in ipaddress.ip_network("10.77.0.0/24")
    assert address["address"] not in ("10.77.0.0", "10.77.0.1", "10.77.0.255")
    assert address["gateway"] == "10.77.0.1" and address["prefix_len"] == 24
    assert len(attachment["mac"].split(":")) == 6

    running = controller.start_instance("web")  # waits until it runs
    assert running["status"] == "running"
    assert running["attachments"] == created["attachments"]

    # A second instance gets another address of the same subnet.
    other = controller.create_instance(container("db", networks=["lan"]))
    assert other["attachments"][0]["addresses"][0]["address"] != address["address"]
    assert other["attachments"][0]["mac"] != attachment["mac"]

    with pytest.raises(zixiao.FailedPrecondition) as raised:
        controller.delete_network("lan")
    assert "web" in str(raised.value) and "db" in str(raised.value)
    assert controller.get_network("lan")["name"] == "lan"

    for name in ("web", "db"):
        assert controller.delete_instance(name) is None
    controller.delete_network("lan")
    assert controller.list_networks() == []


def test_a_clone_joins_its_sources_network_with_its_own_address_and_mac(controller):
    controller.create_network(LAN)
    web = controller.create_instance(container("web", networks=["lan"]))
    clone = controller.clone_instance("web", "web-copy")
    assert clone["status"] == "running"
    assert clone["clone_of"]["source"] == web["id"] and clone["id"] != web["id"]
    assert clone["spec"]["networks"] == ["lan"]
    [source] = web["attachments"]
    [copy] = clone["attachments"]
    assert copy["network"] == "lan" and copy["interface"] == "eth0"
    ours, theirs = copy["addresses"][0]["address"], source["addresses"][0]["address"]
    assert ours != theirs
    assert ipaddress.ip_address(ours) in ipaddress.ip_network("10.77.0.0/24")
    assert copy["mac"] != source["mac"]
    for name in ("web-copy", "web"):
        assert controller.delete_instance(name) is None
    controller.delete_network("lan")


def test_an_instance_on_a_missing_network_is_refused(controller):
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.create_instance(container("web", networks=["ghost"]))
    assert raised.value.field == "spec.networks[0]"
    assert controller.list_instances() == []


def test_instances_without_networks_show_no_attachments(controller):
    created = controller.create_instance(container("web"))
    assert "attachments" not in created
    assert "networks" not in created["spec"]


def test_async_networks(state_dir):
    async def main():
        controller = await zixiao.AsyncController._open_with_fake_runtimes(state_dir)
        lan = await controller.create_network(LAN)
        assert (await controller.get_network("lan")) == lan
        assert [n["name"] for n in await controller.list_networks()] == ["lan"]
        with pytest.raises(zixiao.InvalidArgument) as raised:
            await controller.create_network({"name": "wide", "subnets": ["10.0.0.0/8"]})
        assert raised.value.field == "subnets[0]"
        with pytest.raises(zixiao.AlreadyExists):
            await controller.create_network(LAN)

        web = await controller.create_instance(container("web", networks=["lan"]))
        assert len(web["attachments"]) == 1
        with pytest.raises(zixiao.FailedPrecondition) as raised:
            await controller.delete_network("lan")
        assert "web" in str(raised.value)
        assert await controller.delete_instance("web") is None
        assert await controller.delete_network("lan") is None
        with pytest.raises(zixiao.NotFound):
            await controller.get_network("lan")

    asyncio.run(main())
