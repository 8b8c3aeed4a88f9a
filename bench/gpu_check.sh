#!/usr/bin/env bash
# The offline GPU check (`make gpu-check`, issue #37). On a GPU machine with CUDA torch and no network: installs the
# wheels `make gpu-wheels` staged in .gpu/whl, prints the environment, then
#   1. the course's 8B shape (Llama-3.1-8B's architecture, random weights; 4-bit NF4, LoRA r32 alpha 64 dropout 0.1
#      on q,k,v,o, batch 16 x 182): bench/gpu_levers.py, every lever beside TRL's defaults, one model load;
#   2. the demo model's shape (random weights, .gpu/demo's config and tokenizer) through `train --quant 4bit` with the
#      GPU defaults, `eval` and bench/predict_speed.py.
# No model load may fetch anything: HF_HUB_OFFLINE=1, and USE_HUB_KERNELS is left unset (the product's own setting
# keeps hub kernels off). Every stage is time-boxed against one deadline (LIMIT seconds, default 420; 840 with TINY).
# Everything it prints goes to RESULTS too (default $OUT/gpu-check.txt, else WORK/gpu-check.txt), the levers' JSON
# lines beside it.
#
#   make gpu-check                  # on the GPU machine
#   TINY=1 bash bench/gpu_check.sh  # the same stages on tiny models on a CPU (tests/test_gpu_check.py)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
WORK=${WORK:-$(mktemp -d /tmp/pricetune-gpu-check.XXXX)}; mkdir -p "$WORK"
RESULTS=${RESULTS:-${OUT:-$WORK}/gpu-check.txt}; mkdir -p "$(dirname "$RESULTS")"
LEVERS=${RESULTS%.txt}-levers.jsonl; rm -f "$LEVERS"
exec > >(tee "$RESULTS") 2>&1
# The boxes guard a GPU machine's budget; a CPU running the tiny stages, maybe beside other work, needs more room.
if [ -n "${TINY:-}" ]; then LIMIT=${LIMIT:-840}; BOX_SCALE=${BOX_SCALE:-3}; DEMO_SECONDS=${DEMO_SECONDS:-390}; fi
T0=$(date +%s); LIMIT=${LIMIT:-420}
left() { echo $(( LIMIT - ($(date +%s) - T0) )); }
stage() { echo; echo "=== [$(( $(date +%s) - T0 )) s, $(left) s left] $*"; }
# box SECONDS CMD...: run CMD for at most SECONDS × BOX_SCALE (less when the deadline is nearer); skipped when under
# 15 s remain.
box() {
  local want=$(( $1 * ${BOX_SCALE:-1} )); shift; local room=$(( $(left) - 5 )); local t=$(( want < room ? want : room ))
  if [ "$t" -lt 15 ]; then echo "SKIPPED (no time left): $*"; return 99; fi
  timeout -k 5 "$t" "$@"; local rc=$?; [ $rc -eq 0 ] || echo "--- exit $rc (box ${t} s): $*"; return $rc
}
quiet() { grep --line-buffered -vE "Warning|warn\(|it/s\]|examples/s\]|Loading weights"; }
unset USE_HUB_KERNELS
CACHE_BEFORE=${PRICETUNE_CACHE:-}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export PRICETUNE_CACHE=$WORK/cache PRICETUNE_RUNS=$WORK/runs

