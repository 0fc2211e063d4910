import tempfile

import zixiao

# The embedded deployment (the CLI's), over its own state directory;
# zixiao.connect(endpoint) gives the same Controller over a server.
controller = zixiao.Controller.open(tempfile.mkdtemp(prefix="zixiao-"))

for node in controller.list_nodes():
    print(f"node {node['id']}: {node['capacity']['cpus']} cpus, runtimes {node['runtimes']}")

request = zixiao.CreateInstance(
    name="web",
    spec=zixiao.InstanceSpec(type="container", image="busybox", cpus=1, memory_mib=64,
                             command=["echo", "hi"]),
)
try:
    web = controller.create_instance(request)  # waits until it settles, GIL released
    print(f"{web['name']} is {web['status']} on {web['node']}")
except zixiao.Unsupported as e:           # no container runtime on this machine
    print(f"cannot run it here: {e}")

try:
    controller.create_instance({"name": "tiny", "spec": {"type": "container", "cpus": 1, "memory_mib": 1}})
except zixiao.InvalidArgument as e:
    print(f"rejected {e.field}: {e}")

print(controller.cluster_info()["instances"], "instance(s)")
