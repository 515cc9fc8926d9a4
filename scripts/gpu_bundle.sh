#!/usr/bin/env bash
# What benchmarks/gpu_check.py needs on a bare GPU machine (Python 3.12 with PyTorch, accelerate,
# tokenizers, pyarrow and tensorboard, but no network and no datasets, fugashi or unidic-lite),
# made here in one command, in BUNDLE (default .gpu_bundle, at most 64 MiB):
#   wheels/  datasets with its pure-Python needs (dill, multiprocess, fsspec); the pinned
#            transformers, accelerate, huggingface_hub and tokenizers (constraints.txt);
#            DeepSpeed, built here as a pure-Python wheel (its kernels compile on first use),
#            with hjson and pydantic
#   work/    the tokenizer and every example set the check reads: MeCab runs here
#
#   bash scripts/gpu_bundle.sh [BUNDLE]
#
# Then on the GPU machine, in the repository root with BUNDLE beside the code:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site BUNDLE/wheels/*.whl \
#     && PYTHONPATH=/tmp/site python3 benchmarks/gpu_check.py --work BUNDLE/work
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=${1:-.gpu_bundle}
PYTHON=${PYTHON:-python}
TARGET_PYTHON=3.12
DEEPSPEED=0.19.8
HJSON=3.1.0
LIMIT_MIB=64

pinned() {  # NAME==VERSION as constraints.txt pins it
  local line
  line=$(grep -i "^$1==" constraints.txt) || { echo "gpu_bundle: constraints.txt pins no $1" >&2; exit 1; }
  echo "$line"
}

rm -rf "$BUNDLE/wheels"
mkdir -p "$BUNDLE/wheels"
echo "wheels for Python $TARGET_PYTHON on x86-64 Linux"
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$TARGET_PYTHON" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$BUNDLE/wheels" \
  "$(pinned datasets)" "$(pinned dill)" "$(pinned multiprocess)" "$(pinned fsspec)" "$(pinned transformers)" \
  "$(pinned accelerate)" "$(pinned huggingface_hub)" "$(pinned tokenizers)" "$(pinned pydantic)" \
  "$(pinned pydantic_core)" "$(pinned annotated-types)" "$(pinned typing-inspection)" "hjson==$HJSON"
echo "DeepSpeed $DEEPSPEED as a pure-Python wheel"
DS_BUILD_OPS=0 "$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$BUNDLE/wheels" "deepspeed==$DEEPSPEED"

echo "tokenizer and examples"
"$PYTHON" benchmarks/gpu_check.py --prepare_only --gpu_sizes --work "$BUNDLE/work"
rm -rf "$BUNDLE/work"/aozora-*.txt "$BUNDLE/work/cache"  # the text is in the examples now

size=$(du -sm "$BUNDLE" | cut -f1)
echo "$BUNDLE: ${size} MiB"
if [ "$size" -gt "$LIMIT_MIB" ]; then
  echo "gpu_bundle: $BUNDLE is ${size} MiB, over the ${LIMIT_MIB} MiB a GPU machine is sent" >&2
  exit 1
fi
