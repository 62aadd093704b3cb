"""The search's public entry points, gathered from the files that hold them.

``run_search`` (run.py) runs or resumes a search on any backend; ``load_trials`` (storage.py) reads a
search's study back for show, export and distill.
"""

from __future__ import annotations

from compactnas.search.candidate import resolve_latency_model
from compactnas.search.loop import SearchLoop, SearchResult
from compactnas.search.results import pareto_front
from compactnas.search.run import run_search
from compactnas.search.storage import load_trials, make_sampler, storage_url, trials_frame

__all__ = [
    "SearchLoop",
    "SearchResult",
    "load_trials",
    "make_sampler",
    "pareto_front",
    "resolve_latency_model",
    "run_search",
    "storage_url",
    "trials_frame",
]
