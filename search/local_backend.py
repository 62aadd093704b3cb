"""The local backend: candidates run in this process (one worker) or in worker processes (several).

Either way the search loop proposes and records; this file only moves candidates to where they run
and brings their reports and results back.
"""

from __future__ import annotations

from collections import deque

from compactnas.search.candidate import resolve_latency_model, run_candidate
from compactnas.search.loop import Proposal, SearchLoop
from compactnas.search.workers import Worker, WorkerPool


def run_local(loop: SearchLoop, *, data_given: bool) -> None:
    with loop.progress:
        if loop.cfg.n_workers == 1 or loop.to_ask + len(loop.ready) <= 1:
            _run_here(loop)
        else:
            n = min(loop.cfg.n_workers, loop.to_ask + len(loop.ready))
            _run_in_workers(loop, n, data_given)


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


def _run_in_workers(loop: SearchLoop, n: int, data_given: bool) -> None:
    # One candidate is proposed ahead while every worker trains, so a freed worker starts at once
    # instead of waiting for the sampler's model fit (15% of a guided search's wall time on digits).
    ahead: deque[Proposal] = deque()
    with WorkerPool(n, loop.cfg, loop.data if data_given else None) as pool:
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
