#!/usr/bin/env bash
# Prints the variables that build and run covidct's LibTorch backend (`--features tch`) against
# the libtorch inside .venv-torch's torch wheel (scripts/setup.sh libtorch), one NAME=value per
# line, for `export $(bash scripts/libtorch-env.sh)`:
#   LIBTORCH         torch-sys reads include/ and lib/ from it (no Python run at build time)
#   LD_LIBRARY_PATH  test binaries find libtorch at run time (the covidct binary also has it as
#                    its run path, crates/cli/build.rs)
# Fails, naming the fix, when .venv-torch is missing or holds another torch than the pinned one.
set -euo pipefail
cd "$(dirname "$0")/.."
want=$(sed -n 's/^torch==//p' scripts/requirements-libtorch.txt)
site=$(find "$PWD/.venv-torch/lib" -maxdepth 2 -name site-packages -type d 2>/dev/null | head -n 1 || true)
torch_dir=$site/torch
if [ -z "$site" ] || [ ! -f "$torch_dir/lib/libtorch_cpu.so" ]; then
    echo "error: no libtorch in .venv-torch: run bash scripts/setup.sh libtorch" >&2
    exit 1
fi
have=$(sed -n "s/^__version__ = '\([^'+]*\).*/\1/p" "$torch_dir/version.py")
if [ "$have" != "$want" ]; then
    echo "error: .venv-torch holds torch $have, burn-tch needs $want: run bash scripts/setup.sh libtorch" >&2
    exit 1
fi
echo "LIBTORCH=$torch_dir"
echo "LD_LIBRARY_PATH=$torch_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
