"""Catalog pricing speed: `price_catalog` (the Predict tab's "Price a file", `python -m trainer price`) against
evaluating the same rows with the Evaluate tab's path (`evaluate_run` on the same file), in the same run, with a run's
adapter. Prints items/s of each and their ratio; asserts nothing about time.

    .venv/bin/python bench/price_speed.py --run runs/NAME [--items 500] [--data ../shared/data/appliances_2000.jsonl]

The rows are the quality benchmark's 200 held-out rows first (so a run trained by bench/quality.py never saw
them: the coverage printed is honest on those), then its training rows. Evaluate prices every row three ways (the
beam for every point estimate, greedy, and the base model); pricing by the expected value runs only the beam.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.catalog import price_catalog  # noqa: E402
from trainer.data import load_products, make_sample_products  # noqa: E402
from trainer.inference import predictor_for  # noqa: E402
from trainer.tester import evaluate_run  # noqa: E402
from trainer.pricing.choice import price_choice  # noqa: E402
from trainer.pricing.ranges import range_line  # noqa: E402
from trainer.runs import RunFolder  # noqa: E402

from quality import SHARED, split_files  # noqa: E402  (bench/ is the script's folder, first on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished run folder with an adapter")
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--data", type=Path, default=SHARED)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="pricetune-price-speed-"))
    if args.data.is_file():
        train_file, test_file = split_files(args.data, folder)
        products = (load_products(test_file)[0] + load_products(train_file)[0])[:args.items]
    else:
        products = make_sample_products(args.items)
    file = folder / "catalog.jsonl"
    file.write_text("".join(json.dumps({"text": p.text, "price": p.price}) + "\n" for p in products))
    run = RunFolder(args.run)
    price_choice(run, predictor_for(run.path))  # measured once per adapter for both paths; not part of either timing
    print(f"{len(products)} rows of {args.data.name if args.data.is_file() else 'sample data'}, run {run.name}",
          flush=True)

    timings, results = {}, {}
    for name, fn in (("evaluate (3 passes)", lambda: evaluate_run(run.path, data=str(file), save=False,
                                                                  method="expected")),
                     ("price, expected value", lambda: price_catalog(run.path, file, method="expected"))):
        start = time.perf_counter()
        results[name] = fn()
        timings[name] = time.perf_counter() - start
        print(f"{name:<24} {timings[name]:7.1f} s  {len(products) / timings[name]:6.2f} items/s", flush=True)
    print(f"evaluate: {range_line(results['evaluate (3 passes)'])}")
    print(f"price: {results['price, expected value'].summary()}")
    base = timings["evaluate (3 passes)"]
    for name, seconds in timings.items():
        print(f"{name:<24} {base / seconds:5.2f}× the items/s of evaluate")


if __name__ == "__main__":
    main()
