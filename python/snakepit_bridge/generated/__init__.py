"""Generated protobuf/gRPC modules (tools/gen_proto.py)."""
