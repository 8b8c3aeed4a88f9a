"""The prepared GPU check runs end to end: the same script, on a tiny model of Llama-3.1-8B's shape, on the CPU."""

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_script_trains_both_arms_on_a_tiny_model(tmp_path):
    env = {**os.environ, "TINY": "1", "WORK": str(tmp_path), "PY": str(Path(os.sys.executable))}
    out = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    rows = {m.group(1): m for m in re.finditer(r"round 1 (A|B)\s+([\d.]+) tokens/s .* adapter ([\d.]+) MB", out.stdout)}
    assert set(rows) == {"A", "B"}, out.stdout
    # Same LoRA (r=32 on q,k,v,o) in both arms: the same adapter size.
    assert rows["A"].group(3) == rows["B"].group(3) and float(rows["A"].group(2)) > 0
    assert "A/B tokens/s per round" in out.stdout
