"""Launch the real app in a subprocess for end-to-end tests."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LaunchedApp:
    def __init__(self, runs: Path | None, log: Path, extra_env: dict | None = None):
        self.port = free_port()
        self.runs = runs
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {**os.environ, "PORT": str(self.port), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
               **({"PRICETUNE_RUNS": str(runs)} if runs else {}), **(extra_env or {})}
        self.log = log.open("w")
        self.proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def wait_ready(self, timeout=180) -> float:
        start = time.time()
        while time.time() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app exited with {self.proc.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    if r.status == 200:
                        return time.time() - start
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"app not ready in {timeout}s; see {self.log.name}")

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
