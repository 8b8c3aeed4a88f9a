"""The demo model's shape with random weights, where PriceTune's cache expects the converted demo model, for a machine
that cannot carry the demo's weights (a GPU machine without the network: `make gpu-wheels` stages only its config and
tokenizer). Its prices mean nothing; its speed and memory are the demo's.

    python bench/demo_shape.py FOLDER [--tiny]   # FOLDER: the converted demo's config.json and tokenizer files

--tiny shrinks it to 2 layers of width 64 (the demo's tokenizer and vocabulary kept): the same code paths in seconds on
a CPU, for tests.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16)


def main() -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    from trainer.paths import cache_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the converted demo's config.json and tokenizer files")
    parser.add_argument("--tiny", action="store_true", help="2 layers of width 64 instead of the demo's shape")
    args = parser.parse_args()
    source = args.source
    target = cache_dir() / "SmolLM2-135M-Instruct"
    if (target / "model.safetensors").is_file():
        raise SystemExit(f"{target} already holds a model: not overwritten")
    target.mkdir(parents=True, exist_ok=True)
    config = AutoConfig.from_pretrained(source)
    config.update(TINY if args.tiny else {})
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(target)
    for f in source.iterdir():
        if f.name not in ("config.json", "model.safetensors"):
            shutil.copy(f, target / f.name)
    print(f"demo-shaped random model: {target}, {sum(p.numel() for p in model.parameters()) / 1e6:.0f} M parameters")


if __name__ == "__main__":
    main()
