"""Snapshots of a microVM: take one, copy it out, start a second microVM
from the copy, go back to it, delete it.

    python snapshots.py KERNEL [STATE_DIR]

KERNEL is a kernel the vmm backend boots (zixiao-vmm's test guest, for one);
the zixiao-vmm monitor is found next to the program, on $PATH or at
ZIXIAO_VMM_BIN.
"""

import sys
import tempfile
import time

import zixiao

kernel = sys.argv[1]
state = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="zx-")
controller = zixiao.Controller.open(state)

spec = {"type": "microvm", "kernel": kernel, "cmdline": "console=ttyS0 zx.mode=loop",
        "cpus": 1, "memory_mib": 64, "backend": "vmm"}
vm = controller.create_instance({"name": "vm1", "spec": spec})
print("vm1 is", vm["status"])
time.sleep(0.5)  # let the guest get going: a snapshot of a busy guest is the point

taken = controller.create_snapshot("vm1", "first")
print("took", taken["name"], "with memory" if taken["includes_memory"] else "disks only")
copy = f"{state}/vm1-first"
controller.export_snapshot("vm1", "first", copy)
vm2 = controller.restore_instance("vm2", copy)
print("vm2 resumed from the copy:", vm2["status"])

controller.revert_snapshot("vm1", "first")
print("snapshots of vm1:", [s["name"] for s in controller.list_snapshots("vm1")])
controller.delete_snapshot("vm1", "first")
for name in ("vm1", "vm2"):
    controller.delete_instance(name)
