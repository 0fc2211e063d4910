"""Backing the embedded deployment's state up while it is in use."""

import os

import pytest

import zixiao
from conftest import container


def test_a_backup_is_written_checked_and_counted(controller, tmp_path):
    controller.create_instance(container("web"))
    backup = tmp_path / "backup.redb"
    summary = controller.backup_state(str(backup))
    assert backup.is_file() and os.path.getsize(backup) > 0
    assert summary["keys"] >= 2  # the node and the instance
    assert summary["revision"] >= 1
    assert set(summary) == {"revision", "keys", "history", "leases"}


def test_a_backup_never_overwrites_a_file(controller, tmp_path):
    existing = tmp_path / "existing.redb"
    existing.write_bytes(b"keep me")
    with pytest.raises(zixiao.InvalidArgument):
        controller.backup_state(str(existing))
    assert existing.read_bytes() == b"keep me"
