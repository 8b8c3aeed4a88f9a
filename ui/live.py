"""The live view of the current run: polled status, charts and samples, shared by every open page.

Training shares this process (and the GIL, and on a CPU the cores) with the web server, so each poll must cost
almost nothing: a poll stats three files and, only when they changed, one poll rebuilds the figures for all.
"""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path

import gradio as gr

from trainer import charts, clock, cost
from trainer.baselines import TEXT_BASELINE, TEXT_NEIGHBOURS
from trainer.config import RUN_DATA, ConfigError, TrainConfig
from trainer.job import JOBS
from trainer.paths import runs_dir
from trainer.runs import FINAL_STATES, RunFolder, list_runs

from .common import COLOUR_KEY, RESUMABLE, SAMPLE_WIDTHS, adapter_zip


def current_run() -> RunFolder | None:
    job = JOBS.active()
    if job is not None:
        return job.run
    root = runs_dir()
    try:
        stamp = root.stat().st_mtime_ns
    except FileNotFoundError:
        return None
    # The 5-second bucket also catches a run folder scanned in the instant before its status file was written.
    return newest_run(str(root), stamp, int(time.time() // 5))


@functools.lru_cache(maxsize=1)
def newest_run(root: str, stamp: int, bucket: int) -> RunFolder | None:
    # Every poll of every browser lands here while idle: rescan the runs folder only when a run was added or removed.
    runs = list_runs(Path(root))
    return runs[0] if runs else None


def status_text(run: RunFolder, status: dict, metrics: list[dict], settings: str = "") -> str:
    state = status.get("state", "?")
    step, total = status.get("step", 0), status.get("total_steps")
    now = status.get("ended") or time.time()
    parts = [f"**Run {run.name}** — **{state}**"]
    if state == "stopped" and status.get("training_started"):
        parts[0] = f"**Run {run.name}** — **stopped at step {step}**"
    if total:
        parts.append(f"step {step}/{total}")
    if status.get("started"):
        parts.append(f"elapsed {clock.hms(now - status['started'])}")
    left = clock.eta(status, time.time())
    if left is not None:
        parts.append(f"ETA {clock.hms(left)}")
    elif state == "training":
        parts.append("ETA once a step is timed")
    if status.get("hourly_usd") is not None and status.get("cost_from"):
        spent = cost.cost(now - status["cost_from"], status["hourly_usd"])
        parts.append(f"≈ ${spent:,.2f} at ${status['hourly_usd']:g}/h"
                     + (f" (≈ ${spent + cost.cost(left, status['hourly_usd']):,.2f} at the end)" if left else ""))
    recent = [r["tokens_per_s"] for r in metrics if "tokens_per_s" in r][-10:]
    if recent:
        parts.append(f"{sum(recent) / len(recent):.0f} tokens/s")
    probes = [r for r in metrics if "probe_error" in r]
    if probes:
        parts.append(f"probe error ${probes[-1]['probe_error']:,.2f}")
    lines = [" · ".join(parts)]
    if settings:
        lines.append(settings)
    if status.get("error"):
        lines.append(f"**Error:** {status['error']}")
    elif state == "training" and status.get("pricing_probe") is not None:
        lines.append(f"Pricing the probe set at step {status['pricing_probe']}…")
    elif status.get("message"):
        lines.append(status["message"])
    if status.get("tracker_warning"):
        lines.append(f"⚠ {status['tracker_warning']}")
    return "\n\n".join(lines)


def run_settings(run: RunFolder) -> str:
    """The settings a run trains with, in one line: after a reload the form shows defaults, not these."""
    try:
        c = TrainConfig.from_yaml(run.config_file)
    except (ConfigError, OSError):
        return ""
    data = "sample data" if c.data == "sample" else (c.data if c.data.startswith(RUN_DATA) else Path(c.data).name)
    length = (f"the steps that fit in {c.max_minutes:g} min" if c.fit_to_time
              else f"{c.max_steps} steps" if c.max_steps else f"{c.epochs:g} epochs")
    return (f"Settings of this run: {c.model} ({c.quant}) · LoRA r {c.lora_r}, alpha {c.lora_alpha}, dropout "
            f"{c.lora_dropout:g} on {', '.join(c.target_modules)} · lr {c.learning_rate:g} · batch {c.batch_size}"
            f"×{c.grad_accum} · {length}"
            + (f" · price head trained, loss weight {c.head_loss:g}" if c.head_loss else "") + f" · data {data}")


class LiveView:
    """The rendered live view of the current run, built once per change of its files and shared by every browser.

    Training shares this process (and the GIL, and on a CPU the cores) with the web server, so each poll must cost
    almost nothing: a poll stats three files and, only when they changed, one poll rebuilds the figures for all.
    A rebuild (two plotly figures, ~45 ms of CPU) happens at most every REBUILD_SECONDS while the run and its state
    stay the same: on a fast GPU the files change every step, and the charts need not.
    """

    REBUILD_SECONDS = 3.0

    def __init__(self):
        self.lock = threading.Lock()
        self.key = None
        self.parts = None
        self.built = 0.0

    @staticmethod
    def file_key(path: Path):
        try:
            st = path.stat()
            return st.st_size, st.st_mtime_ns
        except FileNotFoundError:
            return None

    def get(self, run: RunFolder):
        # The state is in the key too: a run whose process died reads "interrupted" with no file changing.
        key = (run.name, run.state(),
               *(self.file_key(p) for p in (run.status_file, run.metrics_file, run.samples_file)))
        with self.lock:
            now = time.monotonic()
            # A new run or state (stopped, done, failed) shows at once; new steps at most every REBUILD_SECONDS.
            if key != self.key and (self.key is None or key[:2] != self.key[:2]
                                    or now - self.built >= self.REBUILD_SECONDS):
                self.key, self.parts, self.built = key, self._build(run, key), now
            return self.key, self.parts

    @staticmethod
    def _build(run: RunFolder, key) -> dict:
        status, metrics, samples = run.status(), run.metrics(), run.samples()
        state = run.state()
        base = next((r["probe_error"] for r in metrics if r.get("step") == 0 and "probe_error" in r), None)
        constant = status.get("baselines", {}).get("constant_mean", {}).get("error")
        text, near = (status.get("baselines", {}).get(key, {}).get("error") for key in (TEXT_BASELINE, TEXT_NEIGHBOURS))
        download = gr.skip()
        if state in FINAL_STATES and run.has_adapter():
            download = gr.DownloadButton(f"Download adapter, config and metrics of {run.name} (zip)",
                                         value=adapter_zip(run),
                                         visible=True)
        resumable = state in RESUMABLE and run.last_complete_checkpoint()[0] is not None
        ended = {"done": "finished", "stopped": "stopped", "failed": "failed", "interrupted": "was interrupted"}
        return {
            "status": {**status, "state": state}, "metrics": metrics, "settings": run_settings(run),
            # What a page compares to know it must redraw the charts, or the download and resume buttons.
            "version": f"{run.name}:{hash(key)}", "phase": f"{run.name}|{state}|{run.has_adapter()}|{resumable}",
            # Serialized here, once per change: Gradio passes ready plot/table data through untouched, where a
            # figure or Styler would be turned into JSON again for every polling browser.
            "loss": PLOT.postprocess(charts.loss_figure(metrics)),
            "error": PLOT.postprocess(charts.error_figure(metrics, base_error=base, constant_error=constant,
                                                          text_baseline_error=text,
                                                          text_neighbours_error=near)),
            "table": TABLE.postprocess(charts.samples_frame(samples[-1]["items"] if samples else [])).model_dump(),
            "download": download,
            "resume": gr.Button(f"Resume run {run.name}", visible=resumable),
            # Replaces "Stopping … at the next step" under Start once the run has ended.
            "message": f"Run **{run.name}** {ended[state]}." if state in ended else gr.skip(),
        }


PLOT, TABLE = gr.Plot(render=False), gr.Dataframe(render=False, interactive=False)
LIVE = LiveView()


NO_RUN = "No run yet: choose data and press **Start**."


def poll():
    """The page's timer, every second: the status text, and two short tags whose change makes the page fetch the
    charts (redraw) or the buttons (controls). A poll returns plain values only: Gradio builds a new component
    for every update dict, even an empty gr.skip(), at several milliseconds of server CPU a poll."""
    run = current_run()
    if run is None:
        return NO_RUN, "", ""
    _, parts = LIVE.get(run)
    # The text is rebuilt every poll: elapsed time and ETA move even when no file changed.
    return status_text(run, parts["status"], parts["metrics"], parts["settings"]), parts["version"], parts["phase"]


def current_parts(*names: str) -> tuple:
    """These parts of the current run's live view; with no run, each left as the page has it."""
    run = current_run()
    if run is None:
        return tuple(gr.skip() for _ in names)
    _, parts = LIVE.get(run)
    return tuple(parts[name] for name in names)


def redraw():
    """The charts and sample table, fetched by a page when its version tag changed (a new step, probe or run)."""
    return current_parts("loss", "error", "table")


def controls():
    """The download and resume buttons and the message under Start, fetched when the run's phase tag changed (it
    ended, or became resumable)."""
    return current_parts("download", "resume", "message")


def refresh():
    """The whole live view in one call, for API clients: status, loss chart, $-error chart, samples, download."""
    run = current_run()
    if run is None:
        return NO_RUN, None, None, None, None
    _, parts = LIVE.get(run)
    return (status_text(run, parts["status"], parts["metrics"], parts["settings"]), parts["loss"], parts["error"],
            parts["table"], parts["download"])


def create_live_panel() -> dict:
    """The live column of the Train tab: status, the two charts, the sample predictions, the adapter download."""
    gr.Markdown("### Live")
    c = {"status": gr.Markdown("No run yet.", elem_id="run-status")}
    with gr.Row():
        c["loss"] = gr.Plot(label="Loss", elem_id="loss-plot")
        c["error"] = gr.Plot(label="$ error on validation items (not trained on)", elem_id="error-plot")
    c["samples"] = gr.Dataframe(charts.samples_frame([]), label="Sample predictions on validation items",
                                interactive=False, wrap=True, elem_id="samples", column_widths=SAMPLE_WIDTHS)
    gr.Markdown(COLOUR_KEY)
    c["download"] = gr.DownloadButton("Download adapter (zip)", visible=False)
    return c


def wire_live(live: dict, resume_btn: gr.Button, start_msg: gr.Markdown) -> None:
    """The page's timer and the events it triggers; the train tab's Resume button and message follow the run."""
    # Hidden but in the page: the browser fires .change when a poll brings a new tag. (A gr.State would not do:
    # its change events are dispatched only for queued events, and the poll is off the queue.)
    version, phase = gr.Textbox(visible="hidden"), gr.Textbox(visible="hidden")
    refresh_api = gr.Button(visible=False)  # no page presses it: the whole view over HTTP for API clients
    timer = gr.Timer(1.0)
    # Off the queue: a poll is one plain HTTP request (no queue join and event stream), which is what lets
    # twenty open pages cost training little.
    timer.tick(poll, outputs=[live["status"], version, phase], show_progress="hidden", queue=False, api_name="poll")
    version.change(redraw, outputs=[live["loss"], live["error"], live["samples"]], show_progress="hidden",
                   queue=False, api_visibility="private")
    phase.change(controls, outputs=[live["download"], resume_btn, start_msg], show_progress="hidden", queue=False,
                 api_visibility="private")
    refresh_api.click(refresh, outputs=[live["status"], live["loss"], live["error"], live["samples"],
                                        live["download"]], queue=False, api_name="refresh")
