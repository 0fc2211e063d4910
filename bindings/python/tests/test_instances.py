"""Instance lifecycle, nodes and cluster info through the blocking API."""

import pytest

import zixiao
from conftest import container


def test_create_stop_start_delete_waiting_for_each(controller):
    running = controller.create_instance(container("web", command=["echo", "hi"]))
    assert running["name"] == "web"
    assert running["status"] == "running"
    assert running["node"] == "local"
    assert running["spec"]["command"] == ["echo", "hi"]

    assert [i["name"] for i in controller.list_instances()] == ["web"]
    assert controller.list_instances({"status": "stopped"}) == []

    assert controller.stop_instance("web")["status"] == "stopped"
    assert [i["name"] for i in controller.list_instances({"status": "stopped"})] == ["web"]
    assert controller.start_instance(running["id"])["status"] == "running"
    assert controller.restart_instance("web")["status"] == "running"

    assert controller.delete_instance("web") is None
    assert controller.list_instances() == []


def test_without_wait_a_call_answers_with_the_intent_stored(controller):
    stored = controller.create_instance(container("web"), wait=False)
    # Placed on a node in the create's own commit; nothing runs it yet.
    assert stored["status"] == "scheduled"
    assert stored["desired"] == "running"
    # Reads never write; a call that waits converges it.
    assert controller.get_instance("web")["status"] == "scheduled"
    assert controller.start_instance("web")["status"] == "running"
    deleting = controller.delete_instance("web", wait=False)
    assert deleting["desired"] == "deleted"
    assert controller.delete_instance("web") is None


def test_a_plain_dict_request_works_like_the_dataclass(controller):
    db = controller.create_instance(
        {
            "name": "db",
            "labels": {"app": "db"},
            "spec": {"type": "container", "image": "postgres", "cpus": 2, "memory_mib": 256},
        }
    )
    assert db["status"] == "running"
    assert db["labels"] == {"app": "db"}
    assert db["spec"]["cpus"] == 2
    assert [i["name"] for i in controller.list_instances({"labels": {"app": "db"}})] == ["db"]


def test_pause_resume_stats_and_the_log(controller):
    controller.create_instance(container("web"))

    assert controller.pause_instance("web")["status"] == "paused"
    assert controller.resume_instance("web")["status"] == "running"

    stats = controller.instance_stats("web")
    assert isinstance(stats["cpu_time_ns"], int)
    assert isinstance(stats["memory_bytes"], int)
    # Only a server keeps a history; this deployment has no daemon.
    with pytest.raises(zixiao.Unsupported, match="a server keeps one"):
        controller.instance_stats_history("web")
    with pytest.raises(zixiao.NotFound):
        controller.instance_stats_history("nope")
    node = controller.list_nodes()[0]["id"]
    with pytest.raises(zixiao.Unsupported, match="a server keeps one"):
        controller.node_stats_history(node)
    with pytest.raises(zixiao.NotFound):
        controller.node_stats_history("no-such-node")

    chunk = controller.read_log("web")
    assert isinstance(chunk, zixiao.LogChunk)
    assert chunk.data == b"started web\n"
    assert chunk.next_offset == len(chunk.data)
    assert controller.read_log("web", chunk.next_offset).data == b""
    assert controller.read_log("web", 0, 7).data == b"started"


def test_following_a_log_ends_when_the_instance_stops(controller):
    controller.create_instance(container("web"))
    controller.stop_instance("web")
    # Everything it wrote, then the end: the instance no longer runs.
    assert b"".join(controller.follow_log("web")) == b"started web\n"
    assert b"".join(controller.follow_log("web", offset=8)) == b"web\n"


def test_nodes_and_cluster_info(controller):
    nodes = controller.list_nodes()
    assert [n["id"] for n in nodes] == ["local"]
    assert sorted(nodes[0]["runtimes"]) == ["container", "microvm", "vm"]
    assert controller.get_node("local")["status"] == "ready"

    controller.create_instance(container("a"))
    controller.create_instance(container("b"))
    info = controller.cluster_info()
    assert info["nodes"] == 1
    assert info["instances"] == 2
    assert info["instances_by_type"] == {"container": {"running": 2}}
    assert info["allocated"]["memory_mib"] == 128

    assert controller.cordon_node("local")["status"] == "cordoned"
    assert controller.uncordon_node("local")["status"] == "ready"


def test_maintenance_empties_a_node_and_a_node_without_instances_deregisters(controller):
    controller.create_instance(container("web"))
    report = controller.set_maintenance("local", True)
    assert report["node"] == "local"
    assert report["status"] == "maintenance"
    # One node: nowhere to move to, so the instance stops.
    assert report["stopped"] == ["web"]
    assert controller.get_node("local")["status"] == "maintenance"
    assert controller.set_maintenance("local", False)["status"] == "ready"

    with pytest.raises(zixiao.FailedPrecondition) as raised:
        controller.deregister_node("local")
    assert "web" in str(raised.value) or "instance" in str(raised.value)
    controller.delete_instance("web")
    assert controller.deregister_node("local") is None
    assert controller.list_nodes() == []


def test_watching_nodes_sees_a_cordon(controller):
    watch = controller.watch_nodes()
    controller.cordon_node("local")
    event = next(watch)
    assert event["kind"] == "modified"
    assert event["id"] == "local"
    assert event["node"]["status"] == "cordoned"


def test_the_embedded_deployment_registers_this_machine(tmp_path):
    # The real embedded assembly, with whatever runtimes this machine has.
    controller = zixiao.Controller.open(str(tmp_path / "real"))
    [node] = controller.list_nodes()
    assert node["capacity"]["cpus"] >= 1
    assert node["capacity"]["memory_mib"] > 0
    assert node["status"] == "ready"
    info = controller.cluster_info()
    assert info["nodes"] == 1 and info["instances"] == 0


def test_a_list_comes_in_pages_on_request(controller):
    for name in ("c", "a", "b"):
        controller.create_instance(container(name), wait=False)
    first = controller.list_instances_page(page_size=2)
    assert [i["name"] for i in first["instances"]] == ["a", "b"]
    rest = controller.list_instances_page(page_size=2, page_token=first["next_page_token"])
    assert [i["name"] for i in rest["instances"]] == ["c"]
    assert "next_page_token" not in rest
    # Size 0 in-process: everything, one page.
    assert len(controller.list_instances_page()["instances"]) == 3
    with pytest.raises(zixiao.InvalidArgument, match="page_token"):
        controller.list_instances_page(page_token="../etc")
