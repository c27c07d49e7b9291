"""Hand-written protobuf encoding of what the worker sends most: telemetry
batches (``batch.BatchEncoder``) and call replies (``calls``), on the
primitives of ``fields``. The output is valid serialized protobuf; tests
check it against the generated classes.
"""

from .batch import BatchEncoder
from .calls import (
    CALL_END,
    CALL_START,
    TOOL_END,
    TOOL_START,
    call_telemetry,
    call_telemetry_field,
    reply_batch,
    reply_error,
    reply_result,
)
from .fields import EncodeError, encode_value, string_field, varint

__all__ = [
    "BatchEncoder", "CALL_END", "CALL_START", "EncodeError", "TOOL_END", "TOOL_START",
    "call_telemetry", "call_telemetry_field", "encode_value", "reply_batch", "reply_error",
    "reply_result", "string_field", "varint",
]
