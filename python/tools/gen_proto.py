#!/usr/bin/env python3
"""Generate the Python protobuf/gRPC modules from proto/snakepit_bridge.proto.

Uses grpc_tools.protoc (from the grpcio-tools package, no system protoc) and
rewrites the generated absolute import into a package-relative one, so the
modules live inside ``snakepit_bridge.generated``.

The modules are checked in (a wheel or sdist build needs no grpcio-tools):
after a change to the proto, run from anywhere
``.venv/bin/python python/tools/gen_proto.py``. ``cargo xtask tidy`` writes
them into a temporary directory (``--out DIR``) and fails when they differ
from the checked-in ones. The output depends on the grpcio-tools version,
pinned exactly in pyproject's ``dev`` extra.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PROTO_DIR = REPO / "proto"
PROTO = PROTO_DIR / "snakepit_bridge.proto"
OUT = HERE.parent / "snakepit_bridge" / "generated"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=OUT,
                   help="directory to write the modules into (default: %(default)s)")
    out = p.parse_args(argv).out
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError:
        print("gen_proto: grpcio-tools is not installed (pip install -e 'python[dev]')",
              file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    init = out / "__init__.py"
    if not init.exists():
        init.write_text('"""Generated protobuf/gRPC modules (tools/gen_proto.py)."""\n')
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        str(PROTO),
    ]
    rc = protoc.main(args)
    if rc != 0:
        print(f"gen_proto: protoc failed with code {rc}", file=sys.stderr)
        return 1
    grpc_file = out / "snakepit_bridge_pb2_grpc.py"
    text = grpc_file.read_text()
    fixed, n = re.subn(
        r"^import snakepit_bridge_pb2 as", "from . import snakepit_bridge_pb2 as", text,
        flags=re.M,
    )
    if n != 1:
        print("gen_proto: could not rewrite the import in the grpc module", file=sys.stderr)
        return 1
    grpc_file.write_text(fixed)
    print(f"gen_proto: wrote {out}/snakepit_bridge_pb2.py and snakepit_bridge_pb2_grpc.py",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
