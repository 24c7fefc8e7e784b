"""Generated wire code. ``eddl.proto.v1`` holds the *_pb2 / *_pb2_grpc modules and .pyi stubs,
regenerated from ``proto/eddl/v1/*.proto`` by ``python proto/generate.py`` (never edit by hand).
"""
