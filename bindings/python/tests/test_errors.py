"""Bad input raises the exception of its error kind, naming the field."""

import pytest

import zixiao
from conftest import container

KINDS = {
    zixiao.NotFound: "not_found",
    zixiao.AlreadyExists: "already_exists",
    zixiao.InvalidArgument: "invalid_argument",
    zixiao.FailedPrecondition: "failed_precondition",
    zixiao.Conflict: "conflict",
    zixiao.Unavailable: "unavailable",
    zixiao.Unsupported: "unsupported",
    zixiao.ResourceExhausted: "resource_exhausted",
    zixiao.PermissionDenied: "permission_denied",
    zixiao.Unauthenticated: "unauthenticated",
    zixiao.Internal: "internal",
}


def test_every_kind_is_a_zixiao_error():
    for cls in KINDS:
        assert issubclass(cls, zixiao.ZixiaoError)
        assert cls.__module__ == "zixiao"


def test_invalid_memory_names_the_field(controller):
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.create_instance(container("web", memory_mib=1))
    assert "spec.memory_mib" in str(raised.value)
    assert raised.value.field == "spec.memory_mib"
    assert raised.value.kind == "invalid_argument"
    assert controller.list_instances() == []


def test_invalid_name_names_the_field(controller):
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.create_instance(container("Not A DNS Label"))
    assert raised.value.field == "name"


def test_a_wrongly_typed_field_is_named(controller):
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.create_instance(
            {"name": "web", "spec": {"type": "container", "cpus": "two", "memory_mib": 64}}
        )
    assert raised.value.field == "spec.cpus"
    assert "spec.cpus" in str(raised.value)


def test_an_unknown_instance_type_is_named(controller):
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.create_instance({"name": "web", "spec": {"type": "jail", "cpus": 1, "memory_mib": 64}})
    assert raised.value.field == "spec.type"


def test_a_missing_field_is_named(controller):
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.create_instance({"name": "web", "spec": {"type": "container", "cpus": 1}})
    assert "memory_mib" in str(raised.value)


def test_a_bad_filter_is_named(controller):
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.list_instances({"status": "sleepy"})
    assert raised.value.field == "filter.status"


def test_not_found_and_already_exists(controller):
    with pytest.raises(zixiao.NotFound) as raised:
        controller.get_instance("ghost")
    assert "ghost" in str(raised.value)
    assert raised.value.kind == "not_found"
    with pytest.raises(zixiao.NotFound):
        controller.get_node("ghost")

    controller.create_instance(container("web"))
    with pytest.raises(zixiao.AlreadyExists):
        controller.create_instance(container("web"))


def test_failed_precondition(controller):
    controller.create_instance(container("web"))
    controller.stop_instance("web")
    with pytest.raises(zixiao.FailedPrecondition):
        controller.pause_instance("web")


def test_a_bad_instance_type_argument_is_named(controller):
    with pytest.raises(zixiao.InvalidArgument) as raised:
        controller.list_images(instance_type="jail")
    assert raised.value.field == "instance_type"


def test_what_the_fake_runtime_cannot_do_is_unsupported_with_the_reason(controller):
    controller.create_instance(container("web"))
    for call in (
        lambda: controller.create_snapshot("web", "s1"),
        lambda: controller.list_snapshots("web"),
        lambda: controller.attach_console("web"),
        lambda: controller.list_images(),
    ):
        with pytest.raises(zixiao.Unsupported) as raised:
            call()
        assert raised.value.kind == "unsupported"
        assert str(raised.value)


def test_a_server_nobody_answers_for_is_unavailable_naming_it():
    # Connecting is lazy; the first call says who could not be reached.
    controller = zixiao.connect("http://127.0.0.1:7400")
    with pytest.raises(zixiao.Unavailable) as raised:
        controller.list_nodes()
    assert raised.value.kind == "unavailable"
    assert "127.0.0.1:7400" in str(raised.value)


def test_one_process_per_state_directory(state_dir):
    first = zixiao.Controller._open_with_fake_runtimes(state_dir)
    with pytest.raises(zixiao.ZixiaoError) as raised:
        zixiao.Controller._open_with_fake_runtimes(state_dir)
    assert raised.value.kind == "unavailable"
    assert first.list_nodes()


def test_the_exception_classes_are_exported_and_typed():
    for cls, kind in KINDS.items():
        assert getattr(zixiao, cls.__name__) is cls
        assert cls.__name__ in zixiao.__all__, kind
