"""Node maintenance, a watch of node changes and a backup of the state.

    python nodes.py [STATE_DIR]
"""

import sys
import tempfile
import threading

import zixiao

state = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="zx-")
controller = zixiao.Controller.open(state)
[node] = controller.list_nodes()

watch = controller.watch_nodes()  # from now


def print_changes():
    for event in watch:
        print(f"  node {event['id']} {event['kind']}: {event['node']['status']}")


threading.Thread(target=print_changes, daemon=True).start()

report = controller.set_maintenance(node["id"], True)
print(f"maintenance on: stopped {report['stopped']}, moved {report['moved']}")
controller.set_maintenance(node["id"], False)

summary = controller.backup_state(f"{state}/backup.redb")
print(f"backed up {summary['keys']} keys at revision {summary['revision']}")
