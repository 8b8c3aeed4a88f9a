"""What watching costs: training tokens/s of the launched app with 0, 1 and 20 polling clients, phases alternated,
plus app start-up time and the delay from a logged step to its point reaching a client. Prints ratios against the
no-client baseline measured in the same run; asserts nothing.

    .venv/bin/python bench/live_view.py [--phase-seconds 40] [--rounds 4] [--clients page|http|gradio_client] [--trainer app|cli]

Clients poll as often as the page's gr.Timer does (its interval is read from the app's config). They run on this same
machine, so their own CPU use counts against training too (printed as client CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from gradio_client import Client  # noqa: E402

from e2e_app import LaunchedApp  # noqa: E402

FORM = dict(model="demo", quant="none", lora_r=16, lora_alpha=32, lora_dropout=0.05,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], learning_rate=3e-4, max_steps=100000, epochs=1,
            batch_size=4, grad_accum=1, max_length=0, sample_every=0, probe_size=2, seed=1, save_steps=0)


def poller(url: str, stop: threading.Event, latencies: list | None, runs: Path):
    client = Client(url, verbose=False)
    shown = None
    while not stop.is_set():
        t0 = time.time()
        plot = client.predict(api_name="/refresh")[1]
        if latencies is not None and isinstance(plot, dict) and "plot" in plot:
            points = len(json.loads(plot["plot"])["data"][0]["y"])  # the raw-loss trace, one point per step
            if shown is not None and points > shown:
                step_logged = [r for r in _metrics(runs) if "loss" in r][points - 1]["time"]
                latencies.append(time.time() - step_logged)
            shown = points
        stop.wait(max(0.0, POLL_SECONDS - (time.time() - t0)))


def light_poller(url: str, stop: threading.Event, latencies, runs: Path):
    """A poller that costs its own machine little: Gradio's plain HTTP API (POST, then read the event stream)."""
    import urllib.request

    while not stop.is_set():
        t0 = time.time()
        req = urllib.request.Request(url + "gradio_api/call/refresh", data=b'{"data": []}',
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            event = json.load(r)["event_id"]
        with urllib.request.urlopen(url + f"gradio_api/call/refresh/{event}", timeout=30) as r:
            r.read()
        stop.wait(max(0.0, POLL_SECONDS - (time.time() - t0)))


POLL_SECONDS = 1.0  # replaced by the page timer's interval once the app is up


def _timer_seconds(url: str) -> float:
    import urllib.request

    with urllib.request.urlopen(url + "config", timeout=30) as r:
        config = json.load(r)
    return next(float(c["props"]["value"]) for c in config["components"] if c.get("type") == "timer")


def _page_events(url: str) -> tuple[dict, bool, dict]:
    """The page's timer event (as a request body), whether it is queued, and for each State id the events its change
    triggers, from the app's config as a page reads it."""
    import urllib.request

    with urllib.request.urlopen(url + "config", timeout=30) as r:
        config = json.load(r)
    tick, on_change = None, {}
    for index, dep in enumerate(config["dependencies"]):
        for target, event in dep["targets"]:
            if event == "tick":
                # A State input travels as null: the server keeps its value in the session.
                tick = ({"data": [None] * len(dep["inputs"]), "fn_index": dep.get("id", index), "trigger_id": target,
                         "outputs": dep["outputs"]},
                        dep.get("queue") is not False)
            elif event == "change":
                on_change.setdefault(target, []).append({"data": [None] * len(dep["inputs"]),
                                                         "fn_index": dep.get("id", index), "trigger_id": target})
    if tick is None:
        raise RuntimeError("no timer event in the app config")
    return tick[0], tick[1], on_change


def page_poller(url: str, stop: threading.Event, latencies, runs: Path):
    """What an open browser tab does: one session polling the timer's event over one kept-alive connection, then the
    events the page runs when the poll changed one of its States (the chart redraw, the buttons)."""
    import http.client
    import urllib.parse
    import uuid

    tick, queued, on_change = _page_events(url)
    outputs = tick.pop("outputs")
    shown: dict[int, object] = {}
    session = uuid.uuid4().hex[:11]
    where = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    headers = {"Content-Type": "application/json"}

    def call(event: dict) -> dict:
        body = json.dumps({**event, "event_data": None, "session_hash": session}).encode()
        if not queued:  # a single POST, as the page's own JavaScript does it
            conn.request("POST", "/gradio_api/run/predict", body, headers)
            return json.loads(conn.getresponse().read())
        # A queued event is joined, then its result read from the session's event stream.
        conn.request("POST", "/gradio_api/queue/join", body, headers)
        conn.getresponse().read()
        stream = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
        stream.request("GET", f"/gradio_api/queue/data?session_hash={session}")
        with stream.getresponse() as r:
            for line in r:
                if b"process_completed" in line:
                    return json.loads(line.decode().removeprefix("data:"))["output"]
        return {}

    while not stop.is_set():
        t0 = time.time()
        result = call(tick)
        # The page fires a component's .change when a poll brought it a new value (and a State's when the server
        # says it changed).
        changed = [i for i, v in zip(outputs, result.get("data", [])) if i in on_change and shown.get(i) != v]
        shown.update(zip(outputs, result.get("data", [])))
        for target in changed + list(result.get("changed_state_ids") or []):
            for event in on_change.get(target, []):
                call(event)
        stop.wait(max(0.0, POLL_SECONDS - (time.time() - t0)))
    conn.close()


def _metrics(runs: Path) -> list[dict]:
    files = list(runs.glob("*/metrics.jsonl"))
    return [json.loads(line) for line in files[0].read_text().splitlines() if line.strip()] if files else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase-seconds", type=float, default=40)
    parser.add_argument("--rounds", type=int, default=4, help="rounds of phases, alternately 0 1 20 and 20 1 0 clients")
    parser.add_argument("--clients", choices=["page", "http", "gradio_client"], default="page",
                        help="page: what an open tab does (one session, queue + event stream; the default); "
                             "http: a new session per call via /gradio_api/call (full figures every time); "
                             "gradio_client: the Python client (heavy on this machine's CPU)")
    parser.add_argument("--trainer", choices=["app", "cli"], default="app",
                        help="app: training started from the app (its thread, in the server's process); "
                             "cli: the same run from `python -m trainer train` in its own process, the app only "
                             "serving its live view")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    runs = folder / "runs"
    app = LaunchedApp(runs, folder / "app.log")
    try:
        global POLL_SECONDS
        print(f"app start-up to a ready page (model cached): {app.wait_ready():.1f} s")
        POLL_SECONDS = _timer_seconds(app.url)
        print(f"each client polls every {POLL_SECONDS:g} s, as the page does")
        client = Client(app.url, verbose=False)
        trainer = None
        if args.trainer == "cli":
            import os
            import subprocess

            f = FORM
            trainer = subprocess.Popen(
                [sys.executable, "-m", "trainer", "train", "--data", "sample", "--model", f["model"], "--quant",
                 f["quant"], "--lora-r", str(f["lora_r"]), "--lora-alpha", str(f["lora_alpha"]), "--lora-dropout",
                 str(f["lora_dropout"]), "--target-modules", ",".join(f["target_modules"]), "--lr",
                 str(f["learning_rate"]), "--max-steps", str(f["max_steps"]), "--batch-size", str(f["batch_size"]),
                 "--sample-every", "0",
                 "--probe-size", str(f["probe_size"]), "--seed", str(f["seed"]), "--save-steps", "0",
                 "--output", str(runs / "cli-run")],
                cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL)
            print("training in its own process: python -m trainer train … (the app serves its live view)")
        else:
            client.predict(api_name="/use_sample")
            print(client.predict(**FORM, api_name="/start"))
        while len([r for r in _metrics(runs) if "loss" in r]) < 3:  # warm-up steps excluded
            time.sleep(1)

        phases: dict[int, list[tuple[float, float]]] = {0: [], 1: [], 20: []}
        latencies: list[float] = []
        client_cpu: dict[int, list[float]] = {0: [], 1: [], 20: []}
        for round_ in range(args.rounds):
            # 0 1 20, then 20 1 0: a drift in step speed over the run (data order, lengths) does not favour a phase.
            for clients in (0, 1, 20) if round_ % 2 == 0 else (20, 1, 0):
                stop = threading.Event()
                kind = {"page": page_poller, "http": light_poller, "gradio_client": poller}[args.clients]
                threads = [threading.Thread(target=kind, args=(app.url, stop, latencies if i == 0 else None, runs),
                                            daemon=True) for i in range(clients)]
                for t in threads:
                    t.start()
                start, cpu0 = time.time(), time.process_time()
                time.sleep(args.phase_seconds)
                phases[clients].append((start + 5, time.time()))  # first 5 s: clients connecting
                client_cpu[clients].append((time.process_time() - cpu0) / (time.time() - start))
                stop.set()
                for t in threads:
                    t.join()
        rows = [r for r in _metrics(runs) if "loss" in r]
        print(f"{'polling clients':<18}{'tokens/s':>10}{'vs none':>9}{'steps':>7}{'client CPU (cores)':>20}")
        base = None
        for clients, windows in phases.items():
            rates = [r["tokens_per_s"] for r in rows if any(a <= r["time"] <= b for a, b in windows)]
            rate = statistics.mean(rates) if rates else float("nan")
            base = base or rate
            print(f"{clients:<18}{rate:>10.1f}{rate / base:>8.3f}x{len(rates):>7}"
                  f"{statistics.mean(client_cpu[clients]):>20.2f}")
        if latencies:
            print(f"logged step → seen by a polling client: median {statistics.median(latencies):.2f} s, "
                  f"max {max(latencies):.2f} s ({len(latencies)} steps)")
        if trainer is None:
            client.predict(api_name="/stop")
    finally:
        if trainer is not None:
            trainer.terminate()
            trainer.wait()
        app.close()


if __name__ == "__main__":
    main()
