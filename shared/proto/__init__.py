"""The hub's gRPC protocol: ``radshare_hub.proto``, its generated code, and ``serde``.

Regenerate with ``scripts/gen_proto.sh``. Only ``serde`` converts between
protobuf messages and the domain records of ``shared.artifacts.records``.
"""

__all__ = ["radshare_hub_pb2", "radshare_hub_pb2_grpc", "serde"]
