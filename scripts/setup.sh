#!/usr/bin/env bash
# Create .venv and install diffuseg into it.
# torch: an importable torch that satisfies the project is kept (your CUDA build on a GPU machine);
# otherwise torch==2.13.0 is installed first, from the index pip is set up with, so that resolving the other
# dependencies never picks a torch of its own. On a CPU-only machine install the CPU build into .venv first
# (pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu): it is then kept.
# A rerun is quick: when this checkout is already installed (editable) with the same pyproject.toml, as
# recorded in .venv/.diffuseg-installed after the last successful install, pip is not run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    .venv/bin/pip install -q "torch==${DIFFUSEG_TORCH_VERSION:-2.13.0}"
fi
stamp=.venv/.diffuseg-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $PWD"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c \
    "import sys, diffuseg; sys.exit(not diffuseg.__file__.startswith(sys.argv[1]))" "$PWD/src/" >/dev/null 2>&1; then
    echo "diffuseg is already installed from $PWD with this pyproject.toml; nothing to do"
    exit 0
fi
.venv/bin/pip install -q -e ".[dev]"
echo "$want" >"$stamp"
