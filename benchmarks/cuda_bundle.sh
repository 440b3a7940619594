#!/usr/bin/env bash
# The packages benchmarks/cuda.sh carries to a GPU machine that has torch but lacks the rest of
# edge_tune's stack and has no network: Ray (with its dashboard's needs), OpenVINO, NNCF,
# torch-pruning, bayes_opt and what they need beyond such an image, for its Python (default
# 3.12), pinned as constraints.txt pins them, unpacked, pruned of what a GPU trial never loads
# (Ray's Java jars, RLlib, Serve, LLM; OpenVINO's Intel GPU/NPU plugins, the TensorFlow,
# Paddle, TFLite, GGUF and JAX front ends and headers), binaries stripped, packed with xz:
# about 55 MB, under the 64 MiB a device call carries.
#
#   bash benchmarks/cuda_bundle.sh [OUT] [PYTHON_VERSION]     # default .gpu/site.tar.xz 3.12
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-.gpu/site.tar.xz}
PYV=${2:-3.12}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
pin() { grep -E "^$1[=]" constraints.txt | sed 's/===*/==/' ; }
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64
           --platform manylinux1_x86_64 --platform any)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" \
  --implementation cp "${PLATFORMS[@]}" -d "$WORK/wheels" \
  "$(pin ray)" "$(pin openvino)" openvino-telemetry "$(pin nncf)" pydot \
  "$(pin torch-pruning)" "$(pin bayesian-optimization)" jsonschema jsonschema-specifications \
  referencing rpds-py tensorboardX pydantic pydantic-core annotated-types typing-inspection \
  aiohttp_cors colorful opencensus opencensus-context google-api-core googleapis-common-protos \
  proto-plus google-auth cachetools pyasn1 pyasn1-modules rsa opentelemetry-sdk \
  opentelemetry-api opentelemetry-semantic-conventions opentelemetry-exporter-prometheus \
  opentelemetry-proto importlib-metadata smart_open
python3 -m pip install -q --no-deps --no-index --no-compile --only-binary=:all: \
  --python-version "$PYV" --implementation cp "${PLATFORMS[@]}" --target "$WORK/site" \
  "$WORK"/wheels/*.whl
cd "$WORK/site"
rm -rf bin ray/jars ray/rllib ray/serve ray/llm openvino/include openvino/libs/cache.json \
  openvino/libs/libopenvino_intel_gpu_plugin.so openvino/libs/libopenvino_intel_npu_plugin.so \
  openvino/libs/libopenvino_{tensorflow,paddle,tensorflow_lite,gguf,jax}_frontend.so*
find . -name __pycache__ -prune -exec rm -rf {} +
strip --strip-unneeded ray/_raylet.so ray/core/src/ray/raylet/raylet \
  ray/core/src/ray/gcs/gcs_server
cd - > /dev/null
mkdir -p "$(dirname "$OUT")"
tar -cf - -C "$WORK/site" . | xz -6 -T2 > "$OUT"
ls -l "$OUT"
