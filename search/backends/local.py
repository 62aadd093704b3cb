"""The local backend: candidates run in this process (one worker) or in worker processes (several).

Either way the search loop proposes and records; this file only moves candidates to where they run
and brings their reports and results back.
"""

from __future__ import annotations

import threading
from collections import deque

from compactnas.search.backends.workers import Worker, WorkerPool
from compactnas.search.candidate import resolve_latency_model, run_candidate
from compactnas.search.config import SearchConfig
from compactnas.search.loop import Proposal, SearchLoop


class EarlyPool:
    """Worker processes started on a thread while the search sets up: starting them (the fork server
    imports torch and ONNX Runtime, each worker loads the data) takes seconds that the search's own
    setup (study, MLflow, data) would otherwise add in front of the first candidate."""

    def __init__(self, cfg: SearchConfig) -> None:
        self.pool: WorkerPool | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._start, args=(cfg,), daemon=True)
        self._thread.start()

    def _start(self, cfg: SearchConfig) -> None:
        try:
            self.pool = WorkerPool(min(cfg.n_workers, cfg.trials), cfg, None)
        except BaseException as e:  # noqa: BLE001 - raised again where the search waits for it
            self.error = e

    def get(self) -> WorkerPool:
        self._thread.join()
        if self.error is not None:
            raise self.error
        assert self.pool is not None
        return self.pool

    def close(self) -> None:
        self._thread.join()
        if self.pool is not None:
            self.pool.__exit__(None, None, None)


def start_early(cfg: SearchConfig, data_given: bool) -> EarlyPool | None:
    """Workers for a parallel local search, started now; None where the search runs in process."""
    if cfg.backend == "ray" or cfg.n_workers <= 1 or cfg.trials <= 1 or data_given:
        return None  # data handed in by the caller travels to workers after the subset is taken
    return EarlyPool(cfg)


def run_local(loop: SearchLoop, *, data_given: bool, early: EarlyPool | None = None) -> None:
    left = loop.to_ask + len(loop.ready)
    try:
        with loop.progress:
            if early is not None and left >= 1:
                pool, early = early.get(), None
                _run_in_workers(loop, pool)
            elif loop.cfg.n_workers == 1 or left <= 1:
                _run_here(loop)
            else:
                n = min(loop.cfg.n_workers, left)
                _run_in_workers(loop, WorkerPool(n, loop.cfg, loop.data if data_given else None))
    finally:
        if early is not None:  # started, never used (a resumed search with nothing left to run)
            early.close()


def _run_here(loop: SearchLoop) -> None:
    cfg = loop.cfg
    latency_model = resolve_latency_model(cfg, loop.objectives, num_classes=loop.data.num_classes)
    while not loop.finished:
        p = loop.propose()
        if p is None:
            break

        def report(epoch: int, accuracy: float, number: int = p.number) -> bool:
            return loop.report(number, epoch, accuracy)

        payload = run_candidate(
            p.arch, p.number, loop.data, cfg, latency_model=latency_model,
            report=report if cfg.early_stop else None,
        )  # fmt: skip
        loop.record(p.number, payload)


def _run_in_workers(loop: SearchLoop, pool: WorkerPool) -> None:
    # One candidate is proposed ahead while every worker trains, so a freed worker starts at once
    # instead of waiting for the sampler's model fit (15% of a guided search's wall time on digits).
    ahead: deque[Proposal] = deque()
    with pool:
        while not loop.finished:
            # Proposing (fitting the sampler's model) takes CPU: not while a network is being timed.
            # Handing out one proposed already costs nothing: a paused worker starts when let go.
            timing = pool.gate.busy()
            for w in pool.idle():
                p = ahead.popleft() if ahead else None if timing else loop.propose()
                if p is None:
                    break
                w.number = p.number
                w.conn.send(("eval", p.number, p.arch))
            if not timing and not ahead and not pool.idle():
                p = loop.propose()
                if p is not None:
                    ahead.append(p)
            if not pool.busy() and not timing and not ahead:
                break  # nothing runs and nothing can be proposed
            for w in pool.ready(timeout=0.05):
                _handle(loop, pool, w)
            pool.grant_timing()


def _handle(loop: SearchLoop, pool: WorkerPool, w: Worker) -> None:
    try:
        msg = w.conn.recv()
    except (EOFError, OSError):
        number = w.number
        w.number = None
        code = w.proc.exitcode
        pool.replace(w)
        if number is not None:
            loop.fail_in_flight(number, f"the worker process died (exit code {code})")
        return
    kind = msg[0]
    if kind == "report":
        w.conn.send(loop.report(msg[1], msg[2], msg[3]))
    elif kind == "time":
        pool.waiting_to_time.append(w)
    elif kind == "timed":
        pool.done_timing(w)
    elif kind == "done":
        w.number = None
        loop.record(msg[1], msg[2])