stage "environment"
if [ -z "${TINY:-}" ] && ls .gpu/whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
    .gpu/whl/*.whl 2>&1 | tail -3
  export PYTHONPATH=$WORK/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
"$PY" - <<'PY'
import platform, sys
import torch
from importlib.metadata import PackageNotFoundError, version
names = ("transformers", "peft", "bitsandbytes", "trl", "accelerate", "liger-kernel", "kernels")
versions = []
for name in names:
    try:
        versions.append(f"{name} {version(name)}")
    except PackageNotFoundError:
        versions.append(f"{name} missing")
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else f"no GPU ({platform.processor() or 'CPU'})"
print(f"Python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), {gpu}; "
      + ", ".join(versions))
PY

if [ -n "${TINY:-}" ]; then
  MODEL_ARGS="--tiny"; LEVER_ARGS="--batch 4 --max-length 64 --steps 2 --warmup 1"; DEMO_STEPS=2
  DEMO_ARGS="--probe-size 2 --num-samples 2 --head-rows 4 --sample-every 0 --batch-size 4 --validation-size 8"
  EVAL_LIMIT=4; PREDICT_ITEMS=8
  # The real demo's config and tokenizer, from the usual cache (the check's own cache gets the random one).
  DEMO_SOURCE=$(if [ -n "$CACHE_BEFORE" ]; then export PRICETUNE_CACHE=$CACHE_BEFORE; else unset PRICETUNE_CACHE; fi
                "$PY" -c 'from trainer.models import demo_model_dir; print(demo_model_dir())' | tail -1)
else
  MODEL_ARGS=""; LEVER_ARGS=""; DEMO_STEPS=${DEMO_STEPS:-40}; DEMO_ARGS=""; EVAL_LIMIT=50; PREDICT_ITEMS=100
  DEMO_SOURCE=.gpu/demo
fi

stage "8B shape: the random model"
box 120 "$PY" bench/random_model.py --out "$WORK/model" $MODEL_ARGS
stage "8B shape: the levers beside TRL's defaults (one model load)"
box $(( ($(left) - ${DEMO_SECONDS:-130} - ${LITE_SECONDS:-60}) / ${BOX_SCALE:-1} )) \
  "$PY" bench/gpu_levers.py --model "$WORK/model" --out "$LEVERS" \
  --seconds $(( $(left) - ${DEMO_SECONDS:-130} - ${LITE_SECONDS:-60} - 10 )) ${ARMS:+--arms $ARMS} $LEVER_ARGS \
  2>&1 | quiet
rm -rf "$WORK/model"
if [ -z "${TINY:-}" ]; then
  stage "course-lite shape: Llama 3.2 3B, batch 32 x 128, LoRA r32 on q,k,v,o, this machine's defaults (arm N)"
  box 45 "$PY" bench/random_model.py --out "$WORK/model3b" --shape 3b
  box $(( ${LITE_SECONDS:-60} - 20 )) "$PY" bench/gpu_levers.py --model "$WORK/model3b" --out "$LEVERS" --arms N \
    --batch 32 --max-length 128 --steps 8 2>&1 | quiet | tail -3
  rm -rf "$WORK/model3b"
fi

stage "demo shape: random weights, train --quant 4bit with this machine's defaults"
box 20 "$PY" bench/demo_shape.py "$DEMO_SOURCE" ${TINY:+--tiny}
box 70 "$PY" -m trainer train --data sample --quant 4bit --max-steps "$DEMO_STEPS" $DEMO_ARGS \
  --output "$WORK/runs/demo4" 2>&1 | quiet | tail -12
"$PY" - "$WORK/runs/demo4" <<'PY' || true
import json, sys
from pathlib import Path
folder = Path(sys.argv[1])
config = (folder / "config.yaml").read_text() if (folder / "config.yaml").is_file() else ""
keys = ("quant", "gradient_checkpointing", "fp32_norms", "liger_kernel", "hub_kernels", "precision")
print("config:", ", ".join(line for line in config.splitlines() if line.split(":")[0] in keys))
status = json.loads((folder / "status.json").read_text())
print("status:", {k: status.get(k) for k in ("state", "step", "total_steps", "max_length", "phases", "error")})
PY
stage "demo shape: eval"
box 60 "$PY" -m trainer eval --run "$WORK/runs/demo4" --limit "$EVAL_LIMIT" 2>&1 | quiet | tail -16
stage "demo shape: prediction speed"
box 35 "$PY" bench/predict_speed.py --items "$PREDICT_ITEMS" --data sample 2>&1 | quiet | tail -6
stage "done"
nvidia-smi --query-gpu=memory.used --format=csv,noheader 2>/dev/null || true
echo "results: $RESULTS"
