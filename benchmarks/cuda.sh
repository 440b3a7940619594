#!/usr/bin/env bash
# The CUDA path, on a machine with an NVIDIA GPU: the CUDA tests, then a short tune with GPU
# trials against the same tune with CPU trials on the same machine, with per-stage times.
#
#   bash benchmarks/cuda.sh [BUNDLE]
#
# Run from the checkout. Such a machine may lack edge_tune's stack (Ray, OpenVINO, NNCF,
# torch-pruning, bayes_opt): BUNDLE (default .gpu/site.tar.xz, if it exists) is a tar.xz of
# those packages for its Python, unpacked into /tmp/edge_tune_site and put on PYTHONPATH
# (docs/cluster.md, "A GPU machine", says how it is made). Steps are ranked: the most
# important first, so a run cut short still says the most. Figures go to stdout and, when $OUT
# is set, to $OUT/cuda.log and $OUT/*.json.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/edge_tune_cuda}
mkdir -p "$OUT"
exec > >(tee "$OUT/cuda.log") 2>&1
BUNDLE=${1:-.gpu/site.tar.xz}
if [ -f "$BUNDLE" ]; then
  SITE=/tmp/edge_tune_site
  mkdir -p "$SITE" && tar -xJf "$BUNDLE" -C "$SITE" || exit 1
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  # the checkout as a package, as an editable install maps it (no pip install needed)
  ln -sfn ../search_spaces edge_tune/search_spaces
  ln -sfn ../examples edge_tune/examples
fi
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
start=$(date +%s)
step() { echo; echo "== $1 ($(( $(date +%s) - start )) s in)"; }

step "1/3 the stack"
$PY - <<'EOF' || exit 1
import importlib.metadata as md, torch
print("cuda:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
for name in ("torch", "ray", "openvino", "nncf", "torch-pruning", "bayesian-optimization", "numpy"):
    print(f"  {name} {md.version(name)}")
EOF

step "2/3 the CUDA tests (and the CUDA config checked as on any CPU)"
$PY -m pytest -q -p no:cacheprovider -o addopts="" \
  tests/test_trial.py::test_a_trial_compresses_and_fine_tunes_on_the_gpu \
  tests/test_tune.py::test_a_trial_on_cuda tests/test_tune.py::test_the_cuda_config_is_valid_here
tests_rc=$?

step "3/3 a short tune: GPU trials, then CPU trials, same machine, same baseline"
cat > "$OUT/tune.yaml" <<'EOF'
model: torchvision:resnet18
baseline: {epochs: 4}
tune: {num_samples: 8, max_concurrent: 4, early_stop: false, trial_gpus: 0.25}
EOF
sed 's/trial_gpus: 0.25/trial_gpus: 0/' "$OUT/tune.yaml" > "$OUT/tune_cpu.yaml"
export EDGE_TUNE_CACHE=/tmp/edge_tune_cuda_cache
for kind in gpu cpu; do
  config="$OUT/tune.yaml"; [ $kind = cpu ] && config="$OUT/tune_cpu.yaml"
  t0=$(date +%s)
  $PY -m edge_tune.tune --config "$config" --no-wandb --output "/tmp/edge_tune_cuda_$kind" \
    > "$OUT/tune_$kind.out" 2> "$OUT/tune_$kind.err"
  rc=$?
  echo "$kind trials: exit $rc in $(( $(date +%s) - t0 )) s (the baseline trains once, in the first)"
  tail -n 6 "$OUT/tune_$kind.out"
  # where the baseline trained (a GPU trial run trains it as a Ray task holding a GPU) and the
  # cache entry's record of it
  grep -E "baseline: (trained|cached|training)" "$OUT/tune_$kind.err" | head -n 3
  find "$EDGE_TUNE_CACHE" -name meta.json -exec grep -hE '"(device|node_ip)"' {} + | head -n 2
  [ -f "/tmp/edge_tune_cuda_$kind/summary.json" ] && cp "/tmp/edge_tune_cuda_$kind/summary.json" "$OUT/summary_$kind.json"
  $PY - "/tmp/edge_tune_cuda_$kind/trials.jsonl" <<'EOF'
import json, os, statistics, sys
path = sys.argv[1]
rows = [json.loads(line) for line in open(path)] if os.path.exists(path) else []
done = [r["metrics"] for r in rows if r["status"] == "completed"]
for key in ("compress_s", "export_s", "quantize_s", "verify_eval_s", "graph_s", "bench_wait_s", "trial_s"):
    values = [m[key] for m in done if key in m]
    if values:
        print(f"  {key}: median {statistics.median(values):.1f} s, {min(values):.1f}-{max(values):.1f} s over {len(values)} trials")
print("  devices:", sorted({m.get("trial_device", "?") for m in done}))
EOF
done
echo
echo "cuda.sh: CUDA tests exit $tests_rc; $(( $(date +%s) - start )) s in all"
exit $tests_rc
