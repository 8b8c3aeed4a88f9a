"""The Runs tab's pickers: what a person sees preselected, and what a refused delete keeps."""


def test_the_runs_tab_compares_finished_runs_and_keeps_the_run_picked_for_deletion(runs_dir):
    import time

    from trainer.runs import RunFolder
    from ui.tabs.runs import list_history

    for i, (name, state) in enumerate((("old-done", "done"), ("stopped-one", "stopped"), ("training-now", "training"),
                                       ("failed-one", "failed"))):
        RunFolder.create(name, runs_dir).update_status(state=state, created=time.time() + i)
    _table, compare, _open, delete = list_history()
    assert compare.value == ["stopped-one", "old-done"]  # the newest finished ones, not the one still training
    assert delete.value is None
    assert list_history("failed-one")[3].value == "failed-one"  # a refused delete keeps its pick
    assert list_history("gone")[3].value is None  # a deleted run is no longer offered


def test_a_run_no_better_than_a_constant_is_called_barely_trained(runs_dir):
    from trainer.runs import RunFolder, barely_trained

    run = RunFolder.create("one-step", runs_dir)
    run.update_status(state="stopped", total_steps=250, baselines={"constant_median": {"error": 25.83}})
    run.append(run.metrics_file, {"step": 0, "probe_error": 61.0})
    assert barely_trained(run) == ""  # the base model's probe at step 0 says nothing about training
    run.append(run.metrics_file, {"step": 1, "probe_error": 58.2})
    assert barely_trained(run) == (
        "Barely trained: run one-step trained 1 of 250 steps, and its last probe's $ error ($58.20) was no better "
        "than always guessing the training median ($25.83) on the same validation rows. Treat its prices as guesses; "
        "train longer.")
    run.append(run.metrics_file, {"step": 250, "probe_error": 21.4})
    assert barely_trained(run) == ""
