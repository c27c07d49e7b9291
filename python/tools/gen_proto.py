#!/usr/bin/env python3
"""Generate the Python protobuf/gRPC modules from proto/snakepit_bridge.proto.

Uses grpc_tools.protoc (from the grpcio-tools package, no system protoc) and
rewrites the generated absolute import into a package-relative one, so the
modules live inside ``snakepit_bridge.generated``.

Run from anywhere: ``.venv/bin/python python/tools/gen_proto.py``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PROTO_DIR = REPO / "proto"
PROTO = PROTO_DIR / "snakepit_bridge.proto"
OUT = HERE.parent / "snakepit_bridge" / "generated"


def main() -> int:
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError:
        print("gen_proto: grpcio-tools is not installed (pip install -e 'python[dev]')",
              file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    init = OUT / "__init__.py"
    if not init.exists():
        init.write_text('"""Generated protobuf/gRPC modules (tools/gen_proto.py)."""\n')
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--python_out={OUT}",
        f"--grpc_python_out={OUT}",
        str(PROTO),
    ]
    rc = protoc.main(args)
    if rc != 0:
        print(f"gen_proto: protoc failed with code {rc}", file=sys.stderr)
        return 1
    grpc_file = OUT / "snakepit_bridge_pb2_grpc.py"
    text = grpc_file.read_text()
    fixed, n = re.subn(
        r"^import snakepit_bridge_pb2 as", "from . import snakepit_bridge_pb2 as", text,
        flags=re.M,
    )
    if n != 1:
        print("gen_proto: could not rewrite the import in the grpc module", file=sys.stderr)
        return 1
    grpc_file.write_text(fixed)
    print(f"gen_proto: wrote {OUT}/snakepit_bridge_pb2.py and snakepit_bridge_pb2_grpc.py",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
