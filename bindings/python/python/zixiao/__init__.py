"""Zixiao: run and orchestrate VMs, containers and microVMs from Python.

The same API as the ``zixiao`` CLI, over the embedded deployment in this
process or a server::

    import zixiao

    controller = zixiao.Controller.open("/tmp/zixiao-demo")   # or zixiao.connect(endpoint)
    print(controller.cluster_info()["nodes"])

``Controller`` blocks (releasing the GIL while it waits); ``AsyncController``
has the same methods as awaitables. Requests are dicts or the dataclasses
``CreateInstance`` and ``InstanceSpec``; a network request is a dict such as
``{"name": "lan", "subnets": ["10.10.0.0/24"]}``. Results are dicts shaped
like the CLI's JSON output (see ``zixiao.types``). Calls that change an
instance wait until it has settled unless given ``wait=False``. Errors are
``ZixiaoError`` subclasses, one per error kind, with the cause chained.
"""

from ._native import (
    AlreadyExists,
    AsyncConsole,
    AsyncController,
    Conflict,
    Console,
    Controller,
    FailedPrecondition,
    InstanceWatch,
    Internal,
    InvalidArgument,
    LogChunk,
    LogStream,
    NodeWatch,
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
    "AsyncConsole",
    "AsyncController",
    "Conflict",
    "Console",
    "Controller",
    "CreateInstance",
    "FailedPrecondition",
    "InstanceSpec",
    "InstanceWatch",
    "Internal",
    "InvalidArgument",
    "LogChunk",
    "LogStream",
    "NodeWatch",
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
