"""The grpc.reflection.v1 schema: v1alpha's, under the v1 package."""

from __future__ import annotations

from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2

from ep_server import reflection_v1


def test_v1_has_v1alpha_s_messages_and_service_under_its_own_package() -> None:
    pool = descriptor_pool.DescriptorPool()
    reflection_v1.register(pool)
    reflection_v1.register(pool)  # once only
    service = pool.FindServiceByName("grpc.reflection.v1.ServerReflection")
    [method] = service.methods
    assert method.input_type.full_name == "grpc.reflection.v1.ServerReflectionRequest"
    assert method.output_type.full_name == "grpc.reflection.v1.ServerReflectionResponse"
    alpha = reflection_pb2.DESCRIPTOR
    v1 = pool.FindFileByName(reflection_v1.FILE_NAME)
    assert list(v1.message_types_by_name) == list(alpha.message_types_by_name)
    for name, message in alpha.message_types_by_name.items():
        fields = [(f.name, f.number, f.type) for f in message.fields]
        assert [(f.name, f.number, f.type) for f in v1.message_types_by_name[name].fields] == fields
