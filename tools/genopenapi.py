"""Generate ep_server/http/openapi.json, the HTTP door's OpenAPI document,
from protos/ with grpcio-tools.

protoc compiles the protos with their comments (``--include_source_info``)
into a descriptor set, and :func:`ep_server.http.openapi.build_document`
turns it into the document. ``google.rpc.Status`` and its details come from
the ``.proto`` files that googleapis-common-protos installs beside its
Python modules (the ones the server packs its errors with).

The document is committed, so that the server needs no protoc to serve it;
``--check`` (run by ``make lint``) fails when it is stale. Never edit it by
hand: change the .proto (or ep_server/http/openapi.py) and run this again.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import tempfile
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.rpc import status_pb2
from grpc_tools import protoc

from ep_server.http.openapi import build_document, render

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT = ROOT / "ep_server" / "http" / "openapi.json"
#: Compiled beside ours for the error body's schemas.
ERROR_PROTOS = ("google/rpc/status.proto", "google/rpc/error_details.proto")


def compile_protos(proto_root: Path) -> list[descriptor_pb2.FileDescriptorProto]:
    """protos/ and the error protos, with every import and every comment."""
    ours = sorted(p.relative_to(proto_root).as_posix() for p in proto_root.rglob("ivoa/**/*.proto"))
    wkt = resources.files("grpc_tools") / "_proto"
    googleapis = Path(status_pb2.__file__).parent.parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "descriptors.pb"
        args = [
            "protoc",
            f"-I{proto_root}",
            f"-I{wkt}",
            f"-I{googleapis}",
            "--include_imports",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *ours,
            *ERROR_PROTOS,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        return list(descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file)


def generate(proto_root: Path = PROTO_ROOT) -> str:
    """The document's text, as committed."""
    return render(build_document(compile_protos(proto_root)))


def main(argv: list[str] | None = None, *, protos: Path = PROTO_ROOT, out: Path = OUT) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help=f"fail if {OUT.name} is stale")
    args = parser.parse_args(argv)
    text = generate(protos)
    if not args.check:
        out.write_text(text, encoding="utf-8")
        print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
        return 0
    current = out.read_text(encoding="utf-8") if out.exists() else ""
    if current == text:
        print(f"{out.name} is up to date with protos/")
        return 0
    diff = difflib.unified_diff(
        current.splitlines(), text.splitlines(), str(out), "generated", lineterm=""
    )
    print("\n".join(list(diff)[:40]), file=sys.stderr)
    print(f"stale {out.name}: run `python tools/genopenapi.py`", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
