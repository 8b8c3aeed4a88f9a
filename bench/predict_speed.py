"""Prediction speed on the demo model: PriceTune's batched greedy and expected-value decoding vs the course method
(one generate(max_new_tokens=3) per item), in the same run. Prints items/s and ratios; asserts nothing about time.

    .venv/bin/python bench/predict_speed.py [--items 200] [--data ../shared/data/appliances_2000.jsonl]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.data import encode_prompt, fit_max_length, load_products, make_sample_products  # noqa: E402
from trainer.pricing.decoding import parse_price_output, predict_greedy  # noqa: E402
from trainer.pricing.distribution import predict_expected  # noqa: E402
from trainer.models import load_model, load_tokenizer  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "appliances_2000.jsonl"


def course_method(model, tokenizer, texts, max_prompt_tokens):
    """The course's loop: tokenize one prompt, generate 3 tokens, parse, next."""
    out = []
    with torch.inference_mode():
        for text in texts:
            ids = torch.tensor([encode_prompt(tokenizer, text, max_prompt_tokens)])
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=3,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id)
            out.append(parse_price_output(tokenizer.decode(gen[0, ids.shape[1]:], skip_special_tokens=True)))
    return out


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--data", default=str(SHARED) if SHARED.exists() else "sample")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    products = make_sample_products() if args.data == "sample" else load_products(args.data)[0]
    texts = [p.text for p in products[: args.items]]
    tokenizer, model = load_tokenizer("demo"), load_model("demo", "none")
    model.eval()
    max_len = fit_max_length(tokenizer, products[: args.items])
    device = next(model.parameters()).device
    where = (f"{torch.cuda.get_device_name(device)}" if device.type == "cuda"
             else f"CPU, {torch.get_num_threads()} threads")
    print(f"data: {args.data} ({len(texts)} items), demo model, {next(model.parameters()).dtype} on {where}, "
          f"max prompt {max_len} tokens")

    course, t_course = timed(lambda: course_method(model, tokenizer, texts, max_len))
    greedy, t_greedy = timed(lambda: predict_greedy(model, tokenizer, texts, max_new_tokens=3,
                                                     batch_size=args.batch_size, max_prompt_tokens=max_len))
    expected, t_expected = timed(lambda: predict_expected(model, tokenizer, texts, batch_size=args.batch_size,
                                                          max_prompt_tokens=max_len))
    same = sum(g.price == c for g, c in zip(greedy, course))
    print(f"{'method':<34}{'items/s':>10}{'vs course':>11}")
    for name, seconds in (("course: generate(3) per item", t_course),
                          (f"PriceTune batched greedy (bs {args.batch_size})", t_greedy),
                          (f"PriceTune expected value (bs {args.batch_size})", t_expected)):
        print(f"{name:<34}{len(texts) / seconds:>10.2f}{t_course / seconds:>10.2f}x")
    print(f"greedy predictions equal to the course method's: {same}/{len(texts)}")


if __name__ == "__main__":
    main()
