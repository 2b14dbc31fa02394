"""The ``grpc.reflection.v1`` schema, for tools that list it.

grpcio-reflection ships only ``grpc.reflection.v1alpha``. Its ``v1`` is the
same protocol under another package: the same messages, field by field, and
one ``ServerReflection`` service. The server answers under both names with
one servicer (wire-identical); but a tool that lists every service and then
asks for each one's schema (``buf curl --list-methods``) also needs ``v1``'s
file in the descriptor pool, or it fails with "failed to find service named
grpc.reflection.v1.ServerReflection". :func:`register` adds that file, made
from ``v1alpha``'s with the package renamed.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2

__all__ = ["FILE_NAME", "PACKAGE", "register"]

PACKAGE = "grpc.reflection.v1"
FILE_NAME = "grpc/reflection/v1/reflection.proto"
_ALPHA = reflection_pb2.DESCRIPTOR.package


def register(pool: descriptor_pool.DescriptorPool | None = None) -> None:
    """Add ``grpc/reflection/v1/reflection.proto`` to ``pool`` (default: the
    default pool, which reflection answers from), once."""
    pool = pool or descriptor_pool.Default()
    try:
        pool.FindFileByName(FILE_NAME)
        return
    except KeyError:
        pass
    pool.Add(_v1_file())


def _v1_file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name, proto.package = FILE_NAME, PACKAGE
    proto.ClearField("options")  # v1alpha's java/objc package options
    old, new = f".{_ALPHA}.", f".{PACKAGE}."
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):  # messages only: setting "" would mark it set
                field.type_name = field.type_name.replace(old, new)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    return proto
