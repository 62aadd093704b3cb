"""Joining a Ray cluster, or starting one on this machine: what every Ray-backed command shares."""

from __future__ import annotations

import os
from typing import Any

from compactnas.core.errors import ConfigError


def connect_ray(address: str | None, cpus: int) -> bool:
    """Join ``address`` (or the job's RAY_ADDRESS), else start a local cluster of at least ``cpus``.

    Returns True when this call connected, so the caller also disconnects when it is done.
    """
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "configure_logging": False,
    }
    if address:
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ConfigError(
                f"cannot join the Ray cluster at {address}: {str(e).splitlines()[0]}"
            ) from None
    elif os.environ.get("RAY_ADDRESS"):
        ray.init(**kwargs)  # inside a Ray job (compactnas submit): the job's own cluster
    else:
        ray.init(address="local", num_cpus=max(cpus, os.cpu_count() or 1), **kwargs)
    return True
