"""Images, a console and a followed log on containerd.

    python containers.py IMAGE.tar [STATE_DIR]

IMAGE.tar is an OCI layout or docker-archive tar holding busybox
(scripts/images/busybox-oci.sh builds one). containerd is found as the CLI
finds it (ZIXIAO_CONTAINERD_SOCKET, else /run/containerd/containerd.sock).
"""

import sys
import tempfile

import zixiao

archive = sys.argv[1]
controller = zixiao.Controller.open(sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="zx-"))


def show(done, total):
    print(f"\rimporting {done * 100 // max(total, 1)}%", end="", flush=True)


images = controller.import_images(archive, progress=show)
print("\nimported", [i["name"] for i in images])

# A container with a stdin: what the console types, `cat` writes back.
controller.create_instance(
    {
        "name": "cat",
        "labels": {"zixiao.io/stdin": "true"},
        "spec": {"type": "container", "image": "busybox", "cpus": 1, "memory_mib": 32, "command": ["cat"]},
    }
)
with controller.attach_console("cat") as console:
    console.write(b"hello from python\n")
    print("console:", console.read().decode().strip())
stats = controller.instance_stats("cat")
print(f"cat uses {stats['memory_bytes']} bytes of {stats['memory_limit_bytes']}")
print("paused:", controller.pause_instance("cat")["status"], "->", controller.resume_instance("cat")["status"])

# A log as it grows: the loop ends when the workload does.
controller.create_instance(
    {
        "name": "count",
        "spec": {
            "type": "container",
            "image": "busybox",
            "cpus": 1,
            "memory_mib": 32,
            "command": ["sh", "-c", "for i in 1 2 3; do echo $i; sleep 1; done"],
        },
    }
)
for piece in controller.follow_log("count"):
    print("count says", piece.decode().strip())

for name in ("cat", "count"):
    controller.delete_instance(name)
for image in images:
    controller.remove_image(image["name"])
print("images left:", [i["name"] for i in controller.list_images()])
