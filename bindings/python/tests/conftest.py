"""Fixtures: controllers over a fresh state directory whose node runs every
instance type on zixiao-testing's fake runtime (the binding must be built
with the `testing` cargo feature, as scripts/bindings.sh does)."""

import pytest

import zixiao


def _require_testing_build():
    if not hasattr(zixiao.Controller, "_open_with_fake_runtimes"):
        pytest.fail(
            "zixiao was built without the `testing` feature; "
            "build it with `maturin develop --features testing` (see bindings/README.md)"
        )


@pytest.fixture
def controller(tmp_path):
    _require_testing_build()
    return zixiao.Controller._open_with_fake_runtimes(str(tmp_path / "state"))


@pytest.fixture
def state_dir(tmp_path):
    _require_testing_build()
    return str(tmp_path / "state")


def container(name, **spec):
    """A request for a small container named `name`."""
    fields = {"type": "container", "image": "busybox", "cpus": 1, "memory_mib": 64, **spec}
    return zixiao.CreateInstance(name=name, spec=zixiao.InstanceSpec(**fields))
