"""Generates jwo_cloud/jwo_uplink_v1_pb2.py from cloud/proto/jwo_uplink_v1.proto.

The generated module is committed, so running jwo needs only the `protobuf` runtime;
generating needs `grpcio-tools` (a development requirement). test/test_cloud_proto.py
fails when the committed module is not what this produces from the .proto.

    PYTHONPATH=cloud .venv/bin/python -m jwo_cloud.protogen
"""
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
PROTO_DIR = PACKAGE.parent / 'proto'
PROTO = 'jwo_uplink_v1.proto'
MODULE = 'jwo_uplink_v1_pb2.py'


def generate(out_dir: Path) -> Path:
    """Runs protoc (from grpcio-tools) and returns the generated module's path."""
    subprocess.run([sys.executable, '-m', 'grpc_tools.protoc', f'-I{PROTO_DIR}',
                    f'--python_out={out_dir}', str(PROTO_DIR / PROTO)], check=True)
    return Path(out_dir) / MODULE


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        generated = generate(Path(tmp))
        (PACKAGE / MODULE).write_bytes(generated.read_bytes())
    print(f'wrote {PACKAGE / MODULE}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
