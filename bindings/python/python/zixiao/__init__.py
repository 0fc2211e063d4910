"""Zixiao: run and orchestrate VMs, containers and microVMs from Python.

The same controller as the ``zixiao`` CLI, in-process::

    import zixiao

    controller = zixiao.Controller.open("/tmp/zixiao-demo")
    print(controller.cluster_info()["nodes"])

``Controller`` blocks (releasing the GIL while it waits); ``AsyncController``
has the same methods as awaitables. Requests are dicts or the dataclasses
``CreateInstance`` and ``InstanceSpec``; a network request is a dict such as
``{"name": "lan", "subnets": ["10.10.0.0/24"]}``. Results are dicts shaped
like the CLI's JSON output (see ``zixiao.types``). Errors are ``ZixiaoError``
subclasses, one per error kind, with the cause chained.
"""

from ._native import (
    AlreadyExists,
    AsyncController,
    AsyncLogReader,
    Conflict,
    Controller,
    FailedPrecondition,
    InstanceWatch,
    Internal,
    InvalidArgument,
    LogChunk,
    LogReader,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unsupported,
    ZixiaoError,
    connect,
    connect_async,
)
from .types import CreateInstance, InstanceSpec

__all__ = [
    "AlreadyExists",
    "AsyncController",
    "AsyncLogReader",
    "Conflict",
    "Controller",
    "CreateInstance",
    "FailedPrecondition",
    "InstanceSpec",
    "InstanceWatch",
    "Internal",
    "InvalidArgument",
    "LogChunk",
    "LogReader",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unsupported",
    "ZixiaoError",
    "connect",
    "connect_async",
]
