#!/usr/bin/env bash
# Prepared GPU check (issue #6): Llama-3.1-8B's architecture with random weights, 4-bit NF4 (double quantization,
# bf16 compute), LoRA r=32 alpha=64 on q,k,v,o, 30 timed steps at batch 16 and sequence length 182, for
# PriceTune's training path (A), the same with each batch packed into one row without padding (AP: `packing`, SDPA
# reading the restarting position ids), with Liger's fused kernels (AL: `liger_kernel`, when the liger-kernel package
# is installed), with norms and embeddings left in bf16 (A16: fp32_norms off), and TRL's SFTTrainer (B). Prints
# tokens/s, MFU, peak CUDA memory and adapter size: the first GPU run decides these GPU defaults with numbers.
# No internet needed; see bench/README.md for carrying the packages in as wheels. Under 8 minutes on an H100.
#
#   bash bench/gpu_check.sh            # the real check (needs an NVIDIA GPU)
#   TINY=1 bash bench/gpu_check.sh     # the same steps on a tiny model, on a CPU
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
WORK=${WORK:-$(mktemp -d /tmp/pricetune-gpu-check.XXXX)}
STEPS=${STEPS:-30}
# Keep the demo-model cache and runs out of the checkout.
export PRICETUNE_CACHE=${PRICETUNE_CACHE:-$WORK/cache} PRICETUNE_RUNS=$WORK/runs HF_HUB_OFFLINE=1

"$PY" - <<'PY'
import torch
print("torch", torch.__version__, "| GPU:", torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
PY
ARMS=A,AP,AL,A16,B
if ! "$PY" -c 'import torch, liger_kernel; assert torch.cuda.is_available()' 2>/dev/null; then
  ARMS=A,AP,A16,B
  echo "arm AL left out: Liger's kernels need a CUDA GPU and the liger-kernel package"
fi
if [ -n "${TINY:-}" ]; then
  "$PY" bench/random_model.py --out "$WORK/model" --tiny
  STEPS=${STEPS_TINY:-3}
else
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
  time "$PY" bench/random_model.py --out "$WORK/model"
fi
"$PY" bench/train_speed.py --model "$WORK/model" --data "$WORK/model/products.jsonl" --quant 4bit \
  --lora-r 32 --lora-alpha 64 --lora-dropout 0.1 --targets q_proj,k_proj,v_proj,o_proj --batch 16 --max-length 182 --steps "$STEPS" --warmup 3 --pairs 1 --arms "$ARMS" \
  --probe 0 --examples $(( (STEPS + 3) * 16 ))
rm -rf "$WORK/model"
