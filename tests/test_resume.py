"""A search killed with SIGKILL mid-way, then resumed, keeps every completed trial; its worker
processes die with it, even one paused for another's timing."""

import os
import signal
import subprocess
import sys
import time

import optuna
import psutil
import pytest
from optuna.trial import TrialState

from compactnas.search import SearchConfig, run_search

# Kills a real search with SIGKILL and resumes it: about 40 s.
pytestmark = [pytest.mark.slow]


def _complete(db):
    try:
        study = optuna.load_study(study_name="compactnas", storage=f"sqlite:///{db}")
    except Exception:  # noqa: BLE001 - not created yet
        return {}, []
    done = {
        t.number: (t.values, t.user_attrs["arch"])
        for t in study.trials
        if t.state == TrialState.COMPLETE
    }
    # A running trial that has its architecture is training (not between ask and sampling).
    running = [
        t.number for t in study.trials if t.state == TrialState.RUNNING and "arch" in t.user_attrs
    ]
    return done, running


def test_sigkill_then_resume_loses_nothing(tmp_path, digits):
    out = tmp_path / "s"
    argv = [sys.executable, "-m", "compactnas", "search", "--trials", "8", "--epochs", "3"]
    argv += ["--population", "4", "--workers", "2", "--out", str(out), "--quiet"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    done, running = {}, []
    try:
        while time.time() < deadline and proc.poll() is None:
            done, running = _complete(out / "study.db")
            if len(done) >= 2 and running:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"search ended before it could be killed: {proc.stderr.read()}"
        # The fork server is the search's child, the workers its children. One worker is paused as
        # the timing gate pauses it while another network is timed.
        below = psutil.Process(proc.pid).children(recursive=True)
        workers = [p for p in below if p.ppid() != proc.pid]
        assert workers, "a parallel search runs its candidates in worker processes"
        workers[0].suspend()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    _gone, alive = psutil.wait_procs(below, timeout=20)
    assert not alive, f"left behind by the killed search: {[(p.pid, p.status()) for p in alive]}"
    before, running = _complete(out / "study.db")
    assert len(before) >= 2 and running, "the kill should land while a trial runs"
    # With several workers a trial can also be asked but not yet sampled: it is interrupted too.
    killed = optuna.load_study(study_name="compactnas", storage=f"sqlite:///{out / 'study.db'}")
    running_any = [t.number for t in killed.trials if t.state == TrialState.RUNNING]
    assert set(running) <= set(running_any)

    result = run_search(
        SearchConfig(out=str(out), trials=8, epochs=3, population=4, resume=True),
        data=digits,
        quiet=True,
    )
    study = result.study
    after = {
        t.number: (t.values, t.user_attrs["arch"])
        for t in study.trials
        if t.state == TrialState.COMPLETE
    }
    for number, record in before.items():
        assert after[number] == record
    interrupted = [t for t in study.trials if t.user_attrs.get("interrupted")]
    assert [t.number for t in interrupted] == running_any
    retried = [t for t in study.trials if t.user_attrs.get("retry_of") == running[0]]
    first = next(t for t in interrupted if t.number == running[0])
    assert retried and retried[0].params == first.params
    assert (
        result.summary["n_trials"] == 8
    )  # the interrupted attempt is not counted against the budget
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
