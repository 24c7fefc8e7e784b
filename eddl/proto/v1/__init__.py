"""Generated protobuf and gRPC code for eddl.v1 (see proto/generate.py)."""
