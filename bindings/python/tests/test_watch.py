"""Watching instance changes, and that blocking calls release the GIL."""

import faulthandler
import threading

from conftest import container


def events_until_deleted(watch, name):
    seen = []
    for event in watch:
        seen.append(event)
        if event["kind"] == "deleted" and event["instance"]["name"] == name:
            return seen
    raise AssertionError("the watch ended before the deletion")


def test_watch_sees_the_whole_lifecycle(controller):
    watch = controller.watch_instances()  # from now
    controller.create_instance(container("web"))
    controller.delete_instance("web")

    events = events_until_deleted(watch, "web")
    assert events[0]["kind"] == "added"
    assert events[0]["instance"]["status"] == "scheduled"  # placed as it is created
    statuses = [e["instance"]["status"] for e in events if e["kind"] == "modified"]
    assert "running" in statuses
    revisions = [e["revision"] for e in events]
    assert revisions == sorted(revisions)

    # A watch from a revision replays what came after it.
    replay = events_until_deleted(controller.watch_instances(after=events[0]["revision"]), "web")
    assert [e["revision"] for e in replay] == revisions[1:]


def test_a_blocked_watch_releases_the_gil(controller):
    # If next() held the GIL while it waits, this thread could never create
    # the instance the watcher waits for, and the test would hang: the
    # watchdog turns a hang into a failure with every thread's traceback.
    faulthandler.dump_traceback_later(120, exit=True)
    try:
        watch = controller.watch_instances()
        got = []
        waiting = threading.Event()

        def watcher():
            waiting.set()
            got.append(next(watch))

        thread = threading.Thread(target=watcher)
        thread.start()
        waiting.wait()
        controller.create_instance(container("web"))
        thread.join()
        assert got[0]["kind"] == "added"
        assert got[0]["instance"]["name"] == "web"
    finally:
        faulthandler.cancel_dump_traceback_later()
