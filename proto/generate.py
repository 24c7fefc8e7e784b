#!/usr/bin/env python3
"""Regenerate eddl/proto/v1 from proto/eddl/v1/*.proto (protobuf, gRPC and .pyi stubs).

    python proto/generate.py          # regenerate in place
    python proto/generate.py --check  # exit 1 if the checked-in code differs (CI)

The .proto files use the package path ``eddl/v1``; the generated imports are rewritten to the
Python package ``eddl.proto.v1`` where the code is checked in. Versions of grpcio-tools and
mypy-protobuf are pinned in pyproject's ``dev`` extra so the output is reproducible.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "proto"
DEST = ROOT / "eddl" / "proto" / "v1"
_IMPORT = re.compile(r"^from eddl\.v1 import ", re.M)
_INIT = '"""Generated protobuf and gRPC code for eddl.v1 (see proto/generate.py)."""\n'


def generate(out: Path) -> None:
    from grpc_tools import protoc  # imported here: a dev-only dependency

    protos = sorted(str(p.relative_to(SRC)) for p in (SRC / "eddl" / "v1").glob("*.proto"))
    if not protos:
        raise SystemExit("no .proto files under proto/eddl/v1")
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{SRC}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    gen = out / "eddl" / "v1"
    for f in gen.iterdir():
        if f.suffix in {".py", ".pyi"}:
            f.write_text(_IMPORT.sub("from eddl.proto.v1 import ", f.read_text()))
    (gen / "__init__.py").write_text(_INIT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if checked-in code is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out)
        gen = out / "eddl" / "v1"
        if args.check:
            new = sorted(p.name for p in gen.iterdir() if p.is_file())
            old = sorted(p.name for p in DEST.iterdir() if p.is_file()) if DEST.exists() else []
            cmp = filecmp.cmpfiles(gen, DEST, new, shallow=False)
            stale = sorted(set(cmp[1]) | set(cmp[2]) | (set(old) - set(new)))
            if stale:
                print(f"generated protobuf code is stale: {stale}; run python proto/generate.py")
                return 1
            print(f"generated protobuf code is up to date ({len(new)} files)")
            return 0
        if DEST.exists():
            shutil.rmtree(DEST)
        shutil.copytree(gen, DEST)
        print(f"wrote {DEST.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
