"""gRPC plumbing shared by every EDDL daemon.

* ``chunks``  tensors to/from ``TensorChunk`` records with a declared size and CRC-32, and the
  reassembler that checks them (missing, duplicate, oversized or truncated chunks are refused;
  every count, size, name and shape a peer declares is bounded by ``ChunkLimits`` first).
* ``sparse``  top-P updates as index + value records (float32 or int8), decoded with bounds,
  duplicate and count checks; their measured wire size.
* ``tensors`` one array to/from a ``Tensor`` record (samples, small payloads).
* ``server``  ``grpc.aio`` server factory: bind, health checking, reflection, port read back.
* ``channel`` ``grpc.aio`` channel factory with EDDL's message limits.
* ``status``  typed exception -> gRPC status code mapping used by every servicer.
* ``bounds``  limits on every field of a request message (integers SQLite can store, id and
  text lengths, repeated-field sizes, finite floats).
* ``guard``   the interceptor ``start_server`` puts in front of every servicer: malformed or
  out-of-bounds requests -> INVALID_ARGUMENT, an unexpected exception -> INTERNAL with an
  incident id, refused client streams drained.
"""

from eddl.net.channel import DEFAULT_MAX_MESSAGE_BYTES, channel_options, open_channel
from eddl.net.chunks import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_LIMITS,
    ChunkError,
    ChunkLimits,
    ChunkTooLargeError,
    Reassembler,
    encode_tensors,
    params_nbytes,
)
from eddl.net.server import RunningServer, start_server, write_port_file
from eddl.net.status import REASON_KEY, abort_for, register_status, status_for
from eddl.net.tensors import TensorError, array_from_tensor, tensor_from_array

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "REASON_KEY",
    "ChunkError",
    "ChunkLimits",
    "ChunkTooLargeError",
    "Reassembler",
    "RunningServer",
    "TensorError",
    "abort_for",
    "array_from_tensor",
    "channel_options",
    "encode_tensors",
    "open_channel",
    "params_nbytes",
    "register_status",
    "start_server",
    "status_for",
    "tensor_from_array",
    "write_port_file",
]
