"""Instance lifecycle, nodes and cluster info through the blocking API."""

import zixiao
from conftest import container


def test_create_converge_stop_start_delete(controller):
    created = controller.create_instance(container("web", command=["echo", "hi"]))
    assert created["name"] == "web"
    assert created["status"] == "pending"
    assert created["spec"]["command"] == ["echo", "hi"]

    running = controller.converge("web")
    assert running["status"] == "running"
    assert running["node"] == "local"

    assert [i["name"] for i in controller.list_instances()] == ["web"]
    assert controller.list_instances({"status": "stopped"}) == []

    controller.stop_instance("web")
    assert controller.converge("web")["status"] == "stopped"
    assert [i["name"] for i in controller.list_instances({"status": "stopped"})] == ["web"]

    controller.start_instance(created["id"])
    assert controller.converge(created["id"])["status"] == "running"

    deleting = controller.delete_instance("web")
    assert deleting["desired"] == "deleted"
    assert controller.converge("web") is None
    assert controller.list_instances() == []


def test_a_plain_dict_request_works_like_the_dataclass(controller):
    controller.create_instance(
        {
            "name": "db",
            "labels": {"app": "db"},
            "spec": {"type": "container", "image": "postgres", "cpus": 2, "memory_mib": 256},
        }
    )
    db = controller.converge("db")
    assert db["status"] == "running"
    assert db["labels"] == {"app": "db"}
    assert db["spec"]["cpus"] == 2
    assert [i["name"] for i in controller.list_instances({"labels": {"app": "db"}})] == ["db"]


def test_pause_resume_stats_and_console_output(controller):
    controller.create_instance(container("web"))
    controller.converge("web")

    assert controller.pause_instance("web")["status"] == "paused"
    assert controller.resume_instance("web")["status"] == "running"

    stats = controller.instance_stats("web")
    assert isinstance(stats["cpu_time_ns"], int)
    assert isinstance(stats["memory_bytes"], int)

    log = controller.logs("web")
    chunk = log.read()
    assert chunk.data == b"started web\n"
    assert chunk.next_offset == len(chunk.data)
    assert log.read(chunk.next_offset).data == b""
    assert log.is_running() is True


def test_nodes_and_cluster_info(controller):
    nodes = controller.list_nodes()
    assert [n["id"] for n in nodes] == ["local"]
    assert sorted(nodes[0]["runtimes"]) == ["container", "microvm", "vm"]
    assert controller.get_node("local")["status"] == "ready"

    controller.create_instance(container("a"))
    controller.create_instance(container("b"))
    controller.converge("a")
    controller.converge("b")
    info = controller.cluster_info()
    assert info["nodes"] == 1
    assert info["instances"] == 2
    assert info["instances_by_type"] == {"container": {"running": 2}}
    assert info["allocated"]["memory_mib"] == 128

    assert controller.cordon_node("local")["status"] == "cordoned"
    assert controller.uncordon_node("local")["status"] == "ready"


def test_the_embedded_controller_registers_this_machine(tmp_path):
    # The real embedded assembly, with whatever runtimes this machine has.
    controller = zixiao.Controller.open(str(tmp_path / "real"))
    [node] = controller.list_nodes()
    assert node["capacity"]["cpus"] >= 1
    assert node["capacity"]["memory_mib"] > 0
    assert node["status"] == "ready"
    info = controller.cluster_info()
    assert info["nodes"] == 1 and info["instances"] == 0
