"""The study: objectives, samplers, the Optuna and Ray runners, tracking and results."""

from compactnas.search.config import SearchConfig, config_from_mapping, load_config_file
from compactnas.search.objectives import OBJECTIVES, resolve_objectives
from compactnas.search.study import SearchResult, load_trials, run_search

__all__ = [
    "OBJECTIVES",
    "SearchConfig",
    "SearchResult",
    "config_from_mapping",
    "load_config_file",
    "load_trials",
    "resolve_objectives",
    "run_search",
]
