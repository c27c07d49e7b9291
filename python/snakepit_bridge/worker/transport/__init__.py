"""How calls and telemetry reach the dispatcher: ``aio`` (grpc.aio, the
host's RPCs), ``compat`` (the compatibility RPCs), ``native`` (the native call
socket), ``call_state`` (what the call transports share)."""
