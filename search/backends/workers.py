"""Worker processes for the local backend: one candidate at a time each, one torch thread each.

Each worker talks to the search over a pipe: it receives ``("eval", number, arch)`` and answers
``("done", number, payload)``; while training it sends ``("report", number, epoch, accuracy)`` and
waits for the stop decision, and before timing a candidate on this host it asks ``("time", number)``
and waits until the search has paused every other worker (SIGSTOP), so host latency is measured on a
quiet machine; ``("timed", number)`` lets them go on.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection, wait
from typing import Any

from compactnas.core.data import load_data, take_subset
from compactnas.core.errors import CompactnasError
from compactnas.evaluators import evaluator_factories, list_evaluators, register_evaluator
from compactnas.evaluators.device import worker_gpus
from compactnas.search.candidate import resolve_latency_model, run_candidate
from compactnas.search.config import SearchConfig, config_from_mapping
from compactnas.search.objectives import resolve_objectives

_ACTIVE: TimingGate | None = None


class TimingGate:
    """Who may time a network on this host now; the others' workers are stopped meanwhile."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pids: list[int] = []
        self._stopped: list[int] = []

    def try_hold(self, keep: int | None) -> bool:
        if not self._lock.acquire(blocking=False):
            return False
        self._pause(keep)
        return True

    def _pause(self, keep: int | None) -> None:
        self._stopped = []
        for pid in self.pids:
            if pid != keep and _signal(pid, signal.SIGSTOP):
                self._stopped.append(pid)

    def busy(self) -> bool:
        """Whether someone is timing a network now (the search then holds back its own work)."""
        return self._lock.locked()

    def release(self) -> None:
        for pid in self._stopped:
            _signal(pid, signal.SIGCONT)
        self._stopped = []
        self._lock.release()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Time something in this process with every worker paused (what the workers' timing gets)."""
        self._lock.acquire()
        self._pause(None)
        try:
            yield
        finally:
            self.release()


def current_gate() -> TimingGate | None:
    """The gate of the parallel search running in this process, if any (benchmarks time through it)."""
    return _ACTIVE


def _signal(pid: int, sig: int) -> bool:
    if not hasattr(signal, "SIGSTOP"):
        return False  # no job control here: timing is not isolated
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


class Worker:
    def __init__(self, ctx: Any, args: tuple, gpu: str | None = None) -> None:
        self.conn, child = ctx.Pipe()
        self.gpu = gpu
        self.proc = ctx.Process(target=worker_main, args=(child, *args, gpu), daemon=True)
        self.proc.start()
        child.close()
        self.number: int | None = None  # the trial it runs, if any


class WorkerPool:
    def __init__(self, n: int, cfg: SearchConfig, data: Any | None) -> None:

        # An evaluator registered in this process only (a plugin, a test) travels to the workers by
        # reference; "auto" picks among those every process registers on import.
        factories = evaluator_factories()
        plugins = {cfg.evaluator: factories[cfg.evaluator]} if cfg.evaluator in factories else {}
        self._ctx = _context()
        self._args = (cfg.to_dict(), data, plugins)
        self.gate = TimingGate()
        # With G GPUs each worker gets one of them, round-robin (its own CUDA_VISIBLE_DEVICES).
        self.gpus = worker_gpus(cfg.train_device, n)
        self.workers = [Worker(self._ctx, self._args, gpu) for gpu in self.gpus]
        self.gate.pids = [w.proc.pid for w in self.workers]
        self.waiting_to_time: list[Worker] = []
        self.holder: Worker | None = None

    def __enter__(self) -> WorkerPool:
        global _ACTIVE
        _ACTIVE = self.gate
        return self

    def __exit__(self, *exc: Any) -> None:
        global _ACTIVE
        _ACTIVE = None
        if self.holder is not None:
            self.gate.release()
        for w in self.workers:
            with contextlib.suppress(OSError):
                w.conn.send(("stop",))
        for w in self.workers:
            w.proc.join(timeout=5)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(timeout=5)

    def idle(self) -> list[Worker]:
        return [w for w in self.workers if w.number is None]

    def busy(self) -> bool:
        return any(w.number is not None for w in self.workers)

    def ready(self, timeout: float) -> list[Worker]:
        conns = {w.conn: w for w in self.workers if w.number is not None}
        return [conns[c] for c in wait(list(conns), timeout=timeout)]  # type: ignore[index]

    def grant_timing(self) -> None:
        while self.waiting_to_time and self.holder is None:
            w = self.waiting_to_time[0]
            if not self.gate.try_hold(w.proc.pid):
                return  # someone outside the pool (a benchmark) is timing: ask again soon
            self.waiting_to_time.pop(0)
            self.holder = w
            w.conn.send(True)

    def done_timing(self, w: Worker) -> None:
        if self.holder is w:
            self.holder = None
            self.gate.release()

    def replace(self, w: Worker) -> None:
        """A worker that died: forget it, and start another in its place."""
        self.done_timing(w)
        if w in self.waiting_to_time:
            self.waiting_to_time.remove(w)
        w.proc.join(timeout=5)
        i = self.workers.index(w)
        self.workers[i] = Worker(self._ctx, self._args, w.gpu)
        self.gate.pids = [x.proc.pid for x in self.workers]


_KEEPER: threading.Thread | None = None
_KEEPER_LOCK = threading.Lock()


def _keep_fork_server() -> None:
    """Start the fork server from a thread that lives as long as this process. The server's guard
    (forkserver_guard) ties its life to the thread that started it: started from a search's own
    thread, or an early pool's, it would die when that thread ends, under the next search."""
    global _KEEPER
    from multiprocessing import forkserver

    with _KEEPER_LOCK:
        if _KEEPER is not None:
            return
        ready = threading.Event()
        failed: list[BaseException] = []

        def keep() -> None:
            try:
                forkserver.ensure_running()
            except BaseException as e:  # noqa: BLE001 - raised again in the caller below
                failed.append(e)
                ready.set()
                return
            ready.set()
            threading.Event().wait()  # never set: the thread ends with the process

        thread = threading.Thread(target=keep, name="compactnas-fork-server", daemon=True)
        thread.start()
        ready.wait()
        if failed:
            raise failed[0]
        _KEEPER = thread


def _context() -> Any:
    """Fork-server workers where the platform has them: torch is imported once, in the server, and
    each worker forks from it in well under a second (a spawned one imports torch itself: tens of
    seconds on a busy machine). Spawn elsewhere. Never plain fork: the search's threads (MLflow,
    SQLite) would be copied mid-flight."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        # ONNX export and Runtime too: host latency is measured there by default, and their first
        # import would otherwise cost every worker seconds (modules that are absent are skipped).
        ctx.set_forkserver_preload(
            [
                "compactnas.search.backends.forkserver_guard",
                "torch",
                "torch.onnx",
                "onnxruntime",
                "compactnas.search.candidate",
            ]
        )
        _keep_fork_server()
        return ctx
    return mp.get_context("spawn")


def die_with_parent() -> None:
    # A killed search must not leave training processes behind (Linux: the kernel sends SIGKILL).
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def worker_main(
    conn: Connection, settings: dict, data: Any | None, plugins: dict, gpu: str | None = None
) -> None:
    die_with_parent()
    if gpu is not None:  # before anything creates a CUDA context in this process
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    import torch

    for name, factory in plugins.items():
        if name not in list_evaluators():
            register_evaluator(name)(factory)
    cfg = config_from_mapping(settings)
    torch.set_num_threads(cfg.threads)
    try:
        if data is None:
            data = load_data(cfg.data, seed=cfg.seed, resize=cfg.resize)
            data = take_subset(data, train=cfg.subset, val=cfg.val_subset, seed=cfg.seed)
        objectives = resolve_objectives(cfg.objectives)
        latency_model = resolve_latency_model(cfg, objectives, num_classes=data.num_classes)
    except CompactnasError:
        # Bad input: the search's own setup reports it in one line; a worker adds nothing to that.
        sys.exit(2)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] != "eval":
            return
        _, number, arch = msg

        def report(epoch: int, accuracy: float, number: int = number) -> bool:
            conn.send(("report", number, epoch, accuracy))
            return bool(conn.recv())

        @contextlib.contextmanager
        def gate(number: int = number) -> Iterator[None]:
            conn.send(("time", number))
            conn.recv()
            try:
                yield
            finally:
                conn.send(("timed", number))

        payload = run_candidate(
            arch, number, data, cfg, latency_model=latency_model,
            report=report if cfg.early_stop else None, gate=gate,
        )  # fmt: skip
        conn.send(("done", number, payload))
