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
