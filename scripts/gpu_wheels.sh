#!/usr/bin/env bash
# Build .gpu-wheels/ (git-ignored): the Python 3.12 wheels that the lent GPU machine's image lacks, at
# the versions of this checkout's environments, for scripts/gpu_session.sh to install there offline.
#
#   bash scripts/gpu_wheels.sh          # needs .venv (make .venv/.installed-test) and, for the
#                                       # reference library, .bench-venvs/ref (scripts/bench_llc.py makes it)
#
# ours/ : what `devinterp` and TransformerLens import beyond the image (checked on this CPU by running
#         scripts/reproduce_induction_paper.py --tiny and scripts/bench_llc_gpu.py --small with only the
#         image's packages plus these on the path; the image list is /work/.library/device/KINDS.md).
# ref/  : devinterp==2.0.1 (it shares our import name, so it is installed into its own folder there)
#         and what it needs beyond the image.
set -euo pipefail
cd "$(dirname "$0")/.."
OURS=(pydantic pydantic-core annotated-types typing-inspection transformer-lens beartype fancy-einsum typeguard
      datasets dill multiprocess ruptures plotly)
REF=(devinterp datasets dill multiprocess donfig google-crc32c numcodecs zarr pydantic pydantic-core
     annotated-types typing-inspection)
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

fetch() {  # fetch PYTHON DEST NAME...: each NAME at the version installed in PYTHON's environment
  local py=$1 dest=$2; shift 2
  rm -rf "$dest"; mkdir -p "$dest"
  for name in "$@"; do
    version=$("$py" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      "${PLATFORMS[@]}" -d "$dest" "$name==$version"
  done
}

fetch .venv/bin/python .gpu-wheels/ours "${OURS[@]}"
if [ -x .bench-venvs/ref/bin/python ]; then
  fetch .bench-venvs/ref/bin/python .gpu-wheels/ref "${REF[@]}"
else
  echo "no .bench-venvs/ref: skipping the reference library's wheels (run scripts/bench_llc.py once)" >&2
fi
du -sh .gpu-wheels/*
