"""Networks from Python: create one, start a container on it, read its
address, and clean up. On a machine where Zixiao may not set up bridges
(no root, no nftables) creating the network says why."""

import tempfile

import zixiao

controller = zixiao.Controller.open(tempfile.mkdtemp(prefix="zixiao-"))

try:
    lan = controller.create_network({"name": "lan", "subnets": ["10.77.0.0/24"]})
except zixiao.Unsupported as e:
    raise SystemExit(f"cannot set up networks here: {e}")
print(f"network {lan['name']}: bridge {lan['bridge']}, gateway {lan['subnets'][0]['gateway']}")

try:
    controller.create_network({"name": "wide", "subnets": ["10.77.0.0/16"]})
except zixiao.InvalidArgument as e:
    print(f"rejected {e.field}: {e}")

try:
    web = controller.create_instance(
        {
            "name": "web",
            "spec": {"type": "container", "image": "busybox", "cpus": 1, "memory_mib": 64,
                     "networks": ["lan"]},
        }
    )
    for attachment in web["attachments"]:
        addresses = ", ".join(f"{a['address']}/{a['prefix_len']}" for a in attachment["addresses"])
        print(f"{web['name']} {attachment['interface']} on {attachment['network']}: "
              f"{addresses} (mac {attachment['mac']})")
    try:
        controller.delete_network("lan")
    except zixiao.FailedPrecondition as e:
        print(f"not yet: {e}")
    controller.delete_instance("web")  # waits until it is gone
except zixiao.Unsupported as e:  # no container runtime on this machine
    print(f"cannot run a container here: {e}")
finally:
    # The network is a real bridge on this machine: remove it.
    controller.delete_network("lan")
print("networks left:", [n["name"] for n in controller.list_networks()])
