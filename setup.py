"""Build hook: the gRPC modules of ``aip_grpc`` are generated from ``protos/`` at build time.

Every ``pip install`` (a wheel, ``pip install .`` or ``pip install -e .``) runs
``build_py``; this one runs grpc_tools' protoc first, so an installed package never lacks
``aip_grpc/*_pb2*.py``. ``make protos`` runs the same generator from the command line.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PROTO_ROOT = ROOT / "protos"


def generate_protos(out_dir: Path) -> None:
    """Write the ``*_pb2.py``, ``*_pb2_grpc.py`` and ``*_pb2.pyi`` of every
    ``protos/aip_grpc/*.proto`` under ``out_dir`` (as ``out_dir/aip_grpc/...``).

    :raises RuntimeError: no .proto found, or protoc failed (its messages are on stderr).
    """
    from importlib.resources import files

    from grpc_tools import protoc

    sources = sorted((PROTO_ROOT / "aip_grpc").glob("*.proto"))
    if not sources:
        raise RuntimeError(f"no .proto files under {PROTO_ROOT / 'aip_grpc'}")
    out_dir.mkdir(parents=True, exist_ok=True)
    # grpc_tools ships the well-known types (google/protobuf/timestamp.proto, ...).
    well_known = files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--pyi_out={out_dir}",
        *(str(source) for source in sources),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("grpc_tools.protoc failed on " + ", ".join(s.name for s in sources))


class BuildPyWithProtos(build_py):
    """``build_py`` that generates the gRPC modules first.

    Editable installs import from the source tree, so the modules are written there;
    other builds write them into the build directory only and leave the checkout as it
    was.
    """

    def run(self) -> None:
        if self.editable_mode:
            generate_protos(ROOT)
            super().run()
        else:
            super().run()
            generate_protos(Path(self.build_lib))


setup(cmdclass={"build_py": BuildPyWithProtos})
