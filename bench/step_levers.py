"""What one PriceTune training step spends its time on, and what each speed lever gives, against the step as the
app runs it, measured in the same process on the same batches (issue #20).

    .venv/bin/python bench/step_levers.py [--steps 5] [--compile]

Variants, each timed over the same length-sorted batches of 8 (2 warm-up, then --steps timed, alternated):
  app         PriceTune's step: LoRA dropout drawn 16 bits an element on a CPU (trainer/dropout.py), price-only logits
  torch-drop  the same with torch's nn.Dropout (one random float an element)
  fused-adamw the app's step with AdamW(fused=True)
  packed      the batch in one row with position_ids restarting per example (the `packing` setting:
              DataCollatorWithFlattening; no padding at all); prints its loss beside the padded batch's
  compiled    (--compile) torch.compile of the model; its compile time is printed apart
Then the profiler's top operators of one app step. Asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data" / "appliances_2000.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (minutes to compile)")
    args = parser.parse_args()

    import torch
    from peft import get_peft_model
    from torch import nn

    from trainer.config import TrainConfig
    from trainer.data import fit_max_length, load_products, make_sample_products, tokenize_example
    from trainer.dropout import Dropout
    from trainer.loss import PackedPriceCollator, PriceCollator, price_loss
    from trainer.models import load_model, load_tokenizer

    torch.manual_seed(0)
    config = TrainConfig.for_model("demo", lora_r=16, lora_alpha=32, lora_dropout=0.05).validate()
    tokenizer = load_tokenizer(config.model)
    tokenizer.padding_side = "right"
    products = load_products(SHARED)[0] if SHARED.is_file() else make_sample_products()
    items = products[: args.batch * (args.steps + 2)]
    max_length = fit_max_length(tokenizer, items, question=config.asked())
    examples = sorted((tokenize_example(tokenizer, p.text, p.price, max_length, config.asked()) for p in items),
                      key=lambda e: len(e["input_ids"]))  # as the length-grouped sampler batches them
    chunks = [examples[i:i + args.batch] for i in range(0, len(examples), args.batch)]
    padded = [PriceCollator(tokenizer, padding=True)(chunk) for chunk in chunks]
    packed = [PackedPriceCollator()(chunk) for chunk in chunks]
    real = sum(int(b["attention_mask"].sum()) for b in padded[2:])
    cells = sum(b["attention_mask"].numel() for b in padded[2:])
    print(f"demo model, LoRA r16 dropout 0.05 on all seven projections, batches of {args.batch} sorted by length, "
          f"max length {max_length}; padding {100 * (1 - real / cells):.1f}% of the timed batches' cells; "
          f"{torch.get_num_threads()} threads")

    model = get_peft_model(load_model(config.model, "none"), config.lora_config())
    model.train()
    trained = [p for p in model.parameters() if p.requires_grad]

    def dropouts(kind):
        for module in model.modules():
            layers = getattr(module, "lora_dropout", None)
            if isinstance(layers, nn.ModuleDict):
                for name, layer in layers.items():
                    layers[name] = kind(layer.p)

    def stepper(forward, fused=False):
        optimizer = torch.optim.AdamW(trained, lr=3e-4, fused=fused)

        def step(batch):
            batch = dict(batch)
            labels = batch.pop("labels")
            loss = price_loss(forward(**batch), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            return loss.item()
        return step

    variants = {"app": (stepper(model), padded), "torch-drop": (stepper(model), padded),
                "fused-adamw": (stepper(model, fused=True), padded), "packed": (stepper(model), packed)}
    if args.compile:
        began = time.perf_counter()
        compiled = torch.compile(model)
        variants["compiled"] = (stepper(compiled), padded)
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    first_loss: dict[str, float] = {}
    for name, (step, batches) in variants.items():  # warm-up, and the compile where asked
        dropouts(nn.Dropout if name == "torch-drop" else Dropout)
        for batch in batches[:2]:
            step(batch)
        if name == "compiled":
            print(f"compiled: compiling and 2 warm-up steps took {time.perf_counter() - began:.0f} s")
    # Dropout off for the loss check: the packed row and the padded batch then compute the same thing.
    model.eval()
    with torch.no_grad():
        for name in ("app", "packed"):
            batch = dict(variants[name][1][2])
            labels = batch.pop("labels")
            first_loss[name] = price_loss(model(**batch), labels).item()
    model.train()
    for index in range(2, 2 + args.steps):
        for name, (step, batches) in variants.items():
            dropouts(nn.Dropout if name == "torch-drop" else Dropout)
            began = time.perf_counter()
            step(batches[index])
            seconds[name].append(time.perf_counter() - began)
    base = sum(seconds["app"])
    print(f"\n{'variant':<13}{'s/step':>8}{'tokens/s':>10}{'vs app':>8}")
    for name, times in seconds.items():
        print(f"{name:<13}{statistics.median(times):>8.2f}{real / sum(times):>10.1f}{base / sum(times):>7.2f}x")
    print(f"loss of one batch without dropout: padded {first_loss['app']:.5f}, packed {first_loss['packed']:.5f} "
          f"(equal when each packed example attends only to itself)")

    from torch.profiler import profile

    dropouts(Dropout)
    with profile() as prof:
        variants["app"][0](padded[2])
    print("\nprofiler, one app step, top operators by own time:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
