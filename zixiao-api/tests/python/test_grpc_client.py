"""A client of Zixiao's gRPC protocol written without any of our Rust code.

Against a real `zixiao server --embedded` over the test containerd, over
TLS with the CA and admin token the server made (and refusing a call that
brings no token), it
generates Python stubs from the proto files with grpcio-tools, lists the
nodes, creates a busybox container, reads typed fields (the status enum,
the node, spec.memory_mib), checks that an invalid argument names its field
in the standard status details (google.rpc.ErrorInfo and BadRequest), and
deletes the container. Separately it lists the services through server
reflection v1alpha with grpcio-reflection alone, without the proto files.

Run by run.sh, which makes the virtual environment and knows the binary:
    ZIXIAO_BIN=target/debug/zixiao python test_grpc_client.py
"""

import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

PROTO_DIR = Path(__file__).resolve().parents[2] / "proto"
DEADLINE_S = 60


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def generate_stubs(out):
    """Compiles the protocol's .proto files into `out` with grpcio-tools."""
    import grpc_tools
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    code = protoc.main(
        ["protoc", f"-I{PROTO_DIR}", f"-I{well_known}", f"--python_out={out}",
         f"--grpc_python_out={out}", *protos]
    )
    if code != 0:
        raise RuntimeError(f"protoc failed with {code}")
    sys.path.insert(0, str(out))


class Server:
    """`zixiao server --embedded` on a state dir holding the busybox image."""

    def __init__(self, binary, socket_path, image, workdir):
        self.state = Path(workdir) / "state"
        base = [binary, "--state-dir", str(self.state), "--containerd-socket", socket_path]
        # The server holds the state dir: the image goes in before it starts.
        subprocess.run([*base, "image", "import", image], check=True, capture_output=True)
        self.address = f"127.0.0.1:{free_port()}"
        self.log = open(Path(workdir) / "server.log", "w+")
        self.process = subprocess.Popen(
            [*base, "server", "--embedded", "--listen", self.address],
            stdout=self.log, stderr=subprocess.STDOUT,
        )

    def credentials(self):
        """The CA and the admin token the server wrote under its state dir
        when it made its PKI (pki/ca.pem, pki/admin.yaml)."""
        admin = self.state / "pki" / "admin.yaml"
        deadline = time.monotonic() + DEADLINE_S
        while not admin.exists():
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"the server made no PKI:\n{self.log.read()}")
            time.sleep(0.05)
        ca = (self.state / "pki" / "ca.pem").read_bytes()
        token = next(
            line.split(":", 1)[1].strip().strip("'\"")
            for line in admin.read_text().splitlines()
            if line.strip().startswith("token:")
        )
        return ca, token

    def channel(self, token=True):
        """A TLS channel trusting the cluster CA, with the admin's bearer token."""
        ca, admin_token = self.credentials()
        credentials = grpc.ssl_channel_credentials(root_certificates=ca)
        if token:
            credentials = grpc.composite_channel_credentials(
                credentials, grpc.access_token_call_credentials(admin_token)
            )
        channel = grpc.secure_channel(self.address, credentials)
        try:
            grpc.channel_ready_future(channel).result(timeout=DEADLINE_S)
        except grpc.FutureTimeoutError:
            self.log.seek(0)
            raise RuntimeError(f"the server did not answer:\n{self.log.read()}")
        return channel

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


class GrpcClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.TemporaryDirectory(prefix="zixiao-py-")
        generate_stubs(Path(cls.workdir.name) / "stubs")
        cls.server = Server(
            os.environ["ZIXIAO_BIN"],
            os.environ["ZIXIAO_TEST_CONTAINERD_SOCKET"],
            os.environ["ZIXIAO_TEST_BUSYBOX_OCI"],
            cls.workdir.name,
        )
        cls.channel = cls.server.channel()

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.server.stop()
        cls.workdir.cleanup()

    def test_a_call_without_a_token_is_unauthenticated(self):
        from zixiao.v1 import api_pb2_grpc
        from google.protobuf import empty_pb2

        anonymous = self.server.channel(token=False)
        try:
            with self.assertRaises(grpc.RpcError) as raised:
                api_pb2_grpc.NodeServiceStub(anonymous).ListNodes(
                    empty_pb2.Empty(), timeout=DEADLINE_S
                )
            self.assertEqual(raised.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
            self.assertIn("no credentials", raised.exception.details())
        finally:
            anonymous.close()

    def test_services_are_listed_through_reflection_v1alpha(self):
        from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
            ProtoReflectionDescriptorDatabase,
        )

        database = ProtoReflectionDescriptorDatabase(self.channel)
        services = set(database.get_services())
        for service in ("zixiao.v1.InstanceService", "zixiao.v1.NodeService",
                        "zixiao.v1.ClusterService", "grpc.health.v1.Health"):
            self.assertIn(service, services)
        # The messages come along: a client needs no file of ours.
        from google.protobuf.descriptor_pool import DescriptorPool

        pool = DescriptorPool(database)
        method = pool.FindMethodByName("zixiao.v1.InstanceService.CreateInstance")
        self.assertEqual(method.output_type.full_name, "zixiao.v1.Instance")
        status = pool.FindEnumTypeByName("zixiao.v1.InstanceStatus")
        self.assertIn("INSTANCE_STATUS_RUNNING", status.values_by_name)

    def test_a_container_is_created_read_refused_and_deleted(self):
        from zixiao.v1 import api_pb2, api_pb2_grpc, types_pb2
        from google.protobuf import empty_pb2

        nodes = api_pb2_grpc.NodeServiceStub(self.channel)
        instances = api_pb2_grpc.InstanceServiceStub(self.channel)

        deadline = time.monotonic() + DEADLINE_S
        while True:
            listed = nodes.ListNodes(empty_pb2.Empty()).nodes
            if listed and listed[0].status == types_pb2.NODE_STATUS_READY:
                break
            self.assertLess(time.monotonic(), deadline, f"no ready node: {listed}")
            time.sleep(0.2)
        node = listed[0]
        self.assertIn(types_pb2.INSTANCE_TYPE_CONTAINER, node.runtimes)
        self.assertGreater(node.capacity.memory_mib, 0)

        spec = types_pb2.InstanceSpec(
            type=types_pb2.INSTANCE_TYPE_CONTAINER,
            image="busybox",
            cpu_millis=250,  # a quarter of a core
            memory_mib=64,
            command=["sleep", "60"],
        )
        created = instances.CreateInstance(
            api_pb2.CreateInstanceRequest(
                instance=types_pb2.CreateInstance(name="py-web", spec=spec), wait=True
            ),
            timeout=DEADLINE_S,
        )
        try:
            self.assertEqual(created.status, types_pb2.INSTANCE_STATUS_RUNNING, created)
            self.assertEqual(created.node, node.id)
            self.assertEqual(created.spec.memory_mib, 64)
            self.assertEqual(created.spec.type, types_pb2.INSTANCE_TYPE_CONTAINER)
            self.assertEqual(created.desired, types_pb2.DESIRED_STATE_RUNNING)
            self.assertTrue(created.HasField("created_at"))
            got = instances.GetInstance(api_pb2.InstanceRef(instance="py-web"))
            self.assertEqual(got.id, created.id)

            # A live resize and a label, then a refused size naming its field.
            updated = instances.UpdateInstance(
                api_pb2.UpdateInstanceRequest(
                    instance="py-web",
                    update=types_pb2.InstanceUpdate(
                        memory_mib=128, set_labels={"tier": "front"}
                    ),
                ),
                timeout=DEADLINE_S,
            )
            self.assertEqual(updated.spec.memory_mib, 128)
            self.assertEqual(updated.spec.cpu_millis, 250, "unset fields stay as they were")
            self.assertEqual(updated.labels["tier"], "front")
            self.assertEqual(updated.status, types_pb2.INSTANCE_STATUS_RUNNING)
            with self.assertRaises(grpc.RpcError) as refused:
                instances.UpdateInstance(
                    api_pb2.UpdateInstanceRequest(
                        instance="py-web", update=types_pb2.InstanceUpdate(cpu_millis=0)
                    )
                )
            self.assertEqual(refused.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn(
                "invalid cpus: must be more than 0 (a container may ask for as little as 1m)",
                refused.exception.details(),
            )

            tiny = types_pb2.InstanceSpec()
            tiny.CopyFrom(spec)
            tiny.memory_mib = 1
            with self.assertRaises(grpc.RpcError) as refused:
                instances.CreateInstance(
                    api_pb2.CreateInstanceRequest(
                        instance=types_pb2.CreateInstance(name="py-tiny", spec=tiny)
                    )
                )
            error = refused.exception
            self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT)
            status = rpc_status.from_call(error)
            self.assertIsNotNone(status, "the status carries details")
            info = error_details_pb2.ErrorInfo()
            bad_request = error_details_pb2.BadRequest()
            kinds = set()
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    detail.Unpack(info)
                    kinds.add("info")
                elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    detail.Unpack(bad_request)
                    kinds.add("bad_request")
            self.assertEqual(kinds, {"info", "bad_request"})
            self.assertEqual(info.reason, "INVALID_ARGUMENT")
            self.assertEqual(info.domain, "zixiao.io")
            self.assertEqual(info.metadata["field"], "spec.memory_mib")
            self.assertEqual(bad_request.field_violations[0].field, "spec.memory_mib")

            with self.assertRaises(grpc.RpcError) as missing:
                instances.GetInstance(api_pb2.InstanceRef(instance="no-such-instance"))
            self.assertEqual(missing.exception.code(), grpc.StatusCode.NOT_FOUND)
        finally:
            deleted = instances.DeleteInstance(
                api_pb2.InstanceAction(instance="py-web", wait=True), timeout=DEADLINE_S
            )
        self.assertFalse(deleted.HasField("instance"), "gone once the delete answered")
        left = instances.ListInstances(api_pb2.ListInstancesRequest()).instances
        self.assertEqual([i.name for i in left], [])


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    failed = len(result.failures) + len(result.errors)
    print(f"{max(result.testsRun - failed, 0)} passed, {failed} failed")
    sys.exit(1 if failed or not result.wasSuccessful() else 0)
