#!/usr/bin/env bash
# Regenerate the hub's gRPC code from shared/proto/radshare_hub.proto (commit the output).
# Usage: scripts/gen_proto.sh    (PYTHON=... to pick an interpreter with grpcio-tools)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -m grpc_tools.protoc \
  --proto_path=. \
  --python_out=. \
  --pyi_out=. \
  --grpc_python_out=. \
  shared/proto/radshare_hub.proto
echo "generated: $(ls shared/proto/radshare_hub_pb2*)"
