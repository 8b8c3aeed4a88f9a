"""`python -m trainer` with one checkpoint save slowed down, so a test can SIGKILL the process in the middle of it.

SLOW_CHECKPOINT names the checkpoint folder (e.g. checkpoint-6) whose save pauses for SLOW_SECONDS after the
adapter weights are written and before the optimizer, scheduler and trainer state are. SLOW_ADAPTER=1 pauses the
final adapter save (runs/NAME/adapter) instead, after the last checkpoint and the last probe.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from transformers import Trainer

from trainer.runs import RunFolder

_save = Trainer._save_optimizer_and_scheduler
_save_adapter = RunFolder.save_adapter


def _slow_save(self, output_dir):
    if os.path.basename(output_dir) == os.environ.get("SLOW_CHECKPOINT"):
        time.sleep(float(os.environ.get("SLOW_SECONDS", "60")))
    return _save(self, output_dir)


def _slow_save_adapter(self, model, tokenizer, target):
    if target.name == "adapter" and os.environ.get("SLOW_ADAPTER"):
        time.sleep(float(os.environ.get("SLOW_SECONDS", "60")))
    return _save_adapter(self, model, tokenizer, target)


Trainer._save_optimizer_and_scheduler = _slow_save
RunFolder.save_adapter = _slow_save_adapter

if __name__ == "__main__":
    from trainer.__main__ import main

    sys.exit(main(sys.argv[1:]))
