"""`python -m trainer` with one checkpoint save slowed down, so a test can SIGKILL the process in the middle of it.

SLOW_CHECKPOINT names the checkpoint folder (e.g. checkpoint-6) whose save pauses for SLOW_SECONDS after the
adapter weights are written and before the optimizer, scheduler and trainer state are.
"""

import os
import sys
import time

from transformers import Trainer

_save = Trainer._save_optimizer_and_scheduler


def _slow_save(self, output_dir):
    if os.path.basename(output_dir) == os.environ.get("SLOW_CHECKPOINT"):
        time.sleep(float(os.environ.get("SLOW_SECONDS", "60")))
    return _save(self, output_dir)


Trainer._save_optimizer_and_scheduler = _slow_save

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from trainer.__main__ import main

    sys.exit(main(sys.argv[1:]))
