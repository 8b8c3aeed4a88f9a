"""`python -m trainer` with one checkpoint save slowed down, so a test can SIGKILL the process in the middle of it.

SLOW_CHECKPOINT names the checkpoint folder (e.g. checkpoint-6) whose save pauses for SLOW_SECONDS after the
adapter weights are written and before the optimizer, scheduler and trainer state are. SLOW_ADAPTER=1 pauses the
final adapter save (runs/NAME/adapter) instead, after the last checkpoint and the last probe. SLOW_STEP adds that many
seconds to every training step, so that a kill lands between chosen steps even on a model that trains in milliseconds.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from transformers import Trainer

from trainer.runs import RunFolder

_save = Trainer._save_optimizer_and_scheduler
_save_adapter = RunFolder.save_adapter
_step = Trainer.training_step


def _slow_save(self, output_dir):
    if os.path.basename(output_dir) == os.environ.get("SLOW_CHECKPOINT"):
        time.sleep(float(os.environ.get("SLOW_SECONDS", "60")))
    return _save(self, output_dir)


def _slow_save_adapter(self, model, tokenizer, target):
    if target.name == "adapter" and os.environ.get("SLOW_ADAPTER"):
        time.sleep(float(os.environ.get("SLOW_SECONDS", "60")))
    return _save_adapter(self, model, tokenizer, target)


def _slow_step(self, *args, **kwargs):
    time.sleep(float(os.environ.get("SLOW_STEP", "0")))
    return _step(self, *args, **kwargs)


Trainer._save_optimizer_and_scheduler = _slow_save
Trainer.training_step = _slow_step
RunFolder.save_adapter = _slow_save_adapter

if __name__ == "__main__":
    from trainer.__main__ import main

    sys.exit(main(sys.argv[1:]))
