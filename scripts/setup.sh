#!/usr/bin/env bash
# Create .venv and install diffuseg into it.
# torch: an importable torch that satisfies the project is kept (your CUDA build on a GPU machine);
# otherwise torch==2.13.0 is installed first, from the index pip is set up with, so that resolving the other
# dependencies never picks a torch of its own. On a CPU-only machine install the CPU build into .venv first
# (pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu): it is then kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    .venv/bin/pip install -q "torch==${DIFFUSEG_TORCH_VERSION:-2.13.0}"
fi
.venv/bin/pip install -q -e ".[dev]"
